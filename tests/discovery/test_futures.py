"""``future()`` on the balanced channel with real gRPC: the same rules as a blocking call (retry elsewhere,
deadline, no instance), driven by gRPC's completion callbacks rather than a thread, and every attempt told
to ``on_attempt`` (by the asyncio channel too: one owner, ``attempts.Attempts``)."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

from raftkv.client import Client
from raftkv.discovery import OutlierConfig, aio, channel
from raftkv.discovery.demo import ECHO, STREAM, control
from raftkv.testing import ClusterHandle
from tests.discovery.conftest import eventually


class Attempts:
    """An ``on_attempt`` observer: (instance id, status code) of every attempt, as they end."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, grpc.StatusCode]] = []
        self._lock = threading.Lock()

    def __call__(self, instance_id: str, started: float, code: grpc.StatusCode) -> None:
        assert started > 0
        with self._lock:
            self.seen.append((instance_id, code))


def test_futures_retry_elsewhere_and_every_attempt_is_observed(client: Client, service: str,
                                                               three: list[str]) -> None:
    attempts = Attempts()
    with channel(service, policy="round_robin", client=client, idempotent=True, health_check=False,
                 outlier=OutlierConfig(consecutive_failures=1000), on_attempt=attempts) as ch:
        assert ch.wait_for_instances(3)
        control(three[0], "fail")
        echo = ch.unary_unary(ECHO)
        answered: list[object] = []
        futures = [echo.future(b"x", timeout=5) for _ in range(12)]
        for future in futures:
            future.add_done_callback(lambda f: answered.append(f.result()))
        assert all(f.result(timeout=10).split(b":")[0] in (b"i1", b"i2") for f in futures)
        eventually(lambda: len(answered) == 12, 5, "every callback")
        assert all(f.code() == grpc.StatusCode.OK and f.done() and not f.cancelled() for f in futures)
        failed = [a for a in attempts.seen if a[0] == "i0"]
        assert failed and all(code == grpc.StatusCode.UNAVAILABLE for _, code in failed)
        assert sum(1 for _, code in attempts.seen if code == grpc.StatusCode.OK) == 12
        assert ch._workers is None  # no thread was handed a call
        assert all(i["outstanding"] == 0 for i in ch.instances())


def test_a_future_fails_as_a_blocking_call_would(client: Client, service: str, three: list[str]) -> None:
    with channel(service, client=client, health_check=False,
                 outlier=OutlierConfig(consecutive_failures=1000)) as ch:
        assert ch.wait_for_instances(3)
        for addr in three:
            control(addr, "fail")
        future = ch.unary_unary(ECHO).future(b"x", timeout=5)
        error = future.exception(timeout=10)
        assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.UNAVAILABLE
        assert "failing on purpose" in (future.details() or "")
        with pytest.raises(grpc.RpcError):
            future.result()


def test_a_future_is_not_retried_past_its_deadline(client: Client, service: str, three: list[str]) -> None:
    attempts = Attempts()
    for addr in three:
        control(addr, "slow:2000")
    with channel(service, client=client, idempotent=True, health_check=False, on_attempt=attempts) as ch:
        assert ch.wait_for_instances(3)
        future = ch.unary_unary(ECHO).future(b"x", timeout=0.2)
        error = future.exception(timeout=10)
        assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert [code for _, code in attempts.seen] == [grpc.StatusCode.DEADLINE_EXCEEDED]


def test_a_future_without_instances_fails_unavailable_at_once(client: Client, service: str) -> None:
    with channel(service, client=client) as ch:
        future = ch.unary_unary(ECHO).future(b"x", timeout=1)
        assert future.done()
        called: list[object] = []
        future.add_done_callback(called.append)
        assert called == [future]
        error = future.exception()
        assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.UNAVAILABLE
        assert f"no instance of {service!r} to call (none registered)" in error.details()


def test_a_cancelled_future_says_so_and_frees_its_instance(client: Client, service: str, three: list[str]) -> None:
    for addr in three:
        control(addr, "slow:3000")
    with channel(service, client=client, health_check=False) as ch:
        assert ch.wait_for_instances(3)
        future = ch.unary_unary(ECHO).future(b"x", timeout=10)
        called: list[object] = []
        future.add_done_callback(called.append)
        assert future.running() and future.cancel() and not future.cancel()
        assert future.cancelled() and called == [future] and future.code() == grpc.StatusCode.CANCELLED
        with pytest.raises(grpc.FutureCancelledError):
            future.result()
        eventually(lambda: all(i["outstanding"] == 0 for i in ch.instances()), 5, "the attempt's end")


def test_a_future_waits_with_a_timeout(client: Client, service: str, three: list[str]) -> None:
    for addr in three:
        control(addr, "slow:1000")
    with channel(service, client=client, health_check=False) as ch:
        assert ch.wait_for_instances(3)
        future = ch.unary_unary(ECHO).future(b"x", timeout=10)
        with pytest.raises(grpc.FutureTimeoutError):
            future.result(timeout=0.01)
        assert future.result(timeout=10).endswith(b":x")


def test_the_async_channel_tells_every_attempt_as_the_blocking_one_does(cluster: ClusterHandle, service: str,
                                                                         three: list[str]) -> None:
    attempts = Attempts()

    async def until(predicate: object, what: str) -> None:
        deadline = time.monotonic() + 10
        while not predicate():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        async with cluster.async_client() as c:
            ch = await aio.channel(service, policy="round_robin", client=c, idempotent=True, health_check=False,
                                   outlier=OutlierConfig(consecutive_failures=1000), on_attempt=attempts)
            try:
                assert await ch.wait_for_instances(3)
                control(three[0], "fail")
                echo = ch.unary_unary(ECHO)
                answers = [await echo(b"x", timeout=5) for _ in range(12)]
                assert all(a.split(b":")[0] in (b"i1", b"i2") for a in answers)
                failed = [a for a in attempts.seen if a[0] == "i0"]
                assert failed and all(code == grpc.StatusCode.UNAVAILABLE for _, code in failed)
                assert sum(1 for _, code in attempts.seen if code == grpc.StatusCode.OK) == 12
                # A stream is one attempt, told when it ends.
                control(three[0], "ok")
                attempts.seen.clear()
                assert len([r async for r in ch.unary_stream(STREAM)(b"2", timeout=5)]) == 2
                await until(lambda: len(attempts.seen) == 1, "the stream's attempt")
                assert attempts.seen[0][1] == grpc.StatusCode.OK
                # Not retried past the deadline, and the one attempt is told.
                for addr in three:
                    control(addr, "slow:2000")
                attempts.seen.clear()
                with pytest.raises(grpc.RpcError) as caught:
                    await echo(b"x", timeout=0.2)
                assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert [code for _, code in attempts.seen] == [grpc.StatusCode.DEADLINE_EXCEEDED]
                assert all(e.outstanding == 0 for e in ch._pool.endpoints.values())
            finally:
                await ch.close()

    asyncio.run(scenario())

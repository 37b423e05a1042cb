"""The balanced channel with real gRPC: stubs, generic calls, streams, health, ejection, retries, deadline."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raftkv.client import Client
from raftkv.discovery import OutlierConfig, channel, register
from raftkv.discovery.budget import RetryBudget
from raftkv.discovery.demo import CHAT, ECHO, STREAM, control
from raftkv.testing import ClusterHandle
from tests.discovery.conftest import Instances, eventually


def closed(instance_channel: grpc.Channel) -> bool:
    """Whether a plain channel was closed: gRPC refuses to start a call on one (an open one gets the
    instance's answer to a method it does not serve)."""
    try:
        instance_channel.unary_unary("/raftkv.test.Nothing/Nothing")(b"", timeout=5)
    except ValueError:
        return True
    except grpc.RpcError:
        return False
    raise AssertionError("a method no instance serves answered")


def names(ch: grpc.Channel, count: int, **kwargs: object) -> Counter[str]:
    echo = ch.unary_unary(ECHO)
    return Counter(echo(b"x", timeout=5, **kwargs).split(b":")[0].decode() for _ in range(count))  # type: ignore[arg-type]


def test_round_robin_over_registered_instances_with_stubs_generic_calls_and_streams(
        client: Client, service: str, three: list[str]) -> None:
    with channel(service, policy="round_robin", client=client) as ch:
        assert ch.wait_for_instances(3)
        assert names(ch, 30) == {"i0": 10, "i1": 10, "i2": 10}
        # A generated stub, unchanged: grpc.health.v1 through the balanced channel.
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        # with_call and future
        response, call = ch.unary_unary(ECHO).with_call(b"w", timeout=5)
        assert response.endswith(b":w") and call.code() == grpc.StatusCode.OK
        assert ch.unary_unary(ECHO).future(b"f", timeout=5).result().endswith(b":f")
        # streams: server streaming and bidi
        assert len(list(ch.unary_stream(STREAM)(b"4", timeout=5))) == 4
        assert [r.split(b":")[1] for r in ch.stream_stream(CHAT)(iter([b"a", b"b"]), timeout=5)] == [b"a", b"b"]
        assert all(i["outstanding"] == 0 for i in ch.instances())


def test_p2c_is_the_default_and_uses_every_instance(client: Client, service: str, three: list[str]) -> None:
    with channel(service, client=client) as ch:
        assert ch.wait_for_instances(3)
        counts = names(ch, 90)
        assert set(counts) == {"i0", "i1", "i2"}


def test_a_not_serving_instance_leaves_rotation_at_once_and_comes_back(client: Client, service: str,
                                                                      three: list[str]) -> None:
    with channel(service, policy="round_robin", client=client) as ch:
        assert ch.wait_for_instances(3)
        control(three[1], "not-serving")
        eventually(lambda: not next(i for i in ch.instances() if i["id"] == "i1")["candidate"], 2,
                   "i1 out of rotation")
        assert "i1" not in names(ch, 20)
        control(three[1], "serving")
        assert ch.wait_for_instances(3, 5)
        assert "i1" in names(ch, 20)


def test_a_killed_instance_gets_no_call_and_calls_do_not_fail(client: Client, service: str,
                                                             instances: Instances) -> None:
    procs = [instances.process("--register", service, "--name", f"p{n}", "--ttl", "10") for n in range(3)]
    with channel(service, client=client) as ch:
        assert ch.wait_for_instances(3)
        victim, _ = procs[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        eventually(lambda: not ch.instances()[0]["candidate"], 2, "the killed instance out of rotation")
        killed_at = time.monotonic()
        counts = names(ch, 60)
        assert "p0" not in counts and sum(counts.values()) == 60
        assert time.monotonic() - killed_at < 10  # well before its lease (10 s) expired


def test_a_failing_instance_is_ejected_then_readmitted(client: Client, service: str, three: list[str]) -> None:
    outlier = OutlierConfig(consecutive_failures=3, base_ejection=0.5, interval=60)
    with channel(service, policy="round_robin", client=client, outlier=outlier, health_check=False) as ch:
        assert ch.wait_for_instances(3)
        control(three[2], "fail")
        echo = ch.unary_unary(ECHO)
        failures = 0
        for _ in range(30):
            try:
                echo(b"x", timeout=5)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                failures += 1
        assert failures == 3  # then ejected: the other 27 went elsewhere
        assert next(i for i in ch.instances() if i["id"] == "i2")["ejected"]
        control(three[2], "ok")
        eventually(lambda: not next(i for i in ch.instances() if i["id"] == "i2")["ejected"], 5, "readmission")
        assert "i2" in names(ch, 30)


def test_idempotent_calls_are_retried_elsewhere_within_the_budget(client: Client, service: str,
                                                                 three: list[str], instances: Instances) -> None:
    with channel(service, policy="round_robin", client=client, idempotent=["raftkv.demo.Echo"],
                 outlier=OutlierConfig(consecutive_failures=1000), health_check=False,
                 retry_budget=RetryBudget(ratio=0.0, min_per_second=0.5, window=10)) as ch:
        assert ch.wait_for_instances(3)
        control(three[0], "fail")
        echo = ch.unary_unary(ECHO)
        outcomes = []
        for _ in range(30):
            try:
                echo(b"x", timeout=5)
                outcomes.append("ok")
            except grpc.RpcError:
                outcomes.append("failed")
        # Every call that hit i0 failed there; the budget (0.5/s over 10 s: 5 retries) saved five of them.
        failing = instances.servers[0][1]
        assert failing.calls - outcomes.count("failed") == 5 and outcomes.count("failed") >= 1


def test_non_idempotent_calls_are_not_retried_after_reaching_an_instance(client: Client, service: str,
                                                                        three: list[str]) -> None:
    with channel(service, policy="round_robin", client=client, health_check=False,
                 outlier=OutlierConfig(consecutive_failures=1000)) as ch:
        assert ch.wait_for_instances(3)
        control(three[0], "fail")
        echo = ch.unary_unary(ECHO)
        failed = 0
        for _ in range(9):
            try:
                echo(b"x", timeout=5)
            except grpc.RpcError:
                failed += 1
        assert failed == 3


def test_calls_that_never_left_the_client_are_retried_on_another_instance(client: Client, service: str,
                                                                         three: list[str]) -> None:
    with register(service, "127.0.0.1:1", instance_id="dead", client=client), \
            channel(service, policy="round_robin", client=client, health_check=False) as ch:
        eventually(lambda: len(ch.instances()) == 4, 5, "four instances")
        counts = names(ch, 40)  # none fails: refused connections are retried at once, at no budget cost
        assert sum(counts.values()) == 40 and "dead" not in counts


def test_retries_never_run_past_the_callers_deadline(client: Client, service: str, three: list[str]) -> None:
    for addr in three:
        control(addr, "slow:400")
    with channel(service, client=client, idempotent=True, health_check=False) as ch:
        assert ch.wait_for_instances(3)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(ECHO)(b"x", timeout=0.2)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 0.35  # not 3 attempts × 0.2 s


def test_hedging_answers_from_the_fast_instance(client: Client, service: str, three: list[str]) -> None:
    slow = 5.0  # i0 answers after this long: far beyond a hedged call's time even on a loaded machine
    control(three[0], f"slow:{slow * 1000:.0f}")
    with channel(service, policy="round_robin", client=client, idempotent=True, hedge_delay=0.05,
                 health_check=False) as ch:
        assert ch.wait_for_instances(3)
        echo = ch.unary_unary(ECHO)
        answers: list[bytes] = []
        took: list[float] = []
        for _ in range(6):  # round robin sends two of them to i0 first
            started = time.monotonic()
            answers.append(echo(b"x", timeout=2 * slow).split(b":")[0])
            took.append(time.monotonic() - started)
        assert b"i0" not in answers
        assert max(took) < slow, f"a call waited for the slow instance: {took}"


def test_no_instance_is_a_clear_unavailable(client: Client, service: str) -> None:
    with channel(service, client=client) as ch:
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(ECHO)(b"x", timeout=1)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"no instance of {service!r} to call (none registered)" in info.value.details()


def test_ring_hash_keeps_a_key_on_one_instance(client: Client, service: str, three: list[str]) -> None:
    with channel(service, policy="ring_hash", hash_header="x-user", client=client) as ch:
        assert ch.wait_for_instances(3)
        for user in ("ann", "bob", "cyd", "dan"):
            assert len(names(ch, 10, metadata=(("x-user", user),))) == 1


def test_each_instance_has_its_own_connection(client: Client, service: str, three: list[str]) -> None:
    with channel(service, client=client) as a, channel(service, client=client) as b:
        assert a.wait_for_instances(3) and b.wait_for_instances(3)
        conns_a = {i["id"]: e.conn.channel for i, e in zip(a.instances(), sorted(a._pool.endpoints.values(), key=lambda e: e.id), strict=True)}
        conns_b = {e.id: e.conn.channel for e in b._pool.endpoints.values()}
        assert all(conns_a[k] is not conns_b[k] for k in conns_a)


def test_async_twin_balances_streams_and_skips_a_not_serving_instance(cluster: object, client: Client, service: str,
                                                                      three: list[str]) -> None:
    import asyncio

    from raftkv.discovery import aio

    async def scenario() -> None:
        async with cluster.async_client() as c:  # type: ignore[attr-defined]
            ch = await aio.channel(service, policy="round_robin", client=c)
            try:
                assert await ch.wait_for_instances(3)
                echo = ch.unary_unary(ECHO)
                answers = Counter([(await echo(b"x", timeout=5)).split(b":")[0] for _ in range(30)])
                assert answers == {b"i0": 10, b"i1": 10, b"i2": 10}
                status = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert status.status == health_pb2.HealthCheckResponse.SERVING
                replies = [r async for r in ch.unary_stream(STREAM)(b"3", timeout=5)]
                assert len(replies) == 3
                control(three[0], "not-serving")
                for _ in range(200):
                    if ch.get_state() and not any(e.id == "i0" for e in ch._pool.candidates(time.monotonic())):
                        break
                    await asyncio.sleep(0.01)
                assert b"i0" not in {(await echo(b"x", timeout=5)).split(b":")[0] for _ in range(20)}
            finally:
                await ch.close()

    asyncio.run(scenario())


def test_an_instance_leaving_the_registry_keeps_the_calls_in_flight_to_it(cluster: ClusterHandle, client: Client,
                                                                           service: str, instances: Instances) -> None:
    """A deregistering instance revokes its lease first and then drains: the calls already sent to it must
    be allowed to finish, not be cancelled on the caller's side when the channel lets go of the instance;
    the end of the last one closes the instance's connection (the grace only bounds calls that never end)."""
    import asyncio

    from raftkv.discovery import aio

    _, addr = instances.local("i0")
    control(addr, "slow:1500")
    reg = register(service, addr, instance_id="i0", client=client)
    try:
        with channel(service, client=client, health_check=False) as ch:
            assert ch.wait_for_instances(1)
            future = ch.unary_unary(ECHO).future(b"x", timeout=30)
            eventually(lambda: any(i["outstanding"] for i in ch.instances()), 10, "the call in flight")
            (leaving,) = ch._pool.endpoints.values()
            reg.stop()  # the key goes at once; the instance still serves what it has
            eventually(lambda: not ch.instances(), 10, "the instance's removal")
            assert future.result(timeout=30).endswith(b":x")
            eventually(lambda: closed(leaving.conn.channel), 5, "the retired connection's close")
    finally:
        reg.stop()

    async def until(predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 10
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        async with cluster.async_client() as c:
            again = register(service, addr, instance_id="i0", client=client)
            ch = await aio.channel(service, client=c, health_check=False)
            try:
                assert await ch.wait_for_instances(1)
                call = ch.unary_unary(ECHO)(b"y", timeout=30)
                await until(lambda: any(e.outstanding for e in ch._pool.endpoints.values()), "the call in flight")
                (leaving,) = ch._pool.endpoints.values()
                again.stop()
                await until(lambda: not ch._pool.endpoints, "the instance's removal")
                assert (await call).endswith(b":y")
                await until(lambda: leaving.conn.channel.get_state() is grpc.ChannelConnectivity.SHUTDOWN,
                            "the retired connection's close")
            finally:
                again.stop()
                await ch.close()

    asyncio.run(scenario())

"""Watches end to end: the real ``etcdctl watch``, and a gRPC watch held across a leader crash.

Every test runs against etcd too (the ``cluster`` fixture of conftest.py): etcd's behaviour is the spec.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Iterator

import grpc
import pytest

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2, rpc_pb2_grpc

from .conftest import KINDS, start_cluster
from .etcdctl import ETCDCTL, Etcdctl, poll


def current_revision(etcdctl: Etcdctl, member: str) -> int:
    answer = json.loads(etcdctl("get", "/", "-w", "json", member=member).ok().stdout)
    return int(answer["header"]["revision"])


class WatchProcess:
    """A running ``etcdctl watch``; its output lines are collected on a thread for polling."""

    def __init__(self, etcdctl: Etcdctl, member: str, *args: str) -> None:
        env = {**etcdctl._env, "ETCDCTL_ENDPOINTS": etcdctl.cluster.client_url(member)}
        self.process = subprocess.Popen(
            [ETCDCTL, "watch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, expected: list[str], timeout: float = 10.0) -> None:
        """Poll until the output is exactly ``expected`` (a deleted key's value prints as an empty line)."""
        try:
            poll(lambda: True if self.lines == expected else None, timeout, f"watch output {expected}")
        except AssertionError:
            assert self.lines == expected  # show the difference
            raise

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self._reader.join(timeout=10)


@pytest.fixture
def watch(etcdctl: Etcdctl) -> Iterator[list[WatchProcess]]:
    started: list[WatchProcess] = []
    yield started
    for process in started:
        process.stop()


def test_watch_prefix_sees_writes_of_another_client(
    etcdctl: Etcdctl, member: str, prefix: str, watch: list[WatchProcess]
) -> None:
    """Watching from the next revision makes the test independent of when the watch is established."""
    start = current_revision(etcdctl, member) + 1
    watch.append(WatchProcess(etcdctl, member, "--prefix", prefix, f"--rev={start}"))
    etcdctl("put", f"{prefix}a", "1").ok()
    etcdctl("put", f"{prefix[:-1]}~", "outside").ok()
    etcdctl("put", f"{prefix}b", "2").ok()
    etcdctl("del", f"{prefix}a").ok()
    watch[0].wait_for(["PUT", f"{prefix}a", "1", "PUT", f"{prefix}b", "2", "DELETE", f"{prefix}a", ""])


def test_watch_rev_replays_history_then_follows(
    etcdctl: Etcdctl, member: str, prefix: str, watch: list[WatchProcess]
) -> None:
    key = f"{prefix}k"
    etcdctl("put", key, "old").ok()
    first = current_revision(etcdctl, member) + 1
    etcdctl("put", key, "v1").ok()
    etcdctl("put", key, "v2").ok()
    watch.append(WatchProcess(etcdctl, member, key, f"--rev={first}", "--prev-kv"))
    watch[0].wait_for(["PUT", key, "old", key, "v1", "PUT", key, "v1", key, "v2"])
    etcdctl("put", key, "v3").ok()
    watch[0].wait_for(["PUT", key, "old", key, "v1", "PUT", key, "v1", key, "v2", "PUT", key, "v2", key, "v3"])


# --- a watch held across a leader crash ------------------------------------------------------------------

@pytest.fixture(scope="module", params=KINDS)
def crash_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster of its own: the test kills its leader."""
    with start_cluster(request.param, tmp_path_factory.mktemp(f"watch-crash-{request.param}")) as running:
        yield running


async def _put_retrying(kv: rpc_pb2_grpc.KVStub, key: bytes, value: bytes) -> int:
    """Put until acknowledged (an election makes attempts fail); returns the acknowledged revision."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        try:
            response = await kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=3)
            return response.header.revision
        except grpc.aio.AioRpcError as error:
            if asyncio.get_running_loop().time() > deadline or error.code() not in (
                grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
            ):
                raise


async def _collect(call: grpc.aio.StreamStreamCall, seen: list[tuple[int, bytes]]) -> None:
    """Record (revision, value) of every event until the stream is canceled."""
    while True:
        response = await call.read()
        assert response is not grpc.aio.EOF, "watch stream ended"
        assert not response.canceled, response.cancel_reason
        seen.extend((e.kv.mod_revision, e.kv.value) for e in response.events)


async def _crash_scenario(cluster: LocalCluster, prefix: bytes) -> None:
    leader = cluster.wait_ready(timeout=30)
    survivor = next(name for name in cluster.names if name != leader)
    config = cluster.client_config()
    survivor_channel = config.aio_channel(cluster.client_url(survivor))
    async with survivor_channel:
        kv = rpc_pb2_grpc.KVStub(survivor_channel)
        start = (await kv.Range(rpc_pb2.RangeRequest(key=prefix), timeout=5)).header.revision + 1
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=prefix, range_end=prefix[:-1] + bytes([prefix[-1] + 1]), start_revision=start))
        call = rpc_pb2_grpc.WatchStub(survivor_channel).Watch(iter([create]))
        created = await call.read()
        assert created.created and created.header.revision > 0
        seen: list[tuple[int, bytes]] = []
        collector = asyncio.create_task(_collect(call, seen))

        acked: dict[int, bytes] = {}
        for i in range(30):
            if i == 10:
                await asyncio.to_thread(cluster.kill_member, leader)
            value = b"v%d" % i
            acked[await _put_retrying(kv, prefix + b"k%d" % (i % 3), value)] = value
        last = max(acked)
        await asyncio.wait_for(_until(lambda: bool(seen) and seen[-1][0] >= last, collector), timeout=20)
        collector.cancel()
        call.cancel()

        revisions = [revision for revision, _ in seen]
        assert revisions == sorted(set(revisions)), "a revision repeated or went back"
        assert set(acked) <= set(revisions), f"acknowledged writes missing: {sorted(set(acked) - set(revisions))}"
        written = set(acked.values())
        assert all(value in written for _, value in seen), "an event nobody wrote"
        # Nothing in between is missing either: a fresh watch replays the same history.
        replay_call = rpc_pb2_grpc.WatchStub(survivor_channel).Watch(iter([create]))
        replayed: list[tuple[int, bytes]] = []
        replayer = asyncio.create_task(_collect(replay_call, replayed))
        await asyncio.wait_for(_until(lambda: bool(replayed) and replayed[-1][0] >= last, replayer), timeout=20)
        replayer.cancel()
        replay_call.cancel()
        assert replayed == seen


async def _until(condition: object, task: asyncio.Task[None]) -> None:
    """Wait for ``condition()`` to hold, checking whenever the collector progresses (or ends)."""
    assert callable(condition)
    while not condition():
        if task.done():
            task.result()
            assert condition(), "watch stream ended early"
            return
        await asyncio.sleep(0.02)


def test_watch_on_a_follower_survives_a_leader_crash(crash_cluster: LocalCluster) -> None:
    """Writes continue through the election; the watch sees each revision once, in order, none missing."""
    asyncio.run(_crash_scenario(crash_cluster, b"/crash/"))

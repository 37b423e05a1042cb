"""Running out of space, measured against etcd 3.4 on the same machine: the backend quota holds as much
data as etcd's, defragmenting gives the space back as etcd's does, and a full disk is reported as what it
is. Each test prints both implementations' figures side by side."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import grpc.aio
import pytest

from raftkv import errors
from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2, rpc_pb2_grpc

from .conftest import lead

QUOTA = 16 << 20
T = TypeVar("T")
KINDS = ("etcd", "raftkv")


def needs(kind: str) -> None:
    if kind == "etcd" and not shutil.which("etcd"):
        pytest.skip("etcd is missing (Debian package etcd-server)")


def start(base: Path, kind: str, size: int, *extra: str) -> LocalCluster:
    needs(kind)
    cluster = LocalCluster(base, size=size, kind=kind, tls=True, extra_args=list(extra))  # type: ignore[arg-type]
    cluster.start()
    try:
        cluster.wait_ready(timeout=30, all_members=True)
    except BaseException:
        cluster.stop()
        raise
    return cluster


async def fill(channel: grpc.aio.Channel, value_bytes: int, writers: int = 16) -> tuple[list[bytes], str]:
    """Put distinct keys of ``value_bytes`` until a write is refused; returns the acknowledged keys and the
    refusal's text."""
    kv = rpc_pb2_grpc.KVStub(channel)
    acked: list[bytes] = []
    refusal: list[str] = []
    value = os.urandom(value_bytes)

    async def writer(n: int) -> None:
        i = 0
        while not refusal:
            key = b"/fill/%02d/%08d" % (n, i)
            try:
                await kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=20)
            except grpc.aio.AioRpcError as exc:
                refusal.append(f"{exc.code().name}: {exc.details()}")
                return
            acked.append(key)
            i += 1

    await asyncio.gather(*(writer(n) for n in range(writers)))
    return acked, refusal[0]


@pytest.fixture(params=KINDS)
def single(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalCluster]:
    with start(tmp_path / request.param, request.param, 1, f"--quota-backend-bytes={QUOTA}") as cluster:
        yield cluster


FIGURES: dict[tuple[str, int], tuple[float, int]] = {}


@pytest.mark.parametrize("value_bytes", [1 << 10, 64 << 10])
def test_the_quota_holds_what_etcds_holds_and_defrag_gives_the_space_back(
    single: LocalCluster, value_bytes: int
) -> None:
    """A 16 MiB quota: values held until NOSPACE, then everything deleted, compacted and defragmented."""

    async def scenario() -> tuple[float, int]:
        url = single.endpoints[0]
        async with single.client_config([url]).aio_channel(url) as channel:
            kv, maintenance = rpc_pb2_grpc.KVStub(channel), rpc_pb2_grpc.MaintenanceStub(channel)
            # Few writers in flight, so that neither store overshoots its quota by much more than the other.
            acked, refusal = await fill(channel, value_bytes, writers=max(1, (8 << 10) // value_bytes))
            assert refusal == "RESOURCE_EXHAUSTED: etcdserver: mvcc: database space exceeded"
            for _ in range(100):  # the alarm is raised through the log, just after the refusal
                alarms = await maintenance.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET), timeout=5)
                if alarms.alarms:
                    break
                await asyncio.sleep(0.05)
            assert [a.alarm for a in alarms.alarms] == [rpc_pb2.NOSPACE]
            held = await kv.Range(rpc_pb2.RangeRequest(key=b"/fill/", range_end=b"/fill0", count_only=True), timeout=10)
            assert held.count >= len(acked)  # every acknowledged write is there (and maybe some refused late)
            deleted = await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"/fill/", range_end=b"/fill0"), timeout=60)
            await kv.Compact(rpc_pb2.CompactionRequest(revision=deleted.header.revision, physical=True), timeout=60)
            await maintenance.Defragment(rpc_pb2.DefragmentRequest(), timeout=120)
            status = await maintenance.Status(rpc_pb2.StatusRequest(), timeout=5)
            await maintenance.Alarm(rpc_pb2.AlarmRequest(
                action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=alarms.alarms[0].memberID, alarm=rpc_pb2.NOSPACE))
            await kv.Put(rpc_pb2.PutRequest(key=b"after", value=b"disarmed"), timeout=10)
            return held.count * value_bytes / 2**20, status.dbSize

    held_mib, defragged = asyncio.run(scenario())
    FIGURES[(single.kind, value_bytes)] = (held_mib, defragged)
    print(f"\n{single.kind}: 16 MiB quota, {value_bytes // 1024} KiB values: {held_mib:.1f} MiB held; "
          f"{defragged / 1024:.0f} KiB after delete, compact and defrag")
    if single.kind == "raftkv":
        assert held_mib <= QUOTA / 2**20 * 1.05  # writes in flight when the quota filled may overshoot it
        assert defragged <= 64 << 10
        reference = FIGURES.get(("etcd", value_bytes))
        if reference is not None:
            print(f"side by side: raftkv {held_mib:.1f} MiB / etcd {reference[0]:.1f} MiB held; "
                  f"raftkv {defragged / 1024:.0f} KiB / etcd {reference[1] / 1024:.0f} KiB after defrag")
            # etcd checks the quota before each write, so it can end past it (15.1–17.7 MiB seen with 64 KiB
            # values): raftkv must hold nearly as much as etcd, up to the quota itself.
            assert held_mib >= 0.9 * min(reference[0], QUOTA / 2**20)


def _mount_tmpfs(path: Path, size: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
@pytest.mark.parametrize("role", ["follower", "leader"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_full_disk_is_reported_as_no_space_and_loses_nothing(kind: str, role: str, tmp_path: Path) -> None:
    """n3 keeps its data on a filesystem far smaller than what is written: it stops saying why, the other
    two (electing a new leader when n3 led) keep every acknowledged write and go on serving, and a write that
    failed meanwhile was answered with one of etcd's errors. etcd preallocates 64 MiB WAL files, so its
    filesystem is larger."""
    needs(kind)
    base = tmp_path / kind
    data = base / "n3" / "data"
    _mount_tmpfs(data, (160 if kind == "etcd" else 32) << 20)
    try:
        with start(base, kind, 3) as cluster:
            lead(cluster, "n3" if role == "leader" else "n1")
            acked, refused = asyncio.run(_write_until_stopped(cluster, "n3"))
            log = cluster.log_path("n3").read_text(errors="replace")
            said = [line for line in log.splitlines() if "no space left on device" in line][-1:]
            print(f"\n{kind}: the {role} n3 stopped after {len(acked)} acknowledged writes of 256 KiB; it said: "
                  f"{said}; writes that failed meanwhile: {dict(refused)}")
            assert said, log[-2000:]
            assert "Input/output error" not in log
            assert sorted(cluster.running()) == ["n1", "n2"]
            # A write in flight when n3 stopped has an unknown outcome; its client is told so in etcd's words.
            assert all(text.split(": ", 1)[1] in errors.BY_MESSAGE for text in refused), refused
            # When n3 led, n1 and n2 elect a new leader now: each must know it before it is asked to read or
            # write (until then each answers "etcdserver: no leader", which a client retries).
            for name in ("n1", "n2"):
                cluster.wait_member_ready(name, 30)
            lost = asyncio.run(_missing(cluster, acked))
            assert not lost, f"{len(lost)} acknowledged writes lost"
            assert cluster.wait_ready(timeout=30) in ("n1", "n2")
            asyncio.run(_put_through_each(cluster, ["n1", "n2"]))  # the two carry on as a cluster
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


async def _write_until_stopped(cluster: LocalCluster, victim: str) -> tuple[list[bytes], Counter[str]]:
    """256 KiB puts through the other members until ``victim`` has stopped. Writes refused meanwhile, while
    the cluster notices, are not acknowledged: they are counted by what the client was told."""
    urls = [cluster.client_url(n) for n in cluster.names if n != victim]
    value = os.urandom(256 << 10)
    acked: list[bytes] = []
    refused: Counter[str] = Counter()
    async with cluster.client_config(urls).aio_channel(urls[0]) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        for i in range(2000):
            if i % 8 == 0 and not cluster.is_running(victim):
                return acked, refused
            key = b"/fill/%06d" % i
            try:
                await kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=20)
            except grpc.aio.AioRpcError as exc:
                refused[f"{exc.code().name}: {exc.details()}"] += 1
                continue
            acked.append(key)
    raise AssertionError(f"{victim} still runs after {len(acked)} writes of 256 KiB")


async def _while_the_leader_settles(call: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """``call()``, again while it is answered UNAVAILABLE ("leader changed", "no leader"), as etcd's clients
    retry it. Just after n3 dies the two others may hold more than one election, and etcd 3.4 answers the
    first linearizable read after a leader change "leader changed" (etcd-io/etcd#13351, fixed in 3.5)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _put_through_each(cluster: LocalCluster, names: list[str]) -> None:
    for name in names:
        url = cluster.client_url(name)
        async with cluster.client_config([url]).aio_channel(url) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            await _while_the_leader_settles(
                lambda: kv.Put(rpc_pb2.PutRequest(key=b"/after/" + name.encode(), value=b"ok"), timeout=20))


async def _missing(cluster: LocalCluster, keys: list[bytes]) -> list[bytes]:
    url = cluster.client_url("n1")
    async with cluster.client_config([url]).aio_channel(url) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        held = await _while_the_leader_settles(
            lambda: kv.Range(rpc_pb2.RangeRequest(key=b"/fill/", range_end=b"/fill0", keys_only=True), timeout=30))
    present = {kv.key for kv in held.kvs}
    return [k for k in keys if k not in present]

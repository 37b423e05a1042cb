"""Watchers that never read cost the member neither its memory nor its leadership.

200 watches from revision 1 over a few MiB of history, whose client never reads a reply: before bounded,
reader-paced replay, each one copied the whole history into the member's memory at creation (6.9 GiB for
20 MiB of history) and reading it held the event loop long enough to lose the leadership.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc.aio

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2, rpc_pb2_grpc

from .conftest import metric, wait_for

WATCHERS = 200
HISTORY_BYTES = 6 << 20
VALUE_BYTES = 8 << 10
CHANNELS = 4


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


async def _write_history(kv: rpc_pb2_grpc.KVStub) -> None:
    value = b"h" * VALUE_BYTES
    count = HISTORY_BYTES // VALUE_BYTES

    async def writer(first: int) -> None:
        for i in range(first, count, 8):
            await kv.Put(rpc_pb2.PutRequest(key=b"/slow/%05d" % i, value=value), timeout=30)

    await asyncio.gather(*(writer(i) for i in range(8)))


async def _never_read(stub: rpc_pb2_grpc.WatchStub, opened: list[grpc.aio.StreamStreamCall]) -> None:
    async def requests() -> AsyncIterator[rpc_pb2.WatchRequest]:
        yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"/slow/", range_end=b"/slow0", start_revision=1, prev_kv=True))
        await asyncio.Event().wait()  # keep the stream open; never read a reply

    opened.append(stub.Watch(requests()))


async def _put_latencies(kv: rpc_pb2_grpc.KVStub, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def writer(n: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            started = time.monotonic()
            await kv.Put(rpc_pb2.PutRequest(key=b"/live/%d/%d" % (n, i), value=b"v"), timeout=5)
            latencies.append(time.monotonic() - started)
            i += 1

    await asyncio.gather(*(writer(n) for n in range(4)))
    return latencies


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def test_200_watchers_from_revision_1_that_never_read(cluster: LocalCluster) -> None:
    leader = cluster.wait_ready()
    pid = cluster.pid(leader)
    assert pid is not None

    async def scenario() -> tuple[list[float], list[float], int]:
        url = cluster.client_url(leader)
        config = cluster.client_config([url])
        channels = [config.aio_channel(url) for _ in range(CHANNELS + 1)]
        try:
            kv = rpc_pb2_grpc.KVStub(channels[0])
            await _write_history(kv)
            baseline = await _put_latencies(kv, seconds=4)
            # Watchers not ours: the registry page (/ui) of each member keeps a watch open on its member.
            others = int(metric(cluster, leader, "raftkv_watchers"))
            opened: list[grpc.aio.StreamStreamCall] = []
            for i in range(WATCHERS):
                await _never_read(rpc_pb2_grpc.WatchStub(channels[1 + i % CHANNELS]), opened)
            await asyncio.to_thread(
                wait_for, lambda: metric(cluster, leader, "raftkv_watchers") >= others + WATCHERS, 30, "the watchers"
            )
            replayed_before = metric(cluster, leader, "raftkv_watch_replayed_bytes_total")
            latencies = await _put_latencies(kv, seconds=8)
            watchers = int(metric(cluster, leader, "raftkv_watchers")) - others
            replayed = metric(cluster, leader, "raftkv_watch_replayed_bytes_total")
            print(f"\nhistory replayed to the unread watchers: {replayed_before / 2**20:.0f} MiB when the puts "
                  f"began, {replayed / 2**20:.0f} MiB after them (of {WATCHERS * HISTORY_BYTES / 2**20:.0f} MiB); "
                  f"{others} other watchers on the leader")
            # Paced by the reader: only what gRPC's flow control windows took was read, not all of it.
            assert replayed < WATCHERS * HISTORY_BYTES / 2
            for call in opened:
                call.cancel()
            return baseline, latencies, watchers
        finally:
            for channel in channels:
                await channel.close()

    baseline, latencies, watchers = asyncio.run(scenario())
    # None was dropped (``>=``: a member's /ui page may open its own watch after ``others`` was read).
    assert watchers >= WATCHERS, f"the leader serves {watchers} of the {WATCHERS} watchers"
    p99, alone = percentile(latencies, 0.99), percentile(baseline, 0.99)
    rss = peak_rss_bytes(pid)
    print(f"\nputs: p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms beside {WATCHERS} unread "
          f"watchers ({len(latencies)} puts); p50 {percentile(baseline, 0.5) * 1000:.1f} ms, p99 {alone * 1000:.1f} ms "
          f"before them; leader peak RSS {rss / 2**20:.0f} MiB")
    assert rss < 1 << 30, f"leader peak RSS {rss / 2**20:.0f} MiB"
    # The floor is 100 ms; a machine so loaded that puts alone miss it is judged against puts alone. Past
    # two runnable processes per core the two samples, taken seconds apart, measure the neighbours rather
    # than the watchers: the figure is printed, the memory and leadership checks still hold.
    load = os.getloadavg()[0]
    if load <= 2 * (os.cpu_count() or 1):
        assert p99 < max(0.1, 2 * alone), f"put p99 {p99 * 1000:.0f} ms beside the watchers, {alone * 1000:.0f} ms before"
    else:
        print(f"put p99 not judged: load average {load:.0f} on {os.cpu_count()} cores")
    assert cluster.wait_ready(timeout=30) == leader, "the leader lost its leadership"
    assert metric(cluster, leader, "raftkv_leader_changes_seen_total") == 1

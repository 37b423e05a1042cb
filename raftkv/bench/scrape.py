"""Reads each member's fsync and CPU counters from its Prometheus metrics endpoint (``--listen-metrics-urls``).

raftkv counts its synchronous disk writes (``raftkv_fsyncs_total``: an fdatasync per LMDB commit, one more
per commit that must be durable; ``raftkv/storage/README.md``). etcd has no single counter; its closest
equivalent is the number of WAL fsyncs (one fdatasync per Raft ``Ready`` that carries entries or a hard
state), the histogram count ``etcd_disk_wal_fsync_duration_seconds_count``; it leaves out the backend's
batched commits (two fdatasyncs each, at most every 100 ms).
Both export the standard ``process_cpu_seconds_total``. CPU per request is the figure that stays steady
when a shared machine's throughput drifts from run to run, so it is what shows whether a change saved work.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

FSYNC_METRICS = ("raftkv_fsyncs_total", "etcd_disk_wal_fsync_duration_seconds_count")
CPU_METRIC = "process_cpu_seconds_total"
#: raftkv's client-port relay runs in a process of its own; its CPU is part of what a request costs.
RELAY_CPU_METRIC = "raftkv_client_relay_cpu_seconds_total"


@dataclass(frozen=True)
class MemberCounters:
    fsyncs: float
    cpu_seconds: float  # the member's own process and its relay's
    relay_cpu_seconds: float = 0.0


def member_counters(metrics_url: str, timeout: float = 2.0) -> MemberCounters:
    """The member's counters; raises ``LookupError`` if the endpoint does not export them."""
    with urllib.request.urlopen(f"{metrics_url.rstrip('/')}/metrics", timeout=timeout) as answer:
        text = answer.read().decode()
    values = dict(line.partition(" ")[::2] for line in text.splitlines() if not line.startswith("#"))
    fsyncs = next((values[name] for name in FSYNC_METRICS if name in values), None)
    if fsyncs is None or CPU_METRIC not in values:
        raise LookupError(f"{metrics_url} does not export {CPU_METRIC} and one of {', '.join(FSYNC_METRICS)}")
    relay = float(values.get(RELAY_CPU_METRIC, 0.0))
    return MemberCounters(float(fsyncs), float(values[CPU_METRIC]) + relay, relay)


@dataclass(frozen=True)
class ClusterUsage:
    """What the cluster spent during one run, per second of it and per successful request."""

    fsyncs_per_s: float
    busiest_cpu_us_per_op: float  # the member that spent most, normally the leader
    total_cpu_us_per_op: float  # every member together
    relay_cpu_us_per_op: float = 0.0  # the part of the total spent by client-port relays


def cluster_counters(metrics_urls: Sequence[str]) -> list[MemberCounters]:
    return [member_counters(url) for url in metrics_urls]


def usage(before: Sequence[MemberCounters], after: Sequence[MemberCounters], elapsed: float, ops: int) -> ClusterUsage:
    cpu = [b.cpu_seconds - a.cpu_seconds for a, b in zip(before, after, strict=True)]
    per_op = 1e6 / max(ops, 1)
    fsyncs = sum(b.fsyncs - a.fsyncs for a, b in zip(before, after, strict=True))
    relay = sum(b.relay_cpu_seconds - a.relay_cpu_seconds for a, b in zip(before, after, strict=True))
    return ClusterUsage(fsyncs / elapsed, max(cpu) * per_op, sum(cpu) * per_op, relay * per_op)

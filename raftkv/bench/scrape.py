"""Reads each member's fsync counter from its Prometheus metrics endpoint (``--listen-metrics-urls``).

raftkv counts LMDB write commits (``raftkv_fsyncs_total``: every commit is one durability point). etcd
has no single counter; its closest equivalent is the number of WAL fsyncs (one per Raft ``Ready`` that
carries entries or a hard state), the histogram count ``etcd_disk_wal_fsync_duration_seconds_count``.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Sequence

FSYNC_METRICS = ("raftkv_fsyncs_total", "etcd_disk_wal_fsync_duration_seconds_count")


def fsync_count(metrics_url: str, timeout: float = 2.0) -> float:
    """The member's fsync counter; raises ``LookupError`` if the endpoint exports none."""
    with urllib.request.urlopen(f"{metrics_url.rstrip('/')}/metrics", timeout=timeout) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in FSYNC_METRICS:
            return float(value)
    raise LookupError(f"{metrics_url} exports none of {', '.join(FSYNC_METRICS)}")


def cluster_fsyncs(metrics_urls: Sequence[str]) -> float:
    """Sum of every member's counter: the whole cluster's fsyncs."""
    return sum(fsync_count(url) for url in metrics_urls)

"""etcd's error texts come back as typed exceptions."""

from __future__ import annotations

import pytest

from raftkv.client import (
    Client,
    CompactedError,
    FutureRevisionError,
    LeaseNotFound,
    RequestTooLarge,
    TimeoutError,
    Unavailable,
)
from raftkv.testing import ClusterHandle


def test_compacted_and_future_revisions(client: Client, prefix: str) -> None:
    old = client.put(prefix + "k", "1").revision
    latest = client.put(prefix + "k", "2").revision
    client.compact(latest)
    with pytest.raises(CompactedError):
        client.get(prefix + "k", revision=old)
    with pytest.raises(FutureRevisionError):
        client.get(prefix + "k", revision=latest + 1000)


def test_unknown_lease(client: Client) -> None:
    with pytest.raises(LeaseNotFound):
        client.lease_revoke(0x1234)
    with pytest.raises(LeaseNotFound):
        client.lease_keep_alive_once(0x1234)


def test_request_too_large(client: Client, prefix: str) -> None:
    with pytest.raises(RequestTooLarge):
        client.put(prefix + "big", b"x" * (2 * 1024 * 1024))


def test_unreachable_cluster_times_out_within_the_deadline(cluster: ClusterHandle) -> None:
    with cluster.client(endpoints=["https://127.0.0.1:1"], timeout=0.5) as dead:
        with pytest.raises((TimeoutError, Unavailable)):
            dead.get("k")

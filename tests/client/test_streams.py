"""Watches, leases and failover against a live cluster, including killed members."""

from __future__ import annotations

import asyncio
import time

from raftkv.client import Client
from raftkv.client.ops import put, value
from raftkv.testing import ClusterHandle


def member_of(cluster: ClusterHandle, endpoint: str) -> str:
    return next(n for n in cluster.names if cluster.cluster.client_url(n) == endpoint)


def test_watch_resumes_on_another_member_without_gaps_or_duplicates(cluster: ClusterHandle, prefix: str) -> None:
    with cluster.client() as watcher, cluster.client() as writer:
        watch = watcher.watch(prefix, prefix=True)
        written = [writer.put(f"{prefix}{i}", str(i)).revision for i in range(5)]
        victim = member_of(cluster, watch._state.endpoint)
        cluster.kill(victim)
        cluster.leader()  # writes below must not race an election (etcd cannot dedupe a retried write)
        written += [writer.put(f"{prefix}{i}", str(i)).revision for i in range(5, 10)]
        seen = [next(watch) for _ in written]
        assert [e.revision for e in seen] == written
        assert [e.kv.value for e in seen] == [str(i).encode() for i in range(10)]
        assert watch._state.endpoint != cluster.cluster.client_url(victim)
        watch.cancel()
    cluster.restart(victim)


def test_watch_from_a_past_revision_replays_with_prev_kv(client: Client, prefix: str) -> None:
    start = client.put(prefix + "k", "a").revision
    client.put(prefix + "k", "b")
    client.delete(prefix + "k")
    with client.watch(prefix + "k", start_revision=start, prev_kv=True) as watch:
        events = [next(watch) for _ in range(3)]
    assert [e.type.value for e in events] == ["PUT", "PUT", "DELETE"]
    assert events[2].prev_kv is not None and events[2].prev_kv.value == b"b"


def test_writes_fail_over_when_the_leader_dies(cluster: ClusterHandle, prefix: str) -> None:
    # An identical put applied twice leaves the same value, so retrying ambiguous failures is harmless
    # here even on a server that does not deduplicate.
    with cluster.client(server_dedupes=True, timeout=15) as client:
        client.put(prefix + "k", "before")
        victim = cluster.kill()
        client.put(prefix + "k", "after")
        assert client.get(prefix + "k").value == b"after"  # type: ignore[union-attr]
    cluster.restart(victim)


def test_keep_alive_keeps_a_lease_and_revoke_deletes_its_keys(client: Client, prefix: str) -> None:
    lease = client.lease_grant(2)
    client.put(prefix + "k", "v", lease=lease.id)
    with lease.keep_alive() as keeper:
        deadline = time.monotonic() + 2 * lease.ttl  # twice the TTL: without refreshes the key would be gone
        while time.monotonic() < deadline:
            assert client.get(prefix + "k") is not None
            time.sleep(0.2)
        assert not keeper.lost.is_set()
    info = lease.time_to_live(keys=True)
    assert info.keys == [(prefix + "k").encode()] and info.ttl > 0
    lease.revoke()
    assert client.get(prefix + "k") is None
    assert lease.id not in client.leases()


def test_async_client_round_trip(cluster: ClusterHandle, prefix: str) -> None:
    async def scenario() -> None:
        async with cluster.async_client() as client:
            watch = await client.watch(prefix, prefix=True)
            put_rev = (await client.put(prefix + "k", "v1")).revision
            assert (await client.get(prefix + "k")).value == b"v1"  # type: ignore[union-attr]
            txn = client.txn().if_(value(prefix + "k") == "v1").then(put(prefix + "k", "v2"))
            assert (await txn.commit()).succeeded
            events = [await watch.__anext__() for _ in range(2)]
            assert [e.revision for e in events] == [put_rev, put_rev + 1]
            watch.cancel()
            lease = await client.lease_grant(5)
            async with lease.keep_alive():
                assert await client.put_if_absent(prefix + "leased", "x", lease=lease.id)
            await lease.revoke()
            assert await client.get(prefix + "leased") is None
            assert len(await client.member_list()) == len(cluster.names)

    asyncio.run(scenario())

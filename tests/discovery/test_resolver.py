"""The resolver against a real cluster: listing + watch across a leader kill, re-list after compaction,
static stability while raftkv is down."""

from __future__ import annotations

import asyncio

from raftkv.client import Client, CompactedError
from raftkv.discovery import ChangeKind, Resolver, aio, instance_key, record, register, resolve
from raftkv.testing import ClusterHandle
from tests.discovery.conftest import eventually


def put_instance(client: Client, service: str, addr: str, lease: int = 0) -> None:
    client.put(instance_key(service, addr), record.encode(addr), lease=lease)


def test_lists_then_follows_changes_across_a_leader_kill(cluster: ClusterHandle, client: Client, service: str) -> None:
    put_instance(client, service, "127.0.0.1:1001")
    client.put(f"/services/{service}x/127.0.0.1:9", record.encode("127.0.0.1:9"))  # a prefix sibling: not ours
    seen: list[tuple[str, str]] = []
    with cluster.client() as rc, resolve(service, client=rc) as resolver:
        resolver.subscribe(lambda changes, _: seen.extend((c.kind.value, c.instance.addr) for c in changes))
        assert set(resolver.instances) == {"127.0.0.1:1001"}
        put_instance(client, service, "127.0.0.1:1002")
        eventually(lambda: len(resolver.instances) == 2, 10, "the second instance")
        victim = cluster.kill()
        try:
            with register(service, "127.0.0.1:1003", client=client):
                eventually(lambda: "127.0.0.1:1003" in resolver.instances, 15, "an instance added after the kill")
                client.delete(instance_key(service, "127.0.0.1:1001"))
                eventually(lambda: "127.0.0.1:1001" not in resolver.instances, 10, "a removal after the kill")
            eventually(lambda: "127.0.0.1:1003" not in resolver.instances, 10, "the revoked registration gone")
        finally:
            cluster.restart(victim)
        assert seen == [("added", "127.0.0.1:1001"), ("added", "127.0.0.1:1002"), ("added", "127.0.0.1:1003"),
                        ("removed", "127.0.0.1:1001"), ("removed", "127.0.0.1:1003")]
        assert resolver.relists == 0


def test_a_compacted_watch_lists_again_and_reports_only_the_differences(cluster: ClusterHandle, client: Client,
                                                                       service: str) -> None:
    put_instance(client, service, "127.0.0.1:2001")
    put_instance(client, service, "127.0.0.1:2002")
    url = cluster.cluster.client_url
    changes: list[tuple[ChangeKind, str]] = []
    with cluster.client() as rc:
        resolver = Resolver(service, client=rc, watch_reconnect=120).start()
        eventually(lambda: resolver._watch is not None, 10, "the resolver's watch")
        on = resolver._watch._state.endpoint
        stalled = next(n for n in cluster.names if url(n) == on)
        try:
            resolver.subscribe(lambda cs, _: changes.extend((c.kind, c.instance.addr) for c in cs))
            changes.clear()
            # Stall the member the watch is on, so the watch neither fails nor hears of what follows.
            cluster.cluster.pause_member(stalled)
            others = [url(n) for n in cluster.names if n != stalled]
            try:
                with cluster.client(others) as writer:
                    writer.delete(instance_key(service, "127.0.0.1:2001"))
                    put_instance(writer, service, "127.0.0.1:2003")
                    rev = writer.put(f"/{service}-filler", "x").revision
                    writer.compact(rev)
                    for member in others:  # every member the watch may resume on has compacted
                        with cluster.client([member]) as probe:
                            eventually(lambda: compacted(probe, rev - 1), 20, f"compaction on {member}")
            finally:
                cluster.kill(stalled)  # the stream breaks; the watch resumes elsewhere, behind the compaction
            eventually(lambda: resolver.relists >= 1, 30, "a re-list after the compacted watch")
            eventually(lambda: set(resolver.instances) == {"127.0.0.1:2002", "127.0.0.1:2003"}, 10,
                       "the instances after the re-list")
            assert sorted(changes, key=lambda c: c[1]) == [(ChangeKind.REMOVED, "127.0.0.1:2001"),
                                                          (ChangeKind.ADDED, "127.0.0.1:2003")]
        finally:
            resolver.stop()
            cluster.restart(stalled)


def compacted(client: Client, revision: int) -> bool:
    try:
        client.get("/any", revision=revision, serializable=True)
    except CompactedError:
        return True
    return False


def test_static_stability_the_last_known_set_stays_while_raftkv_is_down(cluster: ClusterHandle, client: Client,
                                                                        service: str) -> None:
    put_instance(client, service, "127.0.0.1:3001")
    put_instance(client, service, "127.0.0.1:3002")
    with cluster.client(timeout=1.0) as rc, resolve(service, client=rc) as resolver:
        assert len(resolver.instances) == 2
        killed = [cluster.kill(n) for n in cluster.names]
        try:
            eventually(lambda: resolver.stale_since is not None, 60, "the resolver noticing the outage")
            assert set(resolver.instances) == {"127.0.0.1:3001", "127.0.0.1:3002"}  # nothing emptied
        finally:
            cluster.restart_all()
        assert killed
        with cluster.client() as c2:
            put_instance(c2, service, "127.0.0.1:3003")
        eventually(lambda: len(resolver.instances) == 3 and resolver.stale_since is None, 30,
                   "the resolver back in touch")


def test_async_resolver_twin(cluster: ClusterHandle, client: Client, service: str) -> None:
    put_instance(client, service, "127.0.0.1:4001")

    async def scenario() -> None:
        async with cluster.async_client() as c:
            resolver = await aio.resolve(service, client=c)
            try:
                assert set(resolver.instances) == {"127.0.0.1:4001"}
                await c.put(instance_key(service, "127.0.0.1:4002"), record.encode("127.0.0.1:4002"))
                for _ in range(500):
                    if len(resolver.instances) == 2:
                        break
                    await asyncio.sleep(0.02)
                assert len(resolver.instances) == 2
            finally:
                await resolver.stop()

    asyncio.run(scenario())


def test_wait_synced_tells_an_empty_first_listing_from_none_yet(client: Client, service: str) -> None:
    resolver = Resolver(service, client=client).start(wait=None)
    try:
        assert resolver.wait_synced(30) and resolver.instances == {}
    finally:
        resolver.stop()
    with Client("127.0.0.1:1", insecure=True, timeout=0.5) as nowhere:
        resolver = Resolver(service, client=nowhere).start(wait=None)
        try:
            assert not resolver.wait_synced(0.3)
            assert resolver._thread.is_alive()  # running out of time did not stop it
        finally:
            resolver.stop()


def test_async_wait_synced(cluster: ClusterHandle, service: str) -> None:
    async def scenario() -> None:
        async with cluster.async_client() as c:
            resolver = await aio.resolve(service, client=c, wait=None)
            try:
                assert await resolver.wait_synced(30) and resolver.instances == {}
            finally:
                await resolver.stop()

    asyncio.run(scenario())

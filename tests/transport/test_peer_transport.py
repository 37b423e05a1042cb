"""PeerTransport over real loopback gRPC with real mutual TLS: delivery, reconnection, refusal, snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from peer_helpers import FileSnapshots, Inbox, app, eventually, make_transport, running

from raftkv.core.types import ConfState, Entry, Message, MessageType, SnapshotMeta
from raftkv.proto import raft_pb2, raft_pb2_grpc
from raftkv.security.certs import ClusterCerts, init_cluster_certs
from raftkv.security.tls import TLSFiles, channel_credentials
from raftkv.transport.codec import message_to_pb
from raftkv.transport.peer import PeerTransport

pytestmark = pytest.mark.timeout(60)


def test_batches_delivered_in_order(certs: ClusterCerts, tmp_path: Path) -> None:
    async def scenario() -> None:
        inbox1, inbox2 = Inbox(), Inbox()
        t1 = make_transport(1, certs.peers["n1"], inbox1, FileSnapshots(tmp_path))
        t2 = make_transport(2, certs.peers["n2"], inbox2, FileSnapshots(tmp_path))
        async with running(t1, t2):
            t1.set_peer(2, f"127.0.0.1:{t2.port}")
            t2.set_peer(1, f"127.0.0.1:{t1.port}")
            total = 3000
            for start in range(1, total + 1, 500):  # several send() calls, many messages each
                t1.send([app(2, 1, i) for i in range(start, start + 500)])
            t2.send([Message(MessageType.APP_RESP, to=1, sender=2, term=1, index=total)])
            await eventually(lambda: len(inbox2.messages) == total, what="all messages delivered")
            assert [m.entries[0].index for m in inbox2.messages] == list(range(1, total + 1))
            assert len(inbox2.deliveries) < total / 10, "messages were not batched"
            await eventually(lambda: len(inbox1.messages) == 1, what="the reply")
            assert inbox1.messages[0].type == MessageType.APP_RESP
            assert t1.dropped(2) == 0 and not inbox1.unreachable

    asyncio.run(scenario())


def test_full_queue_drops_and_counts(certs: ClusterCerts, tmp_path: Path) -> None:
    async def scenario() -> None:
        t1 = make_transport(1, certs.peers["n1"], Inbox(), FileSnapshots(tmp_path), queue_limit=10)
        t1.set_peer(2, "127.0.0.1:1")  # never started: nothing drains the queue
        t1.send([app(2, 1, i) for i in range(1, 16)] + [app(9, 1, 1)])
        assert t1.dropped(2) == 5
        assert t1.dropped_unknown_peer == 1

    asyncio.run(scenario())


def test_reconnects_after_receiver_restarts(certs: ClusterCerts, tmp_path: Path) -> None:
    async def scenario() -> None:
        inbox1, inbox2 = Inbox(), Inbox()
        t1 = make_transport(1, certs.peers["n1"], inbox1, FileSnapshots(tmp_path))
        t2 = make_transport(2, certs.peers["n2"], inbox2, FileSnapshots(tmp_path))
        await t1.start()
        await t2.start()
        port = t2.port
        t1.set_peer(2, f"127.0.0.1:{port}")
        t2.set_peer(1, f"127.0.0.1:{t1.port}")
        t1.send([app(2, 1, 1)])
        await eventually(lambda: len(inbox2.messages) == 1, what="first delivery")
        await t2.stop(grace=None)

        restarted = Inbox()
        t2 = make_transport(2, certs.peers["n2"], restarted, FileSnapshots(tmp_path), port=port)
        t2.set_peer(1, f"127.0.0.1:{t1.port}")
        try:
            # Raft keeps sending (heartbeats); the transport must find the new server on its own.
            async def keep_sending() -> None:
                index = 2
                while True:
                    t1.send([app(2, 1, index)])
                    index += 1
                    await asyncio.sleep(0.02)

            sender = asyncio.create_task(keep_sending())
            await eventually(lambda: 2 in inbox1.unreachable, what="the outage to be reported")
            await t2.start()
            await eventually(lambda: len(restarted.messages) > 0, what="delivery after restart")
            sender.cancel()
            indices = [m.entries[0].index for m in restarted.messages]
            assert indices == sorted(indices)
        finally:
            await t1.stop()
            await t2.stop()

    asyncio.run(scenario())


def test_peer_with_certificate_from_another_ca_is_refused(
    certs: ClusterCerts, foreign_certs: ClusterCerts, tmp_path: Path
) -> None:
    async def scenario() -> None:
        inbox2, inbox3 = Inbox(), Inbox()
        t2 = make_transport(2, certs.peers["n2"], inbox2, FileSnapshots(tmp_path))
        t3 = make_transport(3, foreign_certs.peers["n3"], inbox3, FileSnapshots(tmp_path))
        async with running(t2, t3):
            t3.set_peer(2, f"127.0.0.1:{t2.port}")
            t3.send([app(2, 3, 1)])
            await eventually(lambda: 2 in inbox3.unreachable, what="the stranger's send to fail")
            t2.set_peer(3, f"127.0.0.1:{t3.port}")
            t2.send([app(3, 2, 1)])
            await eventually(lambda: 3 in inbox2.unreachable, what="our send to the stranger to fail")
            assert not inbox2.messages and not inbox3.messages

    asyncio.run(scenario())


def test_plaintext_and_wrong_cluster_are_refused(certs: ClusterCerts, tmp_path: Path) -> None:
    async def scenario() -> None:
        inbox2, plain_inbox, other_inbox = Inbox(), Inbox(), Inbox()
        t2 = make_transport(2, certs.peers["n2"], inbox2, FileSnapshots(tmp_path))
        plain = make_transport(1, None, plain_inbox, FileSnapshots(tmp_path))
        other = make_transport(3, certs.peers["n3"], other_inbox, FileSnapshots(tmp_path), cluster_id=0xBAD)
        async with running(t2, plain, other):
            for sender in (plain, other):
                sender.set_peer(2, f"127.0.0.1:{t2.port}")
                sender.send([app(2, sender.node_id, 1)])
            await eventually(lambda: 2 in plain_inbox.unreachable, what="the plaintext send to fail")
            await eventually(lambda: 2 in other_inbox.unreachable, what="the other cluster's send to fail")
            assert not inbox2.messages

    asyncio.run(scenario())


def test_messages_for_another_member_are_dropped(certs: ClusterCerts, tmp_path: Path) -> None:
    async def scenario() -> None:
        inbox2 = Inbox()
        t2 = make_transport(2, certs.peers["n2"], inbox2, FileSnapshots(tmp_path))
        async with running(t2):
            t2.set_peer(1, "127.0.0.1:1", "n1")
            creds = channel_credentials(certs.peers["n1"])
            async with grpc.aio.secure_channel(f"127.0.0.1:{t2.port}", creds) as channel:
                call = raft_pb2_grpc.RaftPeerStub(channel).Stream()
                batch = raft_pb2.MessageBatch(
                    cluster_id=0xC1, sender=1, to=2, messages=[message_to_pb(app(3, 1, 1)), message_to_pb(app(2, 1, 2))]
                )
                await call.write(batch)
                await call.done_writing()
                await call
            assert [m.entries[0].index for m in inbox2.messages] == [2]

    asyncio.run(scenario())


def test_garbage_on_the_port_leaves_the_server_serving(certs: ClusterCerts, tmp_path: Path) -> None:
    async def scenario() -> None:
        inbox1, inbox2 = Inbox(), Inbox()
        t1 = make_transport(1, certs.peers["n1"], inbox1, FileSnapshots(tmp_path))
        t2 = make_transport(2, certs.peers["n2"], inbox2, FileSnapshots(tmp_path))
        async with running(t1, t2):
            for junk in (os.urandom(4096), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(64)):
                reader, writer = await asyncio.open_connection("127.0.0.1", t2.port)
                writer.write(junk)
                await writer.drain()
                await asyncio.wait_for(reader.read(), timeout=10)  # the server closes the connection
                writer.close()
            t1.set_peer(2, f"127.0.0.1:{t2.port}")
            t2.set_peer(1, f"127.0.0.1:{t1.port}")
            t1.send([app(2, 1, 1)])
            await eventually(lambda: len(inbox2.messages) == 1, what="delivery after garbage")

    asyncio.run(scenario())


def test_snapshot_streams_in_chunks(certs: ClusterCerts, tmp_path: Path) -> None:
    async def scenario() -> None:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        source = FileSnapshots(tmp_path / "a", read_piece=3 << 20)  # pieces larger than a chunk get re-cut
        sink = FileSnapshots(tmp_path / "b")
        data = os.urandom(5 << 20) + b"tail"
        (source.root / "snap-42").write_bytes(data)
        inbox1, inbox2 = Inbox(), Inbox()
        t1 = make_transport(1, certs.peers["n1"], inbox1, source)
        t2 = make_transport(2, certs.peers["n2"], inbox2, sink)
        async with running(t1, t2):
            t1.set_peer(2, f"127.0.0.1:{t2.port}")
            t2.set_peer(1, f"127.0.0.1:{t1.port}")
            meta = SnapshotMeta(index=42, term=3, conf_state=ConfState(voters=frozenset({1, 2}), learners=frozenset({5})))
            snap = Message(MessageType.SNAP, to=2, sender=1, term=3, snapshot=meta)
            t1.send([snap])
            await eventually(lambda: inbox1.snapshot_status == [(2, True)], what="snapshot status")
            await eventually(lambda: inbox2.messages == [snap], what="the SNAP message")
            assert (sink.root / "snap-42").read_bytes() == data
            assert sink.committed == [meta] and not sink.aborted
            assert max(sink.write_sizes) <= 1 << 20 and len(sink.write_sizes) >= 6

    asyncio.run(scenario())


def test_failed_snapshot_is_reported_and_not_delivered(certs: ClusterCerts, tmp_path: Path) -> None:
    """A source that fails halfway: the receiver aborts its staging and Raft hears of the failure."""

    sink = FileSnapshots(tmp_path)

    class Failing(FileSnapshots):
        def open(self, meta: SnapshotMeta):  # type: ignore[no-untyped-def]
            yield b"x" * 1000
            assert sink.begun.wait(10), "the receiver never began staging"  # fail mid-transfer, not before
            raise OSError("disk gone")

    async def scenario() -> None:
        inbox1, inbox2 = Inbox(), Inbox()
        t1 = make_transport(1, certs.peers["n1"], inbox1, Failing(tmp_path))
        t2 = make_transport(2, certs.peers["n2"], inbox2, sink)
        async with running(t1, t2):
            t1.set_peer(2, f"127.0.0.1:{t2.port}")
            t2.set_peer(1, f"127.0.0.1:{t1.port}")
            t1.send([Message(MessageType.SNAP, to=2, sender=1, term=1, snapshot=SnapshotMeta(index=7, term=1))])
            await eventually(lambda: inbox1.snapshot_status == [(2, False)], what="failure status")
            await eventually(lambda: len(sink.aborted) == 1, what="receiver to abort")
            assert not inbox2.messages and not sink.committed

    asyncio.run(scenario())


def test_address_change_and_removal(certs: ClusterCerts, tmp_path: Path) -> None:
    async def scenario() -> None:
        inbox1, inbox2 = Inbox(), Inbox()
        t1 = make_transport(1, certs.peers["n1"], inbox1, FileSnapshots(tmp_path))
        t2 = make_transport(2, certs.peers["n2"], inbox2, FileSnapshots(tmp_path))
        t1.set_peer(2, "127.0.0.1:1")  # nothing listens there (set before t1 starts)
        async with running(t2, t1):
            t2.set_peer(1, f"127.0.0.1:{t1.port}")
            t1.send([app(2, 1, 1)])
            await eventually(lambda: 2 in inbox1.unreachable, what="the wrong address to fail")
            t1.set_peer(2, f"127.0.0.1:{t2.port}")
            t1.send([app(2, 1, 2)])
            await eventually(lambda: [m.entries[0].index for m in inbox2.messages] == [2], what="delivery")
            t1.remove_peer(2)
            t1.send([app(2, 1, 3)])
            assert t1.dropped_unknown_peer == 1

    asyncio.run(scenario())


async def _send_as(
    port: int, files: TLSFiles, sender: int, messages: list[Message], address: str = ""
) -> grpc.StatusCode:
    """Open a stream to the member on ``port`` with the certificate ``files``, claiming to be ``sender``
    (dialled back at ``address``, if given)."""
    return (await _stream_as(port, files, sender, messages, address))[0]


async def _stream_as(
    port: int, files: TLSFiles, sender: int, messages: list[Message], address: str = ""
) -> tuple[grpc.StatusCode, str]:
    """``_send_as``, with the status details: why the member refused the stream."""
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials(files)) as channel:
        call = raft_pb2_grpc.RaftPeerStub(channel).Stream()
        try:
            await call.write(raft_pb2.MessageBatch(cluster_id=0xC1, sender=sender, to=2, sender_address=address,
                                                   messages=[message_to_pb(m) for m in messages]))
            await call.done_writing()
            await call
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""


@contextlib.asynccontextmanager
async def _member_n2(
    certs: ClusterCerts, tmp_path: Path, removed: frozenset[int] | set[int] = frozenset()
) -> AsyncIterator[tuple[PeerTransport, Inbox]]:
    """Member 2 (n2) serving, knowing members 1 (n1) and 3 (n3) by name; what it delivers goes to the inbox.
    ``removed``: the members its membership says were removed (read at every check, as the node's)."""
    inbox = Inbox()
    transport = make_transport(2, certs.peers["n2"], inbox, FileSnapshots(tmp_path), name="n2",
                               is_removed=removed.__contains__)
    async with running(transport):
        transport.set_peer(1, "127.0.0.1:1", "n1")
        transport.set_peer(3, "127.0.0.1:1", "n3")
        yield transport, inbox


def test_a_sender_must_be_a_member_speaking_with_its_own_certificate(certs: ClusterCerts, tmp_path: Path) -> None:
    """Peer certificates name their member; one member's certificate cannot speak for another, nor for a
    stranger, and a member not yet named may not use a certificate that names someone else."""
    n4 = init_cluster_certs(certs.ca.parent, ["n4"]).peers["n4"]  # a member added later, same peer CA

    async def scenario() -> None:
        async with _member_n2(certs, tmp_path) as (t2, inbox2):
            t2.set_peer(4, "127.0.0.1:1")  # its name is not known yet
            denied = grpc.StatusCode.PERMISSION_DENIED
            assert await _send_as(t2.port, certs.peers["n3"], 1, [app(2, 1, 1)]) == denied
            assert await _send_as(t2.port, certs.peers["n1"], 9, [app(2, 9, 1)]) == denied
            assert await _send_as(t2.port, certs.peers["n1"], 4, [app(2, 4, 1)]) == denied
            assert await _send_as(t2.port, certs.peers["n2"], 4, [app(2, 4, 1)]) == denied
            assert not inbox2.messages
            assert await _send_as(t2.port, certs.peers["n1"], 1, [app(2, 1, 2), app(2, 3, 3)]) == grpc.StatusCode.OK
            assert await _send_as(t2.port, n4, 4, [app(2, 4, 4)]) == grpc.StatusCode.OK
            # A message claiming another sender inside a member's batch is dropped.
            assert [(m.sender, m.entries[0].index) for m in inbox2.messages] == [(1, 2), (4, 4)]

    asyncio.run(scenario())


def test_a_member_not_known_yet_is_heard_and_answered(certs: ClusterCerts, tmp_path: Path) -> None:
    """n2 was down when n5 joined, and n5 now leads: n2 must hear n5 and answer it to catch up, before it
    has applied n5's addition (the simulator found a member stuck for good without this). A stream that
    says where its sender is dialled is heard, and answered there; one whose certificate is another known
    member's, one without an address, and one from a member n2 was told to remove are still refused."""
    newcomer = init_cluster_certs(certs.ca.parent, ["n5"]).peers["n5"]  # same peer CA, joined later

    async def scenario() -> None:
        inbox5 = Inbox()
        t5 = make_transport(5, newcomer, inbox5, FileSnapshots(tmp_path), name="n5")
        removed: set[int] = set()
        async with _member_n2(certs, tmp_path, removed) as (t2, inbox2), running(t5):
            t5.set_peer(2, f"127.0.0.1:{t2.port}", "n2")
            denied = grpc.StatusCode.PERMISSION_DENIED
            here = f"127.0.0.1:{t5.port}"
            assert await _send_as(t2.port, newcomer, 5, [app(2, 5, 1)]) == denied  # no address: as before
            assert await _send_as(t2.port, certs.peers["n1"], 5, [app(2, 5, 1)], here) == denied  # n1's certificate
            assert not inbox2.messages
            assert await _send_as(t2.port, newcomer, 5, [app(2, 5, 2)], here) == grpc.StatusCode.OK
            assert [(m.sender, m.entries[0].index) for m in inbox2.messages] == [(5, 2)]
            t2.send([Message(MessageType.APP_RESP, to=5, sender=2, term=1, index=2)])
            await eventually(lambda: len(inbox5.messages) == 1, what="n2's answer at n5's address")
            removed.add(5)  # membership, once applied, may remove it again: it is not learned back
            t2.remove_peer(5)
            assert await _send_as(t2.port, newcomer, 5, [app(2, 5, 3)], here) == denied
            assert len(inbox2.messages) == 1

    asyncio.run(scenario())


def test_a_removed_member_is_refused_and_told_so(certs: ClusterCerts, tmp_path: Path) -> None:
    """What the membership says was removed is refused whatever it sends -- a stream that says where it is
    dialled (n2 never knew it, e.g. n2 restarted since the removal), a member n2 still dials, a snapshot --
    with the reason the removed member logs; the others are heard as before."""
    stranger = init_cluster_certs(certs.ca.parent, ["n6"]).peers["n6"]  # same peer CA, removed before n2 started

    async def scenario() -> None:
        async with _member_n2(certs, tmp_path, frozenset({3, 6})) as (t2, inbox2):
            for files, sender in ((stranger, 6), (certs.peers["n3"], 3)):
                assert await _stream_as(t2.port, files, sender, [app(2, sender, 1)], "127.0.0.1:1") == (
                    grpc.StatusCode.PERMISSION_DENIED, f"sender {sender:x} was removed from the cluster")
            chunk = raft_pb2.SnapshotChunk(cluster_id=0xC1, sender=6, to=2, sender_address="127.0.0.1:1")
            async with grpc.aio.secure_channel(f"127.0.0.1:{t2.port}", channel_credentials(stranger)) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await raft_pb2_grpc.RaftPeerStub(channel).Snapshot(iter([chunk]))
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert not inbox2.messages
            assert await _send_as(t2.port, certs.peers["n1"], 1, [app(2, 1, 1)]) == grpc.StatusCode.OK
            assert [m.sender for m in inbox2.messages] == [1]

    asyncio.run(scenario())


def test_a_stream_says_where_its_sender_is_on_its_first_batch_only(
    certs: ClusterCerts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the first batch of a stream carries ``sender_address``: a receiver that does not know the sender
    learns it there, and every later batch on that stream (which carries none) is still heard."""
    newcomer = init_cluster_certs(certs.ca.parent, ["n5"]).peers["n5"]
    addresses: list[str] = []
    check_sender = PeerTransport._check_sender

    def recording(self: PeerTransport, sender: int, names: frozenset[str] | None, address: str = "") -> str | None:
        addresses.append(address)
        return check_sender(self, sender, names, address)

    monkeypatch.setattr(PeerTransport, "_check_sender", recording)

    async def scenario() -> None:
        t5 = make_transport(5, newcomer, Inbox(), FileSnapshots(tmp_path), name="n5", advertise_address="127.0.0.1:1")
        async with _member_n2(certs, tmp_path) as (t2, inbox2), running(t5):
            t5.set_peer(2, f"127.0.0.1:{t2.port}", "n2")
            for index in (1, 2, 3):  # one at a time: each goes out as a batch of its own
                t5.send([app(2, 5, index)])
                await eventually(lambda: len(inbox2.messages) == index, what=f"append {index} at n2")
            assert [m.entries[0].index for m in inbox2.messages] == [1, 2, 3]
            assert addresses == ["127.0.0.1:1", "", ""]

    asyncio.run(scenario())


def test_a_member_relays_the_requests_of_another(certs: ClusterCerts, tmp_path: Path) -> None:
    """n3 forwarded a proposal and a ReadIndex to n1, which had meanwhile lost the leadership to n2 and
    passes both on as they came (sender n3, term 0): the new leader takes them, and answers the ReadIndex
    to n3 itself. Before, they were dropped as forged, and n3's clients waited out their deadlines. A
    relayed message may not carry a term or speak for a stranger, and no other type may be relayed."""

    async def scenario() -> None:
        async with _member_n2(certs, tmp_path) as (t2, inbox2):
            proposal = Message(MessageType.PROPOSE, to=2, sender=3, entries=(Entry(0, 0, data=b"put"),))
            read = Message(MessageType.READ_INDEX, to=2, sender=3, context=b"read-7")
            own_read = Message(MessageType.READ_INDEX, to=2, sender=2, context=b"read-8")  # back to the asker
            transfer = Message(MessageType.TRANSFER_LEADER, to=2, sender=3)  # sender: the transferee
            refused = [
                Message(MessageType.READ_INDEX, to=2, sender=3, term=5, context=b"read-9"),  # a term: no
                Message(MessageType.PROPOSE, to=2, sender=9, entries=(Entry(0, 0, data=b"x"),)),  # a stranger
                Message(MessageType.HEARTBEAT_RESP, to=2, sender=3, term=1),  # not a forwarded request
            ]
            batch = [proposal, refused[0], read, refused[1], own_read, refused[2], transfer]
            assert await _send_as(t2.port, certs.peers["n1"], 1, batch) == grpc.StatusCode.OK
            assert inbox2.messages == [proposal, read, own_read, transfer]

    asyncio.run(scenario())


def test_a_client_certificate_cannot_reach_the_peer_port(certs: ClusterCerts, tmp_path: Path) -> None:
    """The peer port trusts only the peer CA: the client certificate fails the handshake, even when the
    caller trusts the peer CA for the server's side."""

    async def scenario() -> None:
        inbox2 = Inbox()
        t2 = make_transport(2, certs.peers["n2"], inbox2, FileSnapshots(tmp_path))
        async with running(t2):
            t2.set_peer(1, "127.0.0.1:1")
            forged = TLSFiles(ca=certs.peer_ca, cert=certs.client.cert, key=certs.client.key)
            for files in (certs.client, forged, certs.nodes["n1"]):
                credentials = grpc.ssl_channel_credentials(
                    files.ca.read_bytes(), files.key.read_bytes(), files.cert.read_bytes()
                )
                async with grpc.aio.secure_channel(f"127.0.0.1:{t2.port}", credentials) as channel:
                    call = raft_pb2_grpc.RaftPeerStub(channel).Stream(timeout=5)
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await call.write(raft_pb2.MessageBatch(cluster_id=0xC1, sender=1, to=2,
                                                               messages=[message_to_pb(app(2, 1, 1))]))
                        await call.done_writing()
                        await call
                    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
            assert not inbox2.messages

    asyncio.run(scenario())

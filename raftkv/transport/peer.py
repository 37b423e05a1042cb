"""Raft traffic between members over gRPC (service ``raftkvpb.raft.RaftPeer``), on asyncio.

Design, and why:

- ``send()`` never blocks and never fails: the Raft loop must not stall on a slow or dead peer. Messages go
  into a bounded per-peer queue; when it is full the message is dropped and counted, which is safe because
  Raft retransmits whatever was not acknowledged.
- One long-lived client stream per peer, fed by one task. Each write carries everything queued since the
  previous write as one ``MessageBatch``, so a busy leader pays one gRPC write per round, not per message,
  and messages to a peer arrive in the order they were sent.
- A broken stream is reopened with exponential backoff (capped at ``MAX_BACKOFF``); every failure is
  reported through ``on_unreachable`` so the core stops pipelining to that peer. Messages of the failed
  write are lost, as on any network.
- After a break the peer's port is probed with a plain TCP connect (``nothing_serves``). *Refused* (or
  accepted and dropped at once, each time: a dying listener, a relay in front of a dead process) means
  the process is gone, and ``on_peer_gone`` says so, so that the core fails over without waiting out an
  election timeout. A partition or a paused process never refuses (the connect times out, or the paused
  process's kernel still accepts and holds it), and a reset while the peer lives ends in a connection
  that stays open: neither is reported.
- Snapshots do not travel on the stream: a SNAP message opens a ``Snapshot`` call on its own channel that
  sends the message in the first chunk and then the data in chunks of at most ``snapshot_chunk_bytes``,
  read lazily from ``SnapshotSource`` so the whole snapshot is never in memory. The receiver stages the
  chunks in ``SnapshotSink`` and hands the SNAP message to Raft only once all data is committed; the
  sender reports the outcome through ``on_snapshot_status``.
- The receiver drops batches from another cluster or addressed to another member (aborting the stream, so
  the sender logs it and backs off) and individual messages not addressed to this member or not decodable.
- Identity: a batch's sender must be a member this member knows (``set_peer``), and the TLS certificate of
  the connection must be that member's: its common name is the member's name, or, while the member's name
  is not yet known (added, not yet started), a name no other member has. A member removed from the
  cluster is refused whatever it sends, and told so ("was removed from the cluster"); the node's membership
  says who was (``is_removed``, kept in its store). Every message must come from the
  batch's sender, with one exception: a forwarded request (proposal, ReadIndex, leader transfer; term 0)
  that the sender relays for another member this member knows, as a member does when it is no longer the
  leader the asker took it for (the leader then answers the asker directly, as etcd's raft does). A batch
  from the wrong sender is forgery: the stream is aborted with PERMISSION_DENIED; a message claiming
  another sender is dropped. Which
  certificates may connect at all is decided by the peer CA (``raftkv.security.certs``), which signs no
  client certificate.
- Mutual TLS with client certificates is required unless both credentials are None (explicit insecure
  mode). Garbage or plaintext connections on the port are the gRPC core's business: they fail the
  handshake and never reach this code.

All public methods must be called from the event loop that runs ``start()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Protocol

import grpc

from raftkv.cancellation import raise_if_cancelling
from raftkv.core.types import FORWARDED_REQUESTS, Message, MessageType, SnapshotMeta
from raftkv.grpc_guard import Guard, GuardedHandlers
from raftkv.grpc_registration import service_handlers
from raftkv.proto import raft_pb2, raft_pb2_grpc
from raftkv.security.common_names import auth_common_names
from raftkv.security.grpc_options import channel_options, server_options
from raftkv.transport.codec import CodecError, encoded_size, message_from_pb, message_to_pb
from raftkv.transport.gone_probe import GONE_PROBE_TIMEOUT, nothing_serves

log = logging.getLogger(__name__)

INITIAL_BACKOFF = 0.05
MAX_BACKOFF = 1.0
DEFAULT_QUEUE_LIMIT = 4096
#: Target size of one MessageBatch; a single larger message still goes out alone.
DEFAULT_BATCH_BYTES = 4 << 20
#: gRPC message limit on the peer port: room for a full batch plus one oversized entry.
DEFAULT_MAX_MESSAGE_BYTES = 32 << 20
DEFAULT_SNAPSHOT_CHUNK_BYTES = 1 << 20
#: Ping interval and timeout on peer connections: a partitioned peer is noticed within ~4 s even if idle.
PEER_KEEPALIVE_MS = 2_000


class SnapshotWriter(Protocol):
    """Staging area for one incoming snapshot. Exactly one of ``commit``/``abort`` ends it."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> SnapshotMeta | None:
        """All data is staged. Returns the position the data is really at, if it differs from the SNAP
        message's (the sender's state moved on after its core chose the snapshot); the message handed to
        Raft then carries that position."""
        ...

    def abort(self) -> None: ...


class SnapshotSink(Protocol):
    """Where received snapshot data goes (the storage layer installs it when Raft hands back the meta)."""

    def begin(self, meta: SnapshotMeta) -> SnapshotWriter: ...


class SnapshotSource(Protocol):
    """Where the data of a snapshot this member sends comes from; chunks of any size, read lazily."""

    def open(self, meta: SnapshotMeta) -> Iterator[bytes]: ...


class _Peer:
    """Send-side state for one remote member. The queue outlives reconnections and address changes."""

    def __init__(self, node_id: int, address: str, name: str) -> None:
        self.node_id = node_id
        self.address = address
        self.name = name  # "" until the member's name is known
        self.queue: deque[Message] = deque()
        self.wakeup = asyncio.Event()
        self.dropped = 0
        self.stream_task: asyncio.Task[None] | None = None
        self.snapshot_task: asyncio.Task[None] | None = None


class PeerTransport:
    """Sends and receives Raft messages for member ``node_id`` of cluster ``cluster_id``."""

    def __init__(
        self,
        node_id: int,
        cluster_id: int,
        listen_addr: str,
        server_credentials: grpc.ServerCredentials | None,
        channel_credentials: grpc.ChannelCredentials | Callable[[], grpc.ChannelCredentials] | None,
        on_messages: Callable[[list[Message]], None],
        snapshot_sink: SnapshotSink,
        snapshot_source: SnapshotSource,
        *,
        is_removed: Callable[[int], bool],
        on_unreachable: Callable[[int], None] = lambda node_id: None,
        on_peer_gone: Callable[[int], None] = lambda node_id: None,
        on_snapshot_status: Callable[[int, bool], None] = lambda node_id, ok: None,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        snapshot_chunk_bytes: int = DEFAULT_SNAPSHOT_CHUNK_BYTES,
        name: str = "",
        guards: Sequence[Guard] = (),
        advertise_address: str = "",
    ) -> None:
        assert node_id != 0 and queue_limit > 0 and 0 < snapshot_chunk_bytes < max_message_bytes
        assert batch_bytes < max_message_bytes
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.name = name
        self.listen_addr = listen_addr
        self._server_credentials = server_credentials
        # Asked before each dial: a source that follows the TLS files (``ReloadingChannelCredentials``)
        # hands out new credentials after a rotation, and the next dial uses them.
        self._channel_credentials: Callable[[], grpc.ChannelCredentials] | None
        if isinstance(channel_credentials, grpc.ChannelCredentials):
            fixed = channel_credentials
            self._channel_credentials = lambda: fixed
        else:
            self._channel_credentials = channel_credentials
        self._on_messages = on_messages
        #: Whether a member was removed from the cluster: the node's membership owns the answer (kept in
        #: its store, so it outlives restarts), this transport only asks it.
        self._is_removed = is_removed
        self._sink = snapshot_sink
        self._source = snapshot_source
        self._on_unreachable = on_unreachable
        self._on_peer_gone = on_peer_gone
        self._on_snapshot_status = on_snapshot_status
        self._queue_limit = queue_limit
        self._batch_bytes = batch_bytes
        self._max_message_bytes = max_message_bytes
        self._chunk_bytes = snapshot_chunk_bytes
        self._guards = list(guards)  # run before every call of the peer port (revocation)
        self._peers: dict[int, _Peer] = {}
        #: host:port other members dial this one at, sent with the first batch of each stream (``_learn_sender``).
        self._advertise_address = advertise_address
        self._server: grpc.aio.Server | None = None
        self._started = False
        #: Messages dropped because they were addressed to a member with no known address.
        self.dropped_unknown_peer = 0
        #: The bound port, known after ``start()`` (useful when listening on port 0).
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind and serve the peer port, and start sending to the peers known so far."""
        assert not self._started, "start() called twice"
        server = grpc.aio.server(options=server_options(self._max_message_bytes, self._max_message_bytes))
        handlers = service_handlers(raft_pb2_grpc.add_RaftPeerServicer_to_server, _Receiver(self))
        server.add_generic_rpc_handlers([GuardedHandlers(handlers, self._guards)])
        if self._server_credentials is None:
            self.port = server.add_insecure_port(self.listen_addr)
        else:
            self.port = server.add_secure_port(self.listen_addr, self._server_credentials)
        await server.start()
        self._server = server
        self._started = True
        for peer in self._peers.values():
            self._start_stream(peer)

    async def stop(self, grace: float | None = None) -> None:
        """Stop sending and serving. Queued messages are discarded; by default open streams are cut at once
        (peer streams never end on their own, so a grace period would only delay shutdown)."""
        tasks = [t for p in self._peers.values() for t in (p.stream_task, p.snapshot_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        self._started = False

    # ------------------------------------------------------------------ membership

    def set_peer(self, node_id: int, address: str, name: str = "") -> None:
        """Add a peer or change its address (``host:port``; a changed address reconnects) or its name (the
        common name its certificate must have; "" while unknown)."""
        assert node_id != self.node_id, "a member does not send to itself"
        peer = self._peers.get(node_id)
        if peer is not None:
            peer.name = name
            if peer.address == address:
                return
        if peer is None:
            peer = self._peers[node_id] = _Peer(node_id, address, name)
        else:
            peer.address = address
            if peer.stream_task is not None:
                peer.stream_task.cancel()
                peer.stream_task = None
        if self._started:
            self._start_stream(peer)

    def remove_peer(self, node_id: int) -> None:
        """Forget a peer: stop its stream and any snapshot in flight, drop its queue."""
        peer = self._peers.pop(node_id, None)
        if peer is None:
            return
        for task in (peer.stream_task, peer.snapshot_task):
            if task is not None:
                task.cancel()

    def dropped(self, node_id: int) -> int:
        """Messages to ``node_id`` dropped because its queue was full."""
        peer = self._peers.get(node_id)
        return peer.dropped if peer is not None else 0

    # ------------------------------------------------------------------ sending

    def send(self, messages: list[Message]) -> None:
        """Queue messages for their recipients; never blocks. SNAP messages start a snapshot transfer."""
        for message in messages:
            peer = self._peers.get(message.to)
            if peer is None:
                self.dropped_unknown_peer += 1
                continue
            if message.type == MessageType.SNAP:
                self._start_snapshot(peer, message)
            elif len(peer.queue) >= self._queue_limit:
                peer.dropped += 1
            else:
                peer.queue.append(message)
                peer.wakeup.set()

    def _start_stream(self, peer: _Peer) -> None:
        assert peer.stream_task is None or peer.stream_task.done()
        peer.stream_task = asyncio.create_task(self._stream_loop(peer), name=f"raft-stream-{peer.node_id}")
        peer.stream_task.add_done_callback(_log_crash)

    def _credentials(self) -> grpc.ChannelCredentials | None:
        return None if self._channel_credentials is None else self._channel_credentials()

    def _channel(self, address: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
        options = channel_options(
            self._max_message_bytes,
            self._max_message_bytes,
            max_reconnect_backoff_ms=int(MAX_BACKOFF * 1000),
            keepalive_time_ms=PEER_KEEPALIVE_MS,
            keepalive_timeout_ms=PEER_KEEPALIVE_MS,
        )
        if credentials is None:
            return grpc.aio.insecure_channel(address, options=options)
        return grpc.aio.secure_channel(address, credentials, options=options)

    async def _stream_loop(self, peer: _Peer) -> None:
        """Keep one stream open to the peer while there is traffic; reopen it with backoff on failure, on
        a new channel if the TLS files changed meanwhile."""
        backoff = INITIAL_BACKOFF
        while True:
            credentials = self._credentials()
            async with self._channel(peer.address, credentials) as channel:
                stub = raft_pb2_grpc.RaftPeerStub(channel)
                while self._credentials() is credentials:
                    await peer.wakeup.wait()
                    call = stub.Stream()
                    pause = backoff
                    try:
                        async for _ in self._pump(peer, call):
                            backoff = pause = INITIAL_BACKOFF
                    except (grpc.RpcError, asyncio.InvalidStateError, _StreamEnded) as exc:
                        raise_if_cancelling()
                        log.info("raft stream to %x at %s failed: %s", peer.node_id, peer.address, _describe(exc))
                        self._on_unreachable(peer.node_id)
                        probe_started = asyncio.get_running_loop().time()
                        if await nothing_serves(peer.address, GONE_PROBE_TIMEOUT):
                            log.info("raft peer %x is gone: nothing serves %s any more", peer.node_id, peer.address)
                            self._on_peer_gone(peer.node_id)
                        raise_if_cancelling()
                        pause -= asyncio.get_running_loop().time() - probe_started  # the probe waited already
                    finally:
                        call.cancel()
                    await asyncio.sleep(max(0.0, pause))
                    backoff = min(backoff * 2, MAX_BACKOFF)

    async def _pump(self, peer: _Peer, call: grpc.aio.StreamUnaryCall) -> AsyncIterator[None]:
        """Write batches while the call lives; yields after each successful write. Raises when it ends.

        The end of the call wakes the pump like new messages do, so waiting for either is one plain
        ``Event.wait`` — this runs once per message on a lightly loaded link, so it must stay cheap."""
        ended: asyncio.Future[object] = asyncio.ensure_future(call)
        ended.add_done_callback(lambda _: peer.wakeup.set())
        # Only the first batch of a stream says where to dial this member back: that is the one a receiver
        # that does not know the sender learns it from (``_learn_sender``); later batches on the same stream
        # come from a sender it then knows.
        address = self._advertise_address
        try:
            while True:
                if ended.done():
                    ended.result()  # raises the call's error, if it has one
                    raise _StreamEnded("receiver closed the stream")
                if not peer.queue:
                    peer.wakeup.clear()
                    await peer.wakeup.wait()
                    continue
                await call.write(self._next_batch(peer, address))
                address = ""
                yield
        finally:
            if not ended.done():
                ended.cancel()
            else:
                with contextlib.suppress(BaseException):
                    ended.result()  # consume, so asyncio does not log "exception never retrieved"

    def _next_batch(self, peer: _Peer, sender_address: str) -> raft_pb2.MessageBatch:
        """Take messages off the queue up to the batch budget (always at least one)."""
        batch = raft_pb2.MessageBatch(cluster_id=self.cluster_id, sender=self.node_id, to=peer.node_id,
                                      sender_address=sender_address)
        size = 0
        while peer.queue and (size == 0 or size + encoded_size(peer.queue[0]) <= self._batch_bytes):
            message = peer.queue.popleft()
            size += encoded_size(message)
            batch.messages.append(message_to_pb(message))
        return batch

    # ------------------------------------------------------------------ snapshots, sending side

    def _start_snapshot(self, peer: _Peer, message: Message) -> None:
        assert message.snapshot is not None, "SNAP message without snapshot metadata"
        if peer.snapshot_task is not None and not peer.snapshot_task.done():
            log.info("snapshot to %x already in flight; dropping a second one", peer.node_id)
            self._on_snapshot_status(peer.node_id, False)
            return
        peer.snapshot_task = asyncio.create_task(
            self._send_snapshot(peer.node_id, peer.address, message), name=f"raft-snapshot-{peer.node_id}"
        )
        peer.snapshot_task.add_done_callback(_log_crash)

    async def _send_snapshot(self, node_id: int, address: str, message: Message) -> None:
        ok = False
        try:
            async with self._channel(address, self._credentials()) as channel:
                call = raft_pb2_grpc.RaftPeerStub(channel).Snapshot()
                try:
                    sent = 0
                    async for chunk in self._snapshot_chunks(message):
                        await call.write(chunk)
                        sent += len(chunk.data)
                    await call.done_writing()
                    ack: raft_pb2.SnapshotAck = await call
                finally:
                    call.cancel()
            ok = ack.received_bytes == sent
            if not ok:
                log.warning("snapshot to %x: sent %d bytes, receiver stored %d", node_id, sent, ack.received_bytes)
        except (grpc.RpcError, asyncio.InvalidStateError, OSError) as exc:
            log.info("snapshot to %x at %s failed: %s", node_id, address, _describe(exc))
        finally:
            if node_id in self._peers:
                self._on_snapshot_status(node_id, ok)

    async def _snapshot_chunks(self, message: Message) -> AsyncIterator[raft_pb2.SnapshotChunk]:
        """The SNAP message first, then the data re-cut to at most one chunk size, then an end marker."""
        assert message.snapshot is not None
        header: dict[str, Any] = {"cluster_id": self.cluster_id, "sender": self.node_id, "to": message.to,
                                  "sender_address": self._advertise_address}
        yield raft_pb2.SnapshotChunk(message=message_to_pb(message), **header)
        pieces = await asyncio.to_thread(self._source.open, message.snapshot)
        try:
            while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
                for start in range(0, len(piece), self._chunk_bytes):
                    yield raft_pb2.SnapshotChunk(data=piece[start : start + self._chunk_bytes], **header)
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        yield raft_pb2.SnapshotChunk(last=True, **header)

    # ------------------------------------------------------------------ receiving (called by _Receiver)

    def _check_addressing(self, cluster_id: int, to: int) -> str | None:
        """Why a stream from this sender must be refused, or None when it is for us."""
        if cluster_id != self.cluster_id:
            return f"cluster id mismatch: got {cluster_id:x}, this member is in {self.cluster_id:x}"
        if to != self.node_id:
            return f"member id mismatch: addressed to {to:x}, this member is {self.node_id:x}"
        return None

    def _check_sender(
        self, sender: int, certificate_names: frozenset[str] | None, sender_address: str = ""
    ) -> str | None:
        """Why ``sender`` may not send on a connection whose certificate has ``certificate_names`` (None:
        plaintext, no identities), or None when it may."""
        if self._is_removed(sender):
            return f"sender {sender:x} was removed from the cluster"
        peer = self._peers.get(sender)
        if peer is None:
            return self._learn_sender(sender, certificate_names, sender_address)
        if certificate_names is None:
            return None
        shown = ", ".join(sorted(certificate_names)) or "no common name"
        if peer.name:
            if peer.name not in certificate_names:
                return f"a certificate issued to {shown} cannot speak for member {sender:x} ({peer.name})"
        elif certificate_names & {self.name, *(p.name for p in self._peers.values())} - {""}:
            return f"a certificate issued to {shown} belongs to another member than {sender:x}"
        return None

    def _learn_sender(
        self, sender: int, certificate_names: frozenset[str] | None, sender_address: str
    ) -> str | None:
        """Accept a stream from a member this one does not know yet, and learn where to answer it; or say why not.

        A member that was down while another joined restarts with a membership table that lacks the
        newcomer. If the newcomer leads, this member must hear it and answer it to catch up at all, and only
        catching up (applying the addition) would teach it the newcomer's address: without this, it never
        catches up (the simulator found it: a restarted member stuck at its old applied index for good).
        etcd's receivers learn such a sender from the X-PeerURLs header of its stream; here the batch says
        ``sender_address``. What still holds: the stream passed the peer CA's mutual TLS and the cluster id,
        its certificate must not be another known member's (one member cannot speak for another), and a
        member removed from the cluster is never learned back (``_check_sender`` refuses it first).
        Membership, once applied, takes over the entry (``set_peer`` with the member's name and dial
        address, or ``remove_peer``)."""
        if not sender_address:
            return f"sender {sender:x} is not a member this member knows"
        if certificate_names is not None:
            known = {self.name, *(p.name for p in self._peers.values())} - {""}
            if certificate_names & known or len(certificate_names) != 1:
                shown = ", ".join(sorted(certificate_names)) or "no common name"
                return f"sender {sender:x} is not a member this member knows, and {shown} is not its certificate"
        name = next(iter(certificate_names)) if certificate_names else ""
        log.warning("learning member %x (%s) at %s from its stream: this member has not applied its addition yet",
                    sender, name or "no name", sender_address)
        self.set_peer(sender, sender_address, name)
        return None

    def _relayed(self, message: Message) -> bool:
        """Whether ``message``, in a batch from another member than its sender, is a request relayed for a
        member this member knows. It carries no term, so it cannot move anyone's term or election; its sender
        only says whom a leader answers (a ReadIndex) or makes leader (a transfer)."""
        return (
            message.type in FORWARDED_REQUESTS
            and message.term == 0
            and (message.sender in self._peers or message.sender == self.node_id)
        )

    def _deliver_batch(self, batch: raft_pb2.MessageBatch) -> None:
        messages: list[Message] = []
        for pb in batch.messages:
            try:
                message = message_from_pb(pb)
            except CodecError as exc:
                log.warning("dropping undecodable message from %x: %s", batch.sender, exc)
                continue
            if message.sender != batch.sender and not self._relayed(message):
                log.warning("dropping %s claiming to be from %x in a batch from %x", message.type.name,
                            message.sender, batch.sender)
                continue
            if message.to != self.node_id or message.type == MessageType.SNAP:
                log.warning("dropping %s from %x addressed to %x", message.type.name, batch.sender, message.to)
                continue
            messages.append(message)
        if messages:
            self._on_messages(messages)

    async def _receive_snapshot(
        self, chunks: AsyncIterator[raft_pb2.SnapshotChunk], certificate_names: frozenset[str] | None
    ) -> tuple[Message, int]:
        """Stage a whole snapshot stream; return the SNAP message (not yet delivered) and the bytes stored."""
        first = await anext(chunks, None)
        if first is None:
            raise _Refused("empty snapshot stream")
        if (why := self._check_addressing(first.cluster_id, first.to)) is not None:
            raise _Refused(why)
        if (why := self._check_sender(first.sender, certificate_names, first.sender_address)) is not None:
            raise _Refused(why, grpc.StatusCode.PERMISSION_DENIED)
        try:
            message = message_from_pb(first.message)
        except CodecError as exc:
            raise _Refused(f"bad snapshot message: {exc}") from exc
        if message.sender != first.sender:
            raise _Refused(f"snapshot message from {message.sender:x} in a stream from {first.sender:x}",
                           grpc.StatusCode.PERMISSION_DENIED)
        if message.type != MessageType.SNAP or message.snapshot is None or message.to != self.node_id:
            raise _Refused("first snapshot chunk must carry a SNAP message with metadata for this member")
        writer = await asyncio.to_thread(self._sink.begin, message.snapshot)
        received, complete = 0, first.last
        try:
            if first.data:
                await asyncio.to_thread(writer.write, first.data)
                received += len(first.data)
            async for chunk in chunks:
                if complete:
                    raise _Refused("data after the last snapshot chunk")
                if chunk.data:
                    await asyncio.to_thread(writer.write, chunk.data)
                    received += len(chunk.data)
                complete = chunk.last
            if not complete:
                raise _Refused("snapshot stream ended before its last chunk")
            streamed = await asyncio.to_thread(writer.commit)
        except BaseException:
            writer.abort()
            raise
        if streamed is not None:
            message = dataclasses.replace(message, snapshot=streamed)
        return message, received

    def _deliver_snapshot(self, message: Message) -> None:
        self._on_messages([message])


class _Refused(Exception):
    """The receiver refuses a stream (wrong cluster or member, protocol violation, forged identity)."""

    def __init__(self, why: str, code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION) -> None:
        super().__init__(why)
        self.code = code


class _StreamEnded(Exception):
    """The receiver ended a stream the sender still wanted to use."""


def _log_crash(task: asyncio.Task[None]) -> None:
    """Sender tasks only end by cancellation; anything else is a bug that must not pass silently."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s crashed", task.get_name(), exc_info=exc)


def _certificate_names(context: grpc.aio.ServicerContext) -> frozenset[str] | None:
    """The common names of the connection's client certificate; None on a plaintext connection."""
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    return frozenset(auth_common_names(auth))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


class _Receiver(raft_pb2_grpc.RaftPeerServicer):
    """The gRPC face of the receiving side; all decisions are in PeerTransport."""

    def __init__(self, transport: PeerTransport) -> None:
        self._transport = transport

    async def Stream(  # noqa: N802 (gRPC method name)
        self,
        request_iterator: AsyncIterator[raft_pb2.MessageBatch],
        context: grpc.aio.ServicerContext,
    ) -> raft_pb2.StreamAck:
        names = _certificate_names(context)
        async for batch in request_iterator:
            if (why := self._transport._check_addressing(batch.cluster_id, batch.to)) is not None:
                log.warning("refusing raft stream from %x (%s): %s", batch.sender, context.peer(), why)
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, why)
            if (why := self._transport._check_sender(batch.sender, names, batch.sender_address)) is not None:
                log.warning("refusing raft stream from %s: %s", context.peer(), why)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
            self._transport._deliver_batch(batch)
        return raft_pb2.StreamAck()

    async def Snapshot(  # noqa: N802 (gRPC method name)
        self,
        request_iterator: AsyncIterator[raft_pb2.SnapshotChunk],
        context: grpc.aio.ServicerContext,
    ) -> raft_pb2.SnapshotAck:
        try:
            message, received = await self._transport._receive_snapshot(
                aiter(request_iterator), _certificate_names(context)
            )
        except _Refused as exc:
            log.warning("refusing snapshot from %s: %s", context.peer(), exc)
            await context.abort(exc.code, str(exc))
        self._transport._deliver_snapshot(message)
        return raft_pb2.SnapshotAck(received_bytes=received)

"""Translation between the core's value types (raftkv.core.types) and their wire form (raft.proto).

The core stays free of protobuf; this is the only place that knows both. Round trips are exact:
``message_from_pb(message_to_pb(m)) == m`` for every valid message (property-tested). Decoding checks what
protobuf cannot (enum values in range, voters and learners disjoint) and raises ``CodecError``, so that a
malformed message from a peer is dropped instead of reaching the core.
"""

from __future__ import annotations

from raftkv.core.types import ConfState, Entry, EntryType, Message, MessageType, SnapshotMeta
from raftkv.proto import raft_pb2


class CodecError(ValueError):
    """A wire message that does not describe a valid core value."""


def entry_to_pb(entry: Entry) -> raft_pb2.Entry:
    return raft_pb2.Entry(term=entry.term, index=entry.index, type=int(entry.type), data=entry.data)  # type: ignore[arg-type]


def entry_from_pb(pb: raft_pb2.Entry) -> Entry:
    try:
        kind = EntryType(pb.type)
    except ValueError as exc:
        raise CodecError(f"unknown entry type {pb.type}") from exc
    return Entry(term=pb.term, index=pb.index, type=kind, data=pb.data)


def snapshot_meta_to_pb(meta: SnapshotMeta) -> raft_pb2.SnapshotMeta:
    conf = raft_pb2.ConfState(voters=sorted(meta.conf_state.voters), learners=sorted(meta.conf_state.learners))
    return raft_pb2.SnapshotMeta(index=meta.index, term=meta.term, conf_state=conf)


def snapshot_meta_from_pb(pb: raft_pb2.SnapshotMeta) -> SnapshotMeta:
    voters, learners = frozenset(pb.conf_state.voters), frozenset(pb.conf_state.learners)
    if voters & learners:
        raise CodecError(f"nodes {sorted(voters & learners)} are both voter and learner")
    return SnapshotMeta(index=pb.index, term=pb.term, conf_state=ConfState(voters=voters, learners=learners))


def message_to_pb(message: Message) -> raft_pb2.Message:
    pb = raft_pb2.Message(
        type=int(message.type),  # type: ignore[arg-type]
        to=message.to,
        sender=message.sender,
        term=message.term,
        log_term=message.log_term,
        index=message.index,
        entries=[entry_to_pb(e) for e in message.entries],
        commit=message.commit,
        reject=message.reject,
        reject_hint=message.reject_hint,
        context=message.context,
    )
    if message.snapshot is not None:
        pb.snapshot.CopyFrom(snapshot_meta_to_pb(message.snapshot))
    return pb


def message_from_pb(pb: raft_pb2.Message) -> Message:
    try:
        kind = MessageType(pb.type)
    except ValueError as exc:
        raise CodecError(f"unknown message type {pb.type}") from exc
    return Message(
        type=kind,
        to=pb.to,
        sender=pb.sender,
        term=pb.term,
        log_term=pb.log_term,
        index=pb.index,
        entries=tuple(entry_from_pb(e) for e in pb.entries),
        commit=pb.commit,
        reject=pb.reject,
        reject_hint=pb.reject_hint,
        snapshot=snapshot_meta_from_pb(pb.snapshot) if pb.HasField("snapshot") else None,
        context=pb.context,
    )


def encoded_size(message: Message) -> int:
    """A cheap upper-bound estimate of a message's wire size, for batching without encoding twice."""
    return 64 + len(message.context) + sum(e.size() for e in message.entries)

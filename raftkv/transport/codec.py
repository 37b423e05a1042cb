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


#: Wire enum value -> core enum member; both enums are dense from 0, so a tuple index replaces a lookup by value.
_MESSAGE_TYPES = tuple(MessageType)
_ENTRY_TYPES = tuple(EntryType)
assert all(t.value == i for i, t in enumerate(_MESSAGE_TYPES)) and all(t.value == i for i, t in enumerate(_ENTRY_TYPES))


def entry_to_pb(entry: Entry) -> raft_pb2.Entry:
    return raft_pb2.Entry(term=entry.term, index=entry.index, type=entry.type, data=entry.data)  # type: ignore[arg-type]


def entry_from_pb(pb: raft_pb2.Entry) -> Entry:
    kind = pb.type
    if not 0 <= kind < len(_ENTRY_TYPES):
        raise CodecError(f"unknown entry type {kind}")
    return Entry(pb.term, pb.index, _ENTRY_TYPES[kind], pb.data)


def snapshot_meta_to_pb(meta: SnapshotMeta) -> raft_pb2.SnapshotMeta:
    conf = raft_pb2.ConfState(voters=sorted(meta.conf_state.voters), learners=sorted(meta.conf_state.learners))
    return raft_pb2.SnapshotMeta(index=meta.index, term=meta.term, conf_state=conf)


def snapshot_meta_from_pb(pb: raft_pb2.SnapshotMeta) -> SnapshotMeta:
    voters, learners = frozenset(pb.conf_state.voters), frozenset(pb.conf_state.learners)
    if voters & learners:
        raise CodecError(f"nodes {sorted(voters & learners)} are both voter and learner")
    return SnapshotMeta(index=pb.index, term=pb.term, conf_state=ConfState(voters=voters, learners=learners))


def message_to_pb(message: Message) -> raft_pb2.Message:
    # Every message of the replication path goes through here twice (leader and follower), so fields at
    # their default are not passed at all: protobuf omits them on the wire either way.
    pb = raft_pb2.Message(type=message.type, to=message.to, sender=message.sender, term=message.term)  # type: ignore[arg-type]
    if message.log_term:
        pb.log_term = message.log_term
    if message.index:
        pb.index = message.index
    if message.entries:
        pb.entries.extend([entry_to_pb(e) for e in message.entries])
    if message.commit:
        pb.commit = message.commit
    if message.reject:
        pb.reject = True
    if message.reject_hint:
        pb.reject_hint = message.reject_hint
    if message.snapshot is not None:
        pb.snapshot.CopyFrom(snapshot_meta_to_pb(message.snapshot))
    if message.context:
        pb.context = message.context
    return pb


def message_from_pb(pb: raft_pb2.Message) -> Message:
    kind = pb.type
    if not 0 <= kind < len(_MESSAGE_TYPES):
        raise CodecError(f"unknown message type {kind}")
    entries = pb.entries
    return Message(
        _MESSAGE_TYPES[kind],
        pb.to,
        pb.sender,
        pb.term,
        pb.log_term,
        pb.index,
        tuple([entry_from_pb(e) for e in entries]) if entries else (),
        pb.commit,
        pb.reject,
        pb.reject_hint,
        snapshot_meta_from_pb(pb.snapshot) if pb.HasField("snapshot") else None,
        pb.context,
    )


def encoded_size(message: Message) -> int:
    """A cheap upper-bound estimate of a message's wire size, for batching without encoding twice."""
    return 64 + len(message.context) + sum(e.size() for e in message.entries)

"""raftkv.transport.codec: exact round trips between core values and protobuf, through bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.core.types import ConfState, Entry, EntryType, Message, MessageType, SnapshotMeta
from raftkv.proto import raft_pb2
from raftkv.transport.codec import CodecError, message_from_pb, message_to_pb

U64 = st.integers(min_value=0, max_value=2**64 - 1)
IDS = st.integers(min_value=1, max_value=2**64 - 1)

entries = st.builds(Entry, term=U64, index=U64, type=st.sampled_from(EntryType), data=st.binary(max_size=64))


@st.composite
def conf_states(draw: st.DrawFn) -> ConfState:
    voters = draw(st.frozensets(IDS, max_size=5))
    learners = draw(st.frozensets(IDS, max_size=3).map(lambda s: s - voters))
    return ConfState(voters=voters, learners=learners)


snapshots = st.builds(SnapshotMeta, index=U64, term=U64, conf_state=conf_states())
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=U64,
    sender=U64,
    term=U64,
    log_term=U64,
    index=U64,
    entries=st.lists(entries, max_size=4).map(tuple),
    commit=U64,
    reject=st.booleans(),
    reject_hint=U64,
    snapshot=st.none() | snapshots,
    context=st.binary(max_size=16),
)


@given(messages)
def test_round_trip_through_bytes(message: Message) -> None:
    wire = message_to_pb(message).SerializeToString()
    assert message_from_pb(raft_pb2.Message.FromString(wire)) == message


def test_empty_snapshot_meta_is_not_none() -> None:
    """A present but all-default snapshot must survive (proto3 message fields keep presence)."""
    message = Message(MessageType.SNAP, to=2, sender=1, snapshot=SnapshotMeta())
    assert message_from_pb(raft_pb2.Message.FromString(message_to_pb(message).SerializeToString())) == message


def test_invalid_wire_values_are_rejected() -> None:
    with pytest.raises(CodecError, match="message type"):
        message_from_pb(raft_pb2.Message(type=99))  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="entry type"):
        message_from_pb(raft_pb2.Message(entries=[raft_pb2.Entry(type=7)]))  # type: ignore[list-item]
    overlapping = raft_pb2.Message(snapshot=raft_pb2.SnapshotMeta(conf_state=raft_pb2.ConfState(voters=[1], learners=[1])))
    with pytest.raises(CodecError, match="both voter and learner"):
        message_from_pb(overlapping)

"""Hypothesis strategies for hostile etcd messages: every field of every request type, at its edges.

The messages are built from the protobuf descriptors, so a field added to a request is fuzzed without
anyone remembering to: each field is left unset or given a value a careless or malicious client could
send — enums outside their range, the extremes of every integer type, empty / very long / binary keys
from a small alphabet (so requests meet each other's keys, leases and revisions), repeated fields from
empty to hundreds long, nested transactions from shallow to far past any limit, and random bytes.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.internal import encoder
from google.protobuf.message import Message
from hypothesis import strategies as st

from raftkv.proto import internal_pb2, rpc_pb2

_T = FieldDescriptor

_SIGNED_32 = (-(2**31), 2**31 - 1)
_SIGNED_64 = (-(2**63), 2**63 - 1)
_RANGES: dict[int, tuple[int, int]] = {
    _T.TYPE_INT32: _SIGNED_32, _T.TYPE_SINT32: _SIGNED_32, _T.TYPE_SFIXED32: _SIGNED_32,
    _T.TYPE_INT64: _SIGNED_64, _T.TYPE_SINT64: _SIGNED_64, _T.TYPE_SFIXED64: _SIGNED_64,
    _T.TYPE_UINT32: (0, 2**32 - 1), _T.TYPE_FIXED32: (0, 2**32 - 1),
    _T.TYPE_UINT64: (0, 2**64 - 1), _T.TYPE_FIXED64: (0, 2**64 - 1),
}

#: Keys from a small alphabet collide across requests; the rest are edges (empty, "\0", LMDB's limit).
KEYS = st.one_of(
    st.sampled_from([b"a", b"b", b"c", b"a/1", b"a/2", b"\0", b"\xff"]),
    st.sampled_from([b"", b"k" * 503, b"k" * 504, b"k" * 600]),
    st.binary(max_size=12),
)


def integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    """Small values (ids, revisions and TTLs that exist), the type's extremes, and anything between."""
    edges = sorted({v for v in (0, 1, 2, 3, -1, -2, lo, lo + 1, hi, hi - 1, 2**31 - 1, 2**32, 2**53) if lo <= v <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(max(lo, -5), min(hi, 20)), st.integers(lo, hi))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type == _T.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), integers(*_SIGNED_32))
    if field.type in _RANGES:
        return integers(*_RANGES[field.type])
    if field.type == _T.TYPE_BOOL:
        return st.booleans()
    if field.type == _T.TYPE_BYTES:
        return st.one_of(KEYS, st.binary(max_size=64))
    if field.type == _T.TYPE_STRING:
        urls = st.sampled_from(["http://127.0.0.1:1", "https://[::1", "unix://x", "http://a:99999", "", "x"])
        return st.one_of(urls, st.text(max_size=16))
    raise AssertionError(f"no strategy for field {field.full_name} of type {field.type}")


class _Budget:
    """How many more huge repeated fields one message may get (one, or they multiply down the tree)."""

    def __init__(self) -> None:
        self.huge = 1


def _count(draw: st.DrawFn, budget: _Budget) -> int:
    count = draw(st.one_of(st.integers(0, 3), st.sampled_from([0, 1, 129, 300])))
    if count > 3:
        if not budget.huge:
            return 3
        budget.huge -= 1
    return count


def fill(draw: st.DrawFn, message: Message, depth: int, budget: _Budget | None = None) -> None:
    """Set a random subset of ``message``'s fields (one member per oneof) with hostile values."""
    budget = budget or _Budget()
    descriptor: Descriptor = message.DESCRIPTOR
    chosen_oneof = {o.name: draw(st.sampled_from([None, *(f.name for f in o.fields)])) for o in descriptor.oneofs}
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None and chosen_oneof[oneof.name] != field.name:
            continue
        if oneof is None and not draw(st.booleans()):
            continue
        if field.type == _T.TYPE_MESSAGE:
            if depth <= 0:
                continue
            if field.is_repeated:
                count = _count(draw, budget)
                if count > 3:  # huge repeated fields: one element, many times (cheap to build and send)
                    template = type(getattr(message, field.name).add())()
                    fill(draw, template, depth - 1, budget)
                    del getattr(message, field.name)[:]
                    getattr(message, field.name).extend([template] * count)
                else:
                    for _ in range(count):
                        fill(draw, getattr(message, field.name).add(), depth - 1, budget)
            else:
                getattr(message, field.name).SetInParent()
                fill(draw, getattr(message, field.name), depth - 1, budget)
        elif field.is_repeated:
            values = draw(st.lists(_scalar(field), max_size=3))
            getattr(message, field.name).extend(values * (_count(draw, budget) if values else 1))
        else:
            setattr(message, field.name, draw(_scalar(field)))


@st.composite
def messages(draw: st.DrawFn, cls: type[Message], depth: int = 5) -> Message:
    message = cls()
    fill(draw, message, depth)
    return message


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return encoder._VarintBytes(field_number << 3 | 2) + encoder._VarintBytes(len(payload)) + payload


def nested_txn_bytes(depth: int, key: bytes = b"deep") -> bytes:
    """The encoding of a txn ``depth`` levels deep (1 = no nesting) whose innermost branch writes ``key``,
    built as bytes because protobuf refuses to build (or parse) messages past its nesting limit."""
    inner = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"v"))])
    data = inner.SerializeToString()
    for _ in range(depth - 1):
        data = _length_delimited(_SUCCESS, _length_delimited(_REQUEST_TXN, data))
    return data


def nested_txn(depth: int, key: bytes = b"deep") -> rpc_pb2.TxnRequest:
    """The same as a message (up to protobuf's limit, about 49 levels)."""
    return rpc_pb2.TxnRequest.FromString(nested_txn_bytes(depth, key))


def internal_txn_bytes(txn: bytes) -> bytes:
    """An ``InternalRequest`` carrying the encoded txn ``txn``, as the log would hold it."""
    return _length_delimited(_INTERNAL_TXN, txn)


_SUCCESS = rpc_pb2.TxnRequest.DESCRIPTOR.fields_by_name["success"].number
_REQUEST_TXN = rpc_pb2.RequestOp.DESCRIPTOR.fields_by_name["request_txn"].number
_INTERNAL_TXN = internal_pb2.InternalRequest.DESCRIPTOR.fields_by_name["txn"].number

deep_txns = st.integers(1, 40).map(nested_txn)
txns = st.one_of(messages(rpc_pb2.TxnRequest), deep_txns)


@st.composite
def internal_requests(draw: st.DrawFn) -> internal_pb2.InternalRequest:
    """Any request the log could hold, of every kind, nested txns included."""
    request = draw(messages(internal_pb2.InternalRequest))
    if request.WhichOneof("request") == "txn" and draw(st.booleans()):
        request.txn.CopyFrom(draw(deep_txns))
    return request


def _flip(data: bytes, at: int, mask: int) -> bytes:
    if not data:
        return data
    at %= len(data)
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]


#: What a log entry can hold: encoded requests, the same with a flipped byte or cut short, random bytes.
entry_data = st.one_of(
    internal_requests().map(lambda r: r.SerializeToString()),
    st.tuples(internal_requests(), st.integers(0, 1 << 16), st.integers(1, 255)).map(
        lambda t: _flip(t[0].SerializeToString(), t[1], t[2])
    ),
    st.tuples(internal_requests(), st.integers(1, 1 << 16)).map(lambda t: t[0].SerializeToString()[: -t[1] or None]),
    st.integers(1, 80).map(lambda depth: internal_txn_bytes(nested_txn_bytes(depth))),
    st.binary(min_size=1, max_size=64),
)

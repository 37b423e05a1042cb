"""Plain result values. Both clients return these instead of protobuf messages, so callers neither
import generated code nor care which transport answered."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from raftkv.proto import kv_pb2, rpc_pb2

Key = str | bytes


def to_bytes(value: Key) -> bytes:
    """Keys and values are bytes on the wire; str is accepted and UTF-8 encoded for convenience."""
    return value.encode() if isinstance(value, str) else bytes(value)


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: kv_pb2.KeyValue) -> KeyValue:
        return cls(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


class EventType(Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision

    @classmethod
    def from_pb(cls, event: kv_pb2.Event) -> Event:
        kind = EventType.DELETE if event.type == kv_pb2.Event.DELETE else EventType.PUT
        prev = KeyValue.from_pb(event.prev_kv) if event.HasField("prev_kv") else None
        return cls(kind, KeyValue.from_pb(event.kv), prev)


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KeyValue]
    more: bool
    count: int
    revision: int

    @classmethod
    def from_pb(cls, resp: rpc_pb2.RangeResponse) -> RangeResult:
        return cls([KeyValue.from_pb(kv) for kv in resp.kvs], resp.more, resp.count, resp.header.revision)


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    prev_kv: KeyValue | None

    @classmethod
    def from_pb(cls, resp: rpc_pb2.PutResponse) -> PutResult:
        prev = KeyValue.from_pb(resp.prev_kv) if resp.HasField("prev_kv") else None
        return cls(resp.header.revision, prev)


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: int
    prev_kvs: list[KeyValue]
    revision: int

    @classmethod
    def from_pb(cls, resp: rpc_pb2.DeleteRangeResponse) -> DeleteResult:
        return cls(resp.deleted, [KeyValue.from_pb(kv) for kv in resp.prev_kvs], resp.header.revision)


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    responses: list[RangeResult | PutResult | DeleteResult | TxnResult]
    revision: int

    @classmethod
    def from_pb(cls, resp: rpc_pb2.TxnResponse) -> TxnResult:
        converted: list[RangeResult | PutResult | DeleteResult | TxnResult] = []
        for op in resp.responses:
            kind = op.WhichOneof("response")
            if kind == "response_range":
                converted.append(RangeResult.from_pb(op.response_range))
            elif kind == "response_put":
                converted.append(PutResult.from_pb(op.response_put))
            elif kind == "response_delete_range":
                converted.append(DeleteResult.from_pb(op.response_delete_range))
            else:
                assert kind == "response_txn", kind
                converted.append(TxnResult.from_pb(op.response_txn))
        return cls(resp.succeeded, converted, resp.header.revision)


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool

    @classmethod
    def from_pb(cls, m: rpc_pb2.Member) -> Member:
        return cls(m.ID, m.name, list(m.peerURLs), list(m.clientURLs), m.isLearner)


@dataclass(frozen=True, slots=True)
class Status:
    """One member's Maintenance/Status answer, plus the endpoint that gave it."""

    endpoint: str
    member_id: int
    cluster_id: int
    leader: int
    version: str
    db_size: int
    db_size_in_use: int
    raft_term: int
    raft_index: int
    raft_applied_index: int
    revision: int
    is_learner: bool
    errors: list[str] = field(default_factory=list)

    @property
    def is_leader(self) -> bool:
        return self.leader != 0 and self.leader == self.member_id

    @classmethod
    def from_pb(cls, endpoint: str, s: rpc_pb2.StatusResponse) -> Status:
        return cls(endpoint, s.header.member_id, s.header.cluster_id, s.leader, s.version, s.dbSize,
                   s.dbSizeInUse, s.raftTerm, s.raftIndex, s.raftAppliedIndex, s.header.revision,
                   s.isLearner, list(s.errors))


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease's remaining life (``ttl`` is -1 once expired) and, if asked for, its keys."""

    id: int
    ttl: int
    granted_ttl: int
    keys: list[bytes]


@dataclass(frozen=True, slots=True)
class Alarm:
    member_id: int
    alarm: str  # "NOSPACE" or "CORRUPT"

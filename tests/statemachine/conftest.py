"""A real NodeStore in a temp dir, fed committed entries the way the node driver feeds it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv.core.types import Entry, HardState
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.server.lessor import min_lease_ttl
from raftkv.statemachine.applier import AppliedEntry, ApplyConfig
from raftkv.statemachine.node_store import NodeStore


class Harness:
    def __init__(self, path: Path, **store_kwargs: object) -> None:
        # A member's settings at etcd's default election timeout (1 s: leases of at least 2 s).
        store_kwargs.setdefault("apply_config", ApplyConfig(min_lease_ttl=min_lease_ttl(1000)))
        self.store = NodeStore(path, **store_kwargs)  # type: ignore[arg-type]
        self.store.bootstrap(0xC1, 1, [(1, b"")])
        self.index = 1

    def entries(self, *requests: internal_pb2.InternalRequest) -> list[Entry]:
        out = []
        for req in requests:
            self.index += 1
            out.append(Entry(1, self.index, data=req.SerializeToString()))
        return out

    def apply_many(self, *requests: internal_pb2.InternalRequest) -> list[AppliedEntry]:
        ents = self.entries(*requests)
        self.store.save(None, ents, HardState(1, 1, self.index)).result()
        return self.store.apply(ents).result()

    def apply(self, client_id: int = 0, seq: int = 0, **request: object) -> AppliedEntry:
        req = internal_pb2.InternalRequest(**request)  # type: ignore[arg-type]
        req.header.id, req.header.client_id, req.header.seq = self.index + 1, client_id, seq
        return self.apply_many(req)[0]

    def put(self, key: bytes, value: bytes = b"v", **kw: object) -> AppliedEntry:
        return self.apply(put=rpc_pb2.PutRequest(key=key, value=value, **kw))  # type: ignore[arg-type]

    def delete(self, key: bytes, range_end: bytes = b"", **kw: object) -> AppliedEntry:
        return self.apply(delete_range=rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end, **kw))  # type: ignore[arg-type]

    def range(self, key: bytes, range_end: bytes = b"", **kw: object) -> rpc_pb2.RangeResponse:
        return self.store.range(rpc_pb2.RangeRequest(key=key, range_end=range_end, **kw))  # type: ignore[arg-type]


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "node")
    yield harness
    harness.store.close()

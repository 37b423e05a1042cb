"""Raw etcd v3 stubs per endpoint, with exact outcome classification and the harness's own failover.

``raftkv.client`` retries internally, which is right for users and wrong here: a retried write whose first
attempt timed out may have happened twice or once, and the history must say ``info``.  So every call here is
one RPC to one member, and its outcome is classified:

* ``ok``   -- the answer;
* ``fail`` -- an error that proves the request was never executed: the channel could not connect, or the
  member refused before proposing (no leader);
* ``info`` -- anything else for a write (timeout, reset connection, lost leadership mid-proposal).
Reads are side-effect free, so any read error is a ``fail``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from raftkv.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc

T = TypeVar("T")

#: Substrings of error details that prove nothing was proposed.
CERTAIN_FAILURES = ("no leader", "failed to connect", "Connection refused", "connection refused",
                    "not capable", "too many requests", "leader changed")


class Outcome(Exception):
    """A failed call, classified: ``certain`` means it definitely did not execute."""

    def __init__(self, certain: bool, detail: str) -> None:
        super().__init__(detail)
        self.certain = certain
        self.detail = detail


def classify(exc: grpc.RpcError) -> Outcome:
    code = exc.code() if hasattr(exc, "code") else None
    detail = f"{code.name if code else '?'}: {exc.details() if hasattr(exc, 'details') else exc}"
    certain = any(s in detail for s in CERTAIN_FAILURES) and "leader changed" not in detail
    return Outcome(certain, detail)


@dataclass
class Read:
    value: str | None
    mod_revision: int | None
    revision: int


class Member:
    """Stubs for one member's client port.  Thread-safe (gRPC channels are)."""

    def __init__(self, name: str, target: str, timeout: float = 2.0,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.name = name
        self.target = target
        self.timeout = timeout
        options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500),
                   ("grpc.min_reconnect_backoff_ms", 100)]
        self.channel = (grpc.insecure_channel(target, options=options) if credentials is None
                        else grpc.secure_channel(target, credentials, options=options))
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def _call(self, fn: Callable[..., T], request: Any) -> T:
        try:
            return fn(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise classify(exc) from None

    def read(self, key: str, serializable: bool = False) -> Read:
        r = self._call(self.kv.Range, rpc_pb2.RangeRequest(key=key.encode(), serializable=serializable))
        if not r.kvs:
            return Read(None, None, r.header.revision)
        kv = r.kvs[0]
        return Read(kv.value.decode(), kv.mod_revision, r.header.revision)

    def put(self, key: str, value: str, lease: int = 0) -> int:
        r = self._call(self.kv.Put, rpc_pb2.PutRequest(key=key.encode(), value=value.encode(), lease=lease))
        return int(r.header.revision)

    def cas(self, key: str, expected: str | None, new: str) -> tuple[bool, Read]:
        """Compare-and-set; on a false compare the failure branch reads what was there."""
        k = key.encode()
        if expected is None:
            cmp = rpc_pb2.Compare(key=k, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL,
                                  create_revision=0)
        else:
            cmp = rpc_pb2.Compare(key=k, target=rpc_pb2.Compare.VALUE, result=rpc_pb2.Compare.EQUAL,
                                  value=expected.encode())
        req = rpc_pb2.TxnRequest(
            compare=[cmp],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=new.encode()))],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=k))])
        r = self._call(self.kv.Txn, req)
        if r.succeeded:
            return True, Read(new, r.header.revision, r.header.revision)
        kvs = r.responses[0].response_range.kvs if r.responses else []
        if not kvs:
            return False, Read(None, None, r.header.revision)
        return False, Read(kvs[0].value.decode(), kvs[0].mod_revision, r.header.revision)

    def delete(self, key: str) -> Read:
        """Delete with prev_kv, so the history learns what was removed (``value`` None: nothing was)."""
        r = self._call(self.kv.DeleteRange, rpc_pb2.DeleteRangeRequest(key=key.encode(), prev_kv=True))
        if not r.prev_kvs:
            return Read(None, None, r.header.revision)
        return Read(r.prev_kvs[0].value.decode(), r.prev_kvs[0].mod_revision, r.header.revision)

    def range_prefix(self, prefix: str, serializable: bool) -> tuple[dict[str, list[Any]], int]:
        end = prefix_end(prefix)
        r = self._call(self.kv.Range, rpc_pb2.RangeRequest(key=prefix.encode(), range_end=end,
                                                           serializable=serializable))
        return {kv.key.decode(): [kv.value.decode(), kv.mod_revision] for kv in r.kvs}, int(r.header.revision)

    def status(self) -> rpc_pb2.StatusResponse:
        return self._call(self.maintenance.Status, rpc_pb2.StatusRequest())

    def hash_kv(self, revision: int) -> tuple[int, int]:
        r = self._call(self.maintenance.HashKV, rpc_pb2.HashKVRequest(revision=revision))
        return int(r.hash), int(r.header.revision)

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        r = self._call(self.lease.LeaseGrant, rpc_pb2.LeaseGrantRequest(TTL=ttl))
        if r.error:
            raise Outcome(False, r.error)
        return int(r.ID), int(r.TTL)

    def lease_keepalive(self, lease: int) -> int:
        """One keep-alive round trip on a short stream; returns the TTL granted (<= 0: the lease is gone)."""
        try:
            stream = self.lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease)]),
                                               timeout=self.timeout)
            for resp in stream:
                return int(resp.TTL)
        except grpc.RpcError as exc:
            raise classify(exc) from None
        raise Outcome(False, "keep-alive stream closed without an answer")

    def lease_revoke(self, lease: int) -> int:
        r = self._call(self.lease.LeaseRevoke, rpc_pb2.LeaseRevokeRequest(ID=lease))
        return int(r.header.revision)


def prefix_end(prefix: str) -> bytes:
    """etcd's range_end for "every key with this prefix"."""
    b = bytearray(prefix.encode())
    b[-1] += 1
    return bytes(b)


def event_list(events: Any) -> list[list[Any]]:
    """Watch events as the JSON-friendly ``[type, key, value, mod_revision]`` lists the checkers read."""
    out: list[list[Any]] = []
    for ev in events:
        typ = "DELETE" if ev.type == kv_pb2.Event.DELETE else "PUT"
        out.append([typ, ev.kv.key.decode(), None if typ == "DELETE" else ev.kv.value.decode(),
                    ev.kv.mod_revision])
    return out

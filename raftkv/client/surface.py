"""The client API, written once for both clients.

Every method builds a ``routing.Request`` and hands it to ``_execute`` with a function that turns the
response into a result value. ``Client._execute`` returns that value; ``AsyncClient._execute`` returns an
awaitable of it. Hence the return annotations ``Result[X]`` here: ``X`` or ``Awaitable[X]``. Python's types
cannot say "the same wrapper as the subclass", so ``Client`` and ``AsyncClient`` each restate the public
methods' signatures with their own return type for the type checker (``if TYPE_CHECKING`` blocks, checked
against these by mypy's override rules and for completeness by ``tests/client/test_typed_surface.py``).
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar, Union

from google.protobuf.message import Message

from raftkv.client import ops
from raftkv.client import routing as r
from raftkv.client.errors import LeaseNotFound
from raftkv.client.types import (
    Alarm,
    DeleteResult,
    Key,
    KeyValue,
    LeaseInfo,
    Member,
    PutResult,
    RangeResult,
    Status,
    TxnResult,
)
from raftkv.proto import rpc_pb2

T = TypeVar("T")
M = TypeVar("M", bound=Message)
#: ``T`` from ``Client``, ``Awaitable[T]`` from ``AsyncClient`` (each says which, for its own methods).
Result: TypeAlias = Union[T, Awaitable[T]]  # noqa: UP007 - a generic alias needs Union here

_ALARM_NAMES = {rpc_pb2.NONE: "NONE", rpc_pb2.NOSPACE: "NOSPACE", rpc_pb2.CORRUPT: "CORRUPT"}


class Lease:
    """A granted lease, bound to the client that granted it."""

    def __init__(self, client: Surface, lease_id: int, ttl: int) -> None:
        self._client, self.id, self.ttl = client, lease_id, ttl

    def revoke(self) -> Result[None]:
        return self._client.lease_revoke(self.id)

    def time_to_live(self, keys: bool = False) -> Result[LeaseInfo]:
        return self._client.lease_time_to_live(self.id, keys=keys)

    def keep_alive(self) -> Any:
        """A context manager (``with`` for Client, ``async with`` for AsyncClient) that refreshes the lease
        every TTL/3 in the background until it exits."""
        return self._client._keep_alive_in_background(self)

    def __repr__(self) -> str:
        return f"Lease(id={self.id:#x}, ttl={self.ttl})"


class BoundTxn(ops.TxnBuilder):
    """A transaction builder whose ``commit()`` sends it through its client."""

    def __init__(self, client: Surface) -> None:
        super().__init__()
        self._client = client

    def commit(self, timeout: float | None = None) -> Result[TxnResult]:
        return self._client._txn(self, timeout)


class Surface:
    """Shared API of ``Client`` and ``AsyncClient``; subclasses provide ``_execute`` and the streams."""

    def __init__(self, router: r.Router, *, timeout: float, server_dedupes: bool,
                 login: tuple[str, str] | None = None, attempt_timeout: float = r.ATTEMPT_TIMEOUT) -> None:
        self.timeout = timeout
        self._executor = r.Executor(router, server_dedupes=server_dedupes, login=login,
                                    attempt_timeout=attempt_timeout)
        #: Identifies this client's writes to the server's deduplication table.
        self.client_id = secrets.randbits(63) or 1
        self._seq = itertools.count(1)

    @property
    def endpoints(self) -> list[str]:
        return list(self._executor.router.endpoints)

    def _execute(self, request: r.Request, convert: Callable[[Any], T], timeout: float | None) -> Result[T]:
        raise NotImplementedError

    def _write(self, method: r.Method[Any], message: Message, idempotent: bool = False) -> r.Request:
        return r.Request(method, message, r.Route.LEADER, idempotent, (self.client_id, next(self._seq)))

    @staticmethod
    def _read(method: r.Method[Any], message: Message, route: r.Route = r.Route.LEADER,
              endpoint: str | None = None) -> r.Request:
        return r.Request(method, message, route, idempotent=True, endpoint=endpoint)

    def _keep_alive_in_background(self, lease: Lease) -> Any:
        raise NotImplementedError

    def call(self, method: r.Method[M], message: Message, *, write: bool, route: r.Route = r.Route.LEADER,
             endpoint: str | None = None, timeout: float | None = None) -> Result[M]:
        """Send any unary etcd request and return the raw protobuf response, with the same routing and
        retry rules as the typed methods. For tools that print wire responses (``kvctl -w json``)."""
        request = (self._write(method, message) if write else
                   self._read(method, message, route if endpoint is None else r.Route.ENDPOINT, endpoint))
        return self._execute(request, _identity, timeout)

    # --------------------------------------------------------------------------- KV

    def get(self, key: Key, *, revision: int = 0, serializable: bool = False,
            timeout: float | None = None) -> Result[KeyValue | None]:
        """One key's current (or ``revision``'s) value, or None if it does not exist."""
        request = ops.range_request(key, revision=revision, serializable=serializable)
        return self._execute(self._range(request), _first, timeout)

    def get_range(self, key: Key, range_end: Key | None = None, *, prefix: bool = False,
                  from_key: bool = False, revision: int = 0, serializable: bool = False,
                  keys_only: bool = False, count_only: bool = False, limit: int = 0,
                  sort_order: str = "none", sort_target: str = "key",
                  timeout: float | None = None) -> Result[RangeResult]:
        request = ops.range_request(key, range_end, prefix=prefix, from_key=from_key, revision=revision,
                                    serializable=serializable, keys_only=keys_only, count_only=count_only,
                                    limit=limit, sort_order=sort_order, sort_target=sort_target)
        return self._execute(self._range(request), RangeResult.from_pb, timeout)

    def get_prefix(self, prefix: Key, **options: Any) -> Result[RangeResult]:
        return self.get_range(prefix, prefix=True, **options)

    def _range(self, request: rpc_pb2.RangeRequest) -> r.Request:
        """Linearizable reads go to the leader (no ReadIndex hop); serializable ones to any member."""
        return self._read(r.RANGE, request, r.Route.ANY if request.serializable else r.Route.LEADER)

    def put(self, key: Key, value: Key, *, lease: int = 0, prev_kv: bool = False,
            timeout: float | None = None) -> Result[PutResult]:
        request = ops.put_request(key, value, lease=lease, prev_kv=prev_kv)
        return self._execute(self._write(r.PUT, request), PutResult.from_pb, timeout)

    def delete(self, key: Key, range_end: Key | None = None, *, prefix: bool = False,
               from_key: bool = False, prev_kv: bool = False,
               timeout: float | None = None) -> Result[DeleteResult]:
        request = ops.delete_request(key, range_end, prefix=prefix, from_key=from_key, prev_kv=prev_kv)
        return self._execute(self._write(r.DELETE_RANGE, request), DeleteResult.from_pb, timeout)

    def txn(self) -> BoundTxn:
        """``client.txn().if_(value(k) == v).then(put(k, w)).else_(get(k)).commit()``."""
        return BoundTxn(self)

    def _txn(self, txn: ops.TxnBuilder, timeout: float | None) -> Result[TxnResult]:
        request = txn.request()
        wrapped = (self._read(r.TXN, request) if txn.is_read_only else self._write(r.TXN, request))
        return self._execute(wrapped, TxnResult.from_pb, timeout)

    def compare_and_swap(self, key: Key, expected: Key, new: Key, *,
                         timeout: float | None = None) -> Result[bool]:
        """Set ``key`` to ``new`` only if its value is ``expected``; True if it was swapped."""
        txn = ops.TxnBuilder().if_(ops.value(key) == expected).then(ops.put(key, new))
        return self._execute(self._write(r.TXN, txn.request()), _succeeded, timeout)

    def put_if_absent(self, key: Key, value: Key, *, lease: int = 0,
                      timeout: float | None = None) -> Result[bool]:
        """Create ``key`` only if it does not exist; True if it was created."""
        txn = ops.TxnBuilder().if_(ops.version(key) == 0).then(ops.put(key, value, lease=lease))
        return self._execute(self._write(r.TXN, txn.request()), _succeeded, timeout)

    def compact(self, revision: int, *, physical: bool = False, timeout: float | None = None) -> Result[None]:
        request = rpc_pb2.CompactionRequest(revision=revision, physical=physical)
        return self._execute(self._write(r.COMPACT, request), _none, timeout)

    # --------------------------------------------------------------------------- leases

    def lease_grant(self, ttl: int, lease_id: int = 0, *, timeout: float | None = None) -> Result[Lease]:
        request = rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id)

        def grant(resp: rpc_pb2.LeaseGrantResponse) -> Lease:
            return Lease(self, resp.ID, resp.TTL)

        return self._execute(self._write(r.LEASE_GRANT, request), grant, timeout)

    def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> Result[None]:
        request = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
        return self._execute(self._write(r.LEASE_REVOKE, request), _none, timeout)

    def lease_time_to_live(self, lease_id: int, *, keys: bool = False,
                           timeout: float | None = None) -> Result[LeaseInfo]:
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)

        def info(resp: rpc_pb2.LeaseTimeToLiveResponse) -> LeaseInfo:
            return LeaseInfo(resp.ID, resp.TTL, resp.grantedTTL, list(resp.keys))

        return self._execute(self._read(r.LEASE_TTL, request), info, timeout)

    def leases(self, *, timeout: float | None = None) -> Result[list[int]]:
        def ids(resp: rpc_pb2.LeaseLeasesResponse) -> list[int]:
            return [lease.ID for lease in resp.leases]

        return self._execute(self._read(r.LEASE_LEASES, rpc_pb2.LeaseLeasesRequest()), ids, timeout)

    def lease_keep_alive_once(self, lease_id: int, *, timeout: float | None = None) -> Result[int]:
        """Refresh a lease once; returns the new TTL. Raises LeaseNotFound if it is gone."""
        request = rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)
        return self._execute(self._read(r.LEASE_KEEPALIVE, request), _keepalive_ttl, timeout)

    # --------------------------------------------------------------------------- cluster

    def member_list(self, *, timeout: float | None = None) -> Result[list[Member]]:
        return self._execute(self._read(r.MEMBER_LIST, rpc_pb2.MemberListRequest(), r.Route.ANY),
                             _members, timeout)

    def member_add(self, peer_urls: list[str], *, learner: bool = False,
                   timeout: float | None = None) -> Result[Member]:
        request = rpc_pb2.MemberAddRequest(peerURLs=peer_urls, isLearner=learner)

        def added(resp: rpc_pb2.MemberAddResponse) -> Member:
            return Member.from_pb(resp.member)

        return self._execute(self._write(r.MEMBER_ADD, request), added, timeout)

    def member_remove(self, member_id: int, *, timeout: float | None = None) -> Result[list[Member]]:
        request = rpc_pb2.MemberRemoveRequest(ID=member_id)
        return self._execute(self._write(r.MEMBER_REMOVE, request), _members, timeout)

    def member_promote(self, member_id: int, *, timeout: float | None = None) -> Result[list[Member]]:
        request = rpc_pb2.MemberPromoteRequest(ID=member_id)
        return self._execute(self._write(r.MEMBER_PROMOTE, request), _members, timeout)

    # --------------------------------------------------------------------------- maintenance

    def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> Result[Status]:
        """Status of one member (``endpoint``, default: the one this client currently talks to)."""
        target = endpoint or self._executor.router.current()

        def status(resp: rpc_pb2.StatusResponse) -> Status:
            return Status.from_pb(target, resp)

        request = self._read(r.STATUS, rpc_pb2.StatusRequest(), r.Route.ENDPOINT, target)
        return self._execute(request, status, timeout)

    def alarms(self, *, timeout: float | None = None) -> Result[list[Alarm]]:
        request = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET)
        return self._execute(self._read(r.ALARM, request), _alarms, timeout)

    def alarm_disarm(self, member_id: int = 0, alarm: str = "NONE", *,
                     timeout: float | None = None) -> Result[list[Alarm]]:
        """Disarm alarms (all of them with the defaults, like ``etcdctl alarm disarm``)."""
        request = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=member_id,
                                       alarm=getattr(rpc_pb2, alarm))
        return self._execute(self._write(r.ALARM, request, idempotent=True), _alarms, timeout)

    def defragment(self, endpoint: str | None = None, *, timeout: float | None = None) -> Result[None]:
        target = endpoint or self._executor.router.current()
        request = r.Request(r.DEFRAGMENT, rpc_pb2.DefragmentRequest(), r.Route.ENDPOINT, True, endpoint=target)
        return self._execute(request, _none, timeout)

    def hash_kv(self, endpoint: str | None = None, revision: int = 0, *,
                timeout: float | None = None) -> Result[tuple[int, int, int]]:
        """(hash, compact_revision, revision) of one member's key space up to ``revision``."""
        target = endpoint or self._executor.router.current()

        def triple(resp: rpc_pb2.HashKVResponse) -> tuple[int, int, int]:
            return resp.hash, resp.compact_revision, resp.header.revision

        request = self._read(r.HASH_KV, rpc_pb2.HashKVRequest(revision=revision), r.Route.ENDPOINT, target)
        return self._execute(request, triple, timeout)

    def move_leader(self, target_member_id: int, *, timeout: float | None = None) -> Result[None]:
        """Transfer leadership (must be sent to the current leader, which this client finds itself)."""
        request = rpc_pb2.MoveLeaderRequest(targetID=target_member_id)
        return self._execute(r.Request(r.MOVE_LEADER, request, r.Route.LEADER, False), _none, timeout)


def _identity(message: M) -> M:
    return message


def _none(_: object) -> None:
    return None


def _succeeded(resp: rpc_pb2.TxnResponse) -> bool:
    return resp.succeeded


def _members(resp: rpc_pb2.MemberListResponse) -> list[Member]:
    return [Member.from_pb(m) for m in resp.members]


def _alarms(resp: rpc_pb2.AlarmResponse) -> list[Alarm]:
    return [Alarm(a.memberID, _ALARM_NAMES.get(a.alarm, str(a.alarm))) for a in resp.alarms]


def _first(resp: rpc_pb2.RangeResponse) -> KeyValue | None:
    return KeyValue.from_pb(resp.kvs[0]) if resp.kvs else None


def _keepalive_ttl(resp: rpc_pb2.LeaseKeepAliveResponse) -> int:
    if resp.TTL <= 0:
        raise LeaseNotFound(f"lease {resp.ID:x} expired or was revoked")
    return resp.TTL


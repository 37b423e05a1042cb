"""Request checks made before anything is proposed, with etcd v3.4's exact errors.

etcd rejects malformed requests in its gRPC layer (``etcdserver/api/v3rpc/key.go``) before they reach
Raft; clients such as etcdctl match the error *text*, so the rules and messages here follow etcd's. Each
``check_*`` function raises :class:`raftkv.errors.EtcdException` and returns nothing when the request is valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from google.protobuf.message import Message

from raftkv import errors
from raftkv.proto import rpc_pb2

#: etcd's largest lease TTL in seconds (``lease.MaxLeaseTTL``).
MAX_LEASE_TTL = 9_000_000_000


def check_request_size(request: Message, max_request_bytes: int) -> None:
    """etcd measures the serialized internal request just before proposing it (``ErrRequestTooLarge``)."""
    if request.ByteSize() > max_request_bytes:
        raise errors.REQUEST_TOO_LARGE.exception()


def check_range(request: rpc_pb2.RangeRequest) -> None:
    if not request.key:
        raise errors.KEY_NOT_PROVIDED.exception()


def check_put(request: rpc_pb2.PutRequest) -> None:
    if not request.key:
        raise errors.KEY_NOT_PROVIDED.exception()
    if request.ignore_value and request.value:
        raise errors.VALUE_PROVIDED.exception()
    if request.ignore_lease and request.lease:
        raise errors.LEASE_PROVIDED.exception()


def check_delete_range(request: rpc_pb2.DeleteRangeRequest) -> None:
    if not request.key:
        raise errors.KEY_NOT_PROVIDED.exception()


def check_txn(request: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    """Size and shape of a transaction, then etcd's rule that no key is written twice in one branch."""
    _check_txn_shape(request, max_txn_ops)
    # Overlaps are checked only after the shape check, so a huge request cannot make this quadratic.
    _written_keys(request.success)
    _written_keys(request.failure)


def check_lease_grant(request: rpc_pb2.LeaseGrantRequest) -> None:
    """etcd clamps small TTLs up to its minimum but refuses ones above ``MAX_LEASE_TTL``."""
    if request.TTL > MAX_LEASE_TTL:
        raise errors.LEASE_TTL_TOO_LARGE.exception()


def check_member_urls(peer_urls: Sequence[str]) -> None:
    """etcd's ``types.NewURLs``: http(s)/unix(s) URLs of the form scheme://host:port with no path."""
    if not peer_urls:
        raise errors.MEMBER_BAD_URLS.exception()
    for url in peer_urls:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise errors.MEMBER_BAD_URLS.exception() from None
        if parts.scheme not in ("http", "https", "unix", "unixs") or parts.path not in ("", "/"):
            raise errors.MEMBER_BAD_URLS.exception()
        if parts.scheme in ("http", "https") and (not parts.hostname or port is None):
            raise errors.MEMBER_BAD_URLS.exception()


def _check_txn_shape(request: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    """etcd's ``checkTxnRequest``: the widest of compare/success/failure bounds the op count at each level,
    and a nested transaction gets what is left of the budget."""
    ops = max(len(request.compare), len(request.success), len(request.failure))
    if ops > max_txn_ops:
        raise errors.TOO_MANY_OPS.exception()
    for compare in request.compare:
        if not compare.key:
            raise errors.KEY_NOT_PROVIDED.exception()
    for op in (*request.success, *request.failure):
        _check_request_op(op, max_txn_ops - ops)


def _check_request_op(op: rpc_pb2.RequestOp, max_txn_ops: int) -> None:
    kind = op.WhichOneof("request")
    if kind == "request_range":
        check_range(op.request_range)
    elif kind == "request_put":
        check_put(op.request_put)
    elif kind == "request_delete_range":
        check_delete_range(op.request_delete_range)
    elif kind == "request_txn":
        _check_txn_shape(op.request_txn, max_txn_ops)
    else:
        # An empty RequestOp: etcd answers with its "key not found" error.
        raise errors.KEY_NOT_FOUND.exception()


@dataclass
class _Deletes:
    """The key ranges a branch deletes: half-open [start, end) with ``None`` meaning "to the end of keys"."""

    ranges: list[tuple[bytes, bytes | None]] = field(default_factory=list)

    def add(self, key: bytes, range_end: bytes) -> None:
        if not range_end:
            self.ranges.append((key, key + b"\x00"))
        else:
            self.ranges.append((key, None if range_end == b"\x00" else range_end))

    def covers(self, key: bytes) -> bool:
        return any(start <= key and (end is None or key < end) for start, end in self.ranges)


def _written_keys(ops: Iterable[rpc_pb2.RequestOp]) -> tuple[set[bytes], _Deletes]:
    """etcd's ``checkIntervals``: the keys put and ranges deleted by ``ops`` (nested transactions
    included), raising DUPLICATE_KEY if a key is put twice or put inside a range deleted at the same level
    or above. The then/else branches of a nested transaction may put the same key: only one of them runs.
    """
    ops = list(ops)
    deletes = _Deletes()
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            deletes.add(op.request_delete_range.key, op.request_delete_range.range_end)

    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, deletes_then = _written_keys(op.request_txn.success)
        puts_else, deletes_else = _written_keys(op.request_txn.failure)
        for key in puts_then:
            _claim(key, puts, deletes)
        for key in puts_else:
            if key in puts and key not in puts_then:
                raise errors.DUPLICATE_KEY.exception()
            if deletes.covers(key):
                raise errors.DUPLICATE_KEY.exception()
            puts.add(key)
        deletes.ranges += deletes_then.ranges + deletes_else.ranges

    for op in ops:
        if op.WhichOneof("request") == "request_put":
            _claim(op.request_put.key, puts, deletes)
    return puts, deletes


def _claim(key: bytes, puts: set[bytes], deletes: _Deletes) -> None:
    if key in puts or deletes.covers(key):
        raise errors.DUPLICATE_KEY.exception()
    puts.add(key)

"""Request checks made before anything is proposed, with etcd v3.4's exact errors.

etcd rejects malformed requests in its gRPC layer (``etcdserver/api/v3rpc/key.go``) before they reach
Raft; clients such as etcdctl match the error *text*, so the rules and messages here follow etcd's. Each
``check_*`` function raises :class:`raftkv.errors.EtcdException` and returns nothing when the request is valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from google.protobuf.message import Message

from raftkv import errors
from raftkv.proto import rpc_pb2
from raftkv.statemachine.requests import check_written_keys

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
    # Overlaps are checked only after the shape check, so a huge request cannot make this quadratic. The
    # rule is the applier's own, so a request refused here is exactly one every replica would refuse.
    check_written_keys(request)


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

"""Request checks made before anything is proposed, with etcd v3.4's exact errors.

etcd rejects malformed requests in its gRPC layer (``etcdserver/api/v3rpc/key.go``) before they reach
Raft; clients such as etcdctl match the error *text*, so the rules and messages here follow etcd's. Each
``check_*`` function raises :class:`raftkv.errors.EtcdException` and returns nothing when the request is valid.

The rules for requests that enter the Raft log are the state machine's own (``request_shape``: the applier
checks every entry with them again), re-exported here so that the services name one module; what is left
here concerns requests that never reach the log (watches, membership) and limits of the API itself.
Every field of those requests, and its rule:

========================  ======================================================================
request                   rule
========================  ======================================================================
every request             its bytes decode (else INTERNAL with grpc-go's text, as etcd answers:
                          ``metadata.Admission``); a proposal's encoding is at most
                          ``--max-request-bytes`` (REQUEST_TOO_LARGE)
Range                     ``request_shape.check_range``; revisions and limit any int64
WatchCreate               filters known (INVALID_WATCH_FILTER, as a created-and-canceled reply);
                          key and range_end any; start_revision <= 0 means "from now"; any id
WatchCancel / Progress    any id (an unknown one is ignored, as in etcd)
LeaseKeepAlive / TTL      any int64 id (an unknown lease answers TTL 0 / -1, as in etcd)
MemberAdd / MemberUpdate  peer URLs given and of the form scheme://host:port (MEMBER_BAD_URLS)
MemberRemove / Promote    any id (MEMBER_NOT_FOUND)
HashKV                    any revision (<= 0: current; COMPACTED / FUTURE_REV otherwise)
MoveLeader                any id (BAD_LEADER_TRANSFEREE unless a voter)
Status, Defragment, ...   no fields
========================  ======================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from google.protobuf.message import Message

from raftkv import errors
from raftkv.proto import rpc_pb2
from raftkv.statemachine.request_shape import (
    MAX_LEASE_TTL,
    check_alarm,
    check_delete_range,
    check_lease_grant,
    check_put,
    check_range,
    check_txn,
)

__all__ = [
    "MAX_LEASE_TTL",
    "check_alarm",
    "check_delete_range",
    "check_lease_grant",
    "check_member_urls",
    "check_put",
    "check_range",
    "check_request_size",
    "check_txn",
    "check_watch_create",
]

_WATCH_FILTERS = frozenset(rpc_pb2.WatchCreateRequest.FilterType.values())


def check_request_size(request: Message, max_request_bytes: int) -> None:
    """etcd measures the serialized internal request just before proposing it (``ErrRequestTooLarge``)."""
    if request.ByteSize() > max_request_bytes:
        raise errors.REQUEST_TOO_LARGE.exception()


def check_watch_create(request: rpc_pb2.WatchCreateRequest) -> None:
    """Known filters only (etcd ignores unknown ones; a filter that does nothing is a client's mistake)."""
    if any(f not in _WATCH_FILTERS for f in request.filters):
        raise errors.INVALID_WATCH_FILTER.exception()


def check_member_urls(peer_urls: Sequence[str]) -> None:
    """etcd's ``types.NewURLs``: http(s)/unix(s) URLs of the form scheme://host:port with no path."""
    if not peer_urls:
        raise errors.MEMBER_BAD_URLS.exception()
    for url in peer_urls:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise errors.MEMBER_BAD_URLS.exception() from None
        if parts.scheme not in ("http", "https", "unix", "unixs") or parts.path not in ("", "/"):
            raise errors.MEMBER_BAD_URLS.exception()
        if parts.scheme in ("http", "https") and (not parts.hostname or port is None):
            raise errors.MEMBER_BAD_URLS.exception()

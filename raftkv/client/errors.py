"""Typed client exceptions, recognised from the gRPC status exactly as etcd's own clients do.

etcd servers (and raftkv, which keeps their texts) identify errors by the status *message*
(``raftkv.errors``); the code alone is too coarse (``UNAVAILABLE`` is both "no leader" and "connection
refused"), so the message decides first and the code is the fallback.
"""

from __future__ import annotations

import builtins

import grpc

from raftkv import errors as etcd


class ClientError(Exception):
    """Base of every error the raftkv client raises. ``code``/``details`` are the gRPC status, if any."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = message


class Unavailable(ClientError):
    """No member could serve the request (all down, partitioned, or without a leader) before the deadline."""


class NoLeaderError(Unavailable):
    """The members reached have no leader (lost quorum or an election in progress)."""


class TimeoutError(ClientError, builtins.TimeoutError):  # noqa: A001 - deliberately catchable as the builtin
    """The caller's deadline passed; for a write, whether it was applied is unknown."""


class CompactedError(ClientError):
    """The requested revision was compacted away; ``compact_revision`` is the oldest one left, if known."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None, compact_revision: int = 0) -> None:
        super().__init__(message, code)
        self.compact_revision = compact_revision


class FutureRevisionError(ClientError):
    """The requested revision is newer than the store's."""


class LeaseNotFound(ClientError):
    """The lease does not exist (never granted, revoked, or expired)."""


class RequestTooLarge(ClientError):
    """The request exceeds the server's (or the client's) message size limit."""


class InvalidArgument(ClientError):
    """The server rejected the request as malformed (empty key, duplicate key in a txn, ...)."""


class NoSpaceError(ClientError):
    """The backend quota is exhausted; compact, defragment and disarm the NOSPACE alarm."""


class PermissionDenied(ClientError):
    """Authentication or authorisation refused the request."""


class NotFound(ClientError):
    """The named member (or other object) does not exist."""


class FailedPrecondition(ClientError):
    """The request is valid but not in the current cluster state (e.g. promoting a non-learner)."""


class WatchCanceled(ClientError):
    """The server canceled a watch for a reason other than compaction."""


class DialTimeout(grpc.RpcError):  # type: ignore[misc]  # grpc ships no type information
    """No connection to ``endpoint`` within the client's dial timeout (raised inside a call attempt).

    It is a ``grpc.RpcError`` worded like gRPC's own connect failures, so the routing policy treats it the
    same way: nothing was sent, the next member may be tried. Callers see it as ``Unavailable``/timeout text.
    """

    def __init__(self, endpoint: str, seconds: float) -> None:
        self._details = f"failed to connect to {endpoint} within the dial timeout ({seconds:g}s)"
        super().__init__(self._details)

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details


def dial_failure(error: grpc.RpcError, endpoint: str, seconds: float) -> None:
    """Judge a failed connection probe: raise if no connection was made, return if the server answered."""
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        raise DialTimeout(endpoint, seconds) from None
    if code == grpc.StatusCode.UNAVAILABLE:
        raise error  # gRPC's own words: refused, TLS rejected, ...


_BY_ERROR: dict[etcd.EtcdError, type[ClientError]] = {
    etcd.COMPACTED: CompactedError,
    etcd.FUTURE_REV: FutureRevisionError,
    etcd.LEASE_NOT_FOUND: LeaseNotFound,
    etcd.REQUEST_TOO_LARGE: RequestTooLarge,
    etcd.NO_SPACE: NoSpaceError,
    etcd.NO_LEADER: NoLeaderError,
    etcd.TIMEOUT: TimeoutError,
    etcd.TIMEOUT_DUE_TO_LEADER_FAIL: TimeoutError,
    etcd.TIMEOUT_DUE_TO_CONNECTION_LOST: TimeoutError,
    etcd.TIMEOUT_WAIT_APPLIED_INDEX: TimeoutError,
}

_BY_CODE: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: TimeoutError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDenied,
}


def from_rpc_error(error: grpc.RpcError) -> ClientError:
    """The typed exception for a failed call (``grpc.RpcError`` or ``grpc.aio.AioRpcError``)."""
    code: grpc.StatusCode | None = error.code()
    details: str = error.details() or str(code)
    known = etcd.from_rpc_error(error)
    if known is not None and known in _BY_ERROR:
        return _BY_ERROR[known](details, code)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        return RequestTooLarge(details, code)  # refused by gRPC itself, on either side
    return _BY_CODE.get(code, ClientError)(details, code)

"""etcd's error contract: every error a raftkv server returns, as a gRPC status code and an exact message.

etcd clients (etcdctl, clientv3, and raftkv's own client) recognise errors by the *text* of the gRPC status
message, not by the code alone, so the messages here are byte-for-byte those of etcd v3.4
(``etcdserver/api/v3rpc/rpctypes``). Servers raise ``ERR.exception()`` or ``await ERR.abort(context)``;
the applier stores ``ERR.message`` in ``ApplyResult.error``; clients turn a status back into the constant
with ``from_message`` / ``from_rpc_error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn, Protocol

import grpc

_C = grpc.StatusCode


@dataclass(frozen=True, slots=True)
class EtcdError:
    """One error of the contract. A value, so it can be compared and used as a dict key."""

    code: grpc.StatusCode
    message: str

    def exception(self) -> EtcdException:
        """A fresh exception to raise (never raise a shared instance: tracebacks would accumulate on it)."""
        return EtcdException(self)

    async def abort(self, context: grpc.aio.ServicerContext) -> NoReturn:
        """End the RPC with this status; the message reaches the client unchanged."""
        await context.abort(self.code, self.message)
        raise AssertionError("ServicerContext.abort returned")  # abort always raises


class EtcdException(Exception):
    """An ``EtcdError`` in flight through server code, up to the servicer that turns it into a status."""

    def __init__(self, error: EtcdError) -> None:
        super().__init__(error.message)
        self.error = error


# KV and MVCC.
KEY_NOT_PROVIDED = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: key is not provided")
KEY_NOT_FOUND = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: key not found")
VALUE_PROVIDED = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: value is provided")
LEASE_PROVIDED = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: lease is provided")
TOO_MANY_OPS = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
DUPLICATE_KEY = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
COMPACTED = EtcdError(_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
FUTURE_REV = EtcdError(_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
NO_SPACE = EtcdError(_C.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")

# Leases.
LEASE_NOT_FOUND = EtcdError(_C.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXISTS = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = EtcdError(_C.OUT_OF_RANGE, "etcdserver: too large lease TTL")

# Watch.
WATCH_CANCELED = EtcdError(_C.CANCELLED, "etcdserver: watch canceled")

# Membership.
MEMBER_EXISTS = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: member ID already exist")
PEER_URL_EXISTS = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
MEMBER_NOT_ENOUGH_STARTED = EtcdError(
    _C.FAILED_PRECONDITION, "etcdserver: re-configuration failed due to not enough started members"
)
MEMBER_BAD_URLS = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid")
MEMBER_NOT_FOUND = EtcdError(_C.NOT_FOUND, "etcdserver: member not found")
MEMBER_NOT_LEARNER = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: can only promote a learner member")
LEARNER_NOT_READY = EtcdError(
    _C.FAILED_PRECONDITION, "etcdserver: can only promote a learner member which is in sync with leader"
)
TOO_MANY_LEARNERS = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: too many learner members in cluster")

# Request admission.
REQUEST_TOO_LARGE = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: request is too large")
TOO_MANY_REQUESTS = EtcdError(_C.RESOURCE_EXHAUSTED, "etcdserver: too many requests")

# Authentication and authorisation.
ROOT_USER_NOT_EXIST = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: root user does not exist")
ROOT_ROLE_NOT_EXIST = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: root user does not have root role")
USER_ALREADY_EXISTS = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: user name already exists")
USER_EMPTY = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: user name is empty")
USER_NOT_FOUND = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: user name not found")
ROLE_ALREADY_EXISTS = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: role name already exists")
ROLE_NOT_FOUND = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: role name not found")
ROLE_EMPTY = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: role name is empty")
AUTH_FAILED = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password")
PERMISSION_DENIED = EtcdError(_C.PERMISSION_DENIED, "etcdserver: permission denied")
ROLE_NOT_GRANTED = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: role is not granted to the user")
PERMISSION_NOT_GRANTED = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: permission is not granted to the role")
AUTH_NOT_ENABLED = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
INVALID_AUTH_TOKEN = EtcdError(_C.UNAUTHENTICATED, "etcdserver: invalid auth token")
INVALID_AUTH_MGMT = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: invalid auth management")
AUTH_OLD_REVISION = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")

# The Lock and Election services: etcd's recipes return these as plain Go errors, so their code is UNKNOWN.
SESSION_EXPIRED = EtcdError(_C.UNKNOWN, "session expired")
ELECTION_NO_LEADER = EtcdError(_C.UNKNOWN, "election: no leader")
ELECTION_NOT_LEADER = EtcdError(_C.UNKNOWN, "election: not leader")
MISSING_LEADER_KEY = EtcdError(_C.UNKNOWN, '"leader" field must be provided')

# etcd's maintenance service (Defragment, Hash, HashKV, Snapshot) returns the auth package's own errors
# untranslated: etcdctl shows them as code Unknown with these texts (``auth/store.go``).
RAW_AUTH_PERMISSION_DENIED = EtcdError(_C.UNKNOWN, "auth: permission denied")
RAW_AUTH_USER_EMPTY = EtcdError(_C.UNKNOWN, "auth: user name is empty")
RAW_AUTH_USER_NOT_FOUND = EtcdError(_C.UNKNOWN, "auth: user not found")
RAW_AUTH_INVALID_TOKEN = EtcdError(_C.UNKNOWN, "auth: invalid auth token")

# Cluster availability.
NO_LEADER = EtcdError(_C.UNAVAILABLE, "etcdserver: no leader")
NOT_LEADER = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: not leader")
LEADER_CHANGED = EtcdError(_C.UNAVAILABLE, "etcdserver: leader changed")
NOT_CAPABLE = EtcdError(_C.UNAVAILABLE, "etcdserver: not capable")
STOPPED = EtcdError(_C.UNAVAILABLE, "etcdserver: server stopped")
TIMEOUT = EtcdError(_C.UNAVAILABLE, "etcdserver: request timed out")
TIMEOUT_DUE_TO_LEADER_FAIL = EtcdError(
    _C.UNAVAILABLE, "etcdserver: request timed out, possibly due to previous leader failure"
)
TIMEOUT_DUE_TO_CONNECTION_LOST = EtcdError(
    _C.UNAVAILABLE, "etcdserver: request timed out, possibly due to connection lost"
)
TIMEOUT_WAIT_APPLIED_INDEX = EtcdError(
    _C.UNAVAILABLE, "etcdserver: request timed out, waiting for the applied index took too long"
)
UNHEALTHY = EtcdError(_C.UNAVAILABLE, "etcdserver: unhealthy cluster")
CORRUPT = EtcdError(_C.DATA_LOSS, "etcdserver: corrupt cluster")
NOT_SUPPORTED_FOR_LEARNER = EtcdError(_C.UNAVAILABLE, "etcdserver: rpc not supported for learner")
BAD_LEADER_TRANSFEREE = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: bad leader transferee")

# Request shape: etcd 3.5's text for sort options (3.4 has none: an unknown sort target stops the member).
INVALID_SORT_OPTION = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: invalid sort option")

# raftkv's own refusals, in etcd's style, where etcd has no error: etcd 3.4 treats an unknown compare
# as true, stops the member on an unknown alarm action, and nests txns until its decoder gives up.
INVALID_COMPARE = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: invalid compare target or result")
INVALID_ALARM = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: invalid alarm action or type")
INVALID_WATCH_FILTER = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: invalid watch filter")
TXN_TOO_DEEP = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: txn request nested too deeply")
#: A log entry the state machine cannot decode (or that names no request): its result on every member.
MALFORMED_REQUEST = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: malformed request in the log")
#: A request the state machine failed to apply (a defect): rolled back, the same result on every member.
APPLY_FAILED = EtcdError(_C.INTERNAL, "etcdserver: request could not be applied")

#: Every error above, keyed by its message: how a client (or the applier's ``ApplyResult.error``) maps
#: text back to the error.
BY_MESSAGE: dict[str, EtcdError] = {
    value.message: value for value in list(globals().values()) if isinstance(value, EtcdError)
}


def from_message(message: str) -> EtcdError | None:
    """The contract error whose text is ``message``, or None for any other text."""
    return BY_MESSAGE.get(message)


class StatusCarrier(Protocol):
    """What failed calls of both gRPC APIs offer: ``grpc.RpcError`` from a sync call, ``grpc.aio.AioRpcError``."""

    def code(self) -> grpc.StatusCode | None: ...

    def details(self) -> str | None: ...


def from_rpc_error(error: StatusCarrier) -> EtcdError | None:
    """The contract error a failed call carries, or None (transport failures, unknown messages).

    Both code and text must match: a status with etcd's text but another code did not come from an etcd
    contract check (for example a proxy rewriting codes) and is better treated as unknown.
    """
    found = from_message(error.details() or "")
    return found if found is not None and found.code == error.code() else None

"""Call admission for the etcd services: what gRPC metadata and the member's role allow, and how an
``EtcdException`` becomes a gRPC status.

etcd makes these checks once, in a server interceptor wrapped around every client RPC
(``etcdserver/api/v3rpc/interceptor.go``): learners serve only ``Status`` and serializable ``Range``;
a call carrying ``hasleader: true`` fails with ``etcdserver: no leader`` when the member knows no leader.
:class:`Admission` does the same here (a guard around every handler, ``raftkv.grpc_guard``), so the
services (including the watch and lease services) only ever *raise* ``EtcdException`` and never deal with
statuses themselves.

Also here, because every service needs them per call: the exactly-once session from raftkv's own
metadata, the time a call may take, and etcd's filling of response headers.
"""

from __future__ import annotations

from typing import Any, NoReturn, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from raftkv import errors
from raftkv.grpc_guard import Context, Guard
from raftkv.proto import rpc_pb2
from raftkv.server.backend import Backend, ClientSession
from raftkv.storage.sealed import CorruptionError

CLIENT_ID_KEY = "raftkv-client-id"
SEQ_KEY = "raftkv-seq"
#: Set by etcd clients (``clientv3.WithRequireLeader``, used by etcdctl for watches) to fail fast.
REQUIRE_LEADER_KEY = "hasleader"
#: The services admission guards; the standard health service stays reachable on every member.
GUARDED_PREFIXES = ("/etcdserverpb.", "/v3lockpb.", "/v3electionpb.")

ResponseT = TypeVar("ResponseT", bound=Message)


def _metadata(context: Context) -> dict[str, str]:
    return {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}


def client_session(context: Context) -> ClientSession:
    """The (client id, sequence) identity of a write, from decimal metadata values; absent means none.

    Malformed values are refused rather than ignored: silently dropping them would turn a client's
    exactly-once write into an at-least-once one.
    """
    metadata = _metadata(context)
    raw_id, raw_seq = metadata.get(CLIENT_ID_KEY), metadata.get(SEQ_KEY)
    if raw_id is None:
        return ClientSession()
    try:
        client_id, seq = int(raw_id), int(raw_seq or "0")
    except ValueError:
        client_id = seq = -1
    if not (0 < client_id < 2**64 and 0 <= seq < 2**64):
        raise MalformedMetadata(f"raftkv: malformed {CLIENT_ID_KEY}/{SEQ_KEY} metadata: {raw_id!r}/{raw_seq!r}")
    return ClientSession(client_id, seq)


class MalformedMetadata(Exception):
    """raftkv's own session metadata is unusable (INVALID_ARGUMENT; etcd has no such metadata)."""


def require_leader(context: Context, backend: Backend) -> None:
    """Honour ``hasleader: true``: etcd refuses such calls outright while the member knows no leader.
    The metadata is only read when there is no leader: grpc.aio converts it anew on every read."""
    if not backend.has_leader() and _metadata(context).get(REQUIRE_LEADER_KEY) == "true":
        raise errors.NO_LEADER.exception()


def _learner_may_serve(request: object) -> bool:
    """etcd's ``isRPCSupportedForLearner``: a learner's state may lag, so it serves only local reads."""
    if isinstance(request, rpc_pb2.StatusRequest):
        return True
    return isinstance(request, rpc_pb2.RangeRequest) and request.serializable


def _served_while_refusing(request: object | None) -> bool:
    """A member that may not serve its data still answers what an operator needs to see why."""
    return isinstance(request, (rpc_pb2.StatusRequest, rpc_pb2.AlarmRequest))


def admit(context: Context, backend: Backend, request: object | None) -> None:
    """The checks etcd makes before any handler runs; ``request`` is None for streaming-request calls."""
    if backend.refusing() and not _served_while_refusing(request):
        raise errors.CORRUPT.exception()
    if backend.is_learner() and (request is None or not _learner_may_serve(request)):
        raise errors.NOT_SUPPORTED_FOR_LEARNER.exception()
    require_leader(context, backend)


async def abort(context: Context, error: BaseException, backend: Backend) -> NoReturn:
    """End the call with the status an exception stands for; etcd's text reaches the client unchanged.
    Damaged data found while serving the call is the member's to act on; the client learns only that the
    member is corrupt, never what the damaged record held."""
    if isinstance(error, CorruptionError):
        backend.found_corruption(error)
        await errors.CORRUPT.abort(context)
    if isinstance(error, errors.EtcdException):
        await error.error.abort(context)
    assert isinstance(error, MalformedMetadata), error
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    raise AssertionError("ServicerContext.abort returned")


_Handled = (errors.EtcdException, MalformedMetadata, CorruptionError)


class Admission(Guard):
    """Runs :func:`admit` before every etcd RPC and turns ``EtcdException`` into etcd's status."""

    refusals = _Handled

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def guards(self, method: str) -> bool:
        return method.startswith(GUARDED_PREFIXES)

    def before(self, request: Any, context: Context, streaming_request: bool) -> Any:
        admit(context, self._backend, None if streaming_request else request)
        return request

    async def refuse(self, context: Context, error: BaseException) -> NoReturn:
        await abort(context, error, self._backend)


def call_timeout(context: Context, default: float) -> float:
    """How long the server may work on a call: its own limit, shortened by the client's deadline."""
    remaining = context.time_remaining()
    return default if remaining is None else max(0.0, min(default, remaining))


def with_header(response: ResponseT, backend: Backend) -> ResponseT:
    """Complete ``response.header`` as etcd's ``header.fill`` does: this member's ids and the current
    term always, the current revision only if the applier did not set the revision the request made.
    etcd clients dereference the header of every response."""
    current = backend.header()
    header = response.header
    header.cluster_id, header.member_id, header.raft_term = current.cluster_id, current.member_id, current.raft_term
    if not header.revision:
        header.revision = current.revision
    return response

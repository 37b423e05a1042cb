"""``etcdserverpb.KV``: Range, Put, DeleteRange, Txn and Compact over the :class:`Backend` seam.

Reads follow etcd: a linearizable Range waits on a ReadIndex barrier and then reads local state, a
serializable one reads local state at once. Every write becomes one ``InternalRequest`` in the Raft log;
the applier's answer (or its etcd error text) comes back in an ``ApplyResult``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from raftkv import errors
from raftkv.api import identity, validation
from raftkv.api.metadata import Context, call_timeout, client_session, with_header
from raftkv.proto import internal_pb2, rpc_pb2, rpc_pb2_grpc
from raftkv.server.backend import Backend, ClientSession
from raftkv.statemachine import requests

R = TypeVar("R", bound=Message)
Q = TypeVar("Q", bound=Message)
#: etcd's request timeout at default settings: 5 s plus two election timeouts.
DEFAULT_REQUEST_TIMEOUT = 7.0


async def propose(
    backend: Backend, request: internal_pb2.InternalRequest, context: Context | None, timeout: float
) -> internal_pb2.ApplyResult:
    """Replicate ``request`` and return its result, raising the applier's error if it failed.

    The size limit is checked on the internal request, as etcd does, so that a Txn cannot slip past it.
    ``context`` None is a request the server makes on its own (no session, the whole ``timeout``).
    The caller's identity goes into the request unless the caller stamped one already: permissions are
    checked when the entry is applied. A request the server makes on its own is marked so (etcd's
    internal requests carry no user either) and is not checked.
    """
    validation.check_request_size(request, backend.max_request_bytes)
    if context is None:
        request.header.by_member = True
        session, timeout = ClientSession(), timeout
    else:
        if not request.header.auth_revision:
            await identity.stamp(context, backend, request.header)
        session, timeout = client_session(context), call_timeout(context, timeout)
    result = await backend.propose(request, session, timeout)
    if result.error:
        known = errors.from_message(result.error)
        raise (known or errors.EtcdError(grpc.StatusCode.UNKNOWN, result.error)).exception()
    return result


class KVService(rpc_pb2_grpc.KVServicer):
    """The key-value service; errors are raised as ``EtcdException`` for the admission guard."""

    def __init__(self, backend: Backend, request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self._backend = backend
        self._timeout = request_timeout

    async def Range(self, request: rpc_pb2.RangeRequest, context: Context) -> rpc_pb2.RangeResponse:
        validation.check_range(request)
        check = identity.check_read(context, self._backend, request.key, request.range_end)
        return await self._read(context, check, request.serializable, self._backend.range, request)

    async def Put(self, request: rpc_pb2.PutRequest, context: Context) -> rpc_pb2.PutResponse:
        validation.check_put(request)
        result = await self._propose(internal_pb2.InternalRequest(put=request), context)
        return with_header(result.put, self._backend)

    async def DeleteRange(
        self, request: rpc_pb2.DeleteRangeRequest, context: Context
    ) -> rpc_pb2.DeleteRangeResponse:
        validation.check_delete_range(request)
        result = await self._propose(internal_pb2.InternalRequest(delete_range=request), context)
        return with_header(result.delete_range, self._backend)

    async def Txn(self, request: rpc_pb2.TxnRequest, context: Context) -> rpc_pb2.TxnResponse:
        """A transaction of Ranges alone is served as a Range is, as etcd serves it (``EtcdServer.Txn``):
        after a ReadIndex round unless every Range is serializable, from one read view, with no log entry.
        Any other goes through the log."""
        validation.check_txn(request, self._backend.max_txn_ops)
        if requests.is_read_only(request):
            check = identity.check_read_only_txn(context, self._backend, request)
            return await self._read(
                context, check, requests.is_serializable(request), self._backend.read_only_txn, request
            )
        result = await self._propose(internal_pb2.InternalRequest(txn=request), context)
        return with_header(result.txn, self._backend)

    async def Compact(
        self, request: rpc_pb2.CompactionRequest, context: Context
    ) -> rpc_pb2.CompactionResponse:
        result = await self._propose(internal_pb2.InternalRequest(compaction=request), context)
        return with_header(result.compaction, self._backend)

    async def _read(
        self,
        context: Context,
        check: Awaitable[identity.AuthInfo | None],
        serializable: bool,
        read: Callable[[Q], R],
        request: Q,
    ) -> R:
        """A read served from this member's state, as etcd serves one: the permission ``check``, a ReadIndex
        round unless ``serializable``, ``read(request)``, and the auth store found unchanged meanwhile. The
        backend's method and the request are passed apart so that no closure is built per call."""
        checked = await check
        if not serializable:
            await self._backend.read_barrier(call_timeout(context, self._timeout))
        response = read(request)
        identity.check_still_current(self._backend, checked)
        return with_header(response, self._backend)

    async def _propose(
        self, request: internal_pb2.InternalRequest, context: Context
    ) -> internal_pb2.ApplyResult:
        return await propose(self._backend, request, context, self._timeout)

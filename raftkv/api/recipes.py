"""etcd's coordination recipes (``clientv3/concurrency``) run inside the member, for the Lock and Election
services.

etcd serves ``v3lockpb.Lock`` and ``v3electionpb.Election`` by running its client-side recipes (Mutex,
Election) against its own KV API. raftkv does the same against the ``Backend``: every step is the same
request a client would send — a Txn through the log, a linearizable Range, a watch from a revision — so
the keys, revisions and ordering are exactly those of ``concurrency.Mutex`` and ``concurrency.Election``,
and a client using the recipes directly (etcdctl ``lock``/``elect``, Go's ``concurrency`` package)
contends fairly with one using the services.

The shared pieces live here: the request shapes (``first_created``, ``last_created_before``), waiting for
older contenders to go (``wait_deletes``), and cleaning up after a waiter whose call was canceled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import grpc

from raftkv import errors
from raftkv.api import identity
from raftkv.api.kv import DEFAULT_REQUEST_TIMEOUT, propose
from raftkv.api.metadata import Context, call_timeout, with_header
from raftkv.keys import prefix_end
from raftkv.proto import internal_pb2, kv_pb2, rpc_pb2
from raftkv.server.backend import Backend
from raftkv.server.watch_hub import StreamClosed, WatchHub, WatchSpec

#: ``concurrency.NewSession``'s default TTL: the lease a Lock or Campaign without one is given.
DEFAULT_SESSION_TTL = 60

_CREATE = rpc_pb2.RangeRequest.SortTarget.CREATE
_ASCEND = rpc_pb2.RangeRequest.SortOrder.ASCEND
_DESCEND = rpc_pb2.RangeRequest.SortOrder.DESCEND
_DELETE = kv_pb2.Event.EventType.DELETE


def first_created(prefix: bytes) -> rpc_pb2.RangeRequest:
    """clientv3's ``WithFirstCreate``: the oldest key under the prefix (the lock holder, the leader)."""
    return rpc_pb2.RangeRequest(key=prefix, range_end=prefix_end(prefix), sort_target=_CREATE,
                                sort_order=_ASCEND, limit=1)


def last_created_before(prefix: bytes, max_create_revision: int) -> rpc_pb2.RangeRequest:
    """``WithLastCreate`` + ``WithMaxCreateRev``: the youngest contender older than the caller."""
    return rpc_pb2.RangeRequest(key=prefix, range_end=prefix_end(prefix), sort_target=_CREATE,
                                sort_order=_DESCEND, limit=1, max_create_revision=max_create_revision)


def created_at(key: bytes, revision: int) -> rpc_pb2.Compare:
    """The compare that says "this key is still the one created at ``revision``" (0: does not exist)."""
    return rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.CompareTarget.CREATE,
                           result=rpc_pb2.Compare.CompareResult.EQUAL, create_revision=revision)


def contender_key(prefix: bytes, lease: int) -> bytes:
    """A session's key under a lock or election prefix: the prefix and the lease id in hex, as etcd's."""
    return prefix + f"{lease:x}".encode()


@contextlib.contextmanager
def as_plain_errors() -> Iterator[None]:
    """etcd's servers run the recipes through a client of their own, whose errors reach the caller as
    plain errors: the same text, but code UNKNOWN. Clients see raftkv's the same way."""
    try:
        yield
    except errors.EtcdException as exc:
        raise _plain(exc.error) from None


def _plain(error: errors.EtcdError) -> errors.EtcdException:
    return errors.EtcdError(grpc.StatusCode.UNKNOWN, error.message).exception()


class Recipes:
    """The KV steps of the recipes, each as the client-facing service would answer it."""

    def __init__(self, backend: Backend, hub: WatchHub, request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.backend = backend
        self._hub = hub
        self._timeout = request_timeout
        self._cleanups: set[asyncio.Task[None]] = set()

    async def txn(self, request: rpc_pb2.TxnRequest, context: Context | None) -> rpc_pb2.TxnResponse:
        """``context`` None: clean-up after the call that asked for it has ended (see ``clean_up``)."""
        with as_plain_errors():
            result = await propose(self.backend, internal_pb2.InternalRequest(txn=request), context, self._timeout)
        return with_header(result.txn, self.backend)

    async def delete(self, key: bytes, context: Context | None) -> rpc_pb2.DeleteRangeResponse:
        request = internal_pb2.InternalRequest(delete_range=rpc_pb2.DeleteRangeRequest(key=key))
        with as_plain_errors():
            result = await propose(self.backend, request, context, self._timeout)
        return with_header(result.delete_range, self.backend)

    async def get(self, request: rpc_pb2.RangeRequest, context: Context) -> rpc_pb2.RangeResponse:
        """A linearizable Range, checked as the caller's own would be (etcd runs its recipes through a client
        carrying the caller's credentials)."""
        with as_plain_errors():
            await identity.check_read(context, self.backend, request.key, request.range_end)
            await self.backend.read_barrier(call_timeout(context, self._timeout))
            return with_header(self.backend.range(request), self.backend)

    async def session_lease(self, lease: int, context: Context) -> int:
        """``concurrency.NewSession(WithLease(lease))``: the caller's lease, or a new one if it gave none.

        A new lease is never kept alive (etcd's servers orphan their sessions): it expires after
        ``DEFAULT_SESSION_TTL`` unless the caller renews it."""
        if lease:
            return lease
        grant = internal_pb2.InternalRequest(lease_grant=rpc_pb2.LeaseGrantRequest(TTL=DEFAULT_SESSION_TTL))
        with as_plain_errors():
            result = await propose(self.backend, grant, context, self._timeout)
        return result.lease_grant.ID

    async def wait_deletes(self, prefix: bytes, max_create_revision: int, context: Context) -> rpc_pb2.ResponseHeader:
        """Wait until no key under ``prefix`` created at or before ``max_create_revision`` is left
        (``concurrency.waitDeletes``): the youngest older contender at a time, each until it is deleted."""
        while True:
            older = await self.get(last_created_before(prefix, max_create_revision), context)
            if not older.kvs:
                return older.header
            await self._wait_delete(older.kvs[0].key, older.header.revision)

    async def _wait_delete(self, key: bytes, revision: int) -> None:
        async for event in self.watch(WatchSpec(key=key, start_revision=revision, no_put=True)):
            if event[1].type == _DELETE:
                return

    async def watch(self, spec: WatchSpec) -> AsyncIterator[tuple[int, kv_pb2.Event]]:
        """(revision, event) for every event the watch sees, in order, until the caller stops.

        A watch whose start was compacted away ends with etcd's compacted error, as a client's would."""
        stream = self._hub.open_stream()
        try:
            stream.create(spec)
            while True:
                for delivery in await stream.next():
                    if delivery.canceled:
                        raise _plain(errors.COMPACTED)
                    for event in delivery.events:
                        yield delivery.revision, event
        except StreamClosed:
            raise _plain(errors.STOPPED) from None
        finally:
            stream.close()

    def clean_up(self, work: Coroutine[Any, Any, object], what: str) -> None:
        """Run ``work`` (undoing a waiter's key) even though the call that needed it was canceled: the
        call's own task is being torn down, so the work gets a task of its own."""

        async def guarded() -> None:
            try:
                await work
            except errors.EtcdException:
                pass  # the key goes with its lease in any case

        task = asyncio.get_running_loop().create_task(guarded(), name=what)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)


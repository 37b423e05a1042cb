"""``etcdserverpb.Maintenance``: status, alarms, defragmentation, hashes, snapshots and leader transfer."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator

from raftkv import errors
from raftkv.api import identity, validation
from raftkv.api.kv import DEFAULT_REQUEST_TIMEOUT, propose
from raftkv.api.metadata import Context, call_timeout, with_header
from raftkv.proto import internal_pb2, rpc_pb2, rpc_pb2_grpc
from raftkv.server.backend import Backend

#: etcd sends snapshots in 32 KiB messages.
SNAPSHOT_CHUNK_BYTES = 32 * 1024
#: etcdctl refuses a snapshot whose length is not a multiple of this plus 32 (bolt files are page-sized;
#: that is how it finds the trailing SHA-256), so raftkv's stream is padded with zero bytes to it.
SNAPSHOT_ALIGN_BYTES = 512
#: Snapshots up to this size are staged in memory, larger ones in a temporary file.
SNAPSHOT_SPOOL_BYTES = 16 * 1024 * 1024


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, backend: Backend, request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self._backend = backend
        self._timeout = request_timeout

    async def Status(self, request: rpc_pb2.StatusRequest, context: Context) -> rpc_pb2.StatusResponse:
        return with_header(self._backend.status(), self._backend)

    async def Alarm(self, request: rpc_pb2.AlarmRequest, context: Context) -> rpc_pb2.AlarmResponse:
        """Raising or clearing an alarm goes through the log so every member agrees; listing is a
        linearizable read. As in etcd, GET with an alarm type lists only alarms of that type, and the
        answer has no header (etcd's Alarm and Defragment are the two answers that carry none)."""
        validation.check_alarm(request)
        if request.action != rpc_pb2.AlarmRequest.GET:
            result = await propose(self._backend, internal_pb2.InternalRequest(alarm=request), context, self._timeout)
            return rpc_pb2.AlarmResponse(alarms=result.alarm.alarms)
        await self._backend.read_barrier(call_timeout(context, self._timeout))
        alarms = [
            alarm
            for alarm in self._backend.alarms()
            if request.alarm == rpc_pb2.NONE or alarm.alarm == request.alarm
        ]
        return rpc_pb2.AlarmResponse(alarms=alarms)

    async def Defragment(
        self, request: rpc_pb2.DefragmentRequest, context: Context
    ) -> rpc_pb2.DefragmentResponse:
        await identity.require_admin_for_maintenance(context, self._backend)
        await self._backend.defragment()
        return rpc_pb2.DefragmentResponse()  # no header, as etcd's

    async def Hash(self, request: rpc_pb2.HashRequest, context: Context) -> rpc_pb2.HashResponse:
        """etcd hashes its whole database file here; raftkv's stand-in is the hash of all key-value
        history, which is what operators compare across members anyway (it differs from etcd's number)."""
        await identity.require_admin_for_maintenance(context, self._backend)
        return with_header(rpc_pb2.HashResponse(hash=(await self._backend.hash_kv(0)).hash), self._backend)

    async def HashKV(self, request: rpc_pb2.HashKVRequest, context: Context) -> rpc_pb2.HashKVResponse:
        await identity.require_admin_for_maintenance(context, self._backend)
        return with_header(await self._backend.hash_kv(request.revision), self._backend)

    async def Snapshot(
        self, request: rpc_pb2.SnapshotRequest, context: Context
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        """etcd's stream: 32 KiB blobs each saying how many bytes remain, then one message holding the
        SHA-256 of everything sent (``etcdctl snapshot save`` insists on it).

        The data is etcd's backend database (``raftkv.statemachine.etcd_backend``), so ``etcdctl snapshot
        status`` and ``restore`` read a saved file; being whole pages it needs none of the zero padding to a
        multiple of ``SNAPSHOT_ALIGN_BYTES`` that is added to anything else.

        The backend's consistent view is staged first, because ``remaining_bytes`` needs the total size
        up front and the view should not be held open for as long as a slow client takes to read.
        """
        await identity.require_admin_for_maintenance(context, self._backend)
        digest = hashlib.sha256()
        with tempfile.SpooledTemporaryFile(max_size=SNAPSHOT_SPOOL_BYTES) as spool:
            async for chunk in self._backend.snapshot_chunks():
                spool.write(chunk)
                digest.update(chunk)
            padding = bytes(-spool.tell() % SNAPSHOT_ALIGN_BYTES)
            spool.write(padding)
            digest.update(padding)
            total = spool.tell()
            spool.seek(0)
            sent = 0
            while sent < total:
                blob = spool.read(SNAPSHOT_CHUNK_BYTES)
                assert blob, f"snapshot spool ended after {sent} of {total} bytes"
                sent += len(blob)
                yield with_header(rpc_pb2.SnapshotResponse(remaining_bytes=total - sent, blob=blob), self._backend)
        yield with_header(rpc_pb2.SnapshotResponse(remaining_bytes=0, blob=digest.digest()), self._backend)

    async def MoveLeader(
        self, request: rpc_pb2.MoveLeaderRequest, context: Context
    ) -> rpc_pb2.MoveLeaderResponse:
        """Only the leader can hand leadership over; etcd refuses elsewhere rather than forwarding."""
        if not self._backend.is_leader():
            raise errors.NOT_LEADER.exception()
        await self._backend.move_leader(request.targetID, call_timeout(context, self._timeout))
        return with_header(rpc_pb2.MoveLeaderResponse(), self._backend)


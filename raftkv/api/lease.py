"""``etcdserverpb.Lease``: grant, revoke, keep-alive, time-to-live and listing, as etcd v3.4 answers them.

Grants and revocations are replicated (``Backend.propose``); keep-alives and time-to-live are answered by
the leader's lease clock (``Backend`` forwards them from followers); listing reads the local state machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from raftkv.api import validation
from raftkv.api.kv import DEFAULT_REQUEST_TIMEOUT, propose
from raftkv.api.metadata import Context, call_timeout, with_header
from raftkv.proto import internal_pb2, rpc_pb2, rpc_pb2_grpc
from raftkv.server.backend import Backend


class LeaseServicer(rpc_pb2_grpc.LeaseServicer):
    """The Lease service; errors are raised as ``EtcdException`` for the admission guard."""

    def __init__(self, backend: Backend, request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self._backend = backend
        self._timeout = request_timeout

    async def LeaseGrant(
        self, request: rpc_pb2.LeaseGrantRequest, context: Context
    ) -> rpc_pb2.LeaseGrantResponse:
        """ID 0 lets the state machine choose; the applier raises a short TTL to the minimum, as etcd does."""
        validation.check_lease_grant(request)
        grant = rpc_pb2.LeaseGrantRequest(TTL=request.TTL, ID=request.ID)
        result = await propose(self._backend, internal_pb2.InternalRequest(lease_grant=grant), context, self._timeout)
        return with_header(result.lease_grant, self._backend)

    async def LeaseRevoke(
        self, request: rpc_pb2.LeaseRevokeRequest, context: Context
    ) -> rpc_pb2.LeaseRevokeResponse:
        revoke = internal_pb2.InternalRequest(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=request.ID))
        result = await propose(self._backend, revoke, context, self._timeout)
        return with_header(result.lease_revoke, self._backend)

    async def LeaseKeepAlive(
        self, request_iterator: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest], context: Context
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        """One reply per request, in order; TTL 0 tells the client the lease is gone (expired or revoked)."""
        async for request in request_iterator:
            ttl = await self._backend.lease_keep_alive(request.ID, call_timeout(context, self._timeout))
            yield rpc_pb2.LeaseKeepAliveResponse(header=self._backend.header(), ID=request.ID, TTL=ttl)

    async def LeaseTimeToLive(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: Context
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        """A missing lease is not an error here: etcd answers TTL -1."""
        response = await self._backend.lease_time_to_live(
            request.ID, request.keys, call_timeout(context, self._timeout)
        )
        response.ID = request.ID
        return with_header(response, self._backend)

    async def LeaseLeases(
        self, request: rpc_pb2.LeaseLeasesRequest, context: Context
    ) -> rpc_pb2.LeaseLeasesResponse:
        leases = [rpc_pb2.LeaseStatus(ID=lease_id) for lease_id in self._backend.lease_ids()]
        return rpc_pb2.LeaseLeasesResponse(header=self._backend.header(), leases=leases)

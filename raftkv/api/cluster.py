"""``etcdserverpb.Cluster``: membership as etcd reports and changes it.

Membership changes are Raft configuration changes made by the node (one at a time, learners first if the
operator wishes); this service validates URLs the way etcd does and answers with the membership that
results, so ``etcdctl member add`` can print the ``ETCD_INITIAL_CLUSTER`` line for the new member.
"""

from __future__ import annotations

from raftkv.api import identity, validation
from raftkv.api.kv import DEFAULT_REQUEST_TIMEOUT
from raftkv.api.metadata import Context, call_timeout, with_header
from raftkv.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.server.backend import Backend


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, backend: Backend, request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self._backend = backend
        self._timeout = request_timeout

    def _members(self) -> list[rpc_pb2.Member]:
        """Ordered by id, as etcd lists them (etcdctl prints them, and the new member's
        ``ETCD_INITIAL_CLUSTER`` line, in this order)."""
        return sorted(self._backend.members(), key=lambda member: member.ID)

    async def MemberList(
        self, request: rpc_pb2.MemberListRequest, context: Context
    ) -> rpc_pb2.MemberListResponse:
        """Local membership, as etcd v3.4 answers it (no barrier: the list changes only through the log).
        Its header names no revision: membership is not part of the key-value history."""
        header = self._backend.header()
        header.revision = 0
        return rpc_pb2.MemberListResponse(header=header, members=self._members())

    async def MemberAdd(
        self, request: rpc_pb2.MemberAddRequest, context: Context
    ) -> rpc_pb2.MemberAddResponse:
        await identity.require_admin(context, self._backend)
        validation.check_member_urls(request.peerURLs)
        member = await self._backend.member_add(
            list(request.peerURLs), request.isLearner, call_timeout(context, self._timeout)
        )
        response = rpc_pb2.MemberAddResponse(member=member, members=self._members())
        return with_header(response, self._backend)

    async def MemberRemove(
        self, request: rpc_pb2.MemberRemoveRequest, context: Context
    ) -> rpc_pb2.MemberRemoveResponse:
        await identity.require_admin(context, self._backend)
        await self._backend.member_remove(request.ID, call_timeout(context, self._timeout))
        return with_header(rpc_pb2.MemberRemoveResponse(members=self._members()), self._backend)

    async def MemberUpdate(
        self, request: rpc_pb2.MemberUpdateRequest, context: Context
    ) -> rpc_pb2.MemberUpdateResponse:
        await identity.require_admin(context, self._backend)
        validation.check_member_urls(request.peerURLs)
        await self._backend.member_update(request.ID, list(request.peerURLs), call_timeout(context, self._timeout))
        return with_header(rpc_pb2.MemberUpdateResponse(members=self._members()), self._backend)

    async def MemberPromote(
        self, request: rpc_pb2.MemberPromoteRequest, context: Context
    ) -> rpc_pb2.MemberPromoteResponse:
        await identity.require_admin(context, self._backend)
        await self._backend.member_promote(request.ID, call_timeout(context, self._timeout))
        return with_header(rpc_pb2.MemberPromoteResponse(members=self._members()), self._backend)

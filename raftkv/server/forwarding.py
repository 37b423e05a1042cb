"""Lease questions only the leader can answer, asked on a follower's behalf.

A lease's expiry clock lives on the leader (``raftkv.server.lessor``), so a keep-alive or a time-to-live
query that reaches a follower must be answered by the leader, as etcd forwards them over its peer port.
The follower dials the leader's client URL with its own member certificate (which carries the
client-auth usage) and asks the same etcd Lease RPC; the leader answers from its clock.
"""

from __future__ import annotations

from typing import Protocol

import grpc

from raftkv import errors
from raftkv.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.server.member_channels import MemberChannels


class MemberDirectory(Protocol):
    def members(self) -> list[rpc_pb2.Member]: ...


class LeaderLeaseForwarder:
    """The ``LeaseForwarder`` a follower's node uses: the leader's own Lease RPCs on its client URL."""

    def __init__(self, node: MemberDirectory, channels: MemberChannels) -> None:
        self._node = node
        self._channels = channels

    def _stub(self, leader_id: int) -> rpc_pb2_grpc.LeaseStub:
        member = next((m for m in self._node.members() if m.ID == leader_id and m.clientURLs), None)
        if member is None:
            raise errors.NO_LEADER.exception()
        return rpc_pb2_grpc.LeaseStub(self._channels.to(member.clientURLs[0]))

    async def keep_alive(self, leader_id: int, lease_id: int, timeout: float) -> int:
        call = self._stub(leader_id).LeaseKeepAlive(timeout=timeout)
        try:
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
            reply = await call.read()
        except grpc.aio.AioRpcError as exc:
            raise _as_etcd_error(exc) from None
        finally:
            call.cancel()
        if reply is grpc.aio.EOF:
            raise errors.LEADER_CHANGED.exception()
        return int(reply.TTL)

    async def time_to_live(
        self, leader_id: int, lease_id: int, keys: bool, timeout: float
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)
        try:
            response: rpc_pb2.LeaseTimeToLiveResponse = await self._stub(leader_id).LeaseTimeToLive(
                request, timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _as_etcd_error(exc) from None
        return response

def _as_etcd_error(exc: grpc.aio.AioRpcError) -> errors.EtcdException:
    """etcd's error if the leader answered with one; otherwise the leader is unreachable or went away."""
    known = errors.from_rpc_error(exc)
    return (known or errors.LEADER_CHANGED).exception()

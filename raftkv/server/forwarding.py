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
from raftkv.security.grpc_options import channel_options
from raftkv.security.tls import TLSFiles, channel_credentials
from raftkv.server.config import host_port


class MemberDirectory(Protocol):
    def members(self) -> list[rpc_pb2.Member]: ...


class LeaderLeaseForwarder:
    """Callable ``(leader_id, what, lease_id, timeout) -> TTL`` used by ``Node`` when it is not the leader."""

    def __init__(self, node: MemberDirectory, tls: TLSFiles | None) -> None:
        self._node = node
        self._credentials = channel_credentials(tls) if tls is not None else None
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, leader_id: int) -> rpc_pb2_grpc.LeaseStub:
        member = next((m for m in self._node.members() if m.ID == leader_id and m.clientURLs), None)
        if member is None:
            raise errors.NO_LEADER.exception()
        target = host_port(member.clientURLs[0])
        channel = self._channels.get(target)
        if channel is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(target, options=channel_options())
            else:
                channel = grpc.aio.secure_channel(target, self._credentials, options=channel_options())
            self._channels[target] = channel
        return rpc_pb2_grpc.LeaseStub(channel)

    async def __call__(self, leader_id: int, what: str, lease_id: int, timeout: float) -> int:
        stub = self._stub(leader_id)
        try:
            if what == "keep_alive":
                call = stub.LeaseKeepAlive(timeout=timeout)
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
                reply = await call.read()
                call.cancel()
                if reply is grpc.aio.EOF:
                    raise errors.NO_LEADER.exception()
                return int(reply.TTL)
            response = await stub.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id), timeout=timeout)
            return int(response.TTL)
        except grpc.aio.AioRpcError as exc:
            known = errors.from_rpc_error(exc)
            raise (known or errors.LEADER_CHANGED).exception() from None

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

"""gRPC channels from this member to the client URLs of the others, made with this member's certificate.

Some questions only another member can answer over the etcd API: the leader's lease clock
(``forwarding``), another member's history hash (``hash_check``), and a healthy member taking the CORRUPT
alarm of one that can no longer propose (``quarantine``). All of them dial the same way, once per target.
"""

from __future__ import annotations

import grpc

from raftkv.security.grpc_options import channel_options
from raftkv.security.tls import TLSFiles, channel_credentials
from raftkv.server.config import host_port


class MemberChannels:
    def __init__(self, tls: TLSFiles | None) -> None:
        self._credentials = channel_credentials(tls) if tls is not None else None
        self._channels: dict[str, grpc.aio.Channel] = {}

    def to(self, client_url: str) -> grpc.aio.Channel:
        target = host_port(client_url)
        channel = self._channels.get(target)
        if channel is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(target, options=channel_options())
            else:
                channel = grpc.aio.secure_channel(target, self._credentials, options=channel_options())
            self._channels[target] = channel
        return channel

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

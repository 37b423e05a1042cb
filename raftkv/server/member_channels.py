"""gRPC channels from this member to the client URLs of the others, made with this member's certificate.

Some questions only another member can answer over the etcd API: the leader's lease clock
(``forwarding``), another member's history hash (``hash_check``), and a healthy member taking the CORRUPT
alarm of one that can no longer propose (``quarantine``). All of them dial the same way, once per target.

The credentials follow the member's TLS files (``ReloadingChannelCredentials``): after a rotation the next
call to a target gets a channel made with the new ones; calls under way on the old channel finish on it.
"""

from __future__ import annotations

import grpc

from raftkv.security.grpc_options import channel_options
from raftkv.security.tls import ReloadingChannelCredentials, TLSFiles
from raftkv.server.config import host_port


class MemberChannels:
    def __init__(self, tls: TLSFiles | None) -> None:
        self._credentials = ReloadingChannelCredentials(tls) if tls is not None else None
        #: target -> (the credentials its channel was made with, the channel)
        self._channels: dict[str, tuple[grpc.ChannelCredentials | None, grpc.aio.Channel]] = {}
        self._retired: list[grpc.aio.Channel] = []

    def to(self, client_url: str) -> grpc.aio.Channel:
        target = host_port(client_url)
        credentials = None if self._credentials is None else self._credentials()
        known = self._channels.get(target)
        if known is not None and known[0] is credentials:
            return known[1]
        if known is not None:
            self._retired.append(known[1])  # closed with the others, once calls on it are over
        if credentials is None:
            channel = grpc.aio.insecure_channel(target, options=channel_options())
        else:
            channel = grpc.aio.secure_channel(target, credentials, options=channel_options())
        self._channels[target] = (credentials, channel)
        return channel

    async def close(self) -> None:
        for channel in [*(c for _, c in self._channels.values()), *self._retired]:
            await channel.close()
        self._channels.clear()
        self._retired.clear()

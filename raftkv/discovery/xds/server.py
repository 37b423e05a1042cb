"""raftkv's registry served as an xDS management server (ADS over gRPC, asyncio).

    server = XdsServer(AsyncClient(), listen="127.0.0.1:18000", credentials=...)
    await server.start()
    ...
    await server.stop()

Each ADS stream is an ``AdsStream`` (``stream.py``) fed by two sources: the client's requests, and ticks
from the ``Follower``, which runs one ``AsyncResolver`` per service that some stream subscribes to (shared
by all streams, stopped when the last one leaves). The resolver lists the service's prefix, watches it,
lists again after a compaction and keeps the last known instances while raftkv is unreachable, so an xDS
client keeps its endpoints through a registry outage (static stability) and learns of changes as soon as
the watch delivers them.

The server reads the registry only; it holds no state that a restart loses: clients reconnect and ask again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping

import grpc
import grpc.aio
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from raftkv.client import AsyncClient
from raftkv.discovery import record
from raftkv.discovery.resolver import AsyncResolver
from raftkv.discovery.view import Change
from raftkv.discovery.xds import resources
from raftkv.discovery.xds.stream import AdsStream
from raftkv.security.grpc_options import server_options

log = logging.getLogger("raftkv.discovery.xds")

Listener = Callable[[str], None]


class Follower:
    """Resolvers for the services streams subscribe to, reference-counted, and who to tell on change."""

    def __init__(self, client: AsyncClient, namespace: str) -> None:
        self.client, self.namespace = client, namespace
        self._resolvers: dict[str, AsyncResolver] = {}
        self._users: dict[str, int] = {}
        self._listeners: set[Listener] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def services(self) -> Iterable[str]:
        return list(self._resolvers)

    def instances(self, service: str) -> Mapping[str, record.Instance] | None:
        resolver = self._resolvers.get(service)
        if resolver is None or not resolver.synced:
            return None
        return resolver.instances

    def listen(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def unlisten(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def _changed(self, service: str) -> None:
        for listener in list(self._listeners):
            listener(service)

    async def acquire(self, service: str) -> None:
        self._users[service] = self._users.get(service, 0) + 1
        if service in self._resolvers:
            return
        resolver = AsyncResolver(service, client=self.client, namespace=self.namespace)
        self._resolvers[service] = resolver
        await resolver.start(wait=None)

        def changed(_changes: list[Change], _instances: Mapping[str, record.Instance]) -> None:
            self._changed(service)

        resolver.subscribe(changed)
        task = asyncio.create_task(self._first_listing(service, resolver))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _first_listing(self, service: str, resolver: AsyncResolver) -> None:
        """Tell the streams once the first listing arrived even if it was empty (the resolver calls its
        subscribers only for changes, and an empty listing changes nothing)."""
        await resolver.wait_synced()
        self._changed(service)

    async def release(self, service: str) -> None:
        left = self._users.get(service, 0) - 1
        if left > 0:
            self._users[service] = left
            return
        self._users.pop(service, None)
        resolver = self._resolvers.pop(service, None)
        if resolver is not None:
            await resolver.stop()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for service in list(self._resolvers):
            self._users[service] = 1
            await self.release(service)


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, follower: Follower, policy: resources.Policy) -> None:
        self.follower, self.policy = follower, policy
        #: Streams open now, for status and tests.
        self.streams: set[AdsStream] = set()

    async def StreamAggregatedResources(  # noqa: N802 - the generated servicer's name
            self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
            context: grpc.aio.ServicerContext) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        stream = AdsStream(self.policy, self.follower)
        inbox: asyncio.Queue[discovery_pb2.DiscoveryRequest | str | None] = asyncio.Queue()
        followed: set[str] = set()

        def changed(service: str) -> None:
            if service in followed or stream.wildcard:
                inbox.put_nowait(service)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    inbox.put_nowait(request)
            finally:
                inbox.put_nowait(None)

        self.follower.listen(changed)
        self.streams.add(stream)
        reader = asyncio.create_task(read())
        try:
            while (item := await inbox.get()) is not None:
                if isinstance(item, str):
                    responses = stream.refresh()
                else:
                    responses = stream.receive(item)
                    wanted = stream.services()
                    for service in sorted(wanted - followed):
                        followed.add(service)
                        await self.follower.acquire(service)
                    for service in sorted(followed - wanted):
                        followed.discard(service)
                        await self.follower.release(service)
                for response in responses:
                    yield response
        finally:
            reader.cancel()
            self.follower.unlisten(changed)
            self.streams.discard(stream)
            for service in followed:
                await self.follower.release(service)


class XdsServer:
    """The ADS endpoint; ``credentials`` None serves plaintext (say so to the clients' bootstrap too)."""

    def __init__(self, client: AsyncClient, *, listen: str = "127.0.0.1:18000",
                 credentials: grpc.ServerCredentials | None = None,
                 policy: resources.Policy | None = None, namespace: str = record.DEFAULT_NAMESPACE) -> None:
        self.client, self.listen, self.credentials = client, listen, credentials
        self.follower = Follower(client, namespace)
        self.servicer = _Servicer(self.follower, policy or resources.Policy())
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> XdsServer:
        server = grpc.aio.server(options=server_options())
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.servicer, server)
        if self.credentials is None:
            self.port = server.add_insecure_port(self.listen)
        else:
            self.port = server.add_secure_port(self.listen, self.credentials)
        if not self.port:
            raise OSError(f"cannot listen on {self.listen}")
        await server.start()
        self._server = server
        log.info("xDS management server listening on %s", self.address)
        return self

    @property
    def address(self) -> str:
        host = self.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        await self.follower.close()

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> XdsServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.stop()

"""The client-facing gRPC server: every etcd service a member offers, on its client URLs.

Besides the etcd services this registers the standard ``grpc.health.v1.Health`` service (as etcd does;
load balancers and orchestrators probe it), and answers methods no service serves as etcd's grpc-go does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raftkv.api.auth import AuthService
from raftkv.api.cluster import ClusterService
from raftkv.api.election import ElectionService
from raftkv.api.gateway.calls import MethodTable
from raftkv.api.kv import KVService
from raftkv.api.lock import LockService
from raftkv.api.maintenance import MaintenanceService
from raftkv.api.metadata import Admission, Context
from raftkv.api.receive_limit import ReceiveLimit, RequestReader
from raftkv.api.recipes import Recipes
from raftkv.grpc_guard import Fallback, Guard, GuardedHandlers, Layer
from raftkv.grpc_registration import service_handlers, service_names
from raftkv.proto import rpc_pb2_grpc, v3election_pb2_grpc, v3lock_pb2_grpc
from raftkv.security.grpc_options import server_options
from raftkv.server.backend import Backend

#: Responses are not limited (etcd sends up to 2 GiB): a large Range must reach the client.
MAX_SEND_BYTES = 2**31 - 1
#: How often a health ``Watch`` re-reads leadership.
HEALTH_POLL_SECONDS = 0.2


def build_client_server(
    backend: Backend,
    watch_servicer: rpc_pb2_grpc.WatchServicer | None,
    lease_servicer: rpc_pb2_grpc.LeaseServicer | None,
    listen_addresses: Sequence[str],
    server_credentials: grpc.ServerCredentials | None,
    max_request_bytes: int,
    recipes: Recipes | None = None,
    methods: MethodTable | None = None,
    guards: Sequence[Guard] = (),
) -> grpc.aio.Server:
    """A bound, not yet started server (``await server.start()``); ``listen_addresses`` are ``host:port``.

    ``server_credentials`` None means plaintext (the explicit insecure mode). A servicer given as None is
    left unregistered, so its methods answer UNIMPLEMENTED; so are the Lock and Election services without
    ``recipes``. ``guards`` run before admission, on every service, for gRPC calls (certificate
    revocation). ``methods``, if given, is handed every handler behind the layers after those, for the JSON
    gateway to call: the gateway refuses a revoked certificate once per connection itself, as etcd does at
    the handshake, and its calls carry the member's identity, which no CRL of its own port lists. Raises
    RuntimeError if a port cannot be bound.
    """
    assert listen_addresses, "a client server needs at least one address"
    limit = ReceiveLimit.for_requests(max_request_bytes)
    handlers: list[grpc.GenericRpcHandler] = []

    def add(add_to_server: Callable[[Any, Any], None], servicer: object) -> None:
        handlers.extend(service_handlers(add_to_server, servicer))

    add(rpc_pb2_grpc.add_KVServicer_to_server, KVService(backend))
    add(rpc_pb2_grpc.add_ClusterServicer_to_server, ClusterService(backend))
    add(rpc_pb2_grpc.add_MaintenanceServicer_to_server, MaintenanceService(backend))
    add(rpc_pb2_grpc.add_AuthServicer_to_server, AuthService(backend))
    if watch_servicer is not None:
        add(rpc_pb2_grpc.add_WatchServicer_to_server, watch_servicer)
    if lease_servicer is not None:
        add(rpc_pb2_grpc.add_LeaseServicer_to_server, lease_servicer)
    if recipes is not None:
        add(v3lock_pb2_grpc.add_LockServicer_to_server, LockService(recipes))
        add(v3election_pb2_grpc.add_ElectionServicer_to_server, ElectionService(recipes))
    add(health_pb2_grpc.add_HealthServicer_to_server, LeaderHealthService(backend))
    # What every call goes through, over gRPC and from the gateway alike (outermost first).
    etcd_layers: list[Layer] = [UnknownMethods(service_names(handlers)), RequestReader(limit), Admission(backend)]
    server = grpc.aio.server(
        # Core reads up to the ceiling; the request reader refuses past the limit in etcd's words.
        options=server_options(max_receive_bytes=limit.ceiling, max_send_bytes=MAX_SEND_BYTES),
    )
    server.add_generic_rpc_handlers([GuardedHandlers(handlers, [*guards, *etcd_layers])])
    if methods is not None:
        methods.serve(GuardedHandlers(handlers, etcd_layers))
    for address in listen_addresses:
        if server_credentials is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, server_credentials)
    return server


class UnknownMethods(Fallback):
    """grpc-go's answers (etcd's) for a method no service here serves, where grpc.aio answers "Method not
    found!" for all: ``unknown service S``, ``unknown method M for service S`` (UNIMPLEMENTED), and for a
    name without a service ``malformed method name: "N"`` (RESOURCE_EXHAUSTED, grpc-go's choice).

    It comes before admission and the size check, as grpc-go answers unknown methods before any
    interceptor runs; ``services`` are the names of the services registered."""

    def __init__(self, services: set[str]) -> None:
        self.services = services

    def handler(self, method: str) -> grpc.RpcMethodHandler:
        code, text = unknown_method_status(method, self.services)

        async def refuse(requests: Any, context: Context) -> None:
            await context.abort(code, text)

        return grpc.stream_stream_rpc_method_handler(refuse)


def unknown_method_status(method: str, services: Collection[str]) -> tuple[grpc.StatusCode, str]:
    """grpc-go's status for a call of ``method`` that no handler serves (``Server.handleStream``)."""
    name = method[1:] if method.startswith("/") else method
    service, slash, short = name.rpartition("/")
    if not slash:
        quoted = '"' + method.replace("\\", "\\\\").replace('"', '\\"') + '"'  # Go's %q, for ASCII names
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"malformed method name: {quoted}"
    if service not in services:
        return grpc.StatusCode.UNIMPLEMENTED, f"unknown service {service}"
    return grpc.StatusCode.UNIMPLEMENTED, f"unknown method {short} for service {service}"


class LeaderHealthService(health_pb2_grpc.HealthServicer):
    """The overall service ("") is SERVING while the member knows a leader, as in etcd 3.5+: a member cut
    off from the quorum cannot serve linearizable requests, so probes should steer clients away from it."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def _status(self, service: str) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType | None:
        if service:
            return None
        if self._backend.has_leader():
            return health_pb2.HealthCheckResponse.SERVING
        return health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        status = self._status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """The current status, then every change (noticed within ``HEALTH_POLL_SECONDS``)."""
        last = None
        while True:
            status = self._status(request.service)
            if status is None:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(HEALTH_POLL_SECONDS)

"""The client-facing gRPC server: every etcd service a member offers, on its client URLs.

Besides the etcd services this registers the standard ``grpc.health.v1.Health`` service (as etcd does;
load balancers and orchestrators probe it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

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
from raftkv.api.metadata import AdmissionInterceptor, Context
from raftkv.api.receive_limit import ReceiveLimit, ReceiveLimitInterceptor
from raftkv.api.recipes import Recipes
from raftkv.grpc_registration import add_service
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
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> grpc.aio.Server:
    """A bound, not yet started server (``await server.start()``); ``listen_addresses`` are ``host:port``.

    ``server_credentials`` None means plaintext (the explicit insecure mode). A servicer given as None is
    left unregistered, so its methods answer UNIMPLEMENTED; so are the Lock and Election services without
    ``recipes``. ``interceptors`` run before admission, on every service (certificate revocation).
    ``methods``, if given, learns every handler and interceptor, for the JSON gateway to call. Raises
    RuntimeError if a port cannot be bound.
    """
    assert listen_addresses, "a client server needs at least one address"
    limit = ReceiveLimit.for_requests(max_request_bytes)
    chain = [*interceptors, ReceiveLimitInterceptor(limit), AdmissionInterceptor(backend)]
    grpc_server = grpc.aio.server(
        interceptors=chain,
        # Core reads up to the ceiling; the limit's interceptor refuses past the limit in etcd's words.
        options=server_options(max_receive_bytes=limit.ceiling, max_send_bytes=MAX_SEND_BYTES),
    )
    server = grpc_server if methods is None else methods.recording(grpc_server, chain)
    add_service(rpc_pb2_grpc.add_KVServicer_to_server, KVService(backend), server)
    add_service(rpc_pb2_grpc.add_ClusterServicer_to_server, ClusterService(backend), server)
    add_service(rpc_pb2_grpc.add_MaintenanceServicer_to_server, MaintenanceService(backend), server)
    add_service(rpc_pb2_grpc.add_AuthServicer_to_server, AuthService(backend), server)
    if watch_servicer is not None:
        add_service(rpc_pb2_grpc.add_WatchServicer_to_server, watch_servicer, server)
    if lease_servicer is not None:
        add_service(rpc_pb2_grpc.add_LeaseServicer_to_server, lease_servicer, server)
    if recipes is not None:
        add_service(v3lock_pb2_grpc.add_LockServicer_to_server, LockService(recipes), server)
        add_service(v3election_pb2_grpc.add_ElectionServicer_to_server, ElectionService(recipes), server)
    add_service(health_pb2_grpc.add_HealthServicer_to_server, LeaderHealthService(backend), server)
    for address in listen_addresses:
        if server_credentials is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, server_credentials)
    return grpc_server


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

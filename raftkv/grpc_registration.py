"""Adds generated gRPC services to a grpc.aio server as generic handlers only.

The ``add_*Servicer_to_server`` functions that grpcio-tools generates register each service twice: as a
generic handler and as a table of "registered methods". grpc.aio's server keeps one pending call request
per registered method and, for every call it accepts, waits on all of them at once (``asyncio.wait`` over
~40 futures for the etcd services: each call adds and then removes a callback on every one). Under load
that was about 7% of a leader's CPU. Served through the generic handler alone, the server waits on one
future per call and finds the method with one dictionary lookup; interceptors and handlers are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

S = TypeVar("S")


class _GenericOnly:
    """The slice of ``grpc.aio.Server`` a generated ``add_*_to_server`` calls, minus registered methods."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self.services: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)
        self.services.extend(h.service_name() for h in handlers if isinstance(h, grpc.ServiceRpcHandler))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Dropped: the generic handler added just before serves the same methods."""


def add_service(add_to_server: Callable[[S, Any], None], servicer: S, server: grpc.aio.Server) -> list[str]:
    """``add_to_server(servicer, server)`` for a generated ``add_*Servicer_to_server``, generic only.
    Returns the names of the services added (``package.Service``)."""
    generic = _GenericOnly(server)
    add_to_server(servicer, generic)
    return generic.services

"""The generic handlers of a generated gRPC service, without its "registered methods".

The ``add_*Servicer_to_server`` functions that grpcio-tools generates register each service twice: as a
generic handler and as a table of "registered methods". grpc.aio's server keeps one pending call request
per registered method and, for every call it accepts, waits on all of them at once (``asyncio.wait`` over
~40 futures for the etcd services: each call adds and then removes a callback on every one). Under load
that was about 7% of a leader's CPU. Served through the generic handler alone, the server waits on one
future per call and finds the method with one dictionary lookup. A server is then given these handlers
behind its guards (``raftkv.grpc_guard.GuardedHandlers``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc

S = TypeVar("S")


class _GenericOnly:
    """The slice of ``grpc.aio.Server`` a generated ``add_*_to_server`` calls, keeping the generic handlers."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Dropped: the generic handler added just before serves the same methods."""


def service_handlers(add_to_server: Callable[[S, Any], None], servicer: S) -> list[grpc.GenericRpcHandler]:
    """The generic handlers ``add_to_server(servicer, server)`` would add (a generated
    ``add_*Servicer_to_server``), and not its registered methods."""
    generic = _GenericOnly()
    add_to_server(servicer, generic)
    return generic.handlers


def service_names(handlers: Iterable[grpc.GenericRpcHandler]) -> set[str]:
    """The names (``package.Service``) of the services ``handlers`` serve."""
    return {h.service_name() for h in handlers if isinstance(h, grpc.ServiceRpcHandler)}

"""raftkv.discovery: health-checked registration, live discovery and client-side balancing on raftkv.

    from raftkv import discovery

    # an instance registers itself (a lease kept alive; the key goes when the process stops or dies)
    with discovery.register("orders", "10.0.0.7:50051", health="grpc"):
        server.wait_for_termination()

    # a caller follows the instances as they come and go
    with discovery.resolve("orders") as resolver:
        print(resolver.instances)

The asyncio twins live in ``raftkv.discovery.aio``. The package's README describes the key layout, the
lifecycle guarantees and every option; it uses only ``raftkv.client``, never server internals.
"""

from __future__ import annotations

from typing import Any

from raftkv.discovery.lifecycle import HealthGate, State
from raftkv.discovery.record import DEFAULT_NAMESPACE, Instance, RecordError, instance_key, service_prefix
from raftkv.discovery.registrar import Registration
from raftkv.discovery.resolver import Resolver
from raftkv.discovery.view import Change, ChangeKind


def register(service: str, addr: str, *, instance_id: str | None = None, metadata: dict[str, Any] | None = None,
             ttl: int = 5, health: Any = None, wait: float | None = 5.0, **options: Any) -> Registration:
    """Register ``addr`` as an instance of ``service``; returns the running ``Registration`` (a context
    manager: leaving it revokes the lease first, so drain after it).

    ``health``: None, ``"grpc"``, ``"grpc:SERVICE"``, ``"tcp"`` or a callable returning a bool; the key then
    exists only while the check passes (``rise``/``fall`` consecutive results, every ``health_interval`` s).
    Other options: ``client`` (a ``raftkv.client.Client``; default one from KVCTL_* variables),
    ``namespace`` (default ``/services``), ``health_timeout``, ``health_credentials``.
    Raises the registry's error if the first attempt fails within ``wait`` seconds."""
    registration = Registration(service, addr, instance_id=instance_id, metadata=metadata, ttl=ttl,
                                health=health, **options)
    return registration.start(wait)


def resolve(service: str, *, wait: float | None = 5.0, **options: Any) -> Resolver:
    """Follow ``service``'s instances (``client``, ``namespace`` as for ``register``); returns the running
    ``Resolver`` once the first listing arrived."""
    return Resolver(service, **options).start(wait)


__all__ = [
    "DEFAULT_NAMESPACE", "Change", "ChangeKind", "HealthGate", "Instance", "RecordError", "Registration",
    "Resolver", "State", "instance_key", "register", "resolve", "service_prefix",
]

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

from raftkv.discovery.balanced import BalancedChannel
from raftkv.discovery.ejection import OutlierConfig
from raftkv.discovery.lifecycle import HealthGate, State, Verdict
from raftkv.discovery.options import split
from raftkv.discovery.record import DEFAULT_NAMESPACE, Instance, RecordError, instance_key, service_prefix
from raftkv.discovery.registrar import Registration
from raftkv.discovery.resolver import Resolver
from raftkv.discovery.view import Change, ChangeKind


def register(service: str, addr: str, *, instance_id: str | None = None, metadata: dict[str, Any] | None = None,
             ttl: int = 5, health: Any = None, wait: float | None = 5.0, **options: Any) -> Registration:
    """Register ``addr`` as an instance of ``service``; returns the running ``Registration`` (a context
    manager: leaving it revokes the lease first, so drain after it).

    ``health``: None, ``"grpc"``, ``"grpc:SERVICE"``, ``"tcp"`` or a callable returning a bool (None: no
    answer); the key then exists only while the check passes (``rise``/``fall`` consecutive answers, every
    ``health_interval`` s; a probe not answered within ``health_timeout`` is unknown, not failing, and
    withdraws only after ``unknown_after`` s, default 30, without any answer).
    Other options: ``client`` (a ``raftkv.client.Client``; default one from KVCTL_* variables),
    ``namespace`` (default ``/services``), ``health_timeout``, ``health_credentials``.
    Raises the registry's error if the first attempt fails within ``wait`` seconds."""
    registration = Registration(service, addr, instance_id=instance_id, metadata=metadata, ttl=ttl,
                                health=health, **options)
    return registration.start(wait)


def channel(service: str, *, policy: str = "p2c", client: Any = None, namespace: str = DEFAULT_NAMESPACE,
            credentials: Any = None, options: Any = (), health_check: bool = True, health_service: str = "",
            timeout: float | None = None, wait: float | None = 5.0, on_attempt: Any = None,
            **balancing: Any) -> BalancedChannel:
    """A ``grpc.Channel`` over every instance of ``service``, balanced per call (see the README).

    ``policy``: ``p2c`` (default; peak-EWMA power of two choices), ``round_robin`` or ``ring_hash``
    (bounded loads; ``epsilon``, and the key from ``hash_header`` metadata or ``hash_key(request,
    metadata)``). ``credentials``/``options``: for the connections to the instances (plaintext without
    credentials). ``idempotent``: True, method or service names, or a predicate: such calls are retried
    elsewhere after an ambiguous failure and may be hedged (``hedge_delay``). ``timeout``: the default
    deadline of a call without one. Also: ``retry_codes``, ``max_attempts``, ``retry_budget``, ``outlier``
    (an ``OutlierConfig``), ``panic_threshold``, ``tau``, ``error_penalty``. ``on_attempt(instance_id,
    started, code)`` is told of every attempt as it ends (for tools that must know where calls went).
    The channel owns its resolver; ``wait`` bounds the first listing."""
    config, rest = split({"policy": policy, **balancing})
    if rest:
        raise TypeError(f"unknown channel option(s): {', '.join(sorted(rest))}")
    resolver = Resolver(service, client=client, namespace=namespace).start(wait)
    try:
        return BalancedChannel(resolver, config.pool(), config.rules(), credentials=credentials, options=options,
                               health_check=health_check, health_service=health_service,
                               retry_budget=config.budget(), default_timeout=timeout, on_attempt=on_attempt)
    except BaseException:
        resolver.stop()
        raise


def resolve(service: str, *, wait: float | None = 5.0, **options: Any) -> Resolver:
    """Follow ``service``'s instances (``client``, ``namespace`` as for ``register``); returns the running
    ``Resolver`` once the first listing arrived."""
    return Resolver(service, **options).start(wait)


__all__ = [
    "BalancedChannel", "OutlierConfig", "channel", "DEFAULT_NAMESPACE", "Change", "ChangeKind", "HealthGate",
    "Instance", "RecordError", "Registration",
    "Resolver", "State", "Verdict", "instance_key", "register", "resolve", "service_prefix",
]

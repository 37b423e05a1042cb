"""asyncio twins of ``raftkv.discovery``: ``await register(...)``, ``await resolve(...)``.

Create them inside the running event loop (grpc.aio channels bind to it)."""

from __future__ import annotations

from typing import Any

from raftkv.discovery.aio_balanced import AsyncBalancedChannel
from raftkv.discovery.options import split
from raftkv.discovery.record import DEFAULT_NAMESPACE
from raftkv.discovery.registrar import AsyncRegistration
from raftkv.discovery.resolver import AsyncResolver


async def register(service: str, addr: str, *, instance_id: str | None = None,
                   metadata: dict[str, Any] | None = None, ttl: int = 5, health: Any = None,
                   wait: float | None = 5.0, **options: Any) -> AsyncRegistration:
    """As ``raftkv.discovery.register``; ``client`` is an ``AsyncClient``, a health callable may be async."""
    registration = AsyncRegistration(service, addr, instance_id=instance_id, metadata=metadata, ttl=ttl,
                                     health=health, **options)
    return await registration.start(wait)


async def channel(service: str, *, policy: str = "p2c", client: Any = None, namespace: str = DEFAULT_NAMESPACE,
                  credentials: Any = None, options: Any = (), health_check: bool = True, health_service: str = "",
                  timeout: float | None = None, wait: float | None = 5.0, on_attempt: Any = None,
                  **balancing: Any) -> AsyncBalancedChannel:
    """As ``raftkv.discovery.channel``, a ``grpc.aio.Channel`` (``client`` is an ``AsyncClient``; no hedging;
    ``on_attempt`` is called on the event loop)."""
    config, rest = split({"policy": policy, **balancing})
    if rest or config.hedge_delay is not None:
        raise TypeError(f"unknown or unsupported channel option(s): {', '.join(sorted(rest)) or 'hedge_delay'}")
    resolver = await AsyncResolver(service, client=client, namespace=namespace).start(wait)
    return AsyncBalancedChannel(resolver, config.pool(), config.rules(), credentials=credentials, options=options,
                                health_check=health_check, health_service=health_service,
                                retry_budget=config.budget(), default_timeout=timeout, on_attempt=on_attempt)


async def resolve(service: str, *, wait: float | None = 5.0, **options: Any) -> AsyncResolver:
    return await AsyncResolver(service, **options).start(wait)


__all__ = ["AsyncBalancedChannel", "AsyncRegistration", "AsyncResolver", "channel", "register", "resolve"]

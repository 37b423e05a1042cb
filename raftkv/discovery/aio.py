"""asyncio twins of ``raftkv.discovery``: ``await register(...)``, ``await resolve(...)``.

Create them inside the running event loop (grpc.aio channels bind to it)."""

from __future__ import annotations

from typing import Any

from raftkv.discovery.registrar import AsyncRegistration
from raftkv.discovery.resolver import AsyncResolver


async def register(service: str, addr: str, *, instance_id: str | None = None,
                   metadata: dict[str, Any] | None = None, ttl: int = 5, health: Any = None,
                   wait: float | None = 5.0, **options: Any) -> AsyncRegistration:
    """As ``raftkv.discovery.register``; ``client`` is an ``AsyncClient``, a health callable may be async."""
    registration = AsyncRegistration(service, addr, instance_id=instance_id, metadata=metadata, ttl=ttl,
                                     health=health, **options)
    return await registration.start(wait)


async def resolve(service: str, *, wait: float | None = 5.0, **options: Any) -> AsyncResolver:
    return await AsyncResolver(service, **options).start(wait)


__all__ = ["AsyncRegistration", "AsyncResolver", "register", "resolve"]

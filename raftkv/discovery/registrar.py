"""Registration drivers: ``Registration`` runs the lifecycle plan (``lifecycle.py``) on a thread,
``AsyncRegistration`` on an asyncio task. Both only execute steps; every decision is the plan's.

    with register("orders", "10.0.0.7:50051", metadata={"zone": "a"}) as reg:
        server.wait_for_termination()
    # leaving the block revoked the lease (the key is gone); now drain: server.stop(grace)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import grpc

from raftkv.client import AsyncClient, Client, ClientError
from raftkv.discovery import lifecycle as lc
from raftkv.discovery import probes, record

log = logging.getLogger("raftkv.discovery")


def _lifecycle(service: str, addr: str, *, instance_id: str | None, metadata: Mapping[str, Any] | None,
               ttl: int, gated: bool, namespace: str, rise: int, fall: int, unknown_after: float,
               interval: float) -> lc.Lifecycle:
    key = record.instance_key(service, instance_id or addr, namespace)
    gate = lc.HealthGate(rise, fall, unknown_after) if gated else None
    return lc.Lifecycle(key, record.encode(addr, metadata), ttl, gate, interval)


def _nothing(_: object) -> None:
    return None


def registry_call(client: Any, step: lc.Step) -> tuple[Callable[[], Any], Callable[[Any], lc.Outcome]]:
    """The client call a registry step makes and how its result becomes the plan's outcome; the same for
    ``Client`` (the call returns the result) and ``AsyncClient`` (it returns an awaitable of it)."""
    if isinstance(step, lc.Grant):
        return lambda: client.lease_grant(step.ttl), lambda lease: int(lease.id)
    if isinstance(step, lc.Put):
        return lambda: client.put(step.key, step.value, lease=step.lease), _nothing
    if isinstance(step, lc.Delete):
        return lambda: client.delete(step.key), _nothing
    if isinstance(step, lc.KeepAlive):
        return lambda: client.lease_keep_alive_once(step.lease, timeout=step.timeout), int
    assert isinstance(step, lc.Revoke), step
    return lambda: client.lease_revoke(step.lease), _nothing


class _Driver:
    """What both drivers share: the plan, its state, and waiting for the first registration."""

    def __init__(self, service: str, addr: str, *, instance_id: str | None = None,
                 metadata: Mapping[str, Any] | None = None, ttl: int = 5, health: Any = None,
                 namespace: str = record.DEFAULT_NAMESPACE, rise: int = 2, fall: int = 2,
                 unknown_after: float = lc.UNKNOWN_AFTER, health_interval: float = 1.0, health_timeout: float = 1.0,
                 health_credentials: grpc.ChannelCredentials | None = None) -> None:
        self.service, self.addr = record.check_name("service name", service), record.check_addr(addr)
        probes.parse_spec(health) if not callable(health) else None  # refuse a bad spec before any I/O
        self.lifecycle = _lifecycle(service, addr, instance_id=instance_id, metadata=metadata, ttl=ttl,
                                    gated=health is not None and health != "none", namespace=namespace,
                                    rise=rise, fall=fall, unknown_after=unknown_after,
                                    interval=health_interval)
        self._health = (health, health_timeout, health_credentials)

    @property
    def key(self) -> str:
        return self.lifecycle.key

    @property
    def state(self) -> lc.State:
        return self.lifecycle.state

    @property
    def lease(self) -> int:
        return self.lifecycle.lease

    @property
    def registered(self) -> bool:
        return self.lifecycle.state is lc.State.REGISTERED

    def _settled(self) -> bool:
        """The first attempt is over: registered, withdrawn pending health, or failed."""
        return self.lifecycle.state is not lc.State.STARTING


class Registration(_Driver):
    """A registration kept alive by a daemon thread. See ``raftkv.discovery.register``."""

    def __init__(self, service: str, addr: str, *, client: Client | None = None, **options: Any) -> None:
        super().__init__(service, addr, **options)
        self._owns_client = client is None
        self.client = client if client is not None else Client()
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"register-{self.key}", daemon=True)
        health, timeout, creds = self._health
        self._probe = probes.sync_probe(health, addr, timeout, creds)

    def start(self, wait: float | None = 5.0) -> Registration:
        """Start; wait up to ``wait`` seconds for the first attempt and raise its error if it failed."""
        self._thread.start()
        if wait:
            with self._changed:
                self._changed.wait_for(self._settled, wait)
            if self.state is lc.State.RETRYING or not self._settled():
                error = self.lifecycle.last_error
                self.stop()
                raise error or ClientError(f"registering {self.key} took longer than {wait:g}s")
        return self

    def wait_settled(self, timeout: float | None) -> bool:
        """Block until the first attempt is over (registered, withdrawn pending health, or failed and
        retrying in the background) or ``timeout`` passes (False); the registration goes on either way."""
        with self._changed:
            return self._changed.wait_for(self._settled, timeout)

    def wait_registered(self, timeout: float) -> bool:
        """Block until the key is in the store (True) or ``timeout`` passes (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.registered, timeout)

    def wait_for(self, state: lc.State, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.state is state, timeout)

    def _execute(self, step: lc.Step) -> lc.Outcome:
        if isinstance(step, lc.Wait):
            return self._stop.wait(step.seconds)
        if isinstance(step, lc.Probe):
            assert self._probe is not None
            return self._probe()
        call, convert = registry_call(self.client, step)
        try:
            return convert(call())
        except ClientError as exc:
            return exc

    def _run(self) -> None:
        plan = self.lifecycle.run()
        outcome: lc.Outcome = None
        try:
            while True:
                before = self.state
                try:
                    step = plan.send(outcome)
                except StopIteration:
                    return
                if self.state is not before:
                    self._notify(before)
                outcome = self._execute(step)
        finally:
            self._notify(None)

    def _notify(self, before: lc.State | None) -> None:
        if before is not None:
            log.info("%s: %s -> %s%s", self.key, before.value, self.state.value,
                     f" ({self.lifecycle.last_error})" if self.state is lc.State.RETRYING else "")
        with self._changed:
            self._changed.notify_all()

    def stop(self) -> None:
        """Revoke the lease (the key goes with it) and stop refreshing. Safe to call twice."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if isinstance(self._probe, probes.GrpcProbe):
            self._probe.close()
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Registration:
        if not self._thread.is_alive() and self.state is lc.State.STARTING:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class AsyncRegistration(_Driver):
    """asyncio twin of ``Registration``: ``await reg.start()``, ``await reg.stop()``, ``async with``."""

    def __init__(self, service: str, addr: str, *, client: AsyncClient | None = None, **options: Any) -> None:
        super().__init__(service, addr, **options)
        self._owns_client = client is None
        self._client = client
        self._stop = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._probe: probes.AsyncProbe | None = None

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            self._client = AsyncClient()
        return self._client

    async def start(self, wait: float | None = 5.0) -> AsyncRegistration:
        health, timeout, creds = self._health
        self._probe = probes.async_probe(health, self.addr, timeout, creds)
        self._task = asyncio.create_task(self._run(), name=f"register-{self.key}")
        if wait:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wait(self._settled), wait)
            if self.state is lc.State.RETRYING or not self._settled():
                error = self.lifecycle.last_error
                await self.stop()
                raise error or ClientError(f"registering {self.key} took longer than {wait:g}s")
        return self

    async def _wait(self, predicate: Any) -> None:
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def wait_registered(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._wait(lambda: self.registered), timeout)
            return True
        except TimeoutError:
            return False

    async def wait_for(self, state: lc.State, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._wait(lambda: self.state is state), timeout)
            return True
        except TimeoutError:
            return False

    async def _execute(self, step: lc.Step) -> lc.Outcome:
        if isinstance(step, lc.Wait):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), step.seconds)
            return self._stop.is_set()
        if isinstance(step, lc.Probe):
            assert self._probe is not None
            return await self._probe()
        call, convert = registry_call(self.client, step)
        try:
            return convert(await call())
        except ClientError as exc:
            return exc

    async def _run(self) -> None:
        plan = self.lifecycle.run()
        outcome: lc.Outcome = None
        try:
            while True:
                before = self.state
                try:
                    step = plan.send(outcome)
                except StopIteration:
                    return
                if self.state is not before:
                    await self._notify(before)
                outcome = await self._execute(step)
        finally:
            await self._notify(None)

    async def _notify(self, before: lc.State | None) -> None:
        if before is not None:
            log.info("%s: %s -> %s", self.key, before.value, self.state.value)
        async with self._changed:
            self._changed.notify_all()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        if isinstance(self._probe, probes.AsyncGrpcProbe):
            await self._probe.close()
        if self._owns_client and self._client is not None:
            await self._client.close()

    async def __aenter__(self) -> AsyncRegistration:
        if self._task is None:
            await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

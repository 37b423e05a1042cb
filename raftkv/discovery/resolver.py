"""Live discovery: list a service's prefix at revision R, watch from R+1, re-list and diff when the watch ends.

``Resolver`` runs on a daemon thread with the blocking client, ``AsyncResolver`` on a task with the asyncio
client; both keep a ``ServiceView`` (``view.py``) and call subscribers with each batch of changes.

- The watch is the client's failover-safe watch: a killed raftkv member costs no event, the client resumes
  on another member from the next revision.
- A compacted or canceled watch leads to a fresh listing, diffed against what is known.
- **Static stability**: when raftkv is unreachable the last known instances stay as they are (nothing is
  removed for want of news) and ``stale_since`` says since when; listing is retried with capped backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from raftkv.client import AsyncClient, Client, ClientError, CompactedError, WatchCanceled
from raftkv.client.types import Event
from raftkv.discovery import record
from raftkv.discovery.lifecycle import Backoff
from raftkv.discovery.view import Change, ChangeKind, ServiceView

log = logging.getLogger("raftkv.discovery")

Subscriber = Callable[[list[Change], Mapping[str, record.Instance]], None]
#: Longest wait between two listings while raftkv is unreachable.
RETRY_LIMIT = 2.0
#: How long the client's watch tries other members before the resolver calls raftkv unreachable (and
#: marks the view stale); longer than an election, shorter than the client's default of 30 s.
WATCH_RECONNECT = 5.0


class _Base:
    def __init__(self, service: str, namespace: str, watch_reconnect: float) -> None:
        self.view = ServiceView(service, namespace)
        self._watch_reconnect = watch_reconnect
        self._subscribers: list[Subscriber] = []
        #: ``time.monotonic()`` when raftkv stopped answering, None while in touch.
        self.stale_since: float | None = None
        #: How often the prefix was listed again after a compacted or canceled watch.
        self.relists = 0
        self.last_error: ClientError | None = None

    @property
    def service(self) -> str:
        return self.view.service

    @property
    def instances(self) -> Mapping[str, record.Instance]:
        return self.view.snapshot()

    @property
    def revision(self) -> int:
        return self.view.revision

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber(changes, instances)`` after every change (on the resolver's thread or task);
        it is first called at once with the current instances as ``added``, if there are any."""
        self._subscribers.append(subscriber)
        current = self.instances
        if current:
            subscriber([Change(ChangeKind.ADDED, i, self.revision) for i in current.values()], current)

    def _publish(self, changes: list[Change]) -> None:
        if not changes:
            return
        current = self.instances
        for subscriber in list(self._subscribers):
            try:
                subscriber(changes, current)
            except Exception:  # a subscriber's bug must not stop discovery for the others
                log.exception("discovery subscriber failed")

    def _listed(self, kvs: Any, revision: int) -> None:
        if self.stale_since is not None:
            log.info("%s: registry reachable again", self.view.prefix)
        self.stale_since, self.last_error = None, None
        self._publish(self.view.reset(kvs, revision))

    def _apply(self, events: list[Event]) -> None:
        changes = [c for c in (self.view.apply(e) for e in events) if c is not None]
        self._publish(changes)

    def _unreachable(self, error: ClientError) -> None:
        if self.stale_since is None:
            self.stale_since = time.monotonic()
            log.warning("%s: registry unreachable (%s); keeping the last %d known instance(s)",
                        self.view.prefix, error, len(self.view.instances))
        self.last_error = error


class Resolver(_Base):
    """Keeps ``instances`` of one service current from a daemon thread."""

    def __init__(self, service: str, *, client: Client | None = None,
                 namespace: str = record.DEFAULT_NAMESPACE, watch_reconnect: float = WATCH_RECONNECT) -> None:
        super().__init__(service, namespace, watch_reconnect)
        self._owns_client = client is None
        self.client = client if client is not None else Client()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._watch: Any = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"resolve-{self.view.prefix}", daemon=True)

    def start(self, wait: float | None = 5.0) -> Resolver:
        """Start; wait up to ``wait`` seconds for the first listing (raising its error if there is none)."""
        self._thread.start()
        if wait and not self._synced.wait(wait):
            error = self.last_error
            self.stop()
            raise error or ClientError(f"listing {self.view.prefix} took longer than {wait:g}s")
        return self

    @property
    def synced(self) -> bool:
        """True once the first listing arrived."""
        return self._synced.is_set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait for the first listing, even an empty one (subscribers hear only of changes, so they cannot
        tell "listed, nothing there" from "not listed yet"); False after ``timeout``. Unlike ``start``'s
        ``wait``, running out of time does not stop the resolver."""
        return self._synced.wait(timeout)

    def _run(self) -> None:
        backoff = Backoff(limit=RETRY_LIMIT)
        prefix = self.view.prefix
        while not self._stop.is_set():
            try:
                listing = self.client.get_prefix(prefix)
                self._listed(listing.kvs, listing.revision)
                self._synced.set()
                backoff.reset()
                watch = self.client.watch(prefix, prefix=True, start_revision=listing.revision + 1,
                                          reconnect_timeout=self._watch_reconnect)
                with self._lock:
                    self._watch = watch
                if self._stop.is_set():
                    watch.cancel()
                for response in watch.responses():
                    self._apply([Event.from_pb(e) for e in response.events])
            except (CompactedError, WatchCanceled) as exc:
                self.relists += 1
                log.info("%s: watch ended (%s); listing again", prefix, exc)
            except ClientError as exc:
                self._unreachable(exc)
                self._stop.wait(backoff.next())

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._watch is not None:
                self._watch.cancel()
        if self._thread.is_alive():
            self._thread.join()
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Resolver:
        if not self._thread.is_alive():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AsyncResolver(_Base):
    """asyncio twin of ``Resolver`` (create and start it inside the running loop)."""

    def __init__(self, service: str, *, client: AsyncClient | None = None,
                 namespace: str = record.DEFAULT_NAMESPACE, watch_reconnect: float = WATCH_RECONNECT) -> None:
        super().__init__(service, namespace, watch_reconnect)
        self._owns_client = client is None
        self._client = client
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch: Any = None
        self._stopping = False

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            self._client = AsyncClient()
        return self._client

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """See ``Resolver.wait_synced``."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def start(self, wait: float | None = 5.0) -> AsyncResolver:
        self._task = asyncio.create_task(self._run(), name=f"resolve-{self.view.prefix}")
        if wait:
            try:
                await asyncio.wait_for(self._synced.wait(), wait)
            except TimeoutError:
                error = self.last_error
                await self.stop()
                raise error or ClientError(f"listing {self.view.prefix} took longer than {wait:g}s") from None
        return self

    async def _run(self) -> None:
        backoff = Backoff(limit=RETRY_LIMIT)
        prefix = self.view.prefix
        while not self._stopping:
            try:
                listing = await self.client.get_prefix(prefix)
                self._listed(listing.kvs, listing.revision)
                self._synced.set()
                backoff.reset()
                self._watch = await self.client.watch(prefix, prefix=True, start_revision=listing.revision + 1,
                                                     reconnect_timeout=self._watch_reconnect)
                async for response in self._watch.responses():
                    self._apply([Event.from_pb(e) for e in response.events])
            except (CompactedError, WatchCanceled) as exc:
                self.relists += 1
                log.info("%s: watch ended (%s); listing again", prefix, exc)
            except ClientError as exc:
                self._unreachable(exc)
                await asyncio.sleep(backoff.next())

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._owns_client and self._client is not None:
            await self._client.close()

    async def __aenter__(self) -> AsyncResolver:
        if self._task is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

"""Userspace TCP proxies on every member-to-member link: partitions, delay and loss without privileges.

The kernel here has no netem, so link faults are made in userspace.  Each directed link ``src -> dst`` has a
``LinkState``; every proxied connection knows its link and consults the state per chunk:

* blocked -- existing connections are cut, new ones are accepted and then silently held (nothing reaches the
  destination, as with a firewall DROP) until the link heals, when they are closed so peers reconnect;
* delay   -- each chunk waits ``delay_ms +- jitter_ms`` (order preserved: one forwarding task per direction);
* loss    -- each chunk is, with that probability, held for a retransmission timeout (200 ms): what loss looks
  like above TCP.

How a connection learns its link: raftkv dials each peer at an address given by ``--peer-dial-override``, so
every directed link gets its own listening port.  etcd cannot be told that, so each etcd member gets one
inbound proxy and the source is read from the ``X-Server-From`` header every rafthttp request carries.  etcd's
streams are opened by the *receiver* (its GET's response body carries the other member's messages), so on those
connections the response direction belongs to the reverse link; raftkv's answers on a link belong to it.

Clients reach each member through a client proxy too (link ``client -> member``), so a partition can also cut
the harness off from the isolated side.  Upstreams are looked up per connection: a member re-added with new
ports (membership churn) is reached through the same proxy ports after ``set_upstream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

HOST = "127.0.0.1"
RTO_S = 0.2
FROM_HEADER = re.compile(rb"X-Server-From: ([0-9a-fA-F]+)")
#: Source name of the harness's client links.
CLIENT = "client"
Address = tuple[str, int]


@dataclass
class LinkState:
    blocked: bool = False
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0


class Network:
    """All proxies of one cluster, run on a private event loop in a daemon thread."""

    #: Nemesis kinds this back end can make.
    supported = frozenset({"partition", "isolate-leader", "bridge", "ring", "one-way", "slow", "lossy",
                           "client-isolate", "no-majority"})

    def __init__(self, names: list[str], seed: int = 0) -> None:
        self.names = list(names)
        self.links: dict[tuple[str, str], LinkState] = {(a, b): LinkState() for a in [*names, CLIENT] for b in names
                                                        if a != b}
        self.upstreams: dict[tuple[str, str], Address] = {}  # (member, "peer" | "client") -> its real address
        self.rng = random.Random(seed)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="proxy-net", daemon=True)
        self._thread.start()
        self._servers: list[asyncio.base_events.Server] = []
        self._conns: dict[tuple[str, str], set[asyncio.StreamWriter]] = {k: set() for k in self.links}
        self._held: dict[tuple[str, str], set[asyncio.StreamWriter]] = {k: set() for k in self.links}
        self._unidentified: set[asyncio.StreamWriter] = set()
        self.member_ids: dict[str, str] = {}  # etcd member id (hex) -> name

    def identify(self, member_ids: dict[str, str]) -> None:
        """Learn etcd member ids (known only once members run) and cut connections opened before, so they
        reconnect as identified links."""
        def apply() -> None:
            self.member_ids = dict(member_ids)
            for w in list(self._unidentified):
                w.transport.abort()
        self.loop.call_soon_threadsafe(apply)

    # ------------------------------------------------------------------ listeners

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def set_upstream(self, dst: str, role: str, upstream: Address) -> None:
        """Where proxies for ``dst``'s peer (or client) port connect to; read per new connection."""
        self.upstreams[(dst, role)] = upstream

    def link_listener(self, src: str, dst: str, upstream: Address) -> int:
        """A proxy for the one link ``src -> dst``; returns its port."""
        self.set_upstream(dst, "peer", upstream)
        return self._run(self._listen(lambda _: src, dst, "peer", reverse=False))

    def client_listener(self, dst: str, upstream: Address) -> int:
        """A proxy for the harness's clients in front of ``dst``'s client port; returns its port."""
        self.set_upstream(dst, "client", upstream)
        return self._run(self._listen(lambda _: CLIENT, dst, "client", reverse=False))

    def inbound_listener(self, dst: str, upstream: Address, port: int) -> int:
        """A proxy in front of ``dst`` on ``port`` that identifies the source from etcd's headers."""
        self.set_upstream(dst, "peer", upstream)
        return self._run(self._listen(self._sniff_source, dst, "peer", reverse=True,
                                      port=port))

    def _sniff_source(self, first: bytes) -> str | None:
        m = FROM_HEADER.search(first)
        return self.member_ids.get(m.group(1).decode().lower().lstrip("0")) if m else None

    async def _listen(self, source: Callable[[bytes], str | None], dst: str, role: str,
                      reverse: bool, port: int = 0) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._connection(reader, writer, source, dst, self.upstreams[(dst, role)], reverse)

        server = await asyncio.start_server(handle, HOST, port, reuse_address=True)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          source: Callable[[bytes], str | None], dst: str, upstream: Address,
                          reverse: bool) -> None:
        first = b""
        try:
            src = source(b"")
            if src is None:
                with contextlib.suppress(asyncio.TimeoutError):
                    first = await asyncio.wait_for(reader.read(65536), 1.0)
                src = source(first)
            link = (src, dst) if src is not None and (src, dst) in self.links else None
            if link is not None and self.links[link].blocked:
                self._held[link].add(writer)
                await reader.read()  # hold silently until the peer gives up or the link heals
                return
            up_reader, up_writer = await asyncio.open_connection(*upstream)
        except OSError:
            writer.close()
            return
        back = (link[1], link[0]) if link is not None and reverse else link
        groups = [self._conns[k] for k in {link, back} if k is not None] or [self._unidentified]
        for g in groups:
            g.update((writer, up_writer))
        if first:
            up_writer.write(first)
        try:
            await asyncio.gather(self._pump(reader, up_writer, link), self._pump(up_reader, writer, back),
                                 return_exceptions=True)
        finally:
            for w in (writer, up_writer):
                w.close()
                for g in groups:
                    g.discard(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    link: tuple[str, str] | None) -> None:
        try:
            while data := await reader.read(65536):
                if link is not None:
                    st = self.links[link]
                    if st.blocked:
                        break
                    wait = st.delay_ms / 1000 + self.rng.uniform(-st.jitter_ms, st.jitter_ms) / 1000
                    if st.loss and self.rng.random() < st.loss:
                        wait += RTO_S
                    if wait > 0:
                        await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    # ------------------------------------------------------------------ faults

    def set_links(self, blocked: set[tuple[str, str]], clients_cut: Iterable[str] = ()) -> None:
        """Block exactly these directed member links and the client links of ``clients_cut`` (all others
        flow); cut their open connections."""
        blocked = set(blocked) | {(CLIENT, m) for m in clients_cut}

        def apply() -> None:
            for link, st in self.links.items():
                was = st.blocked
                st.blocked = link in blocked
                if st.blocked and not was:
                    for w in list(self._conns[link]):
                        w.transport.abort()
                if was and not st.blocked:
                    for w in list(self._held[link]):
                        w.close()
                    self._held[link].clear()
        self.loop.call_soon_threadsafe(apply)

    def set_quality(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss: float = 0.0,
                    links: set[tuple[str, str]] | None = None) -> None:
        """Slow or lossy links (all member-to-member links when ``links`` is None)."""
        for link, st in self.links.items():
            if (links is None and link[0] != CLIENT) or (links is not None and link in links):
                st.delay_ms, st.jitter_ms, st.loss = delay_ms, jitter_ms, loss

    def heal(self) -> None:
        self.set_links(set())
        self.set_quality()

    def close(self) -> None:
        async def shutdown() -> None:
            for s in self._servers:
                s.close()
            for ws in (*self._conns.values(), *self._held.values()):
                for w in ws:
                    w.transport.abort()
        with contextlib.suppress(Exception):
            self._run(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

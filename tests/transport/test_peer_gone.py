"""Telling a peer whose process is gone from one that is silent or merely reset (``on_peer_gone``)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from peer_helpers import FileSnapshots, Inbox, app, eventually, make_transport, running

from raftkv.security.certs import ClusterCerts
from raftkv.transport.gone_probe import nothing_serves
from raftkv.transport.peer import PeerTransport

pytestmark = pytest.mark.timeout(60)


async def _keep_sending(t: PeerTransport, to: int) -> None:
    """What Raft does anyway: heartbeats and appends keep coming, so a broken stream is noticed."""
    index = 1
    while True:
        t.send([app(to, t.node_id, index)])
        index += 1
        await asyncio.sleep(0.02)


def test_a_peer_whose_process_ends_is_reported_gone(certs: ClusterCerts, tmp_path: Path) -> None:
    async def scenario() -> None:
        inbox1, inbox2 = Inbox(), Inbox()
        t1 = make_transport(1, certs.nodes["n1"], inbox1, FileSnapshots(tmp_path))
        t2 = make_transport(2, certs.nodes["n2"], inbox2, FileSnapshots(tmp_path))
        async with running(t1):
            await t2.start()
            t1.set_peer(2, f"127.0.0.1:{t2.port}")
            t2.set_peer(1, f"127.0.0.1:{t1.port}")  # a member accepts batches only from members it knows
            sender = asyncio.create_task(_keep_sending(t1, 2))
            try:
                await eventually(lambda: len(inbox2.messages) > 0, what="the stream to be up")
                await t2.stop()  # its port closes, as when the process is killed
                await eventually(lambda: 2 in inbox1.gone, what="the peer to be reported gone")
                assert 2 in inbox1.unreachable
            finally:
                sender.cancel()

    asyncio.run(scenario())


class _ResettingProxy:
    """A TCP relay in front of a peer that can reset every connection through it while it (the listener, as
    the peer's process would) stays up: a connection blip, not a death."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def reset_all(self) -> None:
        for w in self.writers:
            w.transport.abort()  # RST, as a middlebox or a NIC reset would
        self.writers.clear()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        self.reset_all()


def test_a_reset_while_the_peer_lives_is_not_reported(certs: ClusterCerts, tmp_path: Path) -> None:
    async def scenario() -> None:
        inbox1, inbox2 = Inbox(), Inbox()
        t1 = make_transport(1, certs.nodes["n1"], inbox1, FileSnapshots(tmp_path))
        t2 = make_transport(2, certs.nodes["n2"], inbox2, FileSnapshots(tmp_path))
        async with running(t1, t2):
            proxy = _ResettingProxy(t2.port)
            t1.set_peer(2, f"127.0.0.1:{await proxy.start()}")
            t2.set_peer(1, f"127.0.0.1:{t1.port}")
            sender = asyncio.create_task(_keep_sending(t1, 2))
            try:
                for blip in range(3):
                    before = len(inbox2.messages)
                    await eventually(lambda: len(inbox2.messages) > before, what=f"delivery before blip {blip}")
                    unreachable = len(inbox1.unreachable)
                    proxy.reset_all()
                    await eventually(lambda: len(inbox1.unreachable) > unreachable, what="the break to be seen")
                before = len(inbox2.messages)
                await eventually(lambda: len(inbox2.messages) > before, what="delivery after the blips")
                assert inbox1.gone == []
            finally:
                sender.cancel()
                await proxy.stop()

    asyncio.run(scenario())


def test_only_a_refused_or_dropped_connect_proves_a_process_gone() -> None:
    async def scenario() -> None:
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        closed.close()  # bound once, nobody listens now
        assert await nothing_serves(f"127.0.0.1:{closed_port}", 1.0)

        # A paused process: its socket listens but nobody accepts; the kernel completes the handshake.
        stopped = socket.socket()
        stopped.bind(("127.0.0.1", 0))
        stopped.listen(8)
        try:
            assert not await nothing_serves(f"127.0.0.1:{stopped.getsockname()[1]}", 1.0)
        finally:
            stopped.close()

        # A relay in front of a dead process: it accepts, fails to reach its upstream and hangs up at once.
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        relay = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        try:
            assert await nothing_serves(f"127.0.0.1:{relay.sockets[0].getsockname()[1]}", 1.0)
        finally:
            relay.close()

        # Not a TCP address: nothing to conclude.
        assert not await nothing_serves("unix:/tmp/nothing", 0.2)
        assert not await nothing_serves("no-port-here", 0.2)

    asyncio.run(scenario())

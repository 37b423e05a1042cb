"""Helpers for the transport tests: a file-backed snapshot store, an inbox, polling with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from raftkv.core.types import Entry, Message, MessageType, SnapshotMeta
from raftkv.security.tls import TLSFiles, channel_credentials, server_credentials
from raftkv.transport.peer import PeerTransport


@contextlib.asynccontextmanager
async def running(*transports: PeerTransport) -> AsyncIterator[None]:
    """Start ``transports`` in order for the block, and stop every one that started, whatever happens."""
    started: list[PeerTransport] = []
    try:
        for transport in transports:
            await transport.start()
            started.append(transport)
        yield
    finally:
        for transport in started:
            await transport.stop()


async def eventually(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` on the loop until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


class FileWriter:
    def __init__(self, store: FileSnapshots, meta: SnapshotMeta) -> None:
        self.store, self.meta = store, meta
        self.path = store.root / f".staging-{meta.index}"
        self.file = self.path.open("wb")

    def write(self, data: bytes) -> None:
        self.store.write_sizes.append(len(data))
        self.file.write(data)

    def commit(self) -> None:
        self.file.close()
        self.path.replace(self.store.root / f"snap-{self.meta.index}")
        self.store.committed.append(self.meta)

    def abort(self) -> None:
        self.file.close()
        self.path.unlink()
        self.store.aborted.append(self.meta)


@dataclass
class FileSnapshots:
    """A real on-disk SnapshotSink and SnapshotSource: snapshot ``i`` lives in ``root/snap-i``."""

    root: Path
    read_piece: int = 300_000
    write_sizes: list[int] = field(default_factory=list)
    committed: list[SnapshotMeta] = field(default_factory=list)
    aborted: list[SnapshotMeta] = field(default_factory=list)
    #: Set once a transfer has begun here (lets a test fail a transfer at a known point).
    begun: threading.Event = field(default_factory=threading.Event)

    def begin(self, meta: SnapshotMeta) -> FileWriter:
        writer = FileWriter(self, meta)
        self.begun.set()
        return writer

    def open(self, meta: SnapshotMeta) -> Iterator[bytes]:
        with (self.root / f"snap-{meta.index}").open("rb") as f:
            while piece := f.read(self.read_piece):
                yield piece


@dataclass
class Inbox:
    """Collects what a transport delivers and reports."""

    deliveries: list[list[Message]] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)
    snapshot_status: list[tuple[int, bool]] = field(default_factory=list)

    def on_messages(self, messages: list[Message]) -> None:
        self.deliveries.append(messages)

    @property
    def messages(self) -> list[Message]:
        return [m for batch in self.deliveries for m in batch]


def make_transport(
    node_id: int,
    files: TLSFiles | None,
    inbox: Inbox,
    snapshots: FileSnapshots,
    cluster_id: int = 0xC1,
    port: int = 0,
    **kwargs: object,
) -> PeerTransport:
    """A transport on loopback with real mTLS (or insecure when ``files`` is None) reporting into ``inbox``;
    no member is removed unless ``is_removed`` says so."""
    kwargs.setdefault("is_removed", lambda node_id: False)
    return PeerTransport(
        node_id,
        cluster_id,
        f"127.0.0.1:{port}",
        server_credentials(files) if files is not None else None,
        channel_credentials(files) if files is not None else None,
        inbox.on_messages,
        snapshots,
        snapshots,
        on_unreachable=inbox.unreachable.append,
        on_peer_gone=inbox.gone.append,
        on_snapshot_status=lambda node, ok: inbox.snapshot_status.append((node, ok)),
        **kwargs,  # type: ignore[arg-type]
    )


def app(to: int, sender: int, index: int, payload: bytes = b"x") -> Message:
    """An APP message carrying one entry at ``index``: its index tells the order of arrival."""
    return Message(MessageType.APP, to=to, sender=sender, term=1, index=index - 1, entries=(Entry(1, index, data=payload),))

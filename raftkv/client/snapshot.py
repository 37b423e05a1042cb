"""Saving ``Maintenance/Snapshot`` into a file, written once for both clients (they only iterate the stream).

The file is exactly what the server streams (etcdctl's format: data, then its SHA-256), so files saved by
``kvctl`` and by ``etcdctl`` are interchangeable. It is written as ``<path>.part``, checked against the
trailing hash, fsynced and only then renamed to ``path``: a half-received or damaged download never
takes the place of a good backup.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import grpc
import grpc.aio

from raftkv.client import routing as r
from raftkv.client.errors import ClientError, from_rpc_error
from raftkv.proto import rpc_pb2

#: The stream's last message carries the SHA-256 of everything before it.
HASH_BYTES = 32

Progress = Callable[[int, int], None]


def snapshot_stream(channel: grpc.Channel | grpc.aio.Channel) -> Any:
    """The server-streaming ``Maintenance/Snapshot`` callable of a blocking or asyncio channel."""
    return channel.unary_stream(
        r.SNAPSHOT.path, request_serializer=rpc_pb2.SnapshotRequest.SerializeToString,
        response_deserializer=rpc_pb2.SnapshotResponse.FromString)


class SnapshotFile:
    """``with SnapshotFile(path, progress) as out:`` feed each ``SnapshotResponse`` to ``out.write``.

    On a clean exit the download is verified and renamed into place (``size`` is then its length); on a
    failed call the partial file is removed and the gRPC error is raised as the client's typed error.
    """

    def __init__(self, path: str | os.PathLike[str], progress: Progress | None = None) -> None:
        self.path = Path(path)
        self.size = 0
        self._partial = Path(f"{os.fspath(path)}.part")
        self._progress = progress
        self._digest = hashlib.sha256()
        self._last = b""
        self._out: IO[bytes] | None = None

    def __enter__(self) -> SnapshotFile:
        self._out = open(self._partial, "wb")
        return self

    def write(self, chunk: rpc_pb2.SnapshotResponse) -> None:
        assert self._out is not None, "write outside the with block"
        # The hash is the last message; hash each blob only once the next one shows it was not the last.
        self._digest.update(self._last)
        self._last = chunk.blob
        self._out.write(chunk.blob)
        self.size += len(chunk.blob)
        if self._progress is not None:
            self._progress(self.size, chunk.remaining_bytes)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._out is not None
        with self._out:
            if exc is None:
                self._out.flush()
                os.fsync(self._out.fileno())
        if exc is None and self._last == self._digest.digest():
            self._partial.replace(self.path)
            return
        self._partial.unlink(missing_ok=True)
        if isinstance(exc, grpc.RpcError):
            raise from_rpc_error(exc) from None
        if exc is None:
            raise ClientError(f"the snapshot stream ended without a matching SHA-256 after {self.size} bytes; "
                              f"nothing was saved at {self.path}")

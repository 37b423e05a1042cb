"""The ceiling: what a server that only answers reaches under the same load, in the same run as etcd and raftkv.

raftkv serves etcd's client API from one Python process (``grpc.aio``; the GIL keeps it on one core). The
server ``raftkv.bench.grpc_server_kinds`` calls ``aio`` does nothing a member does — no Raft, no storage, no
auth — but has the same shape where gRPC is concerned: mutual TLS made as ``kvctl certs init`` makes it,
the client port's channel arguments and as many guards around each handler, ``Put`` handed to a core loop
and a writer thread and answered when the batch is done, ``Range`` answered from a dict. Measured beside etcd by the
same load generator, its throughput is the most any member built on one ``grpc.aio`` process could reach
on this machine, so the report can tell a gap raftkv's own code leaves from one the serving runtime sets.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from raftkv.bench.grpc_server_kinds import SERVER_NAME, client_config, serving
from raftkv.client.config import ClientConfig
from raftkv.security.certs import init_cluster_certs

KIND = "aio"


@contextlib.contextmanager
def started() -> Iterator[tuple[ClientConfig, str, int]]:
    """The ceiling server for the duration of the block: its client config, its endpoint and its pid."""
    with tempfile.TemporaryDirectory(prefix="raftkv-ceiling-") as scratch:
        certs = Path(scratch)
        init_cluster_certs(certs, [SERVER_NAME])
        with serving(KIND, certs) as (pid, port):
            endpoint = f"127.0.0.1:{port}"
            yield client_config(certs, endpoint), endpoint, pid

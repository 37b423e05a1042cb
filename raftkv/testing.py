"""Test your code against a real raftkv cluster: local processes, real TLS, real failures.

    from raftkv.testing import running_cluster

    with running_cluster(size=3) as cluster:
        client = cluster.client()
        client.put("k", "v")
        cluster.kill()            # SIGKILL the leader
        cluster.restart_all()

Under pytest the ``raftkv_cluster`` fixture (``raftkv.pytest_plugin``, loaded where a project asks for it)
yields the same handle for one cluster per test session. ``RAFTKV_TEST_KIND=etcd`` runs everything against etcd.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raftkv.client import AsyncClient, Client
from raftkv.localcluster import Kind, LocalCluster


def default_kind() -> Kind:
    kind = os.environ.get("RAFTKV_TEST_KIND", "raftkv")
    if kind not in ("raftkv", "etcd"):
        raise ValueError(f"RAFTKV_TEST_KIND must be raftkv or etcd, not {kind!r}")
    return kind  # type: ignore[return-value]


class ClusterHandle:
    """A running cluster plus helpers for clients and failures."""

    def __init__(self, cluster: LocalCluster, ready_timeout: float) -> None:
        self.cluster = cluster
        self.ready_timeout = ready_timeout

    @property
    def endpoints(self) -> list[str]:
        return self.cluster.endpoints

    @property
    def names(self) -> list[str]:
        return self.cluster.names

    def env(self) -> dict[str, str]:
        """KVCTL_* and ETCDCTL_* variables for subprocesses (kvctl, etcdctl, your own program)."""
        return self.cluster.env()

    def client(self, endpoints: Sequence[str] | None = None, **options: Any) -> Client:
        """A blocking client for all members (or ``endpoints``); close it when done."""
        options.setdefault("server_dedupes", self.cluster.kind == "raftkv")
        return Client(config=self.cluster.client_config(endpoints), **options)

    def async_client(self, endpoints: Sequence[str] | None = None, **options: Any) -> AsyncClient:
        """An asyncio client; create it inside the running event loop."""
        options.setdefault("server_dedupes", self.cluster.kind == "raftkv")
        return AsyncClient(config=self.cluster.client_config(endpoints), **options)

    def leader(self) -> str:
        return self.cluster.wait_ready(self.ready_timeout)

    def kill(self, name: str | None = None) -> str:
        """SIGKILL a member (default: the leader); returns its name."""
        victim = name or self.leader()
        self.cluster.kill_member(victim)
        return victim

    def stop(self, name: str | None = None) -> str:
        """SIGTERM a member (default: the leader) and wait for it to exit; returns its name."""
        victim = name or self.leader()
        self.cluster.stop_member(victim)
        return victim

    def restart(self, name: str) -> None:
        """(Re)start a member and wait until it answers with a leader known."""
        self.cluster.start_member(name)
        self.cluster.wait_member_ready(name, self.ready_timeout)

    def restart_all(self) -> None:
        """Start every stopped member and wait until all of them answer."""
        self.cluster.start()
        self.cluster.wait_ready(self.ready_timeout, all_members=True)


@contextmanager
def running_cluster(size: int = 3, *, kind: Kind | None = None, tls: bool = True,
                    base_dir: str | os.PathLike[str] | None = None, ready_timeout: float = 30.0,
                    **cluster_options: Any) -> Iterator[ClusterHandle]:
    """Start a fresh cluster, wait until every member answers and a leader exists, yield a handle;
    stop it afterwards (and delete its files if ``base_dir`` was not given)."""
    owned = base_dir is None
    root = Path(tempfile.mkdtemp(prefix="raftkv-test-")) if base_dir is None else Path(base_dir)
    cluster = LocalCluster(root, size, kind=kind or default_kind(), tls=tls, **cluster_options)
    try:
        cluster.start()
        cluster.wait_ready(ready_timeout, all_members=True)
        yield ClusterHandle(cluster, ready_timeout)
    finally:
        cluster.stop()
        if owned:
            shutil.rmtree(root, ignore_errors=True)


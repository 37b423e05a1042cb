"""One real three-member cluster per implementation for the etcd API tests, driven by the real etcdctl.

The tests run against etcd itself as well as raftkv: etcd's answers are the specification, so every
expectation written here is first checked against etcd and then demanded of raftkv.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2, rpc_pb2_grpc

from .etcdctl import ETCDCTL, Etcdctl, poll

#: The implementations under test. etcd is the reference; drop it here to test raftkv alone.
KINDS = ("etcd", "raftkv")


REPO = Path(__file__).resolve().parents[2]


def make_importable() -> None:
    """Members run ``python -m raftkv.main`` from their own directory: without an installed
    package (``make install``) they find raftkv only through PYTHONPATH."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *paths])


@functools.cache
def unavailable(kind: str) -> str | None:
    """Why ``kind`` cannot run here, or None if it can."""
    if not Path(ETCDCTL).exists():
        return f"{ETCDCTL} is missing (Debian package etcd-client)"
    if kind == "etcd":
        return None if shutil.which("etcd") else "etcd is missing (Debian package etcd-server)"
    make_importable()
    probe = subprocess.run(
        [sys.executable, "-m", "raftkv.main", "--help"], capture_output=True, text=True, timeout=60, cwd="/"
    )
    if probe.returncode != 0:
        return f"`python -m raftkv.main --help` fails: {probe.stderr.strip().splitlines()[-1:]}"
    return None


def start_cluster(kind: str, base: Path) -> LocalCluster:
    reason = unavailable(kind)
    if reason:
        pytest.skip(reason)
    cluster = LocalCluster(base, size=3, kind=kind, tls=True)  # type: ignore[arg-type]
    cluster.start()
    try:
        cluster.wait_ready(timeout=30)
        for name in cluster.names:
            cluster.wait_member_ready(name, timeout=30)
        poll(lambda: published(cluster) or None, 30, "every member to publish its client URLs")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def published(cluster: LocalCluster) -> bool:
    """Members announce their client URLs through the log once running; until then etcdctl shows none."""
    url = cluster.endpoints[0]
    with cluster.client_config([url]).channel(url) as channel:
        listed = rpc_pb2_grpc.ClusterStub(channel).MemberList(rpc_pb2.MemberListRequest(), timeout=5)
    return len(listed.members) == len(cluster.names) and all(m.clientURLs for m in listed.members)


@pytest.fixture(scope="session", params=KINDS)
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with start_cluster(request.param, tmp_path_factory.mktemp(f"api-{request.param}")) as running:
        yield running


@pytest.fixture
def etcdctl(cluster: LocalCluster) -> Etcdctl:
    return Etcdctl(cluster)


def refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str] | None:
    """The status a raw gRPC call ends with (None if it succeeds)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()  # type: ignore[attr-defined]
    return None


def leader(cluster: LocalCluster) -> str:
    return poll(cluster.leader_name, 20, "a leader")


def follower(cluster: LocalCluster) -> str:
    boss = leader(cluster)
    return next(name for name in cluster.running() if name != boss)


@pytest.fixture(params=("leader", "follower"))
def member(request: pytest.FixtureRequest, cluster: LocalCluster) -> str:
    """The member a test talks to: every client-facing behaviour must be the same on both."""
    return leader(cluster) if request.param == "leader" else follower(cluster)


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix no other test uses, so tests can share one cluster."""
    return f"/{request.node.name}/"


@pytest.fixture(scope="module")
def fresh_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LocalCluster]]:
    """A new etcd cluster and a new raftkv cluster for one module's side-by-side session."""
    if set(KINDS) != {"etcd", "raftkv"}:
        pytest.skip("needs both etcd and raftkv in KINDS")
    base = tmp_path_factory.mktemp("fresh")
    started: dict[str, LocalCluster] = {}
    try:
        for kind in KINDS:
            started[kind] = start_cluster(kind, Path(base) / kind)
        yield started
    finally:
        for running in started.values():
            running.stop()

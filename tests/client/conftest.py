"""One cluster per test package: real processes, real mutual TLS.

The server kind is the single switch between running these tests against raftkv and against etcd."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from raftkv.client import Client
from raftkv.testing import ClusterHandle, running_cluster

SERVER_KIND = os.environ.get("RAFTKV_TEST_KIND", "raftkv")


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    with running_cluster(kind=SERVER_KIND, base_dir=tmp_path_factory.mktemp("cluster")) as handle:  # type: ignore[arg-type]
        yield handle


@pytest.fixture
def client(cluster: ClusterHandle) -> Iterator[Client]:
    with cluster.client() as c:
        yield c


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of the test's own, so tests sharing a cluster do not see each other's keys."""
    return f"/{request.node.name}/"

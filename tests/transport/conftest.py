"""Certificates shared by the transport tests: one cluster CA and an unrelated one."""

from __future__ import annotations

import pytest

from raftkv.security.certs import ClusterCerts, init_cluster_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ClusterCerts:
    return init_cluster_certs(tmp_path_factory.mktemp("certs"), ["n1", "n2", "n3"])


@pytest.fixture(scope="session")
def foreign_certs(tmp_path_factory: pytest.TempPathFactory) -> ClusterCerts:
    return init_cluster_certs(tmp_path_factory.mktemp("foreign"), ["n1", "n2", "n3"])

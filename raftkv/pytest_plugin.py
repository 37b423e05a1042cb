"""The ``raftkv_cluster`` pytest fixture, for projects that test against a real raftkv cluster.

Opt in where you want it — ``pytest_plugins = ["raftkv.pytest_plugin"]`` in a ``conftest.py``, or
``pytest -p raftkv.pytest_plugin`` — rather than in every pytest run of every environment that installs
raftkv (which an auto-loaded entry point would do).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from raftkv.testing import ClusterHandle, running_cluster


@pytest.fixture(scope="session")
def raftkv_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    """One three-member cluster for the whole test session (kind from RAFTKV_TEST_KIND)."""
    with running_cluster(base_dir=tmp_path_factory.mktemp("raftkv-cluster")) as handle:
        yield handle

"""etcd 3.4's answers to the requests of ``crashers.CRASHERS``, observed on a real etcd cluster, so that
raftkv's table of differences stays true: where etcd answers, where it stops the member that served the
call (and restarts cleanly), and never does it stop every member."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from raftkv.localcluster import LocalCluster
from tests.api.conftest import start_cluster
from tests.api.etcdctl import poll

from .crashers import CRASH, CRASHERS, Crasher
from .test_crashers import assert_every_member_serves

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with start_cluster("etcd", tmp_path_factory.mktemp("etcd-crashers")) as cluster:
        yield cluster


@pytest.mark.parametrize("crasher", CRASHERS, ids=lambda c: c.name)
def test_etcd_answers_as_recorded(etcd: LocalCluster, crasher: Crasher) -> None:
    target = etcd.names[0]
    url = etcd.client_url(target)
    with etcd.client_config([url]).channel(url) as channel:
        answers = [step.call(channel) for step in crasher.steps]
    if crasher.etcd == CRASH:
        poll(lambda: True if not etcd.is_running(target) else None, 10, f"etcd's {target} to exit")
        assert set(etcd.running()) == set(etcd.names) - {target}, "more than the serving member stopped"
        etcd.start_member(target)
        etcd.wait_member_ready(target, timeout=30)
    else:
        assert answers[-1] == crasher.etcd
    assert_every_member_serves(etcd, crasher.name)


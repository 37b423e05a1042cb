"""`etcdctl member update`: applied with etcd's checks, and the updated member carries on at its new peer URL
after a restart there (the others dial it at the new address). Against etcd as well as raftkv."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from raftkv.local_processes import free_ports
from raftkv.localcluster import LocalCluster

from .conftest import KINDS, leader, start_cluster
from .etcdctl import Etcdctl, poll


@pytest.fixture(scope="module", params=KINDS)
def fresh(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster of its own: the test moves a member."""
    with start_cluster(request.param, tmp_path_factory.mktemp(f"member-update-{request.param}")) as running:
        yield running


def test_member_update_then_restart_on_the_new_url(fresh: LocalCluster) -> None:
    etcdctl = Etcdctl(fresh)
    moved = next(name for name in fresh.names if name != leader(fresh))
    moved_id = f"{fresh.member_id(moved):x}"
    other = next(name for name in fresh.names if name != moved)

    taken = etcdctl("member", "update", moved_id, f"--peer-urls={fresh.peer_url(other)}")
    assert taken.error == "etcdserver: Peer URLs already exists"
    missing = etcdctl("member", "update", "1234abcd", "--peer-urls=https://127.0.0.1:1")
    assert missing.error == "etcdserver: member not found"

    new_url = fresh.member(moved).url(free_ports(1)[0], fresh.tls)
    updated = etcdctl("member", "update", moved_id, f"--peer-urls={new_url}").ok().stdout
    assert updated.startswith(f"Member {moved_id:>16} updated in cluster ")
    listed = etcdctl("member", "list").ok().stdout
    assert f"{moved_id}, started, {moved}, {new_url}," in listed, listed

    fresh.kill_member(moved)
    fresh.move_peer(moved, int(new_url.rsplit(":", 1)[1]))
    fresh.start_member(moved)
    fresh.wait_member_ready(moved, 30)
    # A write through another member reaches the moved one: the others replicate to its new address.
    etcdctl("put", "/after-move", "1", member=other).ok()
    poll(lambda: True if etcdctl("get", "/after-move", "--consistency=s", "--print-value-only",
                                 member=moved).stdout == "1\n" else None, 20, "the write to reach the moved member")
    etcdctl("put", "/through-moved", "2", member=moved).ok()
    assert etcdctl("get", "/through-moved", "--print-value-only", member=other).ok().stdout == "2\n"


def test_a_member_updated_while_down_restarts_on_the_new_url(fresh: LocalCluster) -> None:
    """The usual order: stop the member, give it its new URL through another, start it there. It never
    applied its update before it stopped, and comes back at the new URL all the same (etcd keeps the member
    id of its WAL; raftkv knows its data dir by the member's name), learning the update as it catches up."""
    etcdctl = Etcdctl(fresh)
    moved = next(name for name in fresh.names if name != leader(fresh))
    moved_id = f"{fresh.member_id(moved):x}"
    other = next(name for name in fresh.names if name != moved)
    fresh.stop_member(moved)
    new_url = fresh.member(moved).url(free_ports(1)[0], fresh.tls)
    etcdctl("member", "update", moved_id, f"--peer-urls={new_url}", member=other).ok()
    etcdctl("put", "/while-down", "3", member=other).ok()

    fresh.move_peer(moved, int(new_url.rsplit(":", 1)[1]))
    fresh.start_member(moved)
    fresh.wait_member_ready(moved, 30)
    poll(lambda: True if etcdctl("get", "/while-down", "--consistency=s", "--print-value-only",
                                 member=moved).stdout == "3\n" else None, 20, "the moved member to catch up")
    listed = etcdctl("member", "list", member=moved).ok().stdout
    assert f"{moved_id}, started, {moved}, {new_url}," in listed, listed
    etcdctl("put", "/through-moved-again", "4", member=moved).ok()
    assert etcdctl("get", "/through-moved-again", "--print-value-only", member=other).ok().stdout == "4\n"

"""Cluster and maintenance commands of the real etcdctl: membership, endpoint status and health, alarms,
snapshots and compaction, with output normalised only where clusters legitimately differ."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

from raftkv import ETCD_VERSION
from raftkv.localcluster import LocalCluster

from .conftest import leader
from .etcdctl import Etcdctl, Result, normalise, poll

_UNUSED_PORTS = itertools.count(1)


def test_member_list(etcdctl: Etcdctl, cluster: LocalCluster, member: str) -> None:
    listed = etcdctl("member", "list", member=member).ok().stdout
    assert normalise(listed).splitlines() == [
        f"<id>, started, {name}, <url>, <url>, false" for name in _names_by_id(etcdctl, member)
    ]
    for name in cluster.names:
        assert f", {name}, {cluster.peer_url(name)}, {cluster.client_url(name)}, false" in listed


def _names_by_id(etcdctl: Etcdctl, member: str) -> list[str]:
    members = json.loads(etcdctl("member", "list", "-w", "json", member=member).ok().stdout)["members"]
    return [m["name"] for m in sorted(members, key=lambda m: m["ID"])]


def test_member_add_and_remove(etcdctl: Etcdctl, cluster: LocalCluster, member: str) -> None:
    """A learner and a voter that never start: etcdctl prints the settings for the new member, lists it
    as unstarted, and removes it again."""
    # Fresh URLs every time: etcd derives member ids from peer URLs and the second, and refuses an id it
    # removed before ("member not found").
    learner_url, voter_url = (f"https://127.0.0.1:{next(_UNUSED_PORTS)}" for _ in range(2))
    added = _member_add(etcdctl, member, "learner1", "--learner", f"--peer-urls={learner_url}")
    lines = added.stdout.splitlines()
    assert normalise(lines[0]) == "Member <id> added to cluster <id>"
    initial_cluster = [f"{name}={cluster.peer_url(name)}" for name in cluster.names] + [f"learner1={learner_url}"]
    assert lines[1:] == [
        "",
        'ETCD_NAME="learner1"',
        f'ETCD_INITIAL_CLUSTER="{lines[3].split(chr(34))[1]}"',  # checked as a set below: id order
        f'ETCD_INITIAL_ADVERTISE_PEER_URLS="{learner_url}"',
        'ETCD_INITIAL_CLUSTER_STATE="existing"',
    ]
    assert sorted(lines[3].split('"')[1].split(",")) == sorted(initial_cluster)
    learner_id = added.stdout.split()[1]
    assert f"{learner_id}, unstarted, , {learner_url}, , true" in etcdctl("member", "list", member=member).stdout

    voter_id = _member_add(etcdctl, member, "voter1", f"--peer-urls={voter_url}").stdout.split()[1]
    assert f"{voter_id}, unstarted, , {voter_url}, , false" in etcdctl("member", "list", member=member).stdout

    for removed in (voter_id, learner_id):
        result = etcdctl("member", "remove", removed, member=member).ok()
        assert normalise(result.stdout) == "Member <id> removed from cluster <id>\n"
        assert removed in result.stdout
    assert len(etcdctl("member", "list", member=member).ok().stdout.splitlines()) == len(cluster.names)
    gone = etcdctl("member", "remove", learner_id, member=member)
    assert gone.returncode == 1 and gone.error == "etcdserver: member not found"


def _member_add(etcdctl: Etcdctl, member: str, *args: str) -> Result:
    """etcd refuses membership changes as "unhealthy cluster" until every member has been connected to
    its peers for a few seconds (strict reconfiguration check), so the add is retried until accepted."""

    def attempt() -> Result | None:
        result = etcdctl("member", "add", *args, member=member)
        if result.returncode == 0:
            return result
        assert result.error == "etcdserver: unhealthy cluster", result.stderr
        return None

    return poll(attempt, 20, "the cluster to accept a new member")


def test_member_add_refuses_bad_urls(etcdctl: Etcdctl, member: str) -> None:
    bad = etcdctl("member", "add", "x", "--peer-urls=http://no-port", member=member)
    assert bad.returncode == 1 and bad.error == 'URL address does not have the form "host:port": http://no-port'


def test_endpoint_status(etcdctl: Etcdctl, cluster: LocalCluster) -> None:
    boss = leader(cluster)
    table = etcdctl("endpoint", "status").ok().stdout
    rows = {row.split(", ")[0]: row.split(", ") for row in table.splitlines()}
    assert set(rows) == set(cluster.endpoints)
    for name in cluster.names:
        url, member_id, version, size, is_leader, is_learner, term, index, applied, errors = rows[
            cluster.client_url(name)
        ]
        assert normalise(f"{member_id} {size}") == "<id> <size>" and version == ETCD_VERSION
        assert (is_leader, is_learner, errors) == (str(name == boss).lower(), "false", "")
        assert int(term) >= 1 and int(applied) >= 1 and int(index) >= int(applied) - 1

    [status] = json.loads(etcdctl("endpoint", "status", "-w", "json", member=boss).ok().stdout)
    answer = status["Status"]
    assert answer["leader"] == answer["header"]["member_id"]
    assert answer["raftTerm"] == answer["header"]["raft_term"] and answer["dbSize"] > 0


def test_endpoint_health(etcdctl: Etcdctl, cluster: LocalCluster) -> None:
    result = etcdctl("endpoint", "health").ok()
    lines = sorted(normalise(result.stdout + result.stderr).splitlines())
    assert lines == ["<url> is healthy: successfully committed proposal: took = <t>"] * len(cluster.names)


def test_alarm_list_is_empty(etcdctl: Etcdctl, member: str) -> None:
    assert etcdctl("alarm", "list", member=member).ok().stdout == ""
    assert etcdctl("alarm", "disarm", member=member).ok().stdout == ""


def test_snapshot_save(etcdctl: Etcdctl, member: str, prefix: str, tmp_path: Path) -> None:
    """The saved file is the database followed by its SHA-256, which `snapshot restore` verifies."""
    etcdctl("put", f"{prefix}in-snapshot", "x" * 100_000, member=member).ok()
    path = tmp_path / "backup.db"
    result = etcdctl("snapshot", "save", str(path), member=member).ok()
    assert result.stdout == f"Snapshot saved at {path}\n"
    data = path.read_bytes()
    assert len(data) > 100_000
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]


def test_compaction(etcdctl: Etcdctl, member: str, prefix: str) -> None:
    key = f"{prefix}k"
    revisions = []
    for value in ("v1", "v2", "v3"):
        etcdctl("put", key, value, member=member).ok()
        revisions.append(json.loads(etcdctl("get", key, "-w", "json", member=member).ok().stdout)["header"]["revision"])
    first, second, third = revisions

    assert etcdctl("compaction", str(second), member=member).ok().stdout == f"compacted revision {second}\n"
    assert etcdctl("get", key, f"--rev={second}", member=member).ok().stdout == f"{key}\nv2\n"
    for revision in (first, second):
        again = etcdctl("get", key, f"--rev={revision - 1}", member=member)
        assert again.returncode == 1
        assert again.error == "etcdserver: mvcc: required revision has been compacted"
    repeated = etcdctl("compaction", str(first), member=member)
    assert repeated.error == "etcdserver: mvcc: required revision has been compacted"
    future = etcdctl("compaction", str(third + 1000), member=member)
    assert future.error == "etcdserver: mvcc: required revision is a future revision"
    physical = etcdctl("compaction", "--physical", str(third), member=member).ok()
    assert physical.stdout == f"compacted revision {third}\n"
    assert etcdctl("get", key, member=member).ok().stdout == f"{key}\nv3\n"


def test_defrag(etcdctl: Etcdctl, cluster: LocalCluster) -> None:
    result = etcdctl("defrag").ok()
    assert sorted(result.stdout.splitlines()) == sorted(
        f"Finished defragmenting etcd member[{url}]" for url in cluster.endpoints
    )


def test_hashkv_agrees_across_members(etcdctl: Etcdctl, cluster: LocalCluster, prefix: str) -> None:
    """Every member hashes the same history at the same revision (what operators use to detect
    corruption); the revision is pinned so concurrent writes cannot make the hashes differ."""
    etcdctl("put", f"{prefix}k", "v").ok()
    revision = json.loads(etcdctl("get", f"{prefix}k", "-w", "json").ok().stdout)["header"]["revision"]
    poll(lambda: _applied_everywhere(cluster, revision) or None, 10, "every member to apply the write")
    answers = json.loads(etcdctl("endpoint", "hashkv", f"--rev={revision}", "-w", "json").ok().stdout)
    assert {a["Endpoint"] for a in answers} == set(cluster.endpoints)
    assert len({a["HashKV"]["hash"] for a in answers}) == 1 and answers[0]["HashKV"]["hash"]


def _applied_everywhere(cluster: LocalCluster, revision: int) -> bool:
    statuses = [cluster.status(name) for name in cluster.names]
    return all(status is not None and status.header.revision >= revision for status in statuses)

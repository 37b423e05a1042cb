"""Damaged data on a member of a real cluster: found at start or on read, the CORRUPT alarm raised through
the log, the member refusing to serve, the others serving the right values; and the leader's hash check
finding a member whose history is wrong but well formed."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import lmdb
import pytest

from raftkv.localcluster import LocalCluster
from raftkv.proto import kv_pb2, rpc_pb2
from raftkv.storage.env import SUB_DBS
from raftkv.storage.sealed import seal, unseal

from .conftest import Members, start_cluster, wait_for

MARKER = b"PRECIOUS-VALUE-0123456789abcdef"
CORRUPT = "etcdserver: corrupt cluster"
_PAGE_HEAD = struct.Struct("=QHHHH")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with start_cluster(tmp_path / "cluster", extra_args=["--experimental-corrupt-check-time=1s"]) as c:
        yield c


def data_file(cluster: LocalCluster, name: str) -> Path:
    return cluster.member_dir(name) / "data" / "db" / "data.mdb"


def published(cluster: LocalCluster, members: Members) -> bool:
    """Every member knows every member's client URLs: whom a quarantined member hands its alarm."""
    for name in cluster.names:
        try:
            listed = members.membership(name).MemberList(rpc_pb2.MemberListRequest(), timeout=5).members
        except grpc.RpcError:
            return False
        if len(listed) != len(cluster.names) or not all(m.clientURLs for m in listed):
            return False
    return True


def a_follower(cluster: LocalCluster, members: Members) -> tuple[str, int]:
    leader = cluster.wait_ready()
    wait_for(lambda: published(cluster, members), 30, "every member to publish its client URLs")
    name = next(n for n in cluster.names if n != leader)
    member_id = cluster.member_id(name)
    assert member_id is not None
    return name, member_id


def write_and_replicate(members: Members, cluster: LocalCluster, key: bytes, value: bytes) -> int:
    put = members.kv(cluster.wait_ready()).Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10)
    for name in cluster.names:
        wait_for(lambda: members.revision(name) >= put.header.revision, 20, f"{name} to apply the put")
    return put.header.revision


def flip_every(path: Path, marker: bytes) -> int:
    """Flip one bit inside every copy of ``marker``, writing only those bytes, in place: rewriting the whole
    file would truncate it under a running member, whose LMDB maps it (a read in that window dies of SIGBUS,
    without a word in its log), and would put back pages it wrote meanwhile."""
    raw = path.read_bytes()
    count, at = 0, raw.find(marker)
    with open(path, "r+b") as fh:
        while at != -1:
            offset = at + len(marker) // 2
            fh.seek(offset)
            fh.write(bytes([raw[offset] ^ 0x20]))
            count, at = count + 1, raw.find(marker, at + 1)
    return count


def flip_branch_keys(path: Path) -> None:
    """Damage a separator key in every B-tree branch page (LMDB 0.9 layout): the live ones among them
    misroute lookups; free pages left over from older transactions do not matter."""
    raw = bytearray(path.read_bytes())
    damaged = 0
    for pgno in range(2, len(raw) // 4096):
        base = pgno * 4096
        _, _, flags, lower, _ = _PAGE_HEAD.unpack_from(raw, base)
        if flags == 0x01 and (lower - 16) // 2 >= 3:
            node = struct.unpack_from("=H", raw, base + 16 + 2 * 2)[0]  # node 2: node 0 has no key
            raw[base + node + 8] ^= 0xFF
            damaged += 1
    assert damaged, "no branch page to damage"
    path.write_bytes(bytes(raw))


def corrupt_alarm_for(members: Members, asked: str, member_id: int) -> bool:
    try:
        listed = members.maintenance(asked).Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET), timeout=5)
    except grpc.RpcError:
        return False
    return any(a.memberID == member_id and a.alarm == rpc_pb2.CORRUPT for a in listed.alarms)


def refused(members: Members, name: str, key: bytes) -> bool:
    """The member answers a read of ``key`` with etcd's corrupt-cluster error (never with a value)."""
    try:
        got = members.kv(name).Range(rpc_pb2.RangeRequest(key=key, serializable=True), timeout=5)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.DATA_LOSS:
            assert exc.details() == CORRUPT
            return True
        return False
    assert all(kv.value == MARKER for kv in got.kvs if kv.key == key), "a wrong value was served"
    return False


def assert_contained(cluster: LocalCluster, members: Members, victim: str, victim_id: int, key: bytes) -> None:
    """The damaged member is named by a CORRUPT alarm everywhere, refuses data, and the others serve."""
    healthy = [n for n in cluster.names if n != victim]
    wait_for(lambda: corrupt_alarm_for(members, healthy[0], victim_id), 30, "the CORRUPT alarm")
    wait_for(lambda: refused(members, victim, key), 30, f"{victim} to refuse reads")
    status = members.maintenance(victim).Status(rpc_pb2.StatusRequest(), timeout=5)
    assert f"memberID:{victim_id} alarm:CORRUPT " in status.errors
    for name in healthy:
        got = members.kv(name).Range(rpc_pb2.RangeRequest(key=key), timeout=10)
        assert [kv.value for kv in got.kvs] == [MARKER]
    members.kv(healthy[0]).Put(rpc_pb2.PutRequest(key=b"/after", value=b"still writable"), timeout=10)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "value": lambda path: None if flip_every(path, MARKER) else pytest.fail("value not found in the file"),
    "log-entry": lambda path: None if flip_every(path, b"/only-in-the-log/" + MARKER) else pytest.fail("entry not found"),
    "index-page": flip_branch_keys,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_found_at_start_quarantines_the_member(
    cluster: LocalCluster, members: Members, damage: str
) -> None:
    victim, victim_id = a_follower(cluster, members)
    kv = members.kv(cluster.wait_ready())
    for i in range(1500):  # enough for B-tree branch pages
        kv.Put(rpc_pb2.PutRequest(key=b"/fill/%05d" % i, value=b"f" * 500), timeout=10)
    kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"/only-in-the-log/" + MARKER), timeout=10)  # a no-op
    write_and_replicate(members, cluster, b"/victim", MARKER)
    cluster.stop_member(victim)
    members.forget(victim)
    DAMAGE[damage](data_file(cluster, victim))
    cluster.start_member(victim)
    assert_contained(cluster, members, victim, victim_id, b"/victim")
    assert "quarantined" in cluster.log_path(victim).read_text()
    cluster.restart_member(victim)  # a restart does not bring it back: only an operator does
    members.forget(victim)
    wait_for(lambda: refused(members, victim, b"/victim"), 30, f"{victim} to refuse reads after a restart")


def test_damage_found_on_a_read_while_running(cluster: LocalCluster, members: Members) -> None:
    """Bit rot under a running member (LMDB maps the file, so the damage is visible at once)."""
    victim, victim_id = a_follower(cluster, members)
    write_and_replicate(members, cluster, b"/victim", MARKER)
    assert flip_every(data_file(cluster, victim), MARKER)
    wait_for(lambda: refused(members, victim, b"/victim"), 30, f"{victim} to refuse the damaged read")
    assert_contained(cluster, members, victim, victim_id, b"/victim")


def test_the_hash_check_finds_a_member_whose_history_is_wrong_but_well_formed(
    cluster: LocalCluster, members: Members
) -> None:
    victim, victim_id = a_follower(cluster, members)
    revision = write_and_replicate(members, cluster, b"/victim", MARKER)
    cluster.stop_member(victim)
    members.forget(victim)
    _rewrite_history(data_file(cluster, victim).parent, revision, b"NOT-WHAT-WAS-WRITTEN")
    cluster.start_member(victim)
    assert_contained(cluster, members, victim, victim_id, b"/victim")


def _rewrite_history(db_dir: Path, revision: int, value: bytes) -> None:
    """Change the value a revision recorded in the history (the latest value, in ``kv``, stays right), with
    valid checksums: what a bug would leave, not bit rot."""
    env = lmdb.open(str(db_dir), max_dbs=len(SUB_DBS) + 2)
    with env.begin(write=True) as txn:
        db = env.open_db(b"history", txn=txn)
        key = struct.pack(">QQ", revision, 0)
        raw = txn.get(key, db=db)
        assert raw is not None
        event = kv_pb2.Event.FromString(unseal("history", key, raw))
        event.kv.value = value
        txn.put(key, seal(key, event.SerializeToString()), db=db)
    env.close()


def test_damage_met_by_an_apply_restarts_the_member_into_quarantine(cluster: LocalCluster, members: Members) -> None:
    """The follower's copy of a key rots; the next write of that key makes its apply read the damaged record:
    its Raft loop cannot go on, so it marks its data dir and restarts (same process) in quarantine."""
    victim, victim_id = a_follower(cluster, members)
    write_and_replicate(members, cluster, b"/victim", MARKER)
    pid = cluster.pid(victim)
    assert flip_every(data_file(cluster, victim), MARKER)
    leader = cluster.wait_ready()
    members.kv(leader).Put(rpc_pb2.PutRequest(key=b"/victim", value=MARKER), timeout=10)  # the same value again
    wait_for(lambda: (cluster.member_dir(victim) / "data" / "quarantine").exists(), 30, "the quarantine marker")
    assert_contained(cluster, members, victim, victim_id, b"/victim")
    assert cluster.pid(victim) == pid, "the member restarted in place"

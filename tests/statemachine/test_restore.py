"""Restoring a saved snapshot file into a new cluster's data dir: state kept, old cluster forgotten, damage refused."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from raftkv.core.types import Entry, HardState
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.statemachine.node_store import NodeStore
from raftkv.statemachine.restore import PAGE_BYTES, RestoreError, restore_snapshot
from tests.statemachine.conftest import Harness

NEW_CLUSTER = 0xBEEF


def new_members(*ids: int) -> list[tuple[int, bytes]]:
    members = [rpc_pb2.Member(ID=i, name=f"m{i}", peerURLs=[f"https://127.0.0.1:{2000 + i}"]) for i in ids]
    return [(m.ID, internal_pb2.MemberContext(member=m).SerializeToString()) for m in members]


def save(h: Harness, path: Path) -> Path:
    """The file ``kvctl snapshot save`` writes: the stream, zero padding to 512-byte pages, its SHA-256."""
    data = b"".join(h.store.open_snapshot(h.store.log.snapshot_meta()))
    data += bytes(-len(data) % PAGE_BYTES)
    path.write_bytes(data + hashlib.sha256(data).digest())
    return path


@pytest.fixture
def saved(h: Harness, tmp_path: Path) -> Path:
    lease = h.apply(lease_grant=rpc_pb2.LeaseGrantRequest(TTL=60)).result.lease_grant.ID
    for i in range(50):
        h.apply(client_id=7, seq=i + 1, put=rpc_pb2.PutRequest(key=b"k/%02d" % i, value=b"v%d" % i,
                                                               lease=lease if i < 5 else 0))
    h.delete(b"k/49")
    h.apply(compaction=rpc_pb2.CompactionRequest(revision=10))
    h.apply(alarm=rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=1, alarm=rpc_pb2.NOSPACE))
    return save(h, tmp_path / "backup.db")


def test_restore_keeps_kv_state_and_replaces_the_cluster(h: Harness, saved: Path, tmp_path: Path) -> None:
    members = new_members(11, 12, 13)
    revision = restore_snapshot(saved, tmp_path / "restored", NEW_CLUSTER, 12, members)
    assert revision == h.store.revision() == 52  # 50 puts and a delete after revision 1
    store = NodeStore(tmp_path / "restored")
    try:
        assert store.hash_kv() == h.store.hash_kv()
        assert (store.revision(), store.compact_revision()) == (52, 10)
        assert [lease.id for lease in store.leases()] == [lease.id for lease in h.store.leases()]
        assert len(store.lease(store.leases()[0].id)[1]) == 5  # type: ignore[index]
        # The new membership, bootstrapped as a brand-new cluster's member would be.
        assert store.log.identity() == (NEW_CLUSTER, 12)
        assert [(m.ID, m.name) for m in store.members()] == [(11, "m11"), (12, "m12"), (13, "m13")]
        assert store.conf_state().voters == {11, 12, 13} and store.applied_index() == 3
        assert store.log.initial_state()[0] == HardState(term=1, vote=0, commit=3)
        assert store.alarms() == []
        with store.env.read() as txn:
            assert txn.stat(store.env.db("dedup"))["entries"] == 0
        # The new cluster's first write continues the old revision sequence.
        put = internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=b"after", value=b"1"))
        entry = [Entry(2, 4, data=put.SerializeToString())]
        store.save(None, entry, HardState(2, 12, 4)).result()
        assert store.apply(entry).result()[0].revision == 53
    finally:
        store.close()


def test_corrupt_file_is_refused_and_leaves_nothing(saved: Path, tmp_path: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[100] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(RestoreError, match="is corrupt: its SHA-256 does not match"):
        restore_snapshot(saved, tmp_path / "restored", NEW_CLUSTER, 11, new_members(11))
    assert not (tmp_path / "restored").exists()
    assert {p.name for p in tmp_path.iterdir()} == {"node", "backup.db"}  # no staging dir left behind


@pytest.mark.parametrize("cut", [1, 32, 600])
def test_truncated_file_is_refused(saved: Path, tmp_path: Path, cut: int) -> None:
    saved.write_bytes(saved.read_bytes()[:-cut])
    with pytest.raises(RestoreError, match="is (not a saved snapshot|corrupt)"):
        restore_snapshot(saved, tmp_path / "restored", NEW_CLUSTER, 11, new_members(11))


def test_existing_data_dir_is_never_overwritten(saved: Path, tmp_path: Path) -> None:
    target = tmp_path / "restored"
    target.mkdir()
    (target / "keep").write_text("mine")
    with pytest.raises(RestoreError, match="already exists"):
        restore_snapshot(saved, target, NEW_CLUSTER, 11, new_members(11))
    assert (target / "keep").read_text() == "mine"


def test_a_file_that_is_not_a_snapshot(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4
    (tmp_path / "junk").write_bytes(data + hashlib.sha256(data).digest())
    with pytest.raises(RestoreError, match="is damaged: neither a raftkv nor an etcd snapshot"):
        restore_snapshot(tmp_path / "junk", tmp_path / "restored", NEW_CLUSTER, 11, new_members(11))
    assert not (tmp_path / "restored").exists()
    with pytest.raises(RestoreError, match="cannot read snapshot file"):
        restore_snapshot(tmp_path / "missing", tmp_path / "restored", NEW_CLUSTER, 11, new_members(11))


def test_users_and_roles_travel_in_etcds_auth_buckets(h: Harness, tmp_path: Path) -> None:
    """A snapshot streams etcd's backend file; its auth, authUsers and authRoles buckets carry the auth store,
    so a restored cluster has the same users, roles, permissions, flag and auth revision."""
    from raftkv.proto import auth_pb2
    from tests.statemachine.test_auth_store import auth, error, setup_root_and_alice

    setup_root_and_alice(h)
    auth(h, "role_add", rpc_pb2.AuthRoleAddRequest(name="root"))
    auth(h, "user_grant_role", rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
    assert error(auth(h, "auth_enable", rpc_pb2.AuthEnableRequest())) is None
    out = io.BytesIO()
    h.store.write_etcd_snapshot(out)
    data = out.getvalue() + bytes(-len(out.getvalue()) % PAGE_BYTES)
    saved = tmp_path / "etcd-format.db"
    saved.write_bytes(data + hashlib.sha256(data).digest())
    restore_snapshot(saved, tmp_path / "restored", NEW_CLUSTER, 12, new_members(11, 12, 13))
    store = NodeStore(tmp_path / "restored")
    try:
        before, after = h.store.auth_state(), store.auth_state()
        assert after.enabled and (after.revision, dict(after.users), dict(after.roles)) == (
            before.revision, dict(before.users), dict(before.roles))
        assert after.roles["svc"].keyPermission[0].permType == auth_pb2.Permission.READWRITE
    finally:
        store.close()

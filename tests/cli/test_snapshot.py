"""`kvctl snapshot save` from a live cluster, then `kvctl snapshot restore` into a new three-member cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from raftkv.client import Client
from raftkv.localcluster import LocalCluster
from raftkv.testing import ClusterHandle
from tests.cli.conftest import Run
from tests.cli.test_kvctl import ok
from tests.client.conftest import SERVER_KIND

pytestmark = pytest.mark.skipif(SERVER_KIND != "raftkv", reason="restores raftkv's snapshot format only")


def restore_args(snapshot: Path, cluster: LocalCluster, name: str) -> list[str]:
    """The flags that make ``name``'s data dir for the members ``cluster`` will start."""
    return ["snapshot", "restore", str(snapshot), "--name", name,
            "--initial-cluster", cluster.member(name).initial_cluster,
            "--initial-cluster-token", cluster.token,
            "--initial-advertise-peer-urls", cluster.peer_url(name),
            "--data-dir", str(cluster.member_dir(name) / "data")]


def test_save_then_restore_into_a_new_cluster(cluster: ClusterHandle, kvctl: Run, prefix: str,
                                              tmp_path: Path) -> None:
    # The data is written in process: what is under test is kvctl's save and restore, and a loaded machine
    # spends seconds starting each kvctl process (two dozen of them outlasted the test's timeout at load 30).
    with cluster.client() as source:
        lease = source.lease_grant(600).id
        for i in range(20):
            source.put(f"{prefix}{i:02d}", f"value {i}")
        source.put(f"{prefix}leased", "x", lease=lease)
        revision = source.get_prefix(prefix).revision
    snapshot = tmp_path / "backup.db"
    assert ok(kvctl("snapshot", "save", str(snapshot))).startswith(f"Snapshot saved at {snapshot} (")

    restored = LocalCluster(tmp_path / "restored", 3)
    for name in restored.names:
        assert "revision" in ok(kvctl(*restore_args(snapshot, restored, name)))
    try:
        restored.start()
        restored.wait_ready(60)
        with Client(config=restored.client_config()) as client:
            answer = client.get_prefix(prefix)
            assert [kv.value for kv in answer.kvs][:20] == [f"value {i}".encode() for i in range(20)]
            assert answer.revision == revision
            assert len(client.member_list()) == 3
            assert lease in client.leases()
            assert client.put(f"{prefix}new", "1").revision == revision + 1
    finally:
        restored.stop()


def test_corrupt_snapshot_is_one_error_line(kvctl: Run, tmp_path: Path) -> None:
    snapshot = tmp_path / "backup.db"
    ok(kvctl("snapshot", "save", str(snapshot)))
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0x55
    snapshot.write_bytes(bytes(data))
    result: subprocess.CompletedProcess[str] = kvctl("snapshot", "restore", str(snapshot),
                                                     "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"Error: snapshot file {snapshot} is corrupt: its SHA-256 does not match its contents\n"
    assert not (tmp_path / "d").exists()

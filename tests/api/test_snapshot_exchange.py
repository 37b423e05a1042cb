"""Snapshots cross between etcd and raftkv: `etcdctl snapshot save` from one, `snapshot status` on the file, and
a restore into a new one-member cluster of the *other* kind (`etcdctl snapshot restore` for etcd, `kvctl
snapshot restore` for raftkv), which then holds the same keys, values, revision and leases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from raftkv.localcluster import LocalCluster

from .conftest import REPO, make_importable
from .etcdctl import ETCDCTL, Etcdctl, poll

OTHER = {"etcd": "raftkv", "raftkv": "etcd"}


def restore(snapshot: Path, into: LocalCluster) -> None:
    """Make n1's data dir of the (not yet started) ``into`` from ``snapshot``, with its own tool."""
    args = ["snapshot", "restore", str(snapshot), "--name", "n1",
            "--initial-cluster", into.member("n1").initial_cluster, "--initial-cluster-token", into.token,
            "--initial-advertise-peer-urls", into.peer_url("n1"), "--data-dir", str(into.member_dir("n1") / "data")]
    if into.kind == "etcd":
        command = [ETCDCTL, *args]
    else:
        make_importable()
        command = [sys.executable, "-m", "cli.kvctl", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDCTL_", "KVCTL_"))}
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 0, done.stderr


def test_snapshot_restores_into_the_other_kind(cluster: LocalCluster, prefix: str, tmp_path: Path) -> None:
    etcdctl = Etcdctl(cluster)
    lease = etcdctl("lease", "grant", "600").ok().stdout.split()[1]
    for i in range(30):
        etcdctl("put", f"{prefix}{i:02d}", f"value {i}").ok()
    etcdctl("put", f"{prefix}00", "rewritten").ok()
    etcdctl("del", f"{prefix}01").ok()
    etcdctl("put", f"--lease={lease}", f"{prefix}leased", "ephemeral").ok()
    source = json.loads(etcdctl("get", prefix, "--prefix", "-w", "json").ok().stdout)
    snapshot = tmp_path / "snapshot.db"
    etcdctl("snapshot", "save", str(snapshot), member=cluster.names[0]).ok()

    status = json.loads(subprocess.run([ETCDCTL, "snapshot", "status", str(snapshot), "-w", "json"],
                                       capture_output=True, text=True, check=True, timeout=60).stdout)
    assert status["revision"] == source["header"]["revision"]
    assert status["totalKey"] >= 33

    target = LocalCluster(tmp_path / "restored", 1, kind=OTHER[cluster.kind], tls=False)  # type: ignore[arg-type]
    restore(snapshot, target)
    target.start()
    try:
        target.wait_ready(30, all_members=True)
        restored = Etcdctl(target)
        answer = poll(lambda: json.loads(out.stdout) if (out := restored("get", prefix, "--prefix", "-w", "json"))
                      .returncode == 0 else None, 20, "the restored member to answer")
        assert [(kv["key"], kv["value"], kv["create_revision"], kv["mod_revision"], kv["version"])
                for kv in answer["kvs"]] == [
            (kv["key"], kv["value"], kv["create_revision"], kv["mod_revision"], kv["version"])
            for kv in source["kvs"]]
        assert answer["header"]["revision"] == source["header"]["revision"]
        assert lease in restored("lease", "list").ok().stdout
        leased = restored("get", f"{prefix}leased", "-w", "json").ok().stdout
        assert json.loads(leased)["kvs"][0]["lease"] == int(lease, 16)
        # History survives too: the value before the rewrite, at its revision.
        first = next(kv for kv in source["kvs"] if kv["key"] == source["kvs"][0]["key"])
        old = restored("get", f"{prefix}00", f"--rev={first['create_revision']}", "--print-value-only").ok()
        assert old.stdout == "value 0\n"
    finally:
        target.stop()

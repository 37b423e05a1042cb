"""`kvctl cluster up/status/env/down`, with the printed environment used by the real etcdctl."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from raftkv.local_processes import free_ports
from raftkv.localcluster import LocalCluster
from tests.cli.conftest import REPO, kvctl_command
from tests.client.conftest import SERVER_KIND


def run(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="needs etcdctl")
def test_cluster_round_trip_usable_by_etcdctl(tmp_path: Path) -> None:
    directory = str(tmp_path / "c")
    up = run(*kvctl_command("cluster", "up", "--dir", directory, "--size", "1", "--kind", SERVER_KIND,
                            "--base-port", "0"))
    try:
        assert "eval" in up and "kvctl put hello world" in up
        assert "already running" in run(*kvctl_command("cluster", "up", "--dir", directory))
        status = json.loads(run(*kvctl_command("cluster", "status", "--dir", directory, "-w", "json")))
        assert [(m["name"], m["leader"], m["healthy"]) for m in status["members"]] == [("n1", True, True)]

        exports = run(*kvctl_command("cluster", "env", "--dir", directory)).splitlines()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KVCTL_", "ETCDCTL_"))}
        for line in exports:
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value.strip("'")
        run(*kvctl_command("put", "hello", "world"), env=env)
        assert run("etcdctl", "get", "hello", env=env) == "hello\nworld\n"
    finally:
        down = run(*kvctl_command("cluster", "down", "--dir", directory))
    assert down == "stopped n1\n"
    assert "stopped" in run(*kvctl_command("cluster", "status", "--dir", directory))


def _taken_base_port() -> tuple[int, socket.socket]:
    """A base port whose nine member ports are free, with n2's client port (base + 10) then taken."""
    while True:
        base = free_ports(1)[0] // 10 * 10
        blocker = socket.socket()
        try:
            for port in (base, base + 1, base + 2, base + 11, base + 12, base + 20, base + 21, base + 22):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            blocker.bind(("127.0.0.1", base + 10))
            blocker.listen()
            return base, blocker
        except OSError:
            blocker.close()


@pytest.mark.parametrize("kind", ["raftkv", "etcd"])
def test_cluster_up_fails_loudly_when_a_member_cannot_start(tmp_path: Path, kind: str) -> None:
    if kind == "etcd" and shutil.which("etcd") is None:
        pytest.skip("needs etcd")
    base, blocker = _taken_base_port()
    with blocker:
        up = subprocess.run(kvctl_command("cluster", "up", "--dir", str(tmp_path / "c"), "--kind", kind,
                                          "--base-port", str(base)),
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    cluster = LocalCluster.open(tmp_path / "c")
    try:
        assert up.returncode == 1, up.stdout
        assert "started" not in up.stdout
        assert up.stderr.startswith(f"Error: the cluster in {cluster.base_dir} did not start: n2 exited: ")
        assert "address already in use" in up.stderr.lower(), up.stderr
        assert str(cluster.log_path("n2")) in up.stderr
        assert cluster.running() == []  # nothing half-started is left behind
    finally:
        cluster.stop()


@pytest.mark.parametrize("kind", ["etcd", "raftkv"])
def test_the_reason_a_member_stopped_is_its_worst_line_not_its_last_error(tmp_path: Path, kind: str) -> None:
    """etcd logs on at info level while it shuts down after a fatal error, and such a line can say "error"
    (seen in CI: the bind failure was reported as a rejected connection)."""
    cluster = LocalCluster(tmp_path, 1, kind=kind)  # type: ignore[arg-type]
    cluster.log_path("n1").parent.mkdir(parents=True)
    fatal = {
        "etcd": "2026-12-03 14:53:20.880000 C | etcdmain: listen tcp 127.0.0.1:32341: bind: address already in use",
        "raftkv": "raftkv: error: cannot listen on peer URL https://127.0.0.1:32341: Address already in use",
    }[kind]
    cluster.log_path("n1").write_text("\n".join([
        "2026-12-03 14:53:20.870000 E | rafthttp: failed to dial: an earlier error",
        "2026-12-03 14:53:20,870 ERROR n1 raftkv.transport: an earlier error",
        fatal,
        '2026-12-03 14:53:20.883662 I | embed: rejected connection from "127.0.0.1:59680" (error "set tcp '
        '127.0.0.1:32341: use of closed network connection", ServerName "")',
        "",
    ]))
    assert cluster.last_error("n1") == fatal


def test_cluster_up_plaintext_is_explicit(tmp_path: Path) -> None:
    refused = subprocess.run(kvctl_command("--insecure", "cluster", "up", "--dir", str(tmp_path / "tls")),
                             capture_output=True, text=True, cwd=REPO, timeout=60)
    assert refused.returncode == 1 and "--insecure-plaintext" in refused.stderr
    assert not (tmp_path / "tls").exists()

    directory = str(tmp_path / "plain")
    run(*kvctl_command("cluster", "up", "--dir", directory, "--size", "1", "--kind", SERVER_KIND,
                       "--base-port", "0", "--insecure-plaintext"))
    try:
        cluster = LocalCluster.open(directory)
        assert not cluster.tls and cluster.endpoints[0].startswith("http://")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KVCTL_", "ETCDCTL_"))}
        env.update(cluster.env())
        run(*kvctl_command("put", "plain", "text"), env=env)
        assert run(*kvctl_command("get", "plain"), env=env) == "plain\ntext\n"
    finally:
        run(*kvctl_command("cluster", "down", "--dir", directory))


def test_each_local_cluster_has_its_own_id_and_default_ports_are_not_ephemeral(tmp_path: Path) -> None:
    first, second = LocalCluster(tmp_path / "a", 1), LocalCluster(tmp_path / "b", 1)
    assert first.token != second.token
    assert LocalCluster.open(tmp_path / "a").token == first.token  # kept across restarts
    command = first.command("n1")
    assert command[command.index("--initial-cluster-token") + 1] == first.token
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    default_base = 2379
    assert default_base + 10 * 2 + 2 < ephemeral_low

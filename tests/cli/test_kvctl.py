"""kvctl's verbs against a live cluster: etcdctl's output formats, and one-line errors."""

from __future__ import annotations

import base64
import json
import socket
import subprocess

import pytest

from raftkv.testing import ClusterHandle
from tests.cli.conftest import REPO, Run, kvctl_command


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def test_put_get_del(kvctl: Run, prefix: str) -> None:
    assert ok(kvctl("put", prefix + "a", "1")) == "OK\n"
    assert ok(kvctl("put", prefix + "b", "2")) == "OK\n"
    assert ok(kvctl("get", prefix + "a")) == f"{prefix}a\n1\n"
    assert ok(kvctl("get", prefix, "--prefix")) == f"{prefix}a\n1\n{prefix}b\n2\n"
    assert ok(kvctl("get", prefix, "--prefix", "--keys-only")) == f"{prefix}a\n\n{prefix}b\n\n"
    assert ok(kvctl("get", prefix, "--prefix", "--print-value-only", "--order", "DESCEND")) == "2\n1\n"
    assert ok(kvctl("get", prefix, "--prefix", "--limit", "1", "--consistency", "s")) == f"{prefix}a\n1\n"
    assert ok(kvctl("put", prefix + "a", "3", "--prev-kv")) == f"OK\n{prefix}a\n1\n"
    assert ok(kvctl("del", prefix, "--prefix")) == "2\n"
    assert ok(kvctl("get", prefix + "a")) == ""


def test_json_output_matches_etcdctl_shape(kvctl: Run, prefix: str) -> None:
    ok(kvctl("put", prefix + "k", "v"))
    data = json.loads(ok(kvctl("get", prefix + "k", "-w", "json")))
    assert data["count"] == 1 and data["kvs"][0]["key"] == "L3Rlc3RfanNvbl9vdXRwdXRfbWF0Y2hlc19ldGNkY3RsX3NoYXBlL2s="
    assert isinstance(data["header"]["revision"], int) and isinstance(data["header"]["member_id"], int)
    statuses = json.loads(ok(kvctl("-w", "json", "endpoint", "status")))
    assert len(statuses) == 3 and all("leader" in s["Status"] for s in statuses)


def test_txn_from_stdin(kvctl: Run, prefix: str) -> None:
    ok(kvctl("put", prefix + "x", "1"))
    script = f'value("{prefix}x") = "1"\n\nput {prefix}x 2\n\nget {prefix}x\n\n'
    assert ok(kvctl("txn", stdin=script)) == "SUCCESS\n\nOK\n"
    assert ok(kvctl("txn", stdin=script)) == f"FAILURE\n\n{prefix}x\n2\n"


def test_watch_prints_events(env: dict[str, str], kvctl: Run, prefix: str) -> None:
    start = int(json.loads(ok(kvctl("put", prefix + "w", "1", "-w", "json")))["header"]["revision"])
    ok(kvctl("del", prefix + "w"))
    watcher = subprocess.Popen(kvctl_command("watch", prefix, "--prefix", "--rev", str(start)),
                               stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        assert watcher.stdout is not None
        lines = [watcher.stdout.readline() for _ in range(5)]
    finally:
        watcher.terminate()
        watcher.wait(10)
    assert lines == ["PUT\n", f"{prefix}w\n", "1\n", "DELETE\n", f"{prefix}w\n"]


def test_lease_lifecycle(kvctl: Run, prefix: str) -> None:
    granted = ok(kvctl("lease", "grant", "60")).split()
    assert granted[0] == "lease" and granted[2:] == ["granted", "with", "TTL(60s)"]
    lease = granted[1]
    ok(kvctl("put", prefix + "k", "v", "--lease", lease))
    assert ok(kvctl("lease", "keep-alive", "--once", lease)) == f"lease {lease} keepalived with TTL(60)\n"
    assert f"attached keys([{prefix}k])" in ok(kvctl("lease", "timetolive", lease, "--keys"))
    assert lease in ok(kvctl("lease", "list"))
    assert ok(kvctl("lease", "revoke", lease)) == f"lease {lease} revoked\n"
    assert ok(kvctl("get", prefix + "k")) == ""


def test_member_and_endpoint_commands(kvctl: Run, cluster: ClusterHandle) -> None:
    members = ok(kvctl("member", "list")).splitlines()
    assert sorted(line.split(", ")[2] for line in members) == cluster.names
    status = ok(kvctl("endpoint", "status", "--cluster")).splitlines()
    assert sum(line.split(", ")[4] == "true" for line in status) == 1
    health = ok(kvctl("endpoint", "health")).splitlines()
    assert len(health) == 3 and all("is healthy" in line for line in health)
    assert "+" in ok(kvctl("member", "list", "-w", "table"))


@pytest.mark.parametrize("args", [
    ("--endpoints", "https://127.0.0.1:1", "--command-timeout", "0.5s", "get", "k"),
    ("lease", "revoke", "not-hex"),
    ("get", "k", "--rev", "999999999"),
    ("--cacert", "/nonexistent/ca.crt", "get", "k"),
])
def test_errors_are_one_line_and_fail(kvctl: Run, args: tuple[str, ...]) -> None:
    result = kvctl(*args)
    assert result.returncode != 0
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_no_client_certificate_is_one_line_that_says_so(env: dict[str, str]) -> None:
    """The members refuse the handshake (mutual TLS); kvctl says what is missing, without gRPC's own logs."""
    without = {k: v for k, v in env.items() if k not in ("KVCTL_CERT", "KVCTL_KEY")}
    result = subprocess.run(kvctl_command("--dial-timeout", "500ms", "--command-timeout", "2s", "get", "k"),
                            capture_output=True, text=True, env=without, cwd=REPO, timeout=60)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("Error: ") and "no client certificate was given" in result.stderr, result.stderr
    assert "--cert and --key" in result.stderr


def test_bench_reports_throughput_and_latency(kvctl: Run) -> None:
    report = json.loads(ok(kvctl("bench", "put", "--clients", "4", "--duration", "1s", "--keys", "20", "-w", "json")))
    assert report["requests"] > 0 and report["errors"] == 0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]


def test_watch_json_prints_one_watch_response_per_line(env: dict[str, str], kvctl: Run, prefix: str) -> None:
    """The shape ``etcdctl watch -w json`` prints: Go's encoding of clientv3's WatchResponse."""
    start = int(json.loads(ok(kvctl("put", prefix + "w", "1", "-w", "json")))["header"]["revision"])
    ok(kvctl("del", prefix + "w"))
    watcher = subprocess.Popen(kvctl_command("watch", prefix, "--prefix", "--rev", str(start), "-w", "json"),
                               stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    events: list[dict[str, object]] = []
    try:
        assert watcher.stdout is not None
        while len(events) < 2:  # catch-up may deliver both revisions in one response, as etcd does
            resp = json.loads(watcher.stdout.readline())
            assert list(resp) == ["Header", "Events", "CompactRevision", "Canceled", "Created"]
            assert set(resp["Header"]) == {"cluster_id", "member_id", "revision", "raft_term"}
            assert (resp["CompactRevision"], resp["Canceled"], resp["Created"]) == (0, False, False)
            events += resp["Events"]
    finally:
        watcher.terminate()
        watcher.wait(10)
    key = base64.b64encode(f"{prefix}w".encode()).decode()
    assert events == [{"kv": {"key": key, "create_revision": start, "mod_revision": start, "version": 1, "value": "MQ=="}},
                      {"type": 1, "kv": {"key": key, "mod_revision": start + 1}}]


def test_dial_timeout_bounds_connection_establishment(kvctl: Run) -> None:
    """A member that accepts TCP but never answers the TLS handshake costs an attempt the dial timeout, not
    the whole command timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"https://127.0.0.1:{silent.getsockname()[1]}"
        result = kvctl("--endpoints", endpoint, "--dial-timeout", "300ms", "--command-timeout", "1s", "get", "k")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    # Without a dial timeout the only attempt would wait out the whole command timeout on the handshake.
    assert "last error: failed to connect" in result.stderr, result.stderr

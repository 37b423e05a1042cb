"""``kvctl service register|list|watch`` as users run them: subprocesses against a real cluster."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from raftkv.client import Client
from raftkv.discovery import instance_key, register
from raftkv.discovery.demo import control
from raftkv.security import certs
from raftkv.testing import ClusterHandle
from tests.discovery.conftest import REPO, Instances, eventually

SYS_TGKILL = 234  # x86-64 Linux


@pytest.fixture
def env(cluster: ClusterHandle, instances: Instances) -> dict[str, str]:
    return instances.env


def kvctl(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.kvctl", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)


@pytest.fixture
def popen(env: dict[str, str]) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def start(popen: list[subprocess.Popen[str]], env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "cli.kvctl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    popen.append(proc)
    return proc


def test_register_sidecar_keeps_the_key_and_sigterm_deregisters(client: Client, service: str, env: dict[str, str],
                                                                popen: list[subprocess.Popen[str]]) -> None:
    proc = start(popen, env, "service", "register", service, "127.0.0.1:7001", "--ttl", "30", "--meta", "zone=a",
                 "--meta", "weight=3")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(f"registered /services/{service}/127.0.0.1:7001 (lease "), line
    kv = client.get(instance_key(service, "127.0.0.1:7001"))
    assert kv is not None and json.loads(kv.value)["Metadata"] == {"weight": 3, "zone": "a"}
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert f"deregistered /services/{service}/127.0.0.1:7001" in out
    assert client.get(instance_key(service, "127.0.0.1:7001")) is None  # revoked, not left for 30 s


def test_a_killed_sidecars_key_goes_within_its_ttl(cluster: ClusterHandle, client: Client, service: str,
                                                  env: dict[str, str], popen: list[subprocess.Popen[str]]) -> None:
    proc = start(popen, env, "service", "register", service, "127.0.0.1:7002", "--ttl", "2")
    assert proc.stdout is not None and proc.stdout.readline().startswith("registered")
    proc.kill()
    proc.wait()
    import time
    killed = time.monotonic()
    eventually(lambda: client.get(instance_key(service, "127.0.0.1:7002")) is None, 10, "the key's expiry")
    # The TTL, plus what the lessor's 500 ms expiry sweep and a revoke through Raft add; well under TTL + 1 s
    # on a quiet machine, bounded more loosely here because the test machine may be loaded.
    assert time.monotonic() - killed < 2 + 3


def test_register_with_health_check_follows_the_instance(client: Client, service: str, env: dict[str, str],
                                                         instances: Instances,
                                                         popen: list[subprocess.Popen[str]]) -> None:
    _, addr = instances.local()
    proc = start(popen, env, "service", "register", service, addr, "--health-check", "grpc", "--health-interval",
                 "100ms", "--unknown-after", "20s")
    key = instance_key(service, addr)
    # The first wait includes starting kvctl, which alone takes 7 s at load 25; what is tested is that the
    # key follows the health, not how fast a loaded machine starts a process or runs the probes.
    eventually(lambda: client.get(key) is not None, 60, "registration once healthy")
    control(addr, "not-serving")
    eventually(lambda: client.get(key) is None, 30, "withdrawal")
    control(addr, "serving")
    eventually(lambda: client.get(key) is not None, 30, "restoration")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0
    # It says why: the instance answered NOT_SERVING (an unanswered check would say "no answer for 20s").
    assert f"withdrawn {key} (health check not passing: 2 failing checks)" in out.splitlines()


def test_register_refuses_a_bad_unknown_after(env: dict[str, str]) -> None:
    out = kvctl(env, "service", "register", "s", "127.0.0.1:1", "--health-check", "grpc", "--unknown-after", "0")
    assert out.returncode != 0 and "unknown_after must be positive" in out.stderr and "Traceback" not in out.stderr


def test_list_shows_address_ttl_health_and_metadata(client: Client, service: str, env: dict[str, str],
                                                    instances: Instances) -> None:
    _, addr = instances.local()
    with register(service, addr, instance_id="a", metadata={"zone": "b"}, ttl=20, client=client), \
            register(service, "127.0.0.1:1", instance_id="dead", client=client):
        client.put(f"/services/{service}/broken", "not json")
        out = kvctl(env, "service", "list", service, "-w", "json")
        assert out.returncode == 0, out.stderr
        rows = {r["id"]: r for r in json.loads(out.stdout)["instances"]}
        assert rows["a"]["addr"] == addr and rows["a"]["health"] == "SERVING" and 0 < rows["a"]["ttl"] <= 20
        assert rows["a"]["metadata"] == {"zone": "b"}
        assert rows["dead"]["health"] == "unreachable"
        assert rows["broken"]["health"] == "invalid" and "not JSON" in rows["broken"]["error"]
        table = kvctl(env, "service", "list", "-w", "table")
        assert table.returncode == 0 and "SERVICE" in table.stdout and addr in table.stdout
        simple = kvctl(env, "service", "list", service).stdout.splitlines()
        assert any(line.startswith(f"{service}, a, {addr}, ") and line.endswith("SERVING, zone=b") for line in simple)
    client.delete(f"/services/{service}/broken")


def test_list_tells_an_instance_that_does_not_answer_from_one_that_is_gone(client: Client, service: str,
                                                                          env: dict[str, str]) -> None:
    """A port that accepts connections and never answers (a hung or overloaded instance) is ``timeout``; a
    closed port is ``unreachable``. The registration's own health gate makes the same split."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nobody ever reads
        hung = f"127.0.0.1:{silent.getsockname()[1]}"
        with register(service, hung, instance_id="hung", client=client), \
                register(service, "127.0.0.1:1", instance_id="gone", client=client):
            out = kvctl(env, "service", "list", service, "-w", "json", "--probe-timeout", "300ms", "--probe-tls", "off")
            assert out.returncode == 0, out.stderr
            rows = {r["id"]: r for r in json.loads(out.stdout)["instances"]}
    assert rows["hung"]["health"] == "timeout" and rows["gone"]["health"] == "unreachable", rows


def test_watch_prints_changes_as_they_happen(client: Client, service: str, env: dict[str, str],
                                             popen: list[subprocess.Popen[str]]) -> None:
    with register(service, "127.0.0.1:7003", instance_id="w1", client=client):
        proc = start(popen, env, "service", "watch", service)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "added w1 127.0.0.1:7003"
        with register(service, "127.0.0.1:7004", instance_id="w2", metadata={"v": "2"}, client=client):
            assert proc.stdout.readline().strip() == "added w2 127.0.0.1:7004 v=2"
        assert proc.stdout.readline().strip() == "removed w2 127.0.0.1:7004"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=15)
    assert proc.returncode == 0


def _tgkill(pid: int, tid: int, sig: int) -> None:
    """Send ``sig`` to one thread of another process (Python's ``os`` has no ``tgkill``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_TGKILL, pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill {pid}/{tid}")


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.machine() != "x86_64",
                    reason="tgkill's syscall number is x86-64 Linux's")
def test_watch_stops_on_a_sigterm_the_kernel_hands_to_another_thread(client: Client, service: str,
                                                                     env: dict[str, str],
                                                                     popen: list[subprocess.Popen[str]]) -> None:
    """The kernel may deliver a process's SIGTERM to any thread, here one of gRPC's; Python runs the handler
    on the main thread only when that runs bytecode again (CI saw `service watch` hang 15 s after SIGTERM)."""
    with register(service, "127.0.0.1:7005", instance_id="t1", client=client):
        proc = start(popen, env, "service", "watch", service)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "added t1 127.0.0.1:7005"  # listed: the watch is running
        other = next(int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid)
        _tgkill(proc.pid, other, signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


@pytest.fixture
def tls_instance(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A gRPC server with grpc.health.v1 that speaks TLS only, its certificate from the cluster's CA."""
    folder = Path(env["KVCTL_CACERT"]).parent
    issued = certs.issue_node(certs.load_issued(folder / "ca.crt", folder / "ca.key"), "tls-instance")
    certs.write_issued(issued, tmp_path / "i.crt", tmp_path / "i.key")
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [((tmp_path / "i.key").read_bytes(), (tmp_path / "i.crt").read_bytes())]))
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_list_and_the_sidecar_check_health_over_tls(client: Client, service: str, env: dict[str, str],
                                                    tls_instance: str, popen: list[subprocess.Popen[str]]) -> None:
    with register(service, tls_instance, instance_id="tls", client=client):
        def row(*flags: str) -> dict[str, object]:
            out = kvctl(env, "service", "list", service, "-w", "json", *flags)
            assert out.returncode == 0, out.stderr
            return dict(json.loads(out.stdout)["instances"][0])

        assert row()["health"] == "SERVING" and row()["tls"] is True  # auto: plaintext got no answer, TLS did
        assert row("--probe-tls", "on")["health"] == "SERVING"
        assert row("--probe-tls", "off")["health"] == "unreachable"
    sidecar = start(popen, env, "service", "register", service, tls_instance, "--id", "side", "--health-check",
                    "grpc", "--health-tls", "--health-interval", "100ms")
    eventually(lambda: client.get(instance_key(service, "side")) is not None, 60, "the TLS-checked registration")
    sidecar.send_signal(signal.SIGTERM)
    sidecar.communicate(timeout=15)
    assert sidecar.returncode == 0 and client.get(instance_key(service, "side")) is None


@pytest.mark.parametrize("args, error", [
    (("service", "register", "svc", "nope"), "address 'nope' must be host:port"),
    (("service", "register", "a/b", "h:1"), "service name 'a/b' must be a non-empty key segment"),
    (("service", "register", "svc", "h:1", "--meta", "novalue"), "bad --meta 'novalue': expected KEY=VALUE"),
    (("service", "register", "svc", "h:1", "--meta", "weight=0"), "weight 0 must be a whole number from 1 to 1000"),
    (("service", "watch", "a/b"), "service name 'a/b' must be a non-empty key segment"),
    (("service", "register", "svc", "h:1", "--health-tls"), "--health-tls needs --health-check grpc"),
    (("service", "list", "--probe-cert", "c.pem"), "--probe-cert and --probe-key must be given together"),
])
def test_bad_arguments_are_one_clear_line(env: dict[str, str], args: tuple[str, ...], error: str) -> None:
    out = kvctl(env, *args)
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and error in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_an_unreachable_registry_is_a_clear_error(env: dict[str, str]) -> None:
    out = kvctl({**env, "KVCTL_ENDPOINTS": "127.0.0.1:1"}, "service", "register", "svc", "127.0.0.1:5",
                "--command-timeout", "1s", "--dial-timeout", "300ms")
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and "Traceback" not in out.stderr, out.stderr

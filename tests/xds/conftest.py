"""Real parts for the xDS tests: the package's raftkv cluster, demo instances registered through
raftkv.discovery, ``kvctl xds serve`` as a process with mutual TLS, and grpcio's xDS client as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from raftkv import discovery
from raftkv.discovery import demo
from raftkv.local_processes import free_ports
from raftkv.security import certs
from raftkv.testing import ClusterHandle
from tests.client.conftest import client, cluster  # noqa: F401 - one cluster per package, as there

REPO = Path(__file__).resolve().parents[2]
KVCTL = [sys.executable, "-m", "cli.kvctl"]


def eventually(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def service(request: pytest.FixtureRequest) -> str:
    return request.node.name.replace("[", "-").replace("]", "")[:60]


@pytest.fixture(scope="package")
def xds_certs(cluster: ClusterHandle) -> dict[str, Path]:  # noqa: F811
    """A server certificate for the xDS listener, signed by the cluster's CA."""
    root = cluster.cluster.base_dir / "certs"
    ca = certs.load_issued(root / "ca.crt", root / "ca.key")
    cert, key = root / "xds.crt", root / "xds.key"
    certs.write_issued(certs.issue_node(ca, "xds"), cert, key)
    return {"ca": root / "ca.crt", "cert": cert, "key": key}


class Env:
    """Processes and instances of one test, all stopped at its end."""

    def __init__(self, cluster: ClusterHandle, xds_certs: dict[str, Path], tmp: Path) -> None:  # noqa: F811
        self.cluster, self.certs, self.tmp = cluster, xds_certs, tmp
        base = {k: v for k, v in os.environ.items() if not k.startswith(("KVCTL_", "ETCDCTL_", "GRPC_"))}
        self.env = {**base, **cluster.env()}
        self.procs: list[subprocess.Popen[str]] = []
        self.servers: list[grpc.Server] = []
        self.registrations: list[discovery.Registration] = []

    def kvctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*KVCTL, *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=60)

    def instance(self, service: str, name: str, **options: Any) -> tuple[demo.Demo, discovery.Registration]:
        server, d, port = demo.serve(0, name)
        self.servers.append(server)
        reg = discovery.register(service, f"127.0.0.1:{port}", client=self.cluster.client(), ttl=5, **options)
        self.registrations.append(reg)
        return d, reg

    def xds_server(self, *args: str) -> str:
        """Start ``kvctl xds serve`` (mutual TLS) and return its address once it listens."""
        [port] = free_ports(1)
        addr = f"127.0.0.1:{port}"
        proc = subprocess.Popen([*KVCTL, "xds", "serve", "--listen", addr, "--listen-cert", str(self.certs["cert"]),
                                 "--listen-key", str(self.certs["key"]), *args],
                                env=self.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "xDS server" in line, f"kvctl xds serve did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        return addr

    def xds_client(self, service: str, server: str) -> XdsClient:
        result = self.kvctl("xds", "bootstrap", service, "--server", server)
        assert result.returncode == 0, result.stderr
        path = self.tmp / f"{service}-bootstrap.json"
        path.write_text(result.stdout)
        proc = subprocess.Popen([sys.executable, "-m", "tests.xds.xds_client", service],
                                env={**self.env, "GRPC_XDS_BOOTSTRAP": str(path)}, cwd=REPO, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.procs.append(proc)
        return XdsClient(proc)

    def close(self) -> None:
        for reg in self.registrations:
            reg.stop()
        for server in self.servers:
            server.stop(None)
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


class XdsClient:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def calls(self, n: int, key: str | None = None) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"calls {n} {key or ''}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the xDS client process died"
        return dict(json.loads(line))


@pytest.fixture
def env(cluster: ClusterHandle, xds_certs: dict[str, Path], tmp_path: Path) -> Iterator[Env]:  # noqa: F811
    made = Env(cluster, xds_certs, tmp_path)
    yield made
    made.close()

"""Real parts for discovery tests: one raftkv cluster per package, demo service instances as real gRPC
servers (in this process, or as subprocesses that can be SIGKILLed), and a poll helper (tests never sleep)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from raftkv.client import Client
from raftkv.discovery import demo, register
from raftkv.testing import ClusterHandle
from tests.client.conftest import client, cluster  # noqa: F401 - one cluster per package, as there

REPO = Path(__file__).resolve().parents[2]


def eventually(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def service(request: pytest.FixtureRequest) -> str:
    """A service name of the test's own, so tests sharing a cluster do not see each other's instances."""
    return request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:60]


class Instances:
    """Demo instances started by one test; all stopped at its end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.servers: list[tuple[grpc.Server, demo.Demo, str]] = []
        self.procs: list[subprocess.Popen[str]] = []

    def local(self, name: str = "", work: int = 0) -> tuple[demo.Demo, str]:
        """An instance in this process (its Demo object is at hand to flip health or mode)."""
        server, d, port = demo.serve(0, name, work)
        addr = f"127.0.0.1:{port}"
        d.name = name or addr
        self.servers.append((server, d, addr))
        return d, addr

    def stop_local(self, addr: str) -> None:
        for server, _, a in self.servers:
            if a == addr:
                server.stop(None).wait()

    def process(self, *args: str) -> tuple[subprocess.Popen[str], str]:
        """A demo instance as a subprocess (``python -m raftkv.discovery.demo ARGS``); returns it and its address."""
        proc = subprocess.Popen([sys.executable, "-m", "raftkv.discovery.demo", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env, cwd=REPO)
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready "), f"demo did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        return proc, line.split()[1]

    def close(self) -> None:
        for server, _, _ in self.servers:
            server.stop(None)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def instances(cluster: ClusterHandle) -> Iterator[Instances]:  # noqa: F811 - the fixture, not the import
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KVCTL_", "ETCDCTL_"))}
    made = Instances({**env, **cluster.env()})
    yield made
    made.close()


@pytest.fixture
def three(client: Client, service: str, instances: Instances) -> Iterator[list[str]]:  # noqa: F811 (the fixture)
    """Three in-process instances i0..i2 of ``service``, registered; their addresses."""
    addrs = [instances.local(f"i{n}")[1] for n in range(3)]
    regs = [register(service, a, instance_id=f"i{n}", client=client) for n, a in enumerate(addrs)]
    yield addrs
    for reg in regs:
        reg.stop()

"""Registration against a real cluster: real leases, real gRPC health, real etcdctl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable

import grpc

from raftkv.client import Client
from raftkv.discovery import State, aio, instance_key, register
from raftkv.discovery.demo import ECHO, control
from raftkv.testing import ClusterHandle
from tests.discovery.conftest import Instances, eventually


def test_etcdctl_reads_a_registration_as_endpoints_manager_json(cluster: ClusterHandle, client: Client,
                                                                service: str) -> None:
    with register(service, "127.0.0.1:50051", metadata={"zone": "a"}, client=client) as reg:
        assert reg.registered
        out = subprocess.run(["/usr/bin/etcdctl", "get", "--prefix", f"/services/{service}/"], env=cluster.env(),
                             capture_output=True, text=True, check=True).stdout.splitlines()
        assert out[0] == f"/services/{service}/127.0.0.1:50051"
        assert json.loads(out[1]) == {"Op": 0, "Addr": "127.0.0.1:50051", "Metadata": {"zone": "a"}}
        kv = client.get(reg.key)
        assert kv is not None and kv.lease == reg.lease


def test_leaving_revokes_the_lease_so_the_key_is_gone_at_once(client: Client, service: str) -> None:
    reg = register(service, "127.0.0.1:50052", instance_id="i1", ttl=30, client=client)
    lease = reg.lease
    assert reg.key == instance_key(service, "i1") and client.get(reg.key) is not None
    reg.stop()
    # Gone now, not in 30 s: the lease was revoked, not left to expire.
    assert client.get(reg.key) is None
    assert client.lease_time_to_live(lease).ttl == -1
    assert reg.state is State.STOPPED


def test_a_lost_lease_is_noticed_and_the_instance_registers_again(client: Client, service: str) -> None:
    with register(service, "127.0.0.1:50053", ttl=3, client=client) as reg:
        first = reg.lease
        client.lease_revoke(first)  # what an expiry during a partition longer than the TTL does
        assert client.get(reg.key) is None
        eventually(lambda: reg.registered and reg.lease != first, 10, "re-registration with a fresh lease")
        kv = client.get(reg.key)
        assert kv is not None and kv.lease == reg.lease
        assert reg.lifecycle.leases_lost == 1


def test_registration_outlives_the_raftkv_leader(cluster: ClusterHandle, client: Client, service: str) -> None:
    with register(service, "127.0.0.1:50054", ttl=3, client=client) as reg:
        lease, refreshed = reg.lease, reg.lifecycle.refreshes
        victim = cluster.kill()
        try:
            # Three refreshes (one TTL) after the kill: the keep-alives reached the new leader.
            eventually(lambda: reg.lifecycle.refreshes >= refreshed + 3, 15, "keep-alives after the failover")
            kv = client.get(reg.key)
            assert kv is not None and kv.lease == lease == reg.lease and reg.lifecycle.leases_lost == 0
        finally:
            cluster.restart(victim)


def test_health_gating_withdraws_and_restores_the_key(client: Client, service: str, instances: Instances) -> None:
    d, addr = instances.local()
    with register(service, addr, health="grpc", rise=2, fall=2, health_interval=0.1, client=client) as reg:
        eventually(lambda: reg.registered, 10, "registration after two passing checks")
        control(addr, "not-serving")
        eventually(lambda: client.get(reg.key) is None, 10, "withdrawal while NOT_SERVING")
        assert reg.wait_for(State.WITHDRAWN, 10) and reg.lease  # the lease lives on; only the key went
        control(addr, "serving")
        eventually(lambda: client.get(reg.key) is not None, 10, "restoration once SERVING")
        instances.stop_local(addr)  # unreachable counts as failing too
        eventually(lambda: client.get(reg.key) is None, 10, "withdrawal of an unreachable instance")


def test_a_bad_argument_is_refused_before_any_io(client: Client) -> None:
    import pytest

    from raftkv.discovery import RecordError
    with pytest.raises(RecordError, match="host:port"):
        register("s", "no-port", client=client)
    with pytest.raises(ValueError, match="health check"):
        register("s", "h:1", health="http", client=client)


def test_an_unreachable_registry_fails_the_first_registration_clearly() -> None:
    import pytest

    from raftkv.client import ClientError
    with Client(["127.0.0.1:1"], insecure=True, timeout=0.5) as dead, pytest.raises(ClientError):
        register("s", "h:1", client=dead, wait=2)


def test_sigterm_to_a_registered_process_revokes_before_it_exits(client: Client, service: str,
                                                                instances: Instances) -> None:
    proc, addr = instances.process("--register", service, "--ttl", "30")
    key = instance_key(service, addr)
    eventually(lambda: client.get(key) is not None, 10, "the instance's key")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert client.get(key) is None  # revoked, not waiting 30 s for expiry


async def async_eventually(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_async_registration_twin(cluster: ClusterHandle, service: str, instances: Instances) -> None:
    d, addr = instances.local()

    async def scenario() -> None:
        async with cluster.async_client() as c:
            reg = await aio.register(service, addr, health="grpc", health_interval=0.1, client=c)
            assert await reg.wait_registered(10)
            first = reg.lease
            await c.lease_revoke(first)
            await async_eventually(lambda: reg.lifecycle.leases_lost == 1 and reg.registered, 10)
            assert reg.lease != first
            control(addr, "not-serving")
            assert await reg.wait_for(State.WITHDRAWN, 10)
            await reg.stop()
            assert await c.get(reg.key) is None
            assert (await c.lease_time_to_live(reg.lifecycle.lease or first)).ttl == -1

    asyncio.run(scenario())


class Forwarder:
    """A TCP port that forwards to ``target`` once ``open()`` is called (until then nothing listens):
    a registry that is down, then answers."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._server: socket.socket | None = None

    def open(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def test_an_instance_serves_while_the_registry_is_down_and_registers_when_it_answers(
        cluster: ClusterHandle, client: Client, service: str, instances: Instances) -> None:
    endpoint = cluster.env()["KVCTL_ENDPOINTS"].split(",")[0].removeprefix("https://")
    forwarder = Forwarder(endpoint)
    try:
        instances.env = {**instances.env, "KVCTL_ENDPOINTS": f"127.0.0.1:{forwarder.port}"}
        proc, addr = instances.process("--register", service, "--name", "patient", "--register-wait", "0.5")
        assert proc.poll() is None
        with grpc.insecure_channel(addr) as channel:  # it serves before it is registered
            assert channel.unary_unary(ECHO)(b"x", timeout=5) == b"patient:x"
        key = instance_key(service, "patient")
        assert client.get(key) is None
        forwarder.open()
        eventually(lambda: client.get(key) is not None, 30, "the registration once the registry answers")
    finally:
        forwarder.close()

"""Health probes a registration can be gated on: the instance's own ``grpc.health.v1`` status, or a TCP
connect. Each probe answers one question, "is the instance healthy right now?", with a ``Verdict`` and
never raises: PASS; FAIL when the instance answered otherwise or nothing listens (the connection was
refused); UNKNOWN when no answer came within the timeout, which the gate (``lifecycle.HealthGate``) does not
count as a failure.

``health=`` accepts ``None`` (no gating), ``"grpc"`` (overall status, service ``""``), ``"grpc:NAME"`` (the
status of service NAME), ``"tcp"``, or a callable returning a bool, or None for "no answer" (an awaitable
in the asyncio twin).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raftkv.discovery.lifecycle import Verdict
from raftkv.discovery.record import check_addr

SyncProbe = Callable[[], Verdict | bool | None]
AsyncProbe = Callable[[], Awaitable[Verdict | bool | None]]
SERVING = health_pb2.HealthCheckResponse.SERVING
CHECK_PATH = "/grpc.health.v1.Health/Check"


def check_verdict(response: health_pb2.HealthCheckResponse | None, error: grpc.RpcError | None) -> Verdict:
    """A ``Health/Check`` outcome as a verdict. Only a missed deadline is UNKNOWN: every other error is an
    answer (UNIMPLEMENTED, a check asked for but not offered, is critical as in Consul; UNAVAILABLE is a
    refused or reset connection, nothing serving there)."""
    if error is not None:
        return Verdict.UNKNOWN if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED else Verdict.FAIL
    assert response is not None
    return Verdict.PASS if response.status == SERVING else Verdict.FAIL


def _split(addr: str) -> tuple[str, int]:
    host, _, port = check_addr(addr).rpartition(":")
    return host.strip("[]"), int(port)


def parse_spec(health: object) -> tuple[str, str] | None:
    """(kind, grpc service name) for a string spec, None for no gating; raises for a spec it cannot use."""
    if health is None or health == "none":
        return None
    if isinstance(health, str):
        kind, _, name = health.partition(":")
        if kind == "grpc":
            return ("grpc", name)
        if kind == "tcp" and not name:
            return ("tcp", "")
    raise ValueError(f"health check {health!r}: expected none, grpc, grpc:SERVICE, tcp or a callable")


class GrpcProbe:
    """``Health/Check`` on a channel of its own (kept between probes, so a probe is one RPC, not a handshake)."""

    def __init__(self, addr: str, service: str = "", timeout: float = 1.0,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self._request = health_pb2.HealthCheckRequest(service=service)
        self._timeout = timeout
        options = [("grpc.use_local_subchannel_pool", 1)]
        self._channel = (grpc.insecure_channel(addr, options=options) if credentials is None
                         else grpc.secure_channel(addr, credentials, options=options))
        self._check = health_pb2_grpc.HealthStub(self._channel).Check

    def __call__(self) -> Verdict:
        try:
            return check_verdict(self._check(self._request, timeout=self._timeout), None)
        except grpc.RpcError as exc:
            return check_verdict(None, exc)

    def close(self) -> None:
        self._channel.close()


class AsyncGrpcProbe:
    """asyncio twin of ``GrpcProbe`` (create it inside the running loop)."""

    def __init__(self, addr: str, service: str = "", timeout: float = 1.0,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self._request = health_pb2.HealthCheckRequest(service=service)
        self._timeout = timeout
        options = [("grpc.use_local_subchannel_pool", 1)]
        self._channel = (grpc.aio.insecure_channel(addr, options=options) if credentials is None
                         else grpc.aio.secure_channel(addr, credentials, options=options))
        self._check = health_pb2_grpc.HealthStub(self._channel).Check

    async def __call__(self) -> Verdict:
        try:
            return check_verdict(await self._check(self._request, timeout=self._timeout), None)
        except grpc.RpcError as exc:
            return check_verdict(None, exc)

    async def close(self) -> None:
        await self._channel.close()


def tcp_probe(addr: str, timeout: float = 1.0) -> SyncProbe:
    host, port = _split(addr)

    def probe() -> Verdict:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return Verdict.PASS
        except TimeoutError:
            return Verdict.UNKNOWN
        except OSError:
            return Verdict.FAIL

    return probe


def async_tcp_probe(addr: str, timeout: float = 1.0) -> AsyncProbe:
    host, port = _split(addr)

    async def probe() -> Verdict:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except TimeoutError:
            return Verdict.UNKNOWN
        except OSError:
            return Verdict.FAIL
        writer.close()
        return Verdict.PASS

    return probe


def _make(health: Any, addr: str, timeout: float, credentials: grpc.ChannelCredentials | None,
          asynchronous: bool) -> Any:
    if callable(health):
        return health
    spec = parse_spec(health)
    if spec is None:
        return None
    kind, service = spec
    if kind == "grpc":
        return (AsyncGrpcProbe if asynchronous else GrpcProbe)(addr, service, timeout, credentials)
    return (async_tcp_probe if asynchronous else tcp_probe)(addr, timeout)


def sync_probe(health: Any, addr: str, timeout: float = 1.0,
               credentials: grpc.ChannelCredentials | None = None) -> SyncProbe | None:
    """The probe ``health=`` asks for, or None."""
    return _make(health, addr, timeout, credentials, asynchronous=False)


def async_probe(health: Any, addr: str, timeout: float = 1.0,
                credentials: grpc.ChannelCredentials | None = None) -> AsyncProbe | None:
    return _make(health, addr, timeout, credentials, asynchronous=True)

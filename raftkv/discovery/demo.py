"""A small gRPC service to register, balance and attack: ``python -m raftkv.discovery.demo --port P``.

It serves, with raw-bytes messages (no generated code needed on either side):

- ``/raftkv.demo.Echo/Echo`` (unary): answers ``<name>:<request>`` after ``--work`` rounds of SHA-256 (real
  CPU per call), or fails / stalls as the current mode says;
- ``/raftkv.demo.Echo/Stream`` (unary-stream): the request's decimal count of answers; ``/raftkv.demo.Echo/Chat``
  (bidi): one answer per request;
- ``grpc.health.v1.Health`` (Check and Watch), overall status ``""``;
- ``/raftkv.demo.Control/Set`` (unary): ``serving`` / ``not-serving`` set the health status, ``ok`` /
  ``fail`` / ``slow:<ms>`` the Echo mode. Tests and the chaos benchmark drive instances through it.

``--register SERVICE`` registers the instance through ``raftkv.discovery`` (KVCTL_* say where raftkv is),
and SIGTERM revokes the registration first, then drains. Prints ``ready <addr>`` once it serves.
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from raftkv import stop_signals

ECHO = "/raftkv.demo.Echo/Echo"
STREAM = "/raftkv.demo.Echo/Stream"
CHAT = "/raftkv.demo.Echo/Chat"
CONTROL = "/raftkv.demo.Control/Set"


class Health(health.HealthServicer):
    """grpcio's health servicer, minus its deadlock: upstream sends Watch answers while holding the servicer's
    lock, and a send on a full or closing stream waits for the server's completion-queue thread, which may
    itself be waiting for that lock (to drop a closed watcher). Here the lock only guards the tables; each
    watch sends under a lock of its own, and drops an answer older than one it already sent."""

    def __init__(self) -> None:
        super().__init__()
        self._version = 0
        self._senders: dict[Any, _Sender] = {}

    def Watch(self, request: Any, context: Any, send_response_callback: Any = None) -> Any:
        if send_response_callback is None:  # a server without non-blocking handlers: upstream's queue is safe
            return super().Watch(request, context)
        sender = _Sender(send_response_callback)
        with self._lock:
            status = self._server_status.get(request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            version = self._version
            self._senders[send_response_callback] = sender
            self._send_response_callbacks.setdefault(request.service, set()).add(send_response_callback)
            context.add_callback(self._on_close_callback(send_response_callback, request.service))
        sender.send(version, status)

    def _on_close_callback(self, send_response_callback: Any, service: str) -> Any:
        def closed() -> None:
            with self._lock:
                self._send_response_callbacks[service].discard(send_response_callback)
                self._senders.pop(send_response_callback, None)
            send_response_callback(None)

        return closed

    def set(self, service: str, status: Any) -> None:
        with self._lock:
            if self._gracefully_shutting_down:
                return
            self._version += 1
            self._server_status[service] = status
            version = self._version
            senders = [self._senders[cb] for cb in self._send_response_callbacks.get(service, ())]
        for sender in senders:
            sender.send(version, status)


class _Sender:
    """One watcher's answers in version order: the newest status wins however the sends interleave."""

    def __init__(self, callback: Any) -> None:
        self._callback, self._lock, self._sent = callback, threading.Lock(), -1

    def send(self, version: int, status: Any) -> None:
        with self._lock:
            if version > self._sent:
                self._sent = version
                self._callback(health_pb2.HealthCheckResponse(status=status))


class Demo:
    def __init__(self, name: str, work: int = 0) -> None:
        self.name, self.work = name, work
        self.mode = "ok"
        self.calls = 0
        self.health = Health()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    def _answer(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.calls += 1
        mode = self.mode
        if mode == "fail":
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is failing on purpose")
        if mode.startswith("slow:"):
            time.sleep(int(mode[5:]) / 1000)
        digest = request
        for _ in range(self.work):
            digest = hashlib.sha256(digest).digest()
        return f"{self.name}:".encode() + request

    def echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return self._answer(request, context)

    def stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(int(request or b"1")):
            yield self._answer(str(i).encode(), context)

    def chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for request in requests:
            yield self._answer(request, context)

    def control(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        command = request.decode()
        if command in ("serving", "not-serving"):
            status = (health_pb2.HealthCheckResponse.SERVING if command == "serving"
                      else health_pb2.HealthCheckResponse.NOT_SERVING)
            self.health.set("", status)
        elif command in ("ok", "fail") or (command.startswith("slow:") and command[5:].isdigit()):
            self.mode = command
        else:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown command {command!r}")
        return b"ok"

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        echo = grpc.method_handlers_generic_handler("raftkv.demo.Echo", {
            "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
        })
        control = grpc.method_handlers_generic_handler("raftkv.demo.Control", {
            "Set": grpc.unary_unary_rpc_method_handler(self.control),
        })
        return [echo, control]


def serve(port: int, name: str, work: int = 0, threads: int = 16) -> tuple[grpc.Server, Demo, int]:
    demo = Demo(name, work)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), handlers=demo.handlers())
    health_pb2_grpc.add_HealthServicer_to_server(demo.health, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, demo, bound


def control(addr: str, command: str, timeout: float = 5.0) -> None:
    """Send one Control command to a demo instance."""
    with grpc.insecure_channel(addr) as channel:
        channel.unary_unary(CONTROL)(command.encode(), timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raftkv.discovery.demo", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--name", default=None, help="instance name in answers (default: the address)")
    p.add_argument("--work", type=int, default=0, help="SHA-256 rounds per call")
    p.add_argument("--register", metavar="SERVICE", help="register through raftkv.discovery")
    p.add_argument("--ttl", type=int, default=5)
    p.add_argument("--health", default="none", help="gate the registration: none, grpc, tcp")
    p.add_argument("--namespace", default="/services")
    p.add_argument("--register-wait", type=float, default=5.0,
                   help="seconds to wait for the registry before saying ready (default 5); the instance "
                        "serves either way and keeps registering in the background")
    args = p.parse_args(argv)
    server, demo, port = serve(args.port, args.name or "", args.work)
    addr = f"127.0.0.1:{port}"
    demo.name = args.name or addr
    stop = stop_signals.stop_on(signal.SIGTERM, signal.SIGINT)
    registration: Any = None
    if args.register:
        from raftkv import discovery
        # An instance serves whether or not the registry answers now (its leader may just have died):
        # the registration keeps trying in the background and registers when it can.
        registration = discovery.register(args.register, addr, ttl=args.ttl, health=args.health,
                                          namespace=args.namespace, instance_id=args.name, wait=None)
        if not registration.wait_settled(args.register_wait) or registration.state is discovery.State.RETRYING:
            print(f"{demo.name}: the registry did not answer within {args.register_wait:g}s; serving, and "
                  f"registering in the background", file=sys.stderr, flush=True)
    print(f"ready {addr}", flush=True)
    stop_signals.wait_for(stop)
    if registration is not None:
        registration.stop()  # revoke first: no new call is routed here while we drain
    server.stop(grace=2.0).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

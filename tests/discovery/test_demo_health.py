"""The demo's health servicer: Watch answers in order, and a server with open watches stops at once.

grpcio's own servicer sends under its lock; a server stopping while a Watch is being answered could wait
forever for that lock (seen as a teardown hanging until the test timeout)."""

from __future__ import annotations

import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raftkv.discovery import demo

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def test_watchers_see_the_latest_status_and_the_server_stops_with_watches_open() -> None:
    server, d, port = demo.serve(0, "h")
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(8)]
    streams = [health_pb2_grpc.HealthStub(c).Watch(health_pb2.HealthCheckRequest()) for c in channels]
    try:
        assert all(next(s).status == SERVING for s in streams)
        flips = threading.Thread(target=lambda: [d.health.set("", (SERVING, NOT_SERVING)[i % 2]) for i in range(200)])
        flips.start()
        flips.join()
        d.health.set("", UNKNOWN)
        for s in streams:  # every watcher gets the last status set, after the flips it may have skipped
            assert any(answer.status == UNKNOWN for answer in s)
    finally:
        stopped = server.stop(None)
        assert stopped.wait(10), "the server did not stop with watches open"
        for c in channels:
            c.close()

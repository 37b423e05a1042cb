"""Prometheus text exposition and a health probe on a small plain-HTTP listener.

Kept separate from the gRPC ports (like etcd's ``--listen-metrics-urls``) so scraping never competes with
client traffic and needs no client certificate. The figures are read from the node at scrape time, so the
hot path pays nothing for them.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("raftkv.metrics")

Gauge = tuple[str, str, Callable[[], float]]  # (name, help, read)
#: Answers a GET for a path the listener does not know itself (the registry page mounts on this); returns
#: False if the path is not its own either. It writes the whole response, and may stream it.
Extra = Callable[[str, asyncio.StreamWriter], Awaitable[bool]]


class MetricsServer:
    """Serves ``GET /metrics`` (Prometheus text format 0.0.4) and ``GET /health`` (200 iff a leader is known)."""

    def __init__(self, gauges: list[Gauge], healthy: Callable[[], bool], extra: Extra | None = None) -> None:
        self._gauges = gauges + [
            (
                "process_resident_memory_bytes",
                "Peak resident memory of the process in bytes.",
                lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            ),
            # The standard process collector's name, which etcd exports too, so one scrape compares both.
            ("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", time.process_time),
        ]
        self._healthy = healthy
        self._extra = extra
        self._servers: list[asyncio.Server] = []

    def render(self) -> str:
        lines: list[str] = []
        for name, help_text, read in self._gauges:
            lines.append(f"# HELP {name} {help_text}")
            kind = "counter" if name.endswith("_total") else "gauge"  # Prometheus naming convention
            lines.append(f"# TYPE {name} {kind}")
            lines.append(f"{name} {read():g}")
        return "\n".join(lines) + "\n"

    async def start(self, host: str, port: int) -> None:
        self._servers.append(await asyncio.start_server(self._handle, host, port))

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if path == "/metrics":
                status, body, ctype = "200 OK", self.render(), "text/plain; version=0.0.4"
            elif path == "/health":
                ok = self._healthy()
                status = "200 OK" if ok else "503 Service Unavailable"
                body, ctype = '{"health":"%s"}\n' % ("true" if ok else "false"), "application/json"
            elif self._extra is not None and await self._extra(path, writer):
                return
            else:
                status, body, ctype = "404 Not Found", "not found\n", "text/plain"
            payload = body.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

"""``python -m raftkv.bench.grpc_server_kinds``: what grpcio's server itself costs per call, by kind of server.

raftkv's client port is a ``grpc.aio`` server, and at get-s c=64 most of the leader's GIL-held time is in
gRPC and event-loop code rather than in the handlers. This measures the server alone, so that the choice
between ``grpc.aio`` and the thread-pool ``grpc.server`` rests on a figure and not on folklore: one
process serves etcd's ``KV.Range`` and ``KV.Put`` (raftkv's stubs) from a dict, with mutual TLS made by
``raftkv.security`` as ``kvctl certs init`` makes it and the client port's channel arguments; separate
processes (``raftkv.bench.load``'s generator, uvloop) drive it. Kinds of server:

- ``aio``: grpc.aio on uvloop, its service given as generic handlers behind three guards that pass every
  call, run in one frame (``raftkv.grpc_guard``), as the client port runs its own three;
- ``aio-interceptors``: the same with three pass-through grpc.aio interceptors instead of the guards, the
  way the client port ran its checks before (each interceptor is one more coroutine per call and one more
  frame around the handler);
- ``aio-bare``: the same without guards; ``aio-tuned``: without guards and with
  ``grpc.optimization_target=throughput`` and ``grpc.minimal_stack``;
- ``sync-N``: ``grpc.server`` with a ``ThreadPoolExecutor(N)`` and three (synchronous) interceptors;
- any of these with ``+plain``: the same without TLS (to compare with figures measured that way).

``Range`` answers from the dict in the handler. ``Put`` is shaped as raftkv's writes are: the handler
hands the request to a core loop (an asyncio task, raftkv's Raft loop stand-in) that takes every queued
request in one turn, hands the batch to a writer thread (the LMDB writer's place) and answers each
waiting call when the writer is done. On ``aio`` the core shares the server's event loop, as in raftkv; on
``sync-N`` it runs on an event loop of its own thread, and each handler thread hands over with
``call_soon_threadsafe`` and blocks on a ``concurrent.futures.Future`` — what a switched client port
would have to do.

Loads (``--cells``): closed loops of 1 or 64 calls in flight, and open loops at 1000 calls/s, where every
kind serves the same rate and so batches alike. Each figure is one measurement window (all kinds take
turns, round after round, so load from elsewhere falls on all of them alike): calls/s, p50/p99 latency,
and the server's CPU per call from ``/proc/<pid>/stat`` (user + system, all threads) over the window;
``srv-cpu`` is the server's CPU seconds per second (1.0 = one core: the server, not the load generator,
was the limit). The load average is printed beside every figure; the summary gives medians over rounds
and CPU per call as a ratio to the first kind's, round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from raftkv import stop_signals
from raftkv.bench.load import LoadGenerator, Workload
from raftkv.bench.stats import percentile
from raftkv.client.config import ClientConfig
from raftkv.grpc_guard import Guard, GuardedHandlers
from raftkv.grpc_registration import service_handlers
from raftkv.process_stat import process_cpu_seconds
from raftkv.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc
from raftkv.security.certs import init_cluster_certs
from raftkv.security.grpc_options import server_options
from raftkv.security.tls import TLSFiles, server_credentials

SERVERS = ("aio", "aio-interceptors", "aio-bare", "aio-tuned", "sync-4", "sync-16", "sync-64")
#: A kind is a server, optionally with ``+plain``: the same server without TLS.
PLAIN = "+plain"
KINDS = (*SERVERS, *(s + PLAIN for s in SERVERS))


@dataclass(frozen=True)
class Cell:
    """One load: ``op`` is the load generator's (get-s: a Range answered in the handler; put: a hand-off);
    ``rate`` None is a closed loop of ``concurrency`` calls, a rate an open loop (every kind then serves the
    same calls per second, so CPU per call compares at the same batching)."""

    name: str
    op: str
    concurrency: int
    rate: float | None = None

    @property
    def flag(self) -> str:
        return self.name.replace(" ", "")


CELLS = (Cell("range c=1", "get-s", 1), Cell("range c=64", "get-s", 64), Cell("range 1000/s", "get-s", 64, 1000.0),
         Cell("put c=1", "put", 1), Cell("put c=64", "put", 64), Cell("put 1000/s", "put", 64, 1000.0))
DEFAULT_CELLS = ("range c=1", "range c=64", "put c=1", "put c=64")
#: The client port's guards (revocation aside): unknown methods, the request reader, admission.
GUARDS = 3
SERVER_NAME = "bench"
TUNED_OPTIONS = [("grpc.optimization_target", "throughput"), ("grpc.minimal_stack", 1)]
#: Calls each load process keeps in flight at most; more concurrency is spread over more processes.
PER_DRIVER = 32
CHANNELS_PER_DRIVER = 4


def _header(revision: int) -> rpc_pb2.ResponseHeader:
    return rpc_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=revision, raft_term=3)


class Store:
    """The dict a server answers from; ``revision`` counts puts, as etcd's store revision does."""

    def __init__(self) -> None:
        self.revision = 1
        self.values: dict[bytes, bytes] = {}

    def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        value = self.values.get(request.key)
        kvs = [] if value is None else [kv_pb2.KeyValue(key=request.key, value=value, create_revision=1,
                                                         mod_revision=self.revision, version=1)]
        return rpc_pb2.RangeResponse(header=_header(self.revision), kvs=kvs, count=len(kvs))

    def apply(self, batch: Sequence[rpc_pb2.PutRequest]) -> int:
        for request in batch:
            self.values[request.key] = request.value
        self.revision += len(batch)
        return self.revision


class Core:
    """The Raft loop's stand-in: one turn takes every queued put, the writer thread applies the batch, and
    ``done`` answers each one. Runs on one event loop; ``submit`` must be called on that loop."""

    def __init__(self, store: Store, done: Callable[[Any, int], None]) -> None:
        self._store, self._done = store, done
        self._queued: list[tuple[rpc_pb2.PutRequest, Any]] = []
        self._wake = asyncio.Event()
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="writer")

    def submit(self, request: rpc_pb2.PutRequest, waiter: Any) -> None:
        self._queued.append((request, waiter))
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queued = self._queued, []
            revision = await asyncio.wrap_future(self._writer.submit(self._store.apply, [r for r, _ in batch]))
            for _, waiter in batch:
                self._done(waiter, revision)


class AioKV(rpc_pb2_grpc.KVServicer):
    def __init__(self, store: Store) -> None:
        self._store = store
        self._core = Core(store, lambda future, revision: future.done() or future.set_result(revision))

    def start(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._core.run())

    async def Range(self, request: rpc_pb2.RangeRequest, context: Any) -> rpc_pb2.RangeResponse:
        return self._store.range(request)

    async def Put(self, request: rpc_pb2.PutRequest, context: Any) -> rpc_pb2.PutResponse:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._core.submit(request, future)
        return rpc_pb2.PutResponse(header=_header(await future))


class SyncKV(rpc_pb2_grpc.KVServicer):
    """Handlers on the pool's threads; the core on an event loop of its own thread."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self._store, self._loop = store, loop
        self._core = Core(store, lambda future, revision: future.set_result(revision))

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.call_soon(ready.set)
            self._loop.run_until_complete(self._core.run())

        threading.Thread(target=run, name="core", daemon=True).start()
        ready.wait()

    def Range(self, request: rpc_pb2.RangeRequest, context: Any) -> rpc_pb2.RangeResponse:
        return self._store.range(request)

    def Put(self, request: rpc_pb2.PutRequest, context: Any) -> rpc_pb2.PutResponse:
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(self._core.submit, request, future)
        return rpc_pb2.PutResponse(header=_header(future.result(timeout=10)))


class AioPassThrough(grpc.aio.ServerInterceptor):
    """Wraps the unary handler in one more coroutine, as a guarding interceptor did."""

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary

        async def guarded(request: Any, context: Any) -> Any:
            return await behavior(request, context)

        return handler._replace(unary_unary=guarded)


class SyncPassThrough(grpc.ServerInterceptor):
    """The synchronous server's counterpart of ``AioPassThrough``."""

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary

        def guarded(request: Any, context: Any) -> Any:
            return behavior(request, context)

        return handler._replace(unary_unary=guarded)


def _add_port(server: grpc.Server | grpc.aio.Server, certs: Path | None) -> int:
    """Listen on a free loopback port, with mutual TLS unless ``certs`` is None."""
    if certs is None:
        return server.add_insecure_port("127.0.0.1:0")
    files = TLSFiles(ca=certs / "ca.crt", cert=certs / f"{SERVER_NAME}.crt", key=certs / f"{SERVER_NAME}.key")
    return server.add_secure_port("127.0.0.1:0", server_credentials(files))


def client_config(certs: Path | None, endpoint: str) -> ClientConfig:
    if certs is None:
        return ClientConfig(endpoints=(endpoint,), insecure=True)
    return ClientConfig(endpoints=(endpoint,), cacert=str(certs / "ca.crt"), cert=str(certs / "client.crt"),
                        key=str(certs / "client.key"))


def _announce(port: int) -> None:
    print(f"ready {port}", flush=True)


async def _serve_aio(kind: str, certs: Path | None) -> None:
    store = Store()
    options = server_options() + (TUNED_OPTIONS if kind == "aio-tuned" else [])
    interceptors = [AioPassThrough() for _ in range(GUARDS)] if kind == "aio-interceptors" else []
    server = grpc.aio.server(interceptors=interceptors, options=options)
    servicer = AioKV(store)
    if kind == "aio":
        handlers = service_handlers(rpc_pb2_grpc.add_KVServicer_to_server, servicer)
        server.add_generic_rpc_handlers([GuardedHandlers(handlers, [Guard() for _ in range(GUARDS)])])
    else:  # grpcio's own registration: nothing of raftkv's between the call and the handler
        rpc_pb2_grpc.add_KVServicer_to_server(servicer, server)
    port = _add_port(server, certs)
    core = servicer.start()
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    _announce(port)
    await stop.wait()
    await server.stop(0)
    core.cancel()


def _serve_sync(workers: int, certs: Path | None) -> None:
    import uvloop

    store = Store()
    servicer = SyncKV(store, uvloop.new_event_loop())
    servicer.start()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=workers),
                         interceptors=[SyncPassThrough() for _ in range(GUARDS)], options=server_options())
    rpc_pb2_grpc.add_KVServicer_to_server(servicer, server)
    port = _add_port(server, certs)
    server.start()
    stop = stop_signals.stop_on(signal.SIGTERM)
    _announce(port)
    stop_signals.wait_for(stop)
    server.stop(0).wait()


def serve(kind: str, certs: Path | None) -> None:
    """Serve until SIGTERM; prints ``ready <port>`` once calls are accepted. ``certs`` None: plaintext."""
    if kind.startswith("sync-"):
        _serve_sync(int(kind.removeprefix("sync-")), certs)
    else:
        import uvloop

        uvloop.run(_serve_aio(kind, certs))


async def _drive(endpoint: str, certs: Path | None, workload: Workload, duration: float) -> None:
    """Connect, say ``ready``, read the window's start (wall clock) from stdin, warm up until then, run one
    window and print what it counted as JSON."""
    channels = max(1, min(CHANNELS_PER_DRIVER, workload.concurrency))
    generator = LoadGenerator(client_config(certs, endpoint), [endpoint], channels)
    try:
        await generator.prepare()
        print("ready", flush=True)
        start_at = float(await asyncio.to_thread(sys.stdin.readline))
        while (left := start_at - time.time()) > 0.05:
            await generator.run(workload, min(left, 0.5))
        cpu = os.times()
        tally, latencies, elapsed = await generator.run(workload, duration)
        spent = os.times()
    finally:
        await generator.close()
    client_cpu = spent.user + spent.system - cpu.user - cpu.system
    print(json.dumps({"ok": tally.ok, "errors": tally.errors, "first_error": tally.first_error,
                      "elapsed": elapsed, "latencies": latencies, "cpu": client_cpu}))


@dataclass(frozen=True)
class Figure:
    """One kind of server, one cell, one round."""

    kind: str
    cell: str
    round: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    server_us_per_call: float
    server_cores: float
    client_cores: float
    errors: int
    load: float

    def row(self) -> str:
        return (f"round {self.round}  {self.kind:<14} {self.cell:<12} {self.calls_per_s:>8,.0f}/s  "
                f"p50 {self.p50_ms:6.2f}  p99 {self.p99_ms:6.2f} ms  server {self.server_us_per_call:6.0f} us/call  "
                f"srv-cpu {self.server_cores:4.2f}  load-gen-cpu {self.client_cores:4.2f}  errors {self.errors}  "
                f"load {self.load:.2f}")


def _module(*args: str) -> list[str]:
    return [sys.executable, "-m", "raftkv.bench.grpc_server_kinds", *args]


def _measure(pid: int, port: int, certs: Path | None, kind: str, cell: Cell, round_: int,
             warmup: float, duration: float) -> Figure:
    """One window of ``cell``'s load against the server ``pid`` listening on ``port``."""
    name = cell.name
    count = -(-cell.concurrency // PER_DRIVER)
    shares = [cell.concurrency // count + (i < cell.concurrency % count) for i in range(count)]
    rate = [] if cell.rate is None else ["--rate", repr(cell.rate / count)]
    security = [] if certs is None else ["--certs", str(certs)]
    drivers = [subprocess.Popen(_module("drive", "--endpoint", f"127.0.0.1:{port}", *security, "--op", cell.op,
                                        "--concurrency", str(share), *rate, "--duration", repr(duration)),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for share in shares]
    try:
        for d in drivers:
            assert d.stdout is not None and d.stdin is not None
            if d.stdout.readline().strip() != "ready":
                raise SystemExit(f"a load process could not reach the {kind} server")
        start_at = time.time() + warmup
        for d in drivers:
            assert d.stdin is not None
            d.stdin.write(f"{start_at!r}\n")
            d.stdin.flush()
        time.sleep(max(0.0, start_at - time.time()))
        before = process_cpu_seconds(pid)
        began = time.perf_counter()
        time.sleep(duration)
        server_cpu, window = process_cpu_seconds(pid) - before, time.perf_counter() - began
        load = os.getloadavg()[0]
        outputs = [json.loads(d.communicate(timeout=duration + 60)[0]) for d in drivers]
    finally:
        for d in drivers:
            if d.poll() is None:
                d.kill()
                d.wait()
    ok = sum(o["ok"] for o in outputs)
    latencies = sorted(x for o in outputs for x in o["latencies"])
    elapsed = max(o["elapsed"] for o in outputs)
    for o in outputs:
        if o["errors"]:
            print(f"  {kind} {name}: {o['errors']} errors, first: {o['first_error']}", file=sys.stderr)
    return Figure(kind, name, round_, ok / elapsed, 1000 * percentile(latencies, 0.5),
                  1000 * percentile(latencies, 0.99), 1e6 * server_cpu / ok if ok else float("nan"),
                  server_cpu / window, sum(o["cpu"] for o in outputs) / elapsed,
                  sum(o["errors"] for o in outputs), load)


def _round(kind: str, certs: Path, cells: Sequence[Cell], round_: int, warmup: float,
           duration: float) -> list[Figure]:
    """Start one server of ``kind``, measure every cell against it, stop it."""
    server_kind, plain, _ = kind.partition(PLAIN)
    tls: Path | None = None if plain else certs
    figures = []
    with serving(server_kind, tls) as (pid, port):
        for cell in cells:
            figures.append(_measure(pid, port, tls, kind, cell, round_, warmup, duration))
            print(figures[-1].row(), flush=True)
    return figures


@contextlib.contextmanager
def serving(kind: str, certs: Path | None) -> Iterator[tuple[int, int]]:
    """A server of ``kind`` in a process of its own for the duration of the block: its pid and port."""
    security = [] if certs is None else ["--certs", str(certs)]
    server = subprocess.Popen(_module("serve", "--kind", kind, *security), stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline().split()
        if line[:1] != ["ready"]:
            raise SystemExit(f"the {kind} server did not start (exit code {server.wait()})")
        yield server.pid, int(line[1])
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def summary(figures: Sequence[Figure], kinds: Sequence[str], cells: Sequence[str]) -> str:
    """Medians over rounds. CPU per call is also given against the first kind's: the median of each round's
    ratio (both measured minutes apart under the same load), with the lowest and highest round's."""
    def values(kind: str, cell: str, field: str) -> list[float]:
        return [getattr(f, field) for f in sorted(figures, key=lambda f: f.round) if f.kind == kind and f.cell == cell]

    def median(kind: str, cell: str, field: str) -> float:
        found = values(kind, cell, field)
        return statistics.median(found) if found else float("nan")

    lines = [f"{'cell':<12} {'kind':<14} {'calls/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'us/call':>8} "
             f"{'x ' + kinds[0] + ' (range)':>20} {'srv-cpu':>7}"]
    for cell in cells:
        base = values(kinds[0], cell, "server_us_per_call")
        for kind in kinds:
            ratios = sorted(c / b for c, b in zip(values(kind, cell, "server_us_per_call"), base, strict=False) if b)
            spread = f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})" if ratios else "n/a"
            lines.append(f"{cell:<12} {kind:<14} {median(kind, cell, 'calls_per_s'):>9,.0f} "
                         f"{median(kind, cell, 'p50_ms'):>7.2f} {median(kind, cell, 'p99_ms'):>7.2f} "
                         f"{median(kind, cell, 'server_us_per_call'):>8.0f} {spread:>20} "
                         f"{median(kind, cell, 'server_cores'):>7.2f}")
    return "\n".join(lines)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m raftkv.bench.grpc_server_kinds",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kinds", default=",".join(SERVERS),
                        help=f"comma-separated, among {','.join(SERVERS)}, each optionally with {PLAIN} "
                        "(no TLS); the first is the one ratios are given against")
    parser.add_argument("--cells", default=",".join(c.replace(" ", "") for c in DEFAULT_CELLS),
                        help="comma-separated, among " + ",".join(c.flag for c in CELLS))
    parser.add_argument("--rounds", type=int, default=3, help="times every kind takes its turn (default 3)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measured window (default 4)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each window")
    parser.add_argument("--json", help="also write every figure to this file")
    sub = parser.add_subparsers(dest="role")
    serve_p = sub.add_parser("serve", help="(internal) one server")
    serve_p.add_argument("--kind", choices=SERVERS, required=True)
    serve_p.add_argument("--certs", type=Path, help="the certificate directory; without it, plaintext")
    drive_p = sub.add_parser("drive", help="(internal) one load process")
    for flag in ("--endpoint", "--op"):
        drive_p.add_argument(flag, required=True)
    drive_p.add_argument("--certs", type=Path, help="the certificate directory; without it, plaintext")
    drive_p.add_argument("--concurrency", type=int, required=True)
    drive_p.add_argument("--rate", type=float, help="calls per second (open loop); without it, a closed loop")
    drive_p.add_argument("--duration", type=float, required=True)
    args = parser.parse_args(argv)
    if args.role is None:
        names = {c.flag: c for c in CELLS}
        args.kinds = [k for k in args.kinds.split(",") if k]
        if not args.kinds or any(k not in KINDS for k in args.kinds):
            parser.error(f"--kinds takes names among {','.join(KINDS)}")
        try:
            args.cells = [names[c] for c in args.cells.split(",") if c]
        except KeyError as exc:
            parser.error(f"unknown cell {exc}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.role == "serve":
        serve(args.kind, args.certs)
        return 0
    if args.role == "drive":
        import uvloop

        workload = Workload(args.op, args.op, args.concurrency, args.rate)
        uvloop.run(_drive(args.endpoint, args.certs, workload, args.duration))
        return 0
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="raftkv-grpc-kinds-") as tmp:
        certs = Path(tmp)
        init_cluster_certs(certs, [SERVER_NAME])
        print(f"mutual TLS unless {PLAIN}, {args.duration:g}s windows after {args.warmup:g}s of warm-up, "
              f"{args.rounds} rounds, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start", flush=True)
        for round_ in range(1, args.rounds + 1):
            for kind in args.kinds:
                figures.extend(_round(kind, certs, args.cells, round_, args.warmup, args.duration))
    print("\nmedians over rounds\n" + summary(figures, args.kinds, [c.name for c in args.cells]))
    if args.json:
        Path(args.json).write_text(json.dumps([f.__dict__ for f in figures], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

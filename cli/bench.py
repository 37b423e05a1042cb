"""`kvctl bench`: closed-loop asyncio load against any etcd-compatible endpoints.

Each of ``--clients`` workers issues one request at a time for ``--duration`` seconds; workers share
``--conns`` client connections. Reported: throughput and latency percentiles (and errors, by message).
``watch-latency`` measures put-to-event delay through one watcher instead of request latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cli.common import Context, duration
from cli.output import print_json, write_line
from raftkv.client import AsyncClient, ClientError
from raftkv.client.ops import put, value

WORKLOADS = ("put", "get", "get-serializable", "txn", "watch-latency", "mixed")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="load test: throughput and latency percentiles")
    p.add_argument("workload", nargs="?", choices=WORKLOADS, default="put")
    p.add_argument("--clients", type=int, default=16, help="concurrent workers (default 16)")
    p.add_argument("--conns", type=int, default=1, help="client connections shared by the workers")
    p.add_argument("--duration", type=duration, default=10.0, help="how long to run (default 10s)")
    p.add_argument("--key-size", type=int, default=8)
    p.add_argument("--value-size", type=int, default=256)
    p.add_argument("--keys", type=int, default=1000, help="distinct keys (default 1000)")
    p.add_argument("--prefix", default="/bench/", help="key prefix (default /bench/)")
    p.set_defaults(func=run)


@dataclass
class Recorder:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def summary(self, workload: str, elapsed: float, clients: int) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else 0.0

        return {
            "workload": workload, "clients": clients, "duration_s": round(elapsed, 3),
            "requests": len(ordered), "errors": sum(self.errors.values()),
            "throughput_rps": round(len(ordered) / elapsed, 1) if elapsed else 0.0,
            "latency_ms": {"p50": round(pct(0.50), 3), "p90": round(pct(0.90), 3), "p99": round(pct(0.99), 3),
                           "max": round(ordered[-1] * 1000 if ordered else 0.0, 3)},
            "error_messages": dict(self.errors),
        }


class Load:
    """The keys and values of one run, and one request of each workload."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        width = max(1, args.key_size - len(args.prefix))
        self.keys = [f"{args.prefix}{i:0{width}d}" for i in range(args.keys)]
        self.value = os.urandom(args.value_size // 2 + 1).hex()[: args.value_size]

    async def prepare(self, client: AsyncClient) -> None:
        if self.args.workload in ("get", "get-serializable", "txn", "mixed"):
            await asyncio.gather(*(client.put(k, self.value) for k in self.keys[: min(len(self.keys), 1000)]))

    async def one(self, client: AsyncClient, workload: str) -> None:
        key = random.choice(self.keys[: 1000] if workload != "put" else self.keys)
        if workload == "mixed":
            workload = "put" if random.random() < 0.1 else "get"
        if workload == "put":
            await client.put(key, self.value)
        elif workload == "get":
            await client.get(key)
        elif workload == "get-serializable":
            await client.get(key, serializable=True)
        else:
            await client.txn().if_(value(key) == self.value).then(put(key, self.value)).commit()


class Progress:
    """A one-line progress bar on stderr (only on a terminal: logs stay clean)."""

    def __init__(self, total: float) -> None:
        self.total, self.start, self.enabled = total, time.monotonic(), sys.stderr.isatty()

    def show(self, done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        fraction = min(1.0, elapsed / self.total)
        bar = "=" * int(30 * fraction)
        sys.stderr.write(f"\r[{bar:<30}] {fraction:4.0%} {done} requests {done / max(elapsed, 1e-9):8.0f}/s")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


async def closed_loop(ctx: Context, args: argparse.Namespace, load: Load, recorder: Recorder) -> float:
    clients = [AsyncClient(config=ctx.config(), timeout=ctx.timeout) for _ in range(max(1, args.conns))]
    try:
        await load.prepare(clients[0])
        progress = Progress(args.duration)
        start = time.monotonic()
        stop_at = start + args.duration

        async def worker(client: AsyncClient) -> None:
            while time.monotonic() < stop_at:
                began = time.perf_counter()
                try:
                    await load.one(client, args.workload)
                    recorder.latencies.append(time.perf_counter() - began)
                except ClientError as exc:
                    recorder.errors[str(exc)] += 1

        async def report() -> None:
            while time.monotonic() < stop_at:
                progress.show(len(recorder.latencies))
                await asyncio.sleep(0.25)

        await asyncio.gather(report(), *(worker(clients[i % len(clients)]) for i in range(args.clients)))
        progress.finish()
        return time.monotonic() - start
    finally:
        for client in clients:
            await client.close()


async def watch_latency(ctx: Context, args: argparse.Namespace, load: Load, recorder: Recorder) -> float:
    """Writers put unique values; one watcher timestamps their arrival."""
    async with AsyncClient(config=ctx.config(), timeout=ctx.timeout) as client:
        sent: dict[str, float] = {}
        watch = await client.watch(args.prefix, prefix=True)
        progress = Progress(args.duration)
        start = time.monotonic()
        stop_at = start + args.duration
        counter = iter(range(1 << 62))

        async def writer() -> None:
            while time.monotonic() < stop_at:
                tag = f"{next(counter)}:{load.value}"
                sent[tag] = time.perf_counter()
                try:
                    await client.put(random.choice(load.keys), tag)
                except ClientError as exc:
                    recorder.errors[str(exc)] += 1
                    sent.pop(tag, None)

        async def watcher() -> None:
            async for event in watch:
                began = sent.pop(event.kv.value.decode(), None)
                if began is not None:
                    recorder.latencies.append(time.perf_counter() - began)
                progress.show(len(recorder.latencies))

        watching = asyncio.create_task(watcher())
        await asyncio.gather(*(writer() for _ in range(args.clients)))
        deadline = time.monotonic() + 5  # let the last events arrive
        while sent and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        watch.cancel()
        watching.cancel()
        progress.finish()
        return time.monotonic() - start


def run(ctx: Context, args: argparse.Namespace) -> int:
    load, recorder = Load(args), Recorder()
    measure = watch_latency if args.workload == "watch-latency" else closed_loop
    elapsed = asyncio.run(measure(ctx, args, load, recorder))
    summary = recorder.summary(args.workload, elapsed, args.clients)
    if ctx.output == "json":
        print_json(summary)
        return 0
    lat = summary["latency_ms"]
    write_line(f"{args.workload}: {summary['requests']} requests in {summary['duration_s']:.1f}s with "
               f"{args.clients} clients: {summary['throughput_rps']:.1f} requests/s")
    write_line(f"latency ms: p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  max {lat['max']:.2f}")
    for message, count in recorder.errors.most_common(5):
        write_line(f"errors: {count} x {message}")
    return 0

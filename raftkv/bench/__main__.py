"""``python -m raftkv.bench``: run the standard workloads against raftkv, etcd, or both side by side.

Without ``--endpoints`` a fresh three-member cluster with mutual TLS is started in a temporary directory
(``raftkv.localcluster``) and stopped afterwards; with ``--endpoints`` (plus the TLS flags, and
``--metrics-urls`` for fsync and CPU figures) an already running cluster is measured instead.

``--auth off,token,cn`` measures each started cluster with authentication off, then on as a non-root user
known by password token and by certificate CN (``raftkv.bench.auth``), and prints the costs side by side.

``cpu-us/op`` is CPU microseconds per successful request, scraped from ``process_cpu_seconds_total``:
first the busiest member's (normally the leader, the bottleneck), then all members' together.

``--ceiling`` also measures, in the same run, a server that only answers (``raftkv.bench.ceiling``): the most
a member serving from one ``grpc.aio`` process could reach here, printed as its own ratio to etcd.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc

from raftkv.bench import auth, ceiling
from raftkv.bench.load import STANDARD, LoadGenerator, Metadata, Workload
from raftkv.bench.scrape import MemberCounters, cluster_counters, usage
from raftkv.bench.stats import Result
from raftkv.client.config import ClientConfig
from raftkv.localcluster import Kind, LocalCluster
from raftkv.process_stat import process_cpu_seconds
from raftkv.proto import rpc_pb2, rpc_pb2_grpc

ETCD_BINARY = "/usr/bin/etcd"


@dataclass(frozen=True)
class Target:
    """A running cluster to measure: where clients connect, and where its metrics are (may be empty).

    ``pid``: a single server without metrics (the ceiling), whose CPU is read from ``/proc`` instead; it is
    sent to directly, with no leader to look for."""

    name: str
    config: ClientConfig
    endpoints: tuple[str, ...]
    metrics_urls: tuple[str, ...]
    pid: int | None = None

    def counters(self) -> list[MemberCounters] | None:
        if self.pid is not None:
            return [MemberCounters(fsyncs=0.0, cpu_seconds=process_cpu_seconds(self.pid))]
        return cluster_counters(self.metrics_urls) if self.metrics_urls else None


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    names = {w.name.replace(" ", ""): w for w in STANDARD}
    parser = argparse.ArgumentParser(prog="python -m raftkv.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["raftkv", "etcd", "both"], default="raftkv",
                        help="what to start and measure; both = etcd then raftkv, with a side-by-side table")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per workload (default 10)")
    parser.add_argument("--channels", type=int, default=8, help="gRPC channels shared by the workers (default 8)")
    parser.add_argument("--to", choices=["leader", "all"], default="leader",
                        help="send to the leader only (default) or spread channels over every member")
    parser.add_argument("--workloads", default=",".join(names),
                        help=f"comma-separated subset of {','.join(names)}")
    parser.add_argument("--dir", help="where to create the cluster (default: a temporary directory, removed)")
    parser.add_argument("--plaintext", action="store_true", help="start the cluster without TLS")
    parser.add_argument("--gateway", choices=["on", "off", "both"], default="on",
                        help="raftkv's client port: gRPC behind the front that also serves HTTP (on, the "
                        "default), grpcio bound directly (off, --enable-grpc-gateway=false), or both, "
                        "one after the other, with a side-by-side table")
    parser.add_argument("--auth", default="off",
                        help="comma-separated auth modes to measure each started cluster in, in order: "
                             f"{','.join(auth.MODES)} (token: a password user's token; cn: its certificate)")
    parser.add_argument("--raftkv-flag", action="append", default=[], metavar="FLAG",
                        help="pass FLAG to every raftkv member started, e.g. --raftkv-flag=--experimental-leader-"
                        "lease-reads (repeatable)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also measure a server that only answers (one grpc.aio process, canned answers), "
                        "the most a one-process member could reach here; printed as its ratio to etcd")
    attach = parser.add_argument_group("attach to a running cluster instead of starting one")
    attach.add_argument("--endpoints", help="comma-separated client URLs")
    attach.add_argument("--cacert")
    attach.add_argument("--cert")
    attach.add_argument("--key")
    attach.add_argument("--metrics-urls", default="", help="comma-separated metrics URLs, for fsyncs/s and CPU")
    args = parser.parse_args(argv)
    try:
        # As printed ("get-s c=64") or as listed in --help ("get-sc=64"): spaces are not part of a name.
        args.workloads = [names[n.replace(" ", "")] for n in args.workloads.split(",") if n.strip()]
    except KeyError as exc:
        parser.error(f"unknown workload {exc}; choose from {','.join(names)}")
    args.auth = [m for m in args.auth.split(",") if m]
    if any(m not in auth.MODES for m in args.auth) or args.auth != sorted(args.auth, key=auth.MODES.index):
        parser.error(f"--auth takes modes among {','.join(auth.MODES)}, in that order")
    if args.auth != ["off"] and (args.endpoints or args.plaintext):
        parser.error("--auth needs a cluster started with TLS by the benchmark")
    if args.ceiling and (args.endpoints or args.auth != ["off"] or args.gateway == "both"):
        parser.error("--ceiling is measured beside clusters the benchmark starts, with --auth off")
    if args.endpoints and args.target == "both":
        parser.error("--target both starts its own clusters; it cannot be combined with --endpoints")
    if args.gateway == "both" and (args.target != "raftkv" or args.endpoints):
        parser.error("--gateway both compares two fresh raftkv clusters: use it with --target raftkv alone")
    if args.target != "raftkv" and not args.endpoints and not Path(ETCD_BINARY).exists():
        parser.error(f"--target {args.target} needs {ETCD_BINARY}")
    return args


def _leader_endpoint(config: ClientConfig, endpoints: Sequence[str]) -> str:
    """The endpoint whose member reports itself as leader."""
    for endpoint in endpoints:
        with config.channel(endpoint) as channel:
            try:
                status = rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest(), timeout=5)
            except grpc.RpcError:
                continue
        if status.leader and status.leader == status.header.member_id:
            return endpoint
    raise SystemExit(f"no member of {','.join(endpoints)} reports itself as leader")


@contextlib.contextmanager
def _started(kind: Kind, args: argparse.Namespace, gateway: bool = True) -> Iterator[tuple[Target, LocalCluster]]:
    """A fresh three-member cluster for the duration of the block."""
    parent = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="raftkv-bench-"))
    base = parent / kind
    shutil.rmtree(base, ignore_errors=True)
    extra = [] if gateway or kind != "raftkv" else ["--enable-grpc-gateway=false"]
    if kind == "raftkv":
        extra += args.raftkv_flag
    cluster = LocalCluster(base, size=3, kind=kind, tls=not args.plaintext, extra_args=extra)
    try:
        cluster.start()
        cluster.wait_ready(timeout=60, all_members=True)
        endpoints = tuple(cluster.endpoints)
        target = Target(kind, cluster.client_config(), endpoints, tuple(cluster.metrics_url(n) for n in cluster.names))
        yield target, cluster
    finally:
        cluster.stop()
        if not args.dir:
            shutil.rmtree(parent, ignore_errors=True)


def _attached(args: argparse.Namespace) -> Target:
    endpoints = tuple(e for e in args.endpoints.split(",") if e)
    config = ClientConfig(endpoints=endpoints, cacert=args.cacert, cert=args.cert, key=args.key,
                          insecure=args.cacert is None and args.cert is None)
    return Target(args.target, config, endpoints, tuple(u for u in args.metrics_urls.split(",") if u))


async def _measure(target: Target, args: argparse.Namespace, metadata: Metadata = ()) -> list[Result]:
    leader = args.to == "leader" and target.pid is None
    endpoints = [_leader_endpoint(target.config, target.endpoints)] if leader else target.endpoints
    generator = LoadGenerator(target.config, endpoints, args.channels, metadata)
    results = []
    try:
        await generator.prepare()
        for workload in args.workloads:
            results.append(await _one(generator, workload, target, args.duration))
            print(results[-1].row(), flush=True)
    finally:
        await generator.close()
    return results


async def _one(generator: LoadGenerator, workload: Workload, target: Target, duration: float) -> Result:
    before = target.counters()
    tally, latencies, elapsed = await generator.run(workload, duration)
    after = target.counters()
    spent = None if before is None or after is None else usage(before, after, elapsed, tally.ok)
    if tally.errors:
        print(f"  {workload.name}: {tally.errors} errors, first: {tally.first_error}", file=sys.stderr)
    return Result(workload.name, target.name, tally.ok, tally.errors, elapsed, tuple(latencies), spent)


def side_by_side(etcd: Sequence[Result], raftkv: Sequence[Result], names: tuple[str, str] = ("etcd", "raftkv")) -> str:
    """One line per workload: both throughputs, p99s, fsync rates and CPU per request, and the throughput ratio."""
    a, b = names
    lines = [f"{'workload':<16} {a + '/s':>9} {b + '/s':>9} {'ratio':>6}  {a + ' p99':>9} {b + ' p99':>10}"
             f"  {a + ' fsync/s':>12} {b + ' fsync/s':>14}  {a + ' cpu-us/op':>14} {b + ' cpu-us/op':>16}"]
    for e, r in zip(etcd, raftkv, strict=True):
        ratio = r.throughput / e.throughput if e.throughput else float("nan")
        lines.append(f"{e.workload:<16} {e.throughput:>9,.0f} {r.throughput:>9,.0f} {ratio:>6.2f}  "
                     f"{1000 * e.latency(0.99):>7.1f}ms {1000 * r.latency(0.99):>8.1f}ms  "
                     f"{e.fsyncs_text():>12} {r.fsyncs_text():>14}  {e.cpu_text():>14} {r.cpu_text():>16}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        import uvloop

        run: Callable[[Coroutine[Any, Any, Any]], Any] = uvloop.run
    except ImportError:
        run = asyncio.run
    if args.endpoints:
        run(_measure(_attached(args), args))
        return 0
    kinds: list[Kind] = ["etcd", "raftkv"] if args.target == "both" else [args.target]
    runs: list[tuple[str, Kind, bool]] = (
        [("direct", "raftkv", False), ("gateway", "raftkv", True)] if args.gateway == "both" else
        [(kind, kind, args.gateway != "off") for kind in kinds]
    )
    measured: dict[str, list[Result]] = {}
    for label, kind, gateway in runs:
        print(f"--- {label}: three members, {'plaintext' if args.plaintext else 'mutual TLS'}, "
              f"{args.duration:g}s per workload, sending to {args.to}", flush=True)
        with _started(kind, args, gateway) as (target, cluster):
            if args.auth == ["off"]:
                measured[label] = run(_measure(target, args))
                continue
            enabled = False
            for mode in args.auth:
                if mode != "off" and not enabled:
                    auth.enable(cluster, target.config)
                    enabled = True
                ident = auth.identity(mode, cluster, target.config)
                name = f"{label} auth {mode}"
                measured[name] = run(_measure(replace(target, name=name, config=ident.config), args, ident.metadata))
    if args.ceiling:
        print(f"--- ceiling: one grpc.aio process that only answers, mutual TLS, {args.duration:g}s per workload",
              flush=True)
        with ceiling.started() as (config, endpoint, pid):
            measured["ceiling"] = run(_measure(Target("ceiling", config, (endpoint,), (), pid), args))
    if args.auth != ["off"]:
        print("\n" + auth_table(measured))
    elif len(runs) == 2:
        first, second = (label for label, _, _ in runs)
        print("\n" + side_by_side(measured[first], measured[second], (first, second)))
        if "ceiling" in measured:
            print("\nThe ceiling beside the same etcd run: what no member serving from one grpc.aio process "
                  "can pass here\n" + side_by_side(measured[first], measured["ceiling"], (first, "ceiling")))
    elif "ceiling" in measured:
        print("\n" + side_by_side(measured[runs[0][0]], measured["ceiling"], (runs[0][0], "ceiling")))
    return 0


def auth_table(measured: dict[str, list[Result]]) -> str:
    """Throughput and CPU per request of every workload in every (target, auth mode), one run."""
    names = list(measured)
    lines = [f"{'workload':<16} " + " ".join(f"{n:>22}" for n in names)]
    for row in zip(*measured.values(), strict=True):
        cells = [f"{r.throughput:>9,.0f}/s {r.cpu_text():>7}us" for r in row]
        lines.append(f"{row[0].workload:<16} " + " ".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

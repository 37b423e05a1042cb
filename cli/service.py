"""Service registry commands: ``kvctl service register|list|watch`` (see ``raftkv.discovery``).

``register`` is a foreground sidecar for services not written in Python: it keeps the registration alive
and, on SIGTERM or Ctrl-C, revokes it before exiting."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cli.common import CommandError, Context, duration
from cli.output import table, write_line
from raftkv.client import LeaseNotFound
from raftkv.discovery import DEFAULT_NAMESPACE, Registration, Resolver, State, record
from raftkv.discovery.view import Change, ChangeKind


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    service = sub.add_parser("service", help="service register|list|watch (the raftkv.discovery registry)")
    cmds = service.add_subparsers(dest="service_cmd", required=True, metavar="COMMAND")
    p = cmds.add_parser("register", help="register NAME ADDR and keep it registered until SIGTERM/Ctrl-C")
    p.add_argument("name")
    p.add_argument("addr", help="host:port the service listens on")
    p.add_argument("--id", help="instance id (default: the address)")
    p.add_argument("--ttl", type=int, default=5, help="lease TTL in seconds (default 5)")
    p.add_argument("--health-check", choices=("grpc", "tcp", "none"), default="none",
                   help="register only while grpc.health.v1 (or a TCP connect) passes (default none)")
    p.add_argument("--health-service", default="", help="grpc.health.v1 service name to check (default \"\")")
    p.add_argument("--health-interval", type=duration, default=1.0, help="time between checks (default 1s)")
    p.add_argument("--rise", type=int, default=2, help="passing checks before registering (default 2)")
    p.add_argument("--fall", type=int, default=2, help="failing checks before withdrawing (default 2)")
    p.add_argument("--meta", action="append", default=[], metavar="K=V", help="metadata (repeatable)")
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE)
    p.set_defaults(func=register_cmd)
    p = cmds.add_parser("list", help="instances with address, lease TTL left and health")
    p.add_argument("name", nargs="?", help="one service (default: every service in the namespace)")
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE)
    p.add_argument("--probe-timeout", type=duration, default=1.0, help="health probe timeout (default 1s)")
    p.set_defaults(func=list_cmd)
    p = cmds.add_parser("watch", help="print instance changes as they happen, until interrupted")
    p.add_argument("name")
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE)
    p.set_defaults(func=watch_cmd)


def parse_meta(items: list[str]) -> dict[str, Any] | None:
    meta: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"bad --meta {item!r}: expected KEY=VALUE")
        meta[key] = int(value) if key == record.WEIGHT_KEY and value.isdigit() else value
    return meta or None


def register_cmd(ctx: Context, args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    health = None if args.health_check == "none" else (
        f"grpc:{args.health_service}" if args.health_check == "grpc" and args.health_service else args.health_check)
    reg = Registration(args.name, args.addr, client=ctx.client, instance_id=args.id, metadata=parse_meta(args.meta),
                       ttl=args.ttl, health=health, namespace=args.namespace, rise=args.rise, fall=args.fall,
                       health_interval=args.health_interval)
    reg.start(wait=ctx.timeout)
    last: State | None = None
    try:
        while not stop.is_set():
            if reg.state is not last:
                last = reg.state
                detail = {State.REGISTERED: f"lease {reg.lease:x}, ttl {args.ttl}s",
                          State.WITHDRAWN: "health check not passing", State.STARTING: "waiting for health check",
                          State.RETRYING: str(reg.lifecycle.last_error or "")}.get(last, "")
                write_line(f"{last.value} {reg.key}" + (f" ({detail})" if detail else ""))
                sys.stdout.flush()
            stop.wait(0.1)
    finally:
        reg.stop()  # revoke first: callers stop routing here before the process goes
    write_line(f"deregistered {reg.key}")
    return 0


def _probe(addr: str, timeout: float) -> str:
    with grpc.insecure_channel(addr) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # type: ignore[attr-defined]
                return "no-check"
            return "unreachable"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def list_cmd(ctx: Context, args: argparse.Namespace) -> int:
    client = ctx.client
    namespace = record.normalize_namespace(args.namespace)
    prefix = record.service_prefix(args.name, namespace) if args.name else namespace + "/"
    listing = client.get_prefix(prefix)
    rows: list[dict[str, Any]] = []
    for kv in listing.kvs:
        rest = kv.key.decode("utf-8", "replace")[len(namespace) + 1:]
        service, sep, instance_id = rest.partition("/")
        if not sep or "/" in instance_id:
            continue
        try:
            inst = record.decode(kv.key, kv.value, lease=kv.lease, mod_revision=kv.mod_revision)
        except record.RecordError as exc:
            rows.append({"service": service, "id": instance_id, "addr": "", "ttl": None, "health": "invalid",
                         "metadata": {}, "error": str(exc)})
            continue
        rows.append({"service": service, "id": inst.id, "addr": inst.addr, "lease": inst.lease, "ttl": None,
                     "health": "", "metadata": dict(inst.metadata)})

    def fill(row: dict[str, Any]) -> None:
        if row.get("lease"):
            try:
                row["ttl"] = client.lease_time_to_live(row["lease"]).ttl
            except LeaseNotFound:
                row["ttl"] = -1
        if row["addr"]:
            row["health"] = _probe(row["addr"], args.probe_timeout)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fill, rows))
    return _print(ctx.output, rows)


def _print(output: str, rows: list[dict[str, Any]]) -> int:
    if output == "json":
        print(json.dumps({"instances": rows}, separators=(",", ":")))
        return 0
    def cells(row: Mapping[str, Any]) -> list[str]:
        ttl = "-" if row["ttl"] is None else str(row["ttl"])
        meta = ",".join(f"{k}={v}" for k, v in sorted(row["metadata"].items()))
        return [row["service"], row["id"], row["addr"], ttl, row["health"], meta]

    if output == "table":
        write_line(table(["SERVICE", "ID", "ADDRESS", "TTL", "HEALTH", "METADATA"], [cells(r) for r in rows]))
        return 0
    for row in rows:
        write_line(", ".join(c for c in cells(row) if c))
    return 0


def watch_cmd(ctx: Context, args: argparse.Namespace) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def show(changes: list[Change], _: Mapping[str, record.Instance]) -> None:
        for change in changes:
            inst = change.instance
            if ctx.output == "json":
                print(json.dumps({"change": change.kind.value, "id": inst.id, "addr": inst.addr,
                                  "metadata": dict(inst.metadata), "revision": change.revision},
                                 separators=(",", ":")))
            else:
                write_line(f"{change.kind.value} {inst.id} {inst.addr}"
                           + ("" if change.kind is ChangeKind.REMOVED else
                              "".join(f" {k}={v}" for k, v in sorted(inst.metadata.items()))))
        sys.stdout.flush()

    resolver = Resolver(args.name, client=ctx.client, namespace=args.namespace)
    resolver.subscribe(show)
    resolver.start(wait=ctx.timeout)
    try:
        stop.wait()
    finally:
        resolver.stop()
    return 0

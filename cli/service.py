"""Service registry commands: ``kvctl service register|list|watch`` (see ``raftkv.discovery``).

``register`` is a foreground sidecar for services not written in Python: it keeps the registration alive
and, on SIGTERM or Ctrl-C, revokes it before exiting."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cli.common import CommandError, Context, duration
from cli.output import table, write_line
from raftkv import stop_signals
from raftkv.client import LeaseNotFound
from raftkv.discovery import DEFAULT_NAMESPACE, Registration, Resolver, State, record
from raftkv.discovery.lifecycle import UNKNOWN_AFTER, Verdict
from raftkv.discovery.probes import check_verdict
from raftkv.discovery.view import Change, ChangeKind


def register(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--unknown-after", type=duration, default=UNKNOWN_AFTER,
                   help="a check that times out is unknown, not failing: withdraw only after this long without "
                        f"any answer (default {UNKNOWN_AFTER:g}s)")
    p.add_argument("--health-tls", action="store_true",
                   help="check health over TLS (files from --health-cacert/--health-cert/--health-key, else "
                        "kvctl's own --cacert/--cert/--key)")
    _tls_files(p, "health")
    p.add_argument("--meta", action="append", default=[], metavar="K=V", help="metadata (repeatable)")
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE)
    p.set_defaults(func=register_cmd)
    p = cmds.add_parser("list", help="instances with address, lease TTL left and health")
    p.add_argument("name", nargs="?", help="one service (default: every service in the namespace)")
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE)
    p.add_argument("--probe-timeout", type=duration, default=1.0, help="health probe timeout (default 1s)")
    p.add_argument("--probe-tls", choices=("auto", "on", "off"), default="auto",
                   help="probe instances over TLS: auto (plaintext, then TLS if that fails; default), on, off")
    _tls_files(p, "probe")
    p.set_defaults(func=list_cmd)
    p = cmds.add_parser("watch", help="print instance changes as they happen, until interrupted")
    p.add_argument("name")
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE)
    p.set_defaults(func=watch_cmd)


def _tls_files(p: argparse.ArgumentParser, prefix: str) -> None:
    for name, what in (("cacert", "CA bundle that signed the instances' certificates"),
                       ("cert", "client certificate for instances that want mutual TLS"), ("key", "its key")):
        p.add_argument(f"--{prefix}-{name}", dest=f"{prefix}_{name}", metavar="FILE",
                       help=f"{what} (default: kvctl's own --{name})")


def instance_credentials(ctx: Context, args: argparse.Namespace, prefix: str) -> grpc.ChannelCredentials:
    """TLS credentials for talking to instances: the ``--PREFIX-cacert/cert/key`` files, each defaulting to
    kvctl's own (instances are often issued by the cluster's CA). Read and checked by ``ClientConfig``, the
    one owner of those rules."""
    own = ctx.config()
    given = {name: getattr(args, f"{prefix}_{name}") for name in ("cacert", "cert", "key")}
    if (given["cert"] is None) != (given["key"] is None):
        raise CommandError(f"--{prefix}-cert and --{prefix}-key must be given together")
    cert, key = (given["cert"], given["key"]) if given["cert"] else (own.cert, own.key)
    return dataclasses.replace(own, cacert=given["cacert"] or own.cacert, cert=cert, key=key).credentials


def parse_meta(items: list[str]) -> dict[str, Any] | None:
    meta: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"bad --meta {item!r}: expected KEY=VALUE")
        meta[key] = int(value) if key == record.WEIGHT_KEY and value.isdigit() else value
    return meta or None


def register_cmd(ctx: Context, args: argparse.Namespace) -> int:
    stop = stop_signals.stop_on(signal.SIGTERM, signal.SIGINT)
    health = None if args.health_check == "none" else (
        f"grpc:{args.health_service}" if args.health_check == "grpc" and args.health_service else args.health_check)
    if args.health_tls and args.health_check != "grpc":
        raise CommandError("--health-tls needs --health-check grpc")
    credentials = instance_credentials(ctx, args, "health") if args.health_tls else None
    reg = Registration(args.name, args.addr, client=ctx.client, instance_id=args.id, metadata=parse_meta(args.meta),
                       ttl=args.ttl, health=health, namespace=args.namespace, rise=args.rise, fall=args.fall,
                       unknown_after=args.unknown_after, health_interval=args.health_interval,
                       health_credentials=credentials)
    reg.start(wait=ctx.timeout)
    gate = reg.lifecycle.gate
    last: State | None = None
    try:
        while not stop.is_set():
            if reg.state is not last:
                last = reg.state
                why = f": {gate.reason}" if gate is not None and gate.reason else ""
                detail = {State.REGISTERED: f"lease {reg.lease:x}, ttl {args.ttl}s",
                          State.WITHDRAWN: f"health check not passing{why}", State.STARTING: "waiting for health check",
                          State.RETRYING: str(reg.lifecycle.last_error or "")}.get(last, "")
                write_line(f"{last.value} {reg.key}" + (f" ({detail})" if detail else ""))
                sys.stdout.flush()
            stop.wait(0.1)
    finally:
        reg.stop()  # revoke first: callers stop routing here before the process goes
    write_line(f"deregistered {reg.key}")
    return 0


#: A refused or reset connection: nothing serving there.
UNREACHABLE = "unreachable"
#: No answer within ``--probe-timeout``: the instance may be alive but overloaded or hung (the registration's
#: health gate calls this UNKNOWN and does not count it against the instance).
TIMEOUT = "timeout"
#: Healths that are not an answer from the instance's health service.
NO_ANSWER = (UNREACHABLE, TIMEOUT)


def _probe(addr: str, timeout: float, credentials: grpc.ChannelCredentials | None = None) -> str:
    options = [("grpc.use_local_subchannel_pool", 1)]  # a probe's connection is its own, TLS or not
    channel = (grpc.insecure_channel(addr, options=options) if credentials is None
               else grpc.secure_channel(addr, credentials, options=options))
    with channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return "no-check"
            return TIMEOUT if check_verdict(None, exc) is Verdict.UNKNOWN else UNREACHABLE
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def probe_health(addr: str, timeout: float, mode: str, credentials: grpc.ChannelCredentials | None) -> tuple[str, bool]:
    """(health, whether the answer came over TLS). ``auto``: plaintext, then TLS when plaintext got no answer
    (an instance that serves TLS closes a plaintext connection: that is not the instance being down)."""
    if mode != "on":
        health = _probe(addr, timeout)
        if health not in NO_ANSWER or mode == "off":
            return health, False
    assert credentials is not None
    health = _probe(addr, timeout, credentials)
    return health, health not in NO_ANSWER


def list_cmd(ctx: Context, args: argparse.Namespace) -> int:
    client = ctx.client
    namespace = record.normalize_namespace(args.namespace)
    prefix = record.service_prefix(args.name, namespace) if args.name else namespace + "/"
    credentials = None if args.probe_tls == "off" else instance_credentials(ctx, args, "probe")
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
                         "tls": None, "metadata": {}, "error": str(exc)})
            continue
        rows.append({"service": service, "id": inst.id, "addr": inst.addr, "lease": inst.lease, "ttl": None,
                     "health": "", "tls": None, "metadata": dict(inst.metadata)})

    def fill(row: dict[str, Any]) -> None:
        if row.get("lease"):
            try:
                row["ttl"] = client.lease_time_to_live(row["lease"]).ttl
            except LeaseNotFound:
                row["ttl"] = -1
        if row["addr"]:
            row["health"], row["tls"] = probe_health(row["addr"], args.probe_timeout, args.probe_tls, credentials)

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
    stop = stop_signals.stop_on(signal.SIGTERM)

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
        stop_signals.wait_for(stop)
    finally:
        resolver.stop()
    return 0

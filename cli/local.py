"""`kvctl certs init|rotate` and `kvctl cluster up|status|env|down`: a local cluster in one command."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from cli.common import CommandError, Context
from cli.output import print_json, table, write_line

# raftkv.localcluster and raftkv.security.certs are imported by the commands that use them: at the top they
# would cost every kvctl command (a get, a put) their start-up time.
if TYPE_CHECKING:
    from raftkv.localcluster import LocalCluster

DEFAULT_DIR = ".cluster"


def register(sub: argparse._SubParsersAction) -> None:
    certs = sub.add_parser("certs", help="certs init|rotate").add_subparsers(dest="certs_cmd", required=True,
                                                                     metavar="COMMAND")
    p = certs.add_parser("init", help="make a client CA and a peer CA, member certificates for both ports and a "
                         "client certificate (adds what is missing, e.g. the peer CA of an older directory)")
    p.add_argument("--dir", default="certs", help="output directory (default ./certs)")
    p.add_argument("--names", default="n1,n2,n3", help="comma-separated member names (default n1,n2,n3)")
    p.add_argument("--ip", action="append", default=[], help="extra IP address for member certificates")
    p.add_argument("--dns", action="append", default=[], help="extra DNS name for member certificates")
    p.set_defaults(func=certs_init)
    p = certs.add_parser(
        "rotate",
        help="renew every member and client certificate in place (new keys, same names); running members pick "
             "them up without a restart. A CA is changed in three runs: --add-ca, then a plain rotate, then "
             "--drop-old-ca",
    )
    p.add_argument("--dir", default="certs",
                   help="certificate directory, or a local cluster's directory (default ./certs)")
    step = p.add_mutually_exclusive_group()
    step.add_argument("--add-ca", action="store_true",
                      help="only add a new client CA and peer CA to the bundles; later renewals are signed by them")
    step.add_argument("--drop-old-ca", action="store_true",
                      help="only drop every CA but the newest from the bundles (after the renewal)")
    p.set_defaults(func=certs_rotate)

    cluster = sub.add_parser("cluster", help="cluster up|status|env|down (local processes)").add_subparsers(
        dest="cluster_cmd", required=True, metavar="COMMAND")
    p = cluster.add_parser("up", help="start a local cluster in the background (idempotent)")
    p.add_argument("--size", type=int, default=3)
    p.add_argument("--base-port", type=int, default=2379,
                   help="n1 gets base/base+1/base+2 (client/peer/metrics), n2 base+10, ... "
                        "(default 2379; 0 = any free ports)")
    p.add_argument("--kind", choices=("raftkv", "etcd"),
                   help="server to run in a new cluster (default raftkv; an existing one keeps its kind)")
    p.add_argument("--insecure-plaintext", action="store_true",
                   help="start a new cluster without TLS (members get --insecure-plaintext; sandboxes only)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait until every member runs and knows a leader (default 30)")
    for verb, func, text in (("up", cluster_up, None), ("status", cluster_status, "members, pids, leader"),
                             ("env", cluster_env, "export lines for kvctl and etcdctl"),
                             ("down", cluster_down, "stop all members (data is kept)")):
        if text is not None:
            p = cluster.add_parser(verb, help=text)
        p.add_argument("--dir", default=DEFAULT_DIR, help=f"cluster directory (default {DEFAULT_DIR})")
        p.set_defaults(func=func)


def certs_init(ctx: Context, args: argparse.Namespace) -> int:
    from raftkv.security.certs import PEER_DIR, init_cluster_certs

    names = [n for n in args.names.split(",") if n]
    root = Path(args.dir)
    migrating = (root / "ca.crt").exists() and not (root / PEER_DIR / "ca.crt").exists()
    made = init_cluster_certs(args.dir, names, extra_ips=args.ip, extra_dns=args.dns)
    write_line(f"client CA: {made.ca}")
    for name, files in made.nodes.items():
        write_line(f"{name} (client port): {files.cert} {files.key}")
    write_line(f"client: {made.client.cert} {made.client.key}")
    write_line(f"peer CA: {made.peer_ca}")
    for name, files in made.peers.items():
        write_line(f"{name} (peer port): {files.cert} {files.key}")
    if migrating:
        write_line(
            f"added a peer CA to {root}, made by an older kvctl: start every member with --peer-trusted-ca-file "
            f"{made.peer_ca} and its --peer-cert-file/--peer-key-file from {root / PEER_DIR}, then restart them all "
            "(`kvctl cluster up` does this for its own clusters)"
        )
    return 0


def certs_rotate(ctx: Context, args: argparse.Namespace) -> int:
    from raftkv.localcluster import CLUSTER_FILE
    from raftkv.security import rotation
    from raftkv.security.tls import ConfigError

    directory = Path(args.dir)
    if (directory / CLUSTER_FILE).exists():
        directory = _open(args.dir).certs_dir
    step = rotation.add_cas if args.add_ca else rotation.drop_old_cas if args.drop_old_ca else rotation.renew_leaves
    try:
        changes = step(directory)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    for change in changes:
        write_line(f"{change.path}: {change.what}")
    if not changes:
        write_line(f"nothing to change in {directory}")
    return 0


def _open(directory: str) -> LocalCluster:
    from raftkv.localcluster import ClusterError, LocalCluster

    try:
        return LocalCluster.open(directory)
    except ClusterError as exc:
        raise CommandError(str(exc)) from None


def cluster_up(ctx: Context, args: argparse.Namespace) -> int:
    """Start (or restart) the members and wait until *every* one runs and knows a leader: a member that
    exited (a port in use, a bad flag) fails the command with its own log line, never a "started"."""
    from raftkv.localcluster import CLUSTER_FILE, ClusterError, LocalCluster

    try:
        if (Path(args.dir) / CLUSTER_FILE).exists():
            cluster = LocalCluster.open(args.dir)
            if args.insecure_plaintext and cluster.tls:
                raise CommandError(f"{cluster.base_dir} holds a cluster with TLS; --insecure-plaintext applies "
                                   "only to a new cluster (use another --dir)")
        else:
            if args.insecure and not args.insecure_plaintext:
                raise CommandError("--insecure (or KVCTL_INSECURE) sets how kvctl dials, not how a cluster "
                                   "starts; pass --insecure-plaintext to start a cluster without TLS")
            cluster = LocalCluster(args.dir, args.size, kind=args.kind or "raftkv", tls=not args.insecure_plaintext,
                                   base_port=args.base_port or None)
    except ClusterError as exc:
        raise CommandError(str(exc)) from None
    already = cluster.running()
    try:
        cluster.start()
        leader = cluster.wait_ready(args.timeout, all_members=True)
    except ClusterError as exc:
        for name in cluster.names:  # leave nothing half-started behind
            if name not in already:
                cluster.stop_member(name)
        raise CommandError(f"the cluster in {cluster.base_dir} did not start: {exc}") from None
    state = "already running" if len(already) == len(cluster.names) else "started"
    write_line(f"{cluster.kind} cluster {state} in {cluster.base_dir} (leader {leader})")
    for name in cluster.names:
        write_line(f"  {name}  {cluster.client_url(name)}  log {cluster.log_path(name)}")
    write_line("")
    write_line("Next:")
    write_line(f'  eval "$(kvctl cluster env --dir {shlex.quote(args.dir)})"')
    write_line("  kvctl put hello world")
    write_line("  etcdctl get hello")
    write_line(f"  kvctl cluster down --dir {shlex.quote(args.dir)}")
    return 0


def cluster_status(ctx: Context, args: argparse.Namespace) -> int:
    cluster = _open(args.dir)
    leader = cluster.leader_name()
    rows = []
    for name in cluster.names:
        pid = cluster.pid(name)
        healthy = pid is not None and cluster.status(name) is not None
        rows.append({"name": name, "pid": pid, "endpoint": cluster.client_url(name), "leader": name == leader,
                     "healthy": healthy})
    if ctx.output == "json":
        print_json({"dir": str(cluster.base_dir), "kind": cluster.kind, "members": rows})
    else:
        cells = [[str(r["name"]), str(r["pid"] or "-"), str(r["endpoint"]), str(r["leader"]).lower(),
                  "healthy" if r["healthy"] else ("stopped" if r["pid"] is None else "unhealthy")]
                 for r in rows]
        headers = ["NAME", "PID", "ENDPOINT", "LEADER", "HEALTH"]
        if ctx.output == "table":
            write_line(table(headers, cells))
        else:
            for row in cells:
                write_line(", ".join(row))
    return 0


def cluster_env(ctx: Context, args: argparse.Namespace) -> int:
    for name, value in _open(args.dir).env().items():
        write_line(f"export {name}={shlex.quote(value)}")
    return 0


def cluster_down(ctx: Context, args: argparse.Namespace) -> int:
    cluster = _open(args.dir)
    running = cluster.running()
    cluster.stop()
    write_line(f"stopped {', '.join(running)}" if running else "no member was running")
    return 0

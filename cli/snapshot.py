"""`kvctl snapshot save|restore`: back a cluster up into a file, and seed a new cluster from one (as etcdctl)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cli.common import CommandError, Context
from cli.output import human_bytes, write_line
from raftkv.security.tls import ConfigError

if TYPE_CHECKING:
    from raftkv.server.config import ServerConfig

#: The server's own defaults, so that `raftkv` started with the same (or no) flags accepts the directory.
DEFAULT_PEER_URL = "https://127.0.0.1:2380"
DEFAULT_TOKEN = "raftkv"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    snapshot = sub.add_parser("snapshot", help="snapshot save|restore").add_subparsers(
        dest="snapshot_cmd", required=True, metavar="COMMAND")
    p = snapshot.add_parser("save", help="stream a member's backend into a file")
    p.add_argument("path")
    p.set_defaults(func=save)
    p = snapshot.add_parser(
        "restore", help="make a new member's data dir from a saved snapshot (run once per member)",
        description="Make the data dir of one member of a NEW cluster holding the snapshot's keys, revision "
                    "and leases; start each member with the same --name, --initial-cluster, "
                    "--initial-cluster-token and --initial-advertise-peer-urls.")
    p.add_argument("path", help="file written by `kvctl snapshot save` or `etcdctl snapshot save`")
    p.add_argument("--name", default="default", help="this member's name (default: default)")
    p.add_argument("--data-dir", help="directory to create (default: <name>.raftkv)")
    p.add_argument("--initial-cluster", help="name=peer-url,... of the new cluster (default: this member alone)")
    p.add_argument("--initial-cluster-token", default=DEFAULT_TOKEN,
                   help=f"token of the new cluster (default: {DEFAULT_TOKEN})")
    p.add_argument("--initial-advertise-peer-urls", default=DEFAULT_PEER_URL,
                   help=f"this member's peer URL (default: {DEFAULT_PEER_URL})")
    p.set_defaults(func=restore)


def save(ctx: Context, args: argparse.Namespace) -> int:
    def progress(received: int, remaining: int) -> None:
        total = received + remaining
        if sys.stderr.isatty() and total:
            sys.stderr.write(f"\rdownloading snapshot: {human_bytes(received)} / {human_bytes(total)}")

    size = ctx.client.snapshot_save(args.path, progress=progress)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    write_line(f"Snapshot saved at {args.path} ({human_bytes(size)})")
    return 0


def new_member_config(args: argparse.Namespace) -> ServerConfig:
    """The flags a member of the new cluster will start with, as the server would read them: the ids it
    derives from them are the identity written into the data dir."""
    # Imported here, not at the top: every kvctl command would otherwise load the whole server at start.
    from raftkv.server.config import ServerConfig, host_port

    peer_urls = tuple(u.strip() for u in args.initial_advertise_peer_urls.split(",") if u.strip())
    cluster_items = []
    for item in (args.initial_cluster or f"{args.name}={peer_urls[0]}").split(","):
        name, sep, url = item.strip().partition("=")
        if not sep or not name or not url:
            raise CommandError(f"--initial-cluster entry {item!r} must be NAME=PEER_URL")
        cluster_items.append((name, url))
    urls = dict(cluster_items)
    if len(urls) != len(cluster_items):
        raise CommandError("--initial-cluster names a member twice")
    if args.name not in urls:
        raise CommandError(f"--initial-cluster does not include this member's --name {args.name!r}")
    if urls[args.name] not in peer_urls:
        raise CommandError(f"--initial-cluster gives {args.name}={urls[args.name]} but "
                           f"--initial-advertise-peer-urls is {','.join(peer_urls)}")
    try:
        for url in (*peer_urls, *urls.values()):
            host_port(url)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    return ServerConfig(
        name=args.name, data_dir=Path(args.data_dir or f"{args.name}.raftkv"), listen_peer_urls=peer_urls,
        advertise_peer_urls=peer_urls, listen_client_urls=(), advertise_client_urls=(),
        initial_cluster=tuple(cluster_items), initial_cluster_state="new", cluster_token=args.initial_cluster_token,
        client_tls=None, peer_tls=None)


def restore(ctx: Context, args: argparse.Namespace) -> int:
    from raftkv.server.main import initial_members  # the members a server bootstraps
    from raftkv.statemachine.restore import RestoreError, restore_snapshot

    cfg = new_member_config(args)
    try:
        revision = restore_snapshot(args.path, cfg.data_dir, cfg.cluster_id, cfg.member_id, initial_members(cfg))
    except RestoreError as exc:
        raise CommandError(str(exc)) from None
    write_line(f"Restored snapshot {args.path} into {cfg.data_dir}: member {cfg.name} ({cfg.member_id:x}) of "
               f"new cluster {cfg.cluster_id:x}, revision {revision}")
    return 0

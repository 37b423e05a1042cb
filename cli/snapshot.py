"""`kvctl snapshot save|restore`: back a cluster up into a file, and seed a new cluster from one (as etcdctl)."""

from __future__ import annotations

import argparse
import sys

from cli.common import CommandError, Context
from cli.output import human_bytes, write_line


def register(sub: argparse._SubParsersAction) -> None:
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
    # Defaults are the server's own (raftkv.main), read when restoring: every kvctl command would otherwise
    # load the whole server at start. With the same (or no) flags, `raftkv` accepts the directory.
    p.add_argument("--name", help="this member's name (default: raftkv's, 'default')")
    p.add_argument("--data-dir", help="directory to create (default: <name>.raftkv)")
    p.add_argument("--initial-cluster", help="name=peer-url,... of the new cluster (default: this member alone)")
    p.add_argument("--initial-cluster-token", help="token of the new cluster (default: raftkv's)")
    p.add_argument("--initial-advertise-peer-urls", help="this member's peer URL (default: raftkv's)")
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


def restore(ctx: Context, args: argparse.Namespace) -> int:
    from raftkv.main import DEFAULT_NAME, DEFAULT_TOKEN, ConfigError, RestoreError, default_peer_url, restore_member

    try:
        cfg, revision = restore_member(
            args.path,
            name=args.name or DEFAULT_NAME,
            data_dir=args.data_dir,
            initial_cluster=args.initial_cluster,
            token=args.initial_cluster_token or DEFAULT_TOKEN,
            advertise_peer_urls=args.initial_advertise_peer_urls or default_peer_url(),
        )
    except (ConfigError, RestoreError) as exc:
        raise CommandError(str(exc)) from None
    write_line(f"Restored snapshot {args.path} into {cfg.data_dir}: member {cfg.name} ({cfg.member_id:x}) of "
               f"new cluster {cfg.cluster_id:x}, revision {revision}")
    return 0

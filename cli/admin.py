"""Lease, member, endpoint, alarm, defrag and move-leader commands."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from cli.common import CommandError, Context
from cli.kv import parse_lease
from cli.output import human_bytes, print_json, table, to_json, write_line
from raftkv.client import ClientError, Status
from raftkv.client import routing as r
from raftkv.proto import rpc_pb2


def register(sub: argparse._SubParsersAction) -> None:
    lease = sub.add_parser("lease", help="lease grant|revoke|keep-alive|timetolive|list").add_subparsers(
        dest="lease_cmd", required=True, metavar="COMMAND")
    p = lease.add_parser("grant", help="grant a lease with a TTL in seconds")
    p.add_argument("ttl", type=int)
    p.set_defaults(func=lease_grant)
    p = lease.add_parser("revoke", help="revoke a lease (deletes its keys)")
    p.add_argument("id")
    p.set_defaults(func=lease_revoke)
    p = lease.add_parser("keep-alive", help="keep a lease alive until interrupted")
    p.add_argument("id")
    p.add_argument("--once", action="store_true", help="refresh once and exit")
    p.set_defaults(func=lease_keep_alive)
    p = lease.add_parser("timetolive", help="remaining TTL of a lease")
    p.add_argument("id")
    p.add_argument("--keys", action="store_true", help="also list the attached keys")
    p.set_defaults(func=lease_timetolive)
    lease.add_parser("list", help="list all leases").set_defaults(func=lease_list)

    member = sub.add_parser("member", help="member list|add|remove|promote").add_subparsers(
        dest="member_cmd", required=True, metavar="COMMAND")
    member.add_parser("list", help="list members").set_defaults(func=member_list)
    p = member.add_parser("add", help="announce a new member (then start it with --initial-cluster-state existing)")
    p.add_argument("name")
    p.add_argument("--peer-urls", required=True, help="comma-separated peer URLs of the new member")
    p.add_argument("--learner", action="store_true")
    p.set_defaults(func=member_add)
    for verb, func in (("remove", member_remove), ("promote", member_promote)):
        p = member.add_parser(verb, help=f"{verb} a member by ID (hex)")
        p.add_argument("id")
        p.set_defaults(func=func)

    endpoint = sub.add_parser("endpoint", help="endpoint status|health").add_subparsers(
        dest="endpoint_cmd", required=True, metavar="COMMAND")
    for verb, func in (("status", endpoint_status), ("health", endpoint_health)):
        p = endpoint.add_parser(verb, help=f"{verb} of each endpoint")
        p.add_argument("--cluster", action="store_true", help="every member's client URLs, from member list")
        p.set_defaults(func=func)

    alarm = sub.add_parser("alarm", help="alarm list|disarm").add_subparsers(
        dest="alarm_cmd", required=True, metavar="COMMAND")
    alarm.add_parser("list").set_defaults(func=alarm_list)
    alarm.add_parser("disarm").set_defaults(func=alarm_disarm)

    p = sub.add_parser("defrag", help="defragment each endpoint's backend")
    p.add_argument("--cluster", action="store_true")
    p.set_defaults(func=defrag)

    p = sub.add_parser("move-leader", help="transfer leadership to a member (ID in hex)")
    p.add_argument("id")
    p.set_defaults(func=move_leader)


def parse_id(value: str, what: str = "member ID") -> int:
    try:
        return int(value, 16)
    except ValueError:
        raise CommandError(f"bad {what} {value!r}: expected hexadecimal, as shown by `kvctl member list`") from None


# ----------------------------------------------------------------------------- leases

def lease_grant(ctx: Context, args: argparse.Namespace) -> int:
    resp = ctx.client.call(r.LEASE_GRANT, rpc_pb2.LeaseGrantRequest(TTL=args.ttl), write=True)
    if ctx.output == "json":  # etcdctl prints the Go struct, whose header is embedded (flattened)
        h = resp.header
        print_json({"cluster_id": h.cluster_id, "member_id": h.member_id, "revision": h.revision,
                    "raft_term": h.raft_term, "ID": resp.ID, "TTL": resp.TTL, "Error": resp.error})
    else:
        write_line(f"lease {resp.ID:016x} granted with TTL({resp.TTL}s)")
    return 0


def lease_revoke(ctx: Context, args: argparse.Namespace) -> int:
    lease_id = parse_lease(args.id)
    ctx.client.lease_revoke(lease_id)
    write_line(f"lease {lease_id:016x} revoked")
    return 0


def lease_keep_alive(ctx: Context, args: argparse.Namespace) -> int:
    lease_id = parse_lease(args.id)
    while True:
        ttl = ctx.client.lease_keep_alive_once(lease_id)
        write_line(f"lease {lease_id:016x} keepalived with TTL({ttl})")
        sys.stdout.flush()
        if args.once:
            return 0
        time.sleep(max(0.5, ttl / 3))


def lease_timetolive(ctx: Context, args: argparse.Namespace) -> int:
    lease_id = parse_lease(args.id)
    request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=args.keys)
    resp = ctx.client.call(r.LEASE_TTL, request, write=False)
    if ctx.output == "json":
        print_json(resp)
    elif resp.TTL == -1:
        write_line(f"lease {lease_id:016x} already expired")
    else:
        line = f"lease {lease_id:016x} granted with TTL({resp.grantedTTL}s), remaining({resp.TTL}s)"
        if args.keys:
            line += f", attached keys([{' '.join(k.decode(errors='replace') for k in resp.keys)}])"
        write_line(line)
    return 0


def lease_list(ctx: Context, args: argparse.Namespace) -> int:
    resp = ctx.client.call(r.LEASE_LEASES, rpc_pb2.LeaseLeasesRequest(), write=False)
    if ctx.output == "json":
        print_json(resp)
        return 0
    write_line(f"found {len(resp.leases)} leases")
    for lease in resp.leases:
        write_line(f"{lease.ID:016x}")
    return 0


# ----------------------------------------------------------------------------- members

def member_list(ctx: Context, args: argparse.Namespace) -> int:
    resp = ctx.client.call(r.MEMBER_LIST, rpc_pb2.MemberListRequest(), write=False, route=r.Route.ANY)
    if ctx.output == "json":
        print_json(resp)
        return 0
    rows = [[f"{m.ID:x}", "started" if m.name else "unstarted", m.name, ",".join(m.peerURLs),
             ",".join(m.clientURLs), str(m.isLearner).lower()] for m in resp.members]
    if ctx.output == "table":
        write_line(table(["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"], rows))
    else:
        for row in rows:
            write_line(", ".join(row))
    return 0


def member_add(ctx: Context, args: argparse.Namespace) -> int:
    urls = args.peer_urls.split(",")
    request = rpc_pb2.MemberAddRequest(peerURLs=urls, isLearner=args.learner)
    resp = ctx.client.call(r.MEMBER_ADD, request, write=True)
    if ctx.output == "json":
        print_json(resp)
        return 0
    write_line(f"Member {resp.member.ID:16x} added to cluster {resp.header.cluster_id:16x}")
    names = [f"{m.name or args.name}={u}" for m in resp.members for u in m.peerURLs]
    write_line("")
    write_line(f'ETCD_NAME="{args.name}"')
    write_line(f'ETCD_INITIAL_CLUSTER="{",".join(names)}"')
    write_line(f'ETCD_INITIAL_ADVERTISE_PEER_URLS="{",".join(urls)}"')
    write_line('ETCD_INITIAL_CLUSTER_STATE="existing"')
    return 0


def member_remove(ctx: Context, args: argparse.Namespace) -> int:
    member_id = parse_id(args.id)
    resp = ctx.client.call(r.MEMBER_REMOVE, rpc_pb2.MemberRemoveRequest(ID=member_id), write=True)
    write_line(f"Member {member_id:16x} removed from cluster {resp.header.cluster_id:16x}")
    return 0


def member_promote(ctx: Context, args: argparse.Namespace) -> int:
    member_id = parse_id(args.id)
    resp = ctx.client.call(r.MEMBER_PROMOTE, rpc_pb2.MemberPromoteRequest(ID=member_id), write=True)
    write_line(f"Member {member_id:16x} promoted in cluster {resp.header.cluster_id:16x}")
    return 0


# ----------------------------------------------------------------------------- endpoints

def endpoints(ctx: Context, args: argparse.Namespace) -> list[str]:
    if not getattr(args, "cluster", False):
        return ctx.client.endpoints
    return [url for m in ctx.client.member_list() for url in m.client_urls]


def endpoint_status(ctx: Context, args: argparse.Namespace) -> int:
    answers: list[tuple[str, Any]] = []
    failed: list[str] = []
    for endpoint in endpoints(ctx, args):
        try:
            answers.append((endpoint, ctx.client.call(r.STATUS, rpc_pb2.StatusRequest(), write=False,
                                                      endpoint=endpoint)))
        except ClientError as exc:
            failed.append(f"{endpoint}: {exc}")
    if ctx.output == "json":
        print_json([{"Endpoint": e, "Status": to_json(resp)} for e, resp in answers])
    statuses = [Status.from_pb(e, resp) for e, resp in answers]
    rows = [[s.endpoint, f"{s.member_id:x}", s.version, human_bytes(s.db_size), str(s.is_leader).lower(),
             str(s.is_learner).lower(), str(s.raft_term), str(s.raft_index), str(s.raft_applied_index),
             ", ".join(s.errors)] for s in statuses]
    if ctx.output == "table":
        write_line(table(["ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER", "RAFT TERM",
                          "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS"], rows))
    elif ctx.output == "simple":
        for row in rows:
            write_line(", ".join(row))
    if failed:
        raise CommandError("; ".join(failed))
    return 0


def endpoint_health(ctx: Context, args: argparse.Namespace) -> int:
    """Healthy = a linearizable read of key "health" commits within the command timeout (as etcdctl)."""
    unhealthy = 0
    results = []
    for endpoint in endpoints(ctx, args):
        start = time.monotonic()
        try:
            ctx.client.call(r.RANGE, rpc_pb2.RangeRequest(key=b"health"), write=False, endpoint=endpoint)
            took = time.monotonic() - start
            results.append({"endpoint": endpoint, "health": True, "took": f"{took * 1000:.6f}ms"})
            line = f"{endpoint} is healthy: successfully committed proposal: took = {took * 1000:.6f}ms"
        except ClientError as exc:
            unhealthy += 1
            results.append({"endpoint": endpoint, "health": False, "error": str(exc)})
            line = f"{endpoint} is unhealthy: failed to commit proposal: {exc}"
        if ctx.output != "json":
            write_line(line)
    if ctx.output == "json":
        print_json({"health": results})
    if unhealthy:
        raise CommandError("unhealthy cluster")
    return 0


# ----------------------------------------------------------------------------- maintenance

def alarm_list(ctx: Context, args: argparse.Namespace) -> int:
    for alarm in ctx.client.alarms():
        write_line(f"memberID:{alarm.member_id} alarm:{alarm.alarm}")
    return 0


def alarm_disarm(ctx: Context, args: argparse.Namespace) -> int:
    for alarm in ctx.client.alarm_disarm():
        write_line(f"memberID:{alarm.member_id} alarm:{alarm.alarm}")
    return 0


def defrag(ctx: Context, args: argparse.Namespace) -> int:
    for endpoint in endpoints(ctx, args):
        ctx.client.defragment(endpoint, timeout=max(ctx.timeout, 60.0))
        write_line(f"Finished defragmenting etcd member[{endpoint}]")
    return 0


def move_leader(ctx: Context, args: argparse.Namespace) -> int:
    target = parse_id(args.id)
    leader = next((s for e in ctx.client.endpoints if (s := _status_or_none(ctx, e)) and s.is_leader), None)
    if leader is None:
        raise CommandError("no leader found among the endpoints; pass the leader's URL in --endpoints")
    ctx.client.call(r.MOVE_LEADER, rpc_pb2.MoveLeaderRequest(targetID=target), write=False,
                    endpoint=leader.endpoint)
    write_line(f"Leadership transferred from {leader.member_id:x} to {target:x}")
    return 0


def _status_or_none(ctx: Context, endpoint: str) -> Status | None:
    try:
        return ctx.client.status(endpoint)
    except ClientError:
        return None


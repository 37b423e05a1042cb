"""Key-value commands: put, get, del, txn, watch, compaction (etcdctl's syntax and simple output)."""

from __future__ import annotations

import argparse
import re
import shlex
import sys

from cli.common import CommandError, Context
from cli.output import print_json, print_kv, text, to_json, write_line
from raftkv.client import ops
from raftkv.client import routing as r
from raftkv.proto import rpc_pb2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("put", help="put a key")
    p.add_argument("key")
    p.add_argument("value", nargs="?", help="the value (read from stdin if omitted)")
    p.add_argument("--lease", default="0", help="lease ID (hex) to attach")
    p.add_argument("--prev-kv", action="store_true", help="print the previous key-value")
    p.set_defaults(func=put)

    p = sub.add_parser("get", help="get a key or a range of keys")
    p.add_argument("key")
    p.add_argument("range_end", nargs="?")
    p.add_argument("--prefix", action="store_true")
    p.add_argument("--from-key", action="store_true", help="every key >= key")
    p.add_argument("--rev", type=int, default=0, help="read at this revision")
    p.add_argument("--consistency", choices=("l", "s"), default="l", help="l: linearizable, s: serializable")
    p.add_argument("--keys-only", action="store_true")
    p.add_argument("--count-only", action="store_true")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--order", choices=("ASCEND", "DESCEND"), type=str.upper)
    p.add_argument("--sort-by", choices=("CREATE", "KEY", "MODIFY", "VALUE", "VERSION"), type=str.upper)
    p.add_argument("--print-value-only", action="store_true")
    p.set_defaults(func=get)

    p = sub.add_parser("del", help="delete a key or a range of keys")
    p.add_argument("key")
    p.add_argument("range_end", nargs="?")
    p.add_argument("--prefix", action="store_true")
    p.add_argument("--from-key", action="store_true")
    p.add_argument("--prev-kv", action="store_true")
    p.set_defaults(func=delete)

    p = sub.add_parser("txn", help="a transaction read from stdin (etcdctl's format)")
    p.add_argument("-i", "--interactive", action="store_true", help="prompt for each part")
    p.set_defaults(func=txn)

    p = sub.add_parser("watch", help="print events on a key or prefix until interrupted")
    p.add_argument("key")
    p.add_argument("range_end", nargs="?")
    p.add_argument("--prefix", action="store_true")
    p.add_argument("--rev", type=int, default=0, help="start from this revision")
    p.add_argument("--prev-kv", action="store_true")
    p.set_defaults(func=watch)

    p = sub.add_parser("compaction", help="discard history before a revision")
    p.add_argument("revision", type=int)
    p.add_argument("--physical", action="store_true")
    p.set_defaults(func=compaction)


def parse_lease(value: str) -> int:
    try:
        return int(value, 16)
    except ValueError:
        raise CommandError(f"bad lease ID {value!r}: expected hexadecimal, as printed by `kvctl lease grant`") from None


def put(ctx: Context, args: argparse.Namespace) -> int:
    value = args.value if args.value is not None else sys.stdin.read()
    request = ops.put_request(args.key, value, lease=parse_lease(args.lease), prev_kv=args.prev_kv)
    resp = ctx.client.call(r.PUT, request, write=True)
    if ctx.output == "json":
        print_json(resp)
        return 0
    write_line("OK")
    if args.prev_kv and resp.HasField("prev_kv"):
        print_kv(resp.prev_kv)
    return 0


_SORT_TARGETS = {"CREATE": "create", "KEY": "key", "MODIFY": "mod", "VALUE": "value", "VERSION": "version"}


def range_request(args: argparse.Namespace) -> rpc_pb2.RangeRequest:
    order = args.order or ("ASCEND" if args.sort_by else "NONE")
    return ops.range_request(
        args.key, args.range_end, prefix=args.prefix, from_key=args.from_key, revision=args.rev,
        serializable=args.consistency == "s", keys_only=args.keys_only, count_only=args.count_only,
        limit=args.limit, sort_order=order.lower(), sort_target=_SORT_TARGETS[args.sort_by or "KEY"],
    )


def get(ctx: Context, args: argparse.Namespace) -> int:
    resp = ctx.client.call(r.RANGE, range_request(args), write=False,
                                route=r.Route.ANY if args.consistency == "s" else r.Route.LEADER)
    if ctx.output == "json":
        print_json(resp)
    elif args.count_only:
        write_line(str(resp.count))
    else:
        for kv in resp.kvs:
            print_kv(kv, keys_only=args.keys_only, value_only=args.print_value_only)
    return 0


def delete(ctx: Context, args: argparse.Namespace) -> int:
    request = ops.delete_request(args.key, args.range_end, prefix=args.prefix, from_key=args.from_key,
                                 prev_kv=args.prev_kv)
    resp = ctx.client.call(r.DELETE_RANGE, request, write=True)
    if ctx.output == "json":
        print_json(resp)
        return 0
    write_line(str(resp.deleted))
    for kv in resp.prev_kvs:
        print_kv(kv)
    return 0


# ----------------------------------------------------------------------------- txn

_COMPARE = re.compile(r'^\s*(value|mod|create|version|lease|val|m|c|ver)\("(.*)"\)\s*(=|!=|<|>)\s*"?(.*?)"?\s*$')
_TARGETS = {"value": ops.value, "val": ops.value, "mod": ops.mod_revision, "m": ops.mod_revision,
            "create": ops.create_revision, "c": ops.create_revision, "version": ops.version,
            "ver": ops.version, "lease": ops.lease}


def parse_compare(line: str) -> ops.Compare:
    """``value("k") = "v"``, ``mod("k") > "5"``, ... as etcdctl txn accepts them."""
    match = _COMPARE.match(line)
    if not match:
        raise CommandError(f'bad compare {line!r}; expected e.g. value("key") = "v" or mod("key") > "5"')
    target, key, operator, operand = match.groups()
    compare_target = _TARGETS[target](key)
    numeric = target not in ("value", "val")
    if numeric and target == "lease":
        operand_value: object = parse_lease(operand)
    elif numeric:
        try:
            operand_value = int(operand)
        except ValueError:
            raise CommandError(f"bad compare {line!r}: {target} needs a number") from None
    else:
        operand_value = operand
    result: ops.Compare = {"=": compare_target == operand_value, "!=": compare_target != operand_value,
                           "<": compare_target < operand_value, ">": compare_target > operand_value}[operator]
    return result


def parse_request_op(line: str) -> ops.Op:
    """``put k v``, ``get k [range_end] [--prefix]``, ``del k [--prefix]``."""
    words = shlex.split(line)
    if not words:
        raise CommandError("empty operation")
    verb, rest = words[0], words[1:]
    flags = {w for w in rest if w.startswith("--")}
    plain = [w for w in rest if not w.startswith("--")]
    prefix = "--prefix" in flags
    if verb == "put" and len(plain) == 2:
        return ops.put(plain[0], plain[1])
    if verb == "get" and plain:
        return ops.get(plain[0], plain[1] if len(plain) > 1 else None, prefix=prefix)
    if verb in ("del", "delete") and plain:
        return ops.delete(plain[0], plain[1] if len(plain) > 1 else None, prefix=prefix)
    raise CommandError(f"bad operation {line!r}; expected put KEY VALUE, get KEY, or del KEY")


def _read_section(prompt: str, interactive: bool) -> list[str]:
    if interactive:
        write_line(prompt)
    lines: list[str] = []
    for raw in sys.stdin:
        line = raw.rstrip("\n")
        if not line.strip():
            break
        lines.append(line)
    return lines


def txn(ctx: Context, args: argparse.Namespace) -> int:
    compares = [parse_compare(line) for line in _read_section("compares:", args.interactive)]
    success = [parse_request_op(line) for line in
               _read_section("success requests (get, put, del):", args.interactive)]
    failure = [parse_request_op(line) for line in
               _read_section("failure requests (get, put, del):", args.interactive)]
    builder = ops.TxnBuilder().if_(*compares).then(*success).else_(*failure)
    resp = ctx.client.call(r.TXN, builder.request(), write=not builder.is_read_only)
    if ctx.output == "json":
        print_json(resp)
        return 0
    write_line("SUCCESS" if resp.succeeded else "FAILURE")
    for op in resp.responses:
        write_line("")
        kind = op.WhichOneof("response")
        if kind == "response_put":
            write_line("OK")
        elif kind == "response_delete_range":
            write_line(str(op.response_delete_range.deleted))
        elif kind == "response_range":
            for kv in op.response_range.kvs:
                print_kv(kv)
    return 0


# ----------------------------------------------------------------------------- watch, compaction

def watch(ctx: Context, args: argparse.Namespace) -> int:
    """Events until interrupted. ``-w json`` prints each server response as one line, in the shape of Go's
    encoding of clientv3's ``WatchResponse`` (what ``etcdctl watch -w json`` prints)."""
    with ctx.client.watch(args.key, args.range_end, prefix=args.prefix, start_revision=args.rev,
                          prev_kv=args.prev_kv) as watcher:
        if ctx.output == "json":
            for resp in watcher.responses():
                print_json({"Header": to_json(resp.header), "Events": [to_json(e) for e in resp.events],
                            "CompactRevision": resp.compact_revision, "Canceled": resp.canceled,
                            "Created": resp.created})
                sys.stdout.flush()
            return 0
        for event in watcher:
            write_line(event.type.value)
            if event.prev_kv is not None:
                write_line(text(event.prev_kv.key))
                write_line(text(event.prev_kv.value))
            write_line(text(event.kv.key))
            write_line(text(event.kv.value))
            sys.stdout.flush()
    return 0


def compaction(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.compact(args.revision, physical=args.physical)
    write_line(f"compacted revision {args.revision}")
    return 0

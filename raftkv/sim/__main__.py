"""Command line: ``python -m raftkv.sim soak|replay|bench``."""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time

from raftkv.core.config import KNOWN_BUGS
from raftkv.sim.bench import bench
from raftkv.sim.cluster import DISK_BUGS, NODE_BUGS, UNIT, SimOptions
from raftkv.sim.leadership import MILESTONES, AuditStats
from raftkv.sim.run import RunResult, run_schedule
from raftkv.sim.schedule import PROFILES, generate


def _options(args: argparse.Namespace, keep_trace: int) -> SimOptions:
    return SimOptions(frozenset(args.core_bug), args.planted_bug, keep_trace, args.lease_reads)


def _replay_command(seed: int, profile: str, args: argparse.Namespace) -> str:
    bugs = "".join(f" --core-bug {b}" for b in args.core_bug)
    if args.planted_bug:
        bugs += f" --planted-bug {args.planted_bug}"
    if args.lease_reads:
        bugs += " --lease-reads"
    return f"python -m raftkv.sim replay --seed {seed} --profile {profile}{bugs}"


def _soak(args: argparse.Namespace) -> int:
    profiles = [args.profile] if args.profile else list(PROFILES)
    events = 0
    totals = {"gone_reports": 0, "false_reports": 0, "extra_changes": 0}
    audit = AuditStats()
    started, cpu_started = time.monotonic(), time.process_time()
    for i in range(args.schedules):
        seed = args.seed + i
        profile = profiles[i % len(profiles)]
        res = run_schedule(generate(seed, profile), _options(args, 0))
        events += res.events
        for k in totals:
            totals[k] += res.stats[k]
        audit.extra += res.audit.extra
        audit.first_commits += res.audit.first_commits
        audit.failovers += res.audit.failovers
        if not res.ok:
            print(f"[{i + 1}/{args.schedules}] {profile} {res.summary()}\n  {res.error}")
            print(f"replay: {_replay_command(seed, profile, args)}")
            return 1
        if (i + 1) % args.every == 0 or i + 1 == args.schedules:
            print(f"[{i + 1}/{args.schedules}] {profile} {res.summary()}", flush=True)
    minutes, cpu_minutes = (time.monotonic() - started) / 60, (time.process_time() - cpu_started) / 60
    print(
        f"{args.schedules} schedules passed ({events} loop steps): {args.schedules / minutes:.0f} schedules per "
        f"minute, {args.schedules / cpu_minutes:.0f} per CPU minute (one core)"
    )
    print(
        f"leadership: {totals['gone_reports']} 'peer gone' reports delivered; {totals['false_reports']} false "
        f"ones reached a follower of a leader a quorum heard; leader changes while a quorum heard the leader: "
        f"{totals['extra_changes']} (a violation in failover schedules)"
    )
    _print_failovers(audit)
    return 0


def _percentiles(units: list[float]) -> str:
    ms = sorted(u * UNIT * 1000 for u in units)
    if not ms:
        return f"{'-':>21s}   "
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    return f"{statistics.median(ms):7.0f}{p90:7.0f}{ms[-1]:7.0f}   "


def _print_failovers(audit: AuditStats) -> None:
    """Simulated milliseconds (election timeout 1000-2000, heartbeat 100) from a leader fault to each
    milestone: a new leader, its first entry committed, a client's linearizable read, a lease renewal."""
    if audit.first_commits:
        print(
            f"every new leader, election to its first entry committed (simulated ms, median p90 max, "
            f"n={len(audit.first_commits)}): {_percentiles(audit.first_commits).rstrip()}"
        )
    kinds = sorted({f.kind for f in audit.failovers})
    if not kinds:
        return
    print("failover: simulated ms from the leader fault to each milestone (median p90 max)")
    print((f"  {'':23s}" + "".join(f"{m:>21s}   " for m in MILESTONES)).rstrip())
    for kind in kinds:
        seen = [f for f in audit.failovers if f.kind == kind]
        row = "".join(_percentiles([t for f in seen if (t := getattr(f, m)) is not None]) for m in MILESTONES)
        print(f"  {kind:16s} n={len(seen):4d}{row}".rstrip())


def _print_result(res: RunResult) -> None:
    print(res.summary())
    print(f"trace sha256: {res.trace_hash}")
    if not res.ok:
        print("last events:")
        for line in res.recent:
            print(f"  {line}")
        print(res.error)


def _replay(args: argparse.Namespace) -> int:
    schedule = generate(args.seed, args.profile or PROFILES[0])
    if args.show_schedule:
        print(schedule)
    res = run_schedule(schedule, _options(args, args.trace))
    _print_result(res)
    return 0 if res.ok else 1


def _bench(args: argparse.Namespace) -> int:
    r = bench(args.entries, args.batch, args.size)
    print(
        f"3 nodes, free network, {r['entries']} entries of {args.size} B in batches of {args.batch}: "
        f"{r['entries_per_s']:.0f} entries/s, {r['readies_per_s']:.0f} Ready iterations/s ({r['seconds']:.2f} s)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raftkv.sim", description="raftkv deterministic simulator")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("soak", "replay"):
        s = sub.add_parser(name)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--profile", choices=PROFILES, default=None, help="soak: cycle through all when omitted")
        s.add_argument("--core-bug", action="append", default=[], choices=sorted(KNOWN_BUGS),
                       help="plant a bug in the Raft core (checker self-test)")
        s.add_argument("--lease-reads", action="store_true",
                       help="members serve linearizable reads under the leader lease "
                       "(--experimental-leader-lease-reads)")
        s.add_argument("--planted-bug", choices=NODE_BUGS + DISK_BUGS, default=None,
                       help="plant a bug in the node or beneath it, in its disk (checker self-test)")
    sub.choices["soak"].add_argument("--schedules", type=int, default=100)
    sub.choices["soak"].add_argument("--every", type=int, default=10, help="print progress every N schedules")
    sub.choices["replay"].add_argument("--trace", type=int, default=40, help="trace lines to print on failure")
    sub.choices["replay"].add_argument("--show-schedule", action="store_true")
    b = sub.add_parser("bench")
    b.add_argument("--entries", type=int, default=20000)
    b.add_argument("--batch", type=int, default=64)
    b.add_argument("--size", type=int, default=100)
    args = p.parse_args(argv)
    # The members log as production members do; a run's verdict and trace say what matters here.
    logging.getLogger("raftkv").setLevel(logging.CRITICAL)
    return {"soak": _soak, "replay": _replay, "bench": _bench}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())

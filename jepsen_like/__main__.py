"""Command line: ``python -m jepsen_like run ...``, ``python -m jepsen_like check DIR`` and
``python -m jepsen_like failover ...`` (the failover benchmark, ``jepsen_like/failover.py``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jepsen_like.checkers import check_all, verdict
from jepsen_like.history import read_events
from jepsen_like.report import write_gaps, write_report
from jepsen_like.runner import HISTORY, RunConfig, run
from jepsen_like.topology import NETS


def check_dir(out: Path, time_limit: float = 60.0) -> bool:
    """Check ``out/history.jsonl``; writes ``results.json`` and ``report.html``; True if valid."""
    events = read_events(out / HISTORY)
    results = check_all(events, time_limit=time_limit)
    (out / "results.json").write_text(json.dumps([r.to_dict() for r in results], indent=1, default=str))
    write_report(out / "report.html", events, results)
    for r in results:
        status = {True: "ok", False: "ANOMALY", None: "unknown"}[r.valid]
        print(f"{r.name:14s} {status:8s} {len(r.anomalies)} anomalies  {json.dumps(r.stats, default=str)}")
        for a in r.anomalies[:3]:
            print(f"    {a.kind}: {a.message}")
    for detail, gap in write_gaps(events):
        print(f"{'write gap':14s} {'-' if gap is None else f'{1000 * gap:,.0f} ms':>8s}  {detail}")
    ok = verdict(results)
    print(f"{'VALID' if ok else 'INVALID'}: {out / 'report.html'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["failover"]:
        from jepsen_like import failover

        return failover.main(argv[1:])
    p = argparse.ArgumentParser(prog="jepsen_like", description="Fault-injection tests for raftkv and etcd.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a test, then check it")
    r.add_argument("--workload", choices=["register", "watch", "lease", "all"], default="register")
    r.add_argument("--nemesis", default="partition", help="comma-separated faults, or 'none'")
    r.add_argument("--time", type=float, default=30.0, help="seconds of traffic")
    r.add_argument("--clients", type=int, default=10)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--target", choices=["raftkv", "etcd"], default="raftkv")
    r.add_argument("--net", choices=NETS, default="proxy",
                   help="proxy: userspace proxies on 127.0.0.1; netns: a namespace per member, nftables (root)")
    r.add_argument("--nodes", type=int, default=3)
    r.add_argument("--planted-bug", default=None)
    c = sub.add_parser("check", help="check a finished run's directory")
    c.add_argument("dir", type=Path)
    c.add_argument("--time-limit", type=float, default=60.0)
    sub.add_parser("failover", help="benchmark: time to the first acknowledged write after a leader fault "
                   "(see python -m jepsen_like failover --help)")
    args = p.parse_args(argv)
    if args.cmd == "run":
        faults = [] if args.nemesis == "none" else [f for f in args.nemesis.split(",") if f]
        cfg = RunConfig(workload=args.workload, nemesis=faults, time_s=args.time, clients=args.clients,
                        seed=args.seed, target=args.target, net=args.net, nodes=args.nodes,
                        planted_bug=args.planted_bug)
        run(cfg, args.out)
        return 0 if check_dir(args.out) else 1
    return 0 if check_dir(args.dir, args.time_limit) else 1


if __name__ == "__main__":
    sys.exit(main())

"""``python -m raftkv.discovery.chaos --time S --out DIR``: see the package docstring."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from raftkv.discovery.chaos.run import Options, execute


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raftkv.discovery.chaos",
                                description="raftkv.discovery, xDS, HAProxy and Nginx under the same load and faults")
    p.add_argument("--time", type=float, default=120.0, help="seconds of chaos (default 120)")
    p.add_argument("--out", type=Path, required=True, help="directory for result.json and report.html")
    p.add_argument("--rate", type=float, default=500.0, help="calls per second per target (default 500)")
    p.add_argument("--work", type=int, default=200, help="SHA-256 rounds per call on the instances (default 200)")
    p.add_argument("--calibrate", type=float, default=10.0,
                   help="seconds of calm load to compare the balanced channel's CPU per call with a plain "
                        "channel's (default 10; 0 skips)")
    p.add_argument("--deadline", type=float, default=2.0, help="deadline of each call in seconds (default 2)")
    p.add_argument("--concurrent", action="store_true",
                   help="load all four targets at once (needs the cores for 4x the rate; default: one after "
                        "the other, each under the same nemesis plan)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if args.time < 1 or args.rate <= 0:
        p.error("--time must be at least 1 s and --rate positive")
    print(f"chaos: {args.time:g} s at {args.rate:g} calls/s per target; results in {args.out}", file=sys.stderr)
    result = execute(Options(duration=args.time, out=args.out, rate=args.rate, work=args.work,
                             calibrate=args.calibrate, deadline=args.deadline,
                             concurrent=args.concurrent))
    rows = [(name, t.get("calls"), t.get("success_rate"), t.get("p50_ms"), t.get("p99_ms"))
            for name, t in result["targets"].items()]
    print(f"{'target':8} {'calls':>7} {'success':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, calls, rate, p50, p99 in rows:
        print(f"{name:8} {calls:>7} {rate:>9} {p50!s:>8} {p99!s:>8}")
    for floor, verdict in result["floors"].items():
        print(f"{floor}: {json.dumps(verdict['figure'])} -> {verdict['met']}")
    for error in result["errors"]:
        print(f"problem: {error}", file=sys.stderr)
    print(f"report: {args.out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU per call of the balanced channel against a plain grpc channel, in one run:
``python -m raftkv.discovery.bench [--calls N] [--policy p2c] [--mode blocking|future]``.

Starts a raftkv cluster and three demo instances (subprocesses, so their CPU is not counted), registers
them, then makes the same unary calls (sequential blocking calls, or ``future()`` calls with callbacks,
as the chaos load generator makes them), round after round so that machine load hits all alike,
through: a plain ``grpc.insecure_channel`` to one instance; a plain channel with grpc's own ``round_robin``
over the three (``ipv4:a,b,c``); ``discovery.channel`` over one registered instance; and over all three.
Prints client CPU microseconds per call (user + system of this process) and two like-for-like ratios: one
instance against one instance, three against three. (Spreading calls over three connections costs more
CPU per call than using one, for grpc's own balancer too; comparing three against one would charge that to
the balancer.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from raftkv import discovery
from raftkv.discovery.demo import ECHO
from raftkv.testing import running_cluster


def cpu_per_call(call: Callable[[bytes], object], calls: int) -> float:
    """Sequential blocking calls."""
    payload = b"x" * 100
    for _ in range(50):
        call(payload)
    start = time.process_time()
    for _ in range(calls):
        call(payload)
    return (time.process_time() - start) / calls * 1e6


def cpu_per_future(start_call: Callable[[bytes], Any], calls: int, window: int = 8) -> float:
    """``future()`` calls finished by completion callbacks, ``window`` in flight: the chaos load generator's
    way of calling (its open loop at a fixed rate has a few calls in flight too)."""

    def batch(count: int) -> None:
        slots = threading.Semaphore(window)
        finished = threading.Semaphore(0)

        def done(future: Any) -> None:
            future.result()
            slots.release()
            finished.release()

        for _ in range(count):
            slots.acquire()
            start_call(payload).add_done_callback(done)
        for _ in range(count):
            finished.acquire()

    payload = b"x" * 100
    batch(50)
    start = time.process_time()
    batch(calls)
    return (time.process_time() - start) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raftkv.discovery.bench", description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--policy", default="p2c")
    p.add_argument("--mode", choices=("blocking", "future"), default="blocking",
                   help="sequential blocking calls, or future() calls with callbacks, 8 in flight "
                        "(the chaos load generator's way; default blocking)")
    args = p.parse_args(argv)
    with running_cluster() as cluster:
        env = {**os.environ, **cluster.env()}
        procs = [subprocess.Popen([sys.executable, "-m", "raftkv.discovery.demo", "--register", "bench",
                                   "--name", f"b{n}"], stdout=subprocess.PIPE, text=True, env=env)
                 for n in range(3)]
        try:
            addrs = [proc.stdout.readline().split()[1] for proc in procs]  # type: ignore[union-attr]
            round_robin = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
            with cluster.client() as client, \
                    discovery.register("bench-one", addrs[0], client=client), \
                    grpc.insecure_channel(addrs[0]) as plain, \
                    grpc.insecure_channel("ipv4:" + ",".join(addrs),
                                          options=[("grpc.service_config", round_robin)]) as plain_rr, \
                    discovery.channel("bench-one", policy=args.policy, client=client) as one, \
                    discovery.channel("bench", policy=args.policy, client=client) as three:
                one.wait_for_instances(1)
                three.wait_for_instances(3)
                targets = {"plain grpc channel, 1 instance": plain, "plain grpc round_robin, 3 instances": plain_rr,
                           f"discovery.channel {args.policy}, 1 instance": one,
                           f"discovery.channel {args.policy}, 3 instances": three}
                calls = {name: ch.unary_unary(ECHO) for name, ch in targets.items()}
                samples: dict[str, list[float]] = {name: [] for name in targets}
                for _ in range(args.rounds):
                    for name, call in calls.items():
                        def one_future(b: bytes, c: Any = call) -> Any:
                            return c.future(b, timeout=5)

                        def one_call(b: bytes, c: Any = call) -> Any:
                            return c(b, timeout=5)

                        if args.mode == "future":
                            samples[name].append(cpu_per_future(one_future, args.calls))
                        else:
                            samples[name].append(cpu_per_call(one_call, args.calls))
            med = {name: statistics.median(values) for name, values in samples.items()}
            print(f"client CPU per unary call, {args.mode} (median of {args.rounds} rounds of {args.calls} calls, "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
            for name, value in med.items():
                print(f"  {name:<42} {value:8.1f} us")
            names = list(med)
            print(f"  ratio, 1 instance:  discovery / plain       {med[names[2]] / med[names[0]]:8.3f}")
            print(f"  ratio, 3 instances: discovery / round_robin {med[names[3]] / med[names[1]]:8.3f}")
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait()
                if proc.stdout:
                    proc.stdout.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

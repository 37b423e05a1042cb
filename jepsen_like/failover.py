"""Failover benchmark: how long writes stop when the leader's process dies, freezes or is cut off.

``python -m jepsen_like failover`` starts a three-member etcd cluster and then a raftkv one (same machine,
same run, same timing: heartbeat 100 ms, election timeout 1 s), writes through ``raftkv.client`` (a put
started every ``--interval-ms``, each retried within its own deadline), and for each fault and round:
waits until writes flow and every member has caught up, hits the leader, and measures

* first ack: the time from the fault to the acknowledgement of the first put started after it;
* write gap: the longest time without any acknowledged put, from the last one before the fault until
  ``SETTLE_S`` after that first ack (the outage as a client sees it).

Faults:

* ``kill``      SIGKILL: the process is gone and its kernel says so (connections closed, port refused);
* ``pause``     SIGSTOP: a hung process, silent, its sockets still open;
* ``partition`` the leader's machine drops off the network: cut from the other members and from the
  clients, silently.

The figures are a client's view, so they include the client's own reaction: against a silent leader an
attempt waits ``--attempt-timeout`` before the plan asks the other members. A benchmark, not a test: on a
loaded machine the numbers move, which is why each fault runs several rounds and medians are compared
within one run. Member logs and a JSON of every round are kept in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from jepsen_like.nemesis import cut, netns
from jepsen_like.nemesis.proxy import Network
from jepsen_like.topology import NETS, Topology, build
from raftkv.client import AsyncClient
from raftkv.client.config import ClientConfig
from raftkv.localcluster import Kind

FAULTS = ("kill", "pause", "partition")
TARGETS: tuple[Kind, ...] = ("etcd", "raftkv")
#: Longest a round waits for the first acknowledged put after its fault.
RECOVERY_LIMIT_S = 20.0
#: How long after the first acknowledgement the write gap is still looked for (a leader acknowledging a
#: put or two just before it notices it is cut off must not hide the outage that follows).
SETTLE_S = 2.0


@dataclass(frozen=True)
class Round:
    target: str
    fault: str
    round: int
    leader: str
    #: Seconds from the fault to the ack of the first put started after it (None: none within the limit).
    first_ack_s: float | None
    #: Longest stretch without any acknowledged put around the fault.
    gap_s: float | None
    new_leader: str | None


class Writer:
    """Puts started every ``interval`` on a private event loop; remembers when each started and finished."""

    def __init__(self, config: ClientConfig, dedupes: bool, interval: float, attempt_timeout: float) -> None:
        self._config, self._dedupes = config, dedupes
        self._interval, self._attempt_timeout = interval, attempt_timeout
        self._lock = threading.Lock()
        self._acked: list[tuple[float, float]] = []  # (started, acknowledged)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="failover-writer", daemon=True)
        self._task: concurrent.futures.Future[None] | None = None

    def __enter__(self) -> Writer:
        self._thread.start()
        self._task = asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._loop.call_soon_threadsafe(self._task.cancel)
        with contextlib.suppress(BaseException):
            self._task.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _run(self) -> None:
        client = AsyncClient(config=self._config, timeout=RECOVERY_LIMIT_S, server_dedupes=self._dedupes,
                             attempt_timeout=self._attempt_timeout)
        tasks: set[asyncio.Task[None]] = set()
        try:
            for i in itertools.count():
                task = asyncio.create_task(self._put(client, i))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                await asyncio.sleep(self._interval)
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()

    async def _put(self, client: AsyncClient, i: int) -> None:
        started = time.monotonic()
        try:
            await client.put(f"failover/{i % 1000}", str(i))
        except Exception:  # noqa: BLE001 - a failed put is simply not acknowledged
            return
        with self._lock:
            self._acked.append((started, time.monotonic()))

    def acks_since(self, since: float) -> list[tuple[float, float]]:
        with self._lock:
            return [a for a in self._acked if a[1] >= since]

    def first_ack_after(self, fault_at: float, limit: float) -> float | None:
        """Seconds from ``fault_at`` to the ack of the first put started at or after it."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            acked = [done for started, done in self.acks_since(fault_at) if started >= fault_at]
            if acked:
                return min(acked) - fault_at
            time.sleep(0.005)
        return None

    def longest_gap(self, since: float, until: float) -> float | None:
        """Longest time between consecutive acknowledgements in [since, until]."""
        times = sorted(done for _, done in self.acks_since(since) if done <= until)
        if len(times) < 2:
            return None
        return max(b - a for a, b in itertools.pairwise(times))


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def _steady(topo: Topology, writer: Writer) -> str:
    """Until every member runs and has caught up with the leader and puts are acknowledged; the leader."""
    cluster = topo.cluster
    cluster.wait_ready(timeout=60, all_members=True)

    def caught_up() -> bool:
        revisions = [s.header.revision if (s := cluster.status(n)) is not None else -1 for n in cluster.names]
        return min(revisions) >= 0 and max(revisions) - min(revisions) <= 100

    _wait(caught_up, 60, "every member to catch up")
    since = time.monotonic()
    _wait(lambda: len(writer.acks_since(since)) >= 10, 60, "puts to be acknowledged")
    time.sleep(1.0)  # a full election timeout of calm: leases and leadership settled
    leader = cluster.leader_name()
    if leader is None:
        raise RuntimeError("no leader in a steady cluster")
    return leader


def _inject(topo: Topology, fault: str, leader: str) -> float:
    """Strike ``leader``; returns when the fault took effect. A signal does at once (``kill_member`` then
    waits for the process to be reaped); a partition only once every member's firewall has its rules,
    which takes a while under load, while writes still flow."""
    cluster = topo.cluster
    struck = time.monotonic()
    if fault == "kill":
        cluster.kill_member(leader)
    elif fault == "pause":
        cluster.pause_member(leader)
    else:
        assert topo.net is not None
        others = [n for n in cluster.names if n != leader]
        topo.net.set_links(cut([[leader], others], cluster.names), clients_cut=[leader])
        struck = time.monotonic()
    return struck


def _recover(topo: Topology, fault: str, leader: str) -> None:
    if fault == "kill":
        topo.cluster.start_member(leader)
    elif fault == "pause":
        topo.cluster.resume_member(leader)
    else:
        assert topo.net is not None
        topo.net.heal()


@contextlib.contextmanager
def _cluster(kind: Kind, net: str, base: Path) -> Iterator[Topology]:
    topo = build(base, target=kind, net=net, nodes=3, seed=0, extra_args=[])
    try:
        topo.cluster.start()
        topo.cluster.wait_ready(timeout=60, all_members=True)
        if isinstance(topo.net, Network) and kind == "etcd":
            topo.net.identify({format(topo.cluster.member_id(n) or 0, "x"): n for n in topo.cluster.names})
            topo.cluster.wait_ready(timeout=60, all_members=True)
        yield topo
    finally:
        try:
            topo.cluster.stop()
        finally:
            if topo.net is not None:
                topo.net.close()


def _client_config(topo: Topology) -> ClientConfig:
    endpoints = list(topo.client_targets.values())
    if not topo.cluster.tls:
        return ClientConfig(endpoints=tuple(endpoints), insecure=True)
    return topo.cluster.client_config([f"https://{e}" for e in endpoints])


def measure(kind: Kind, args: argparse.Namespace, base: Path) -> list[Round]:
    rounds: list[Round] = []
    with _cluster(kind, args.net, base / kind) as topo:
        with Writer(_client_config(topo), dedupes=kind == "raftkv", interval=args.interval_ms / 1000,
                    attempt_timeout=args.attempt_timeout) as writer:
            for fault in args.faults:
                for i in range(1, args.rounds + 1):
                    leader = _steady(topo, writer)
                    try:
                        fault_at = _inject(topo, fault, leader)
                        first = writer.first_ack_after(fault_at, RECOVERY_LIMIT_S)
                        time.sleep(SETTLE_S)
                        gap = writer.longest_gap(fault_at - 1.0, time.monotonic())
                        new_leader = topo.cluster.leader_name()
                    finally:
                        _recover(topo, fault, leader)
                    result = Round(kind, fault, i, leader, first, gap, new_leader)
                    rounds.append(result)
                    print(f"  {kind:<6} {fault:<9} round {i}: leader {leader} -> {new_leader}; first ack "
                          f"{_ms(first)}, write gap {_ms(gap)}", flush=True)
    return rounds


def _ms(seconds: float | None) -> str:
    return "none" if seconds is None else f"{1000 * seconds:,.0f} ms"


def _median_ms(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    missing = len(values) - len(known)
    if not known:
        return "none"
    text = f"{1000 * statistics.median(known):,.0f} ({1000 * min(known):,.0f}-{1000 * max(known):,.0f})"
    return text + (f" +{missing} none" if missing else "")


def table(rounds: Sequence[Round], faults: Sequence[str], targets: Sequence[str], what: str) -> str:
    """Median (min-max) milliseconds of ``what`` (``first_ack_s`` or ``gap_s``) per fault and target."""
    both = list(targets) == list(TARGETS)
    lines = [f"{'fault':<10}" + "".join(f"{t + ' ms, median (min-max)':>34}" for t in targets)
             + ("   raftkv/etcd" if both else "")]
    for fault in faults:
        by = {t: [getattr(r, what) for r in rounds if r.fault == fault and r.target == t] for t in targets}
        line = f"{fault:<10}" + "".join(f"{_median_ms(by[t]):>34}" for t in targets)
        medians = [statistics.median(known) for t in targets if (known := [v for v in by[t] if v is not None])]
        if both and len(medians) == 2:
            line += f"   {medians[1] / medians[0]:>11.2f}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jepsen_like failover", description=__doc__.splitlines()[0])
    p.add_argument("--target", choices=["both", *TARGETS], default="both")
    p.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated subset of {','.join(FAULTS)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--net", choices=NETS, default="netns" if netns.available() is None else "proxy",
                   help="netns (root; kernel-level drops, mutual TLS) or proxy (userspace, plaintext)")
    p.add_argument("--interval-ms", type=float, default=20.0, help="a new put every this many ms (default 20)")
    p.add_argument("--attempt-timeout", type=float, default=0.5,
                   help="seconds one attempt waits for a silent member before the client asks another")
    p.add_argument("--out", type=Path, help="keep member logs and rounds.json here (default: temporary)")
    args = p.parse_args(argv)
    args.faults = [f for f in args.faults.split(",") if f]
    if unknown := set(args.faults) - set(FAULTS):
        p.error(f"unknown faults {sorted(unknown)}")
    targets: list[Kind] = list(TARGETS) if args.target == "both" else [args.target]
    if "etcd" in targets and shutil.which("etcd") is None:
        p.error("etcd is not installed (/usr/bin/etcd)")
    base = args.out or Path(tempfile.mkdtemp(prefix="raftkv-failover-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"failover: {', '.join(args.faults)}; {args.rounds} rounds each; a put every {args.interval_ms:g} ms "
          f"through raftkv.client (attempt timeout {args.attempt_timeout:g} s); three members, heartbeat 100 ms, "
          f"election timeout 1 s; net {args.net}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs", flush=True)
    rounds: list[Round] = []
    try:
        for kind in targets:
            rounds += measure(kind, args, base)
    finally:
        (base / "rounds.json").write_text(json.dumps([asdict(r) for r in rounds], indent=1))
        if args.out is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nfirst ack: from the fault to the acknowledgement of the first put started after it "
          f"(load average now {os.getloadavg()[0]:.1f})")
    print(table(rounds, args.faults, targets, "first_ack_s"))
    print("\nwrite gap: the longest time without an acknowledged put, from the last one before the fault")
    print(table(rounds, args.faults, targets, "gap_s"))
    return 0 if all(r.first_ack_s is not None for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())

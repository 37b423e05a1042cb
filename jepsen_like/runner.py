"""One test run: cluster up, proxies, workload threads, nemesis, heal, quiet period, final reads, check.

Everything started here is torn down in ``finally`` -- also on Ctrl-C and SIGTERM, which are turned into
``KeyboardInterrupt`` for the duration of the run.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from jepsen_like.client import Member
from jepsen_like.final import final_reads, wait_converged
from jepsen_like.history import HistoryWriter
from jepsen_like.nemesis import Nemesis
from jepsen_like.nemesis.proxy import Network
from jepsen_like.topology import Topology, build
from jepsen_like.workloads import REG_PREFIX, LeaseWorker, RegisterWorker, WatchWorker, Worker

HISTORY = "history.jsonl"


@dataclass
class RunConfig:
    workload: str = "register"
    nemesis: list[str] = field(default_factory=lambda: ["partition"])
    time_s: float = 30.0
    clients: int = 10
    seed: int = 0
    target: str = "raftkv"
    net: str = "proxy"
    nodes: int = 3
    keys: int = 10
    planted_bug: str | None = None
    quiet_s: float = 3.0


@contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C so the ``finally`` blocks tear everything down."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    old = signal.signal(signal.SIGTERM, handler) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def make_workers(cfg: RunConfig, members: list[Member], history: HistoryWriter,
                 stop: threading.Event, watch_stop: threading.Event) -> list[Worker]:
    """Client threads; watchers stop on their own event, after the others, so they can catch up first."""
    kinds = ["register", "watch", "lease"] if cfg.workload == "all" else [cfg.workload]
    workers: list[Worker] = []
    keys = [f"{REG_PREFIX}k{i}" for i in range(cfg.keys)]
    for i in range(cfg.clients):
        kind = kinds[i % len(kinds)]
        args = (i, members, history, stop, cfg.seed)
        if kind == "register":
            group = [keys[(i + j) % len(keys)] for j in range(0, len(keys), 3)]  # ~3 clients per key
            workers.append(RegisterWorker(*args, keys=group or keys))
        elif kind == "watch":
            workers.append(RegisterWorker(*args, keys=keys[:3]))
            workers.append(WatchWorker(i + 10_000, members, history, watch_stop, cfg.seed, prefix=REG_PREFIX))
        elif kind == "lease":
            workers.append(LeaseWorker(*args))
        else:
            raise ValueError(f"unknown workload {kind!r}")
    return workers


def catch_up_watchers(watchers: list[WatchWorker], members: list[Member], timeout: float) -> None:
    """After the traffic stops: ask every watcher's stream for progress until it reports the cluster's final
    revision, so the reliable and bookmarkable checks cover the whole run (not just up to the last event)."""
    if not watchers:
        return
    target = wait_converged(members, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(w.high < target for w in watchers):
        for w in watchers:
            if w.high < target:
                w.request_progress()
        time.sleep(0.3)


def run(cfg: RunConfig, out: Path) -> Path:
    """Run one test; returns the history path.  Checking is separate (``check_dir``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    history = HistoryWriter(out / HISTORY)
    topo: Topology | None = None
    members: list[Member] = []
    nemesis: Nemesis | None = None
    stop, watch_stop = threading.Event(), threading.Event()
    workers: list[Worker] = []
    with signals_as_interrupt():
        try:
            extra = [] if cfg.planted_bug is None else ["--unsafe-planted-bug", cfg.planted_bug]
            topo = build(out / "cluster", target=cfg.target, net=cfg.net,  # type: ignore[arg-type]
                         nodes=cfg.nodes, seed=cfg.seed, extra_args=extra)
            cluster = topo.cluster
            nemesis = Nemesis(cluster, topo.net, cfg.nemesis, history, cfg.seed, readded=topo.member_readded)
            cluster.start()
            cluster.wait_ready(timeout=60, all_members=True)
            if isinstance(topo.net, Network) and cfg.target == "etcd":
                topo.net.identify({format(cluster.member_id(n) or 0, "x"): n for n in cluster.names})
                cluster.wait_ready(timeout=60, all_members=True)
            creds = topo.credentials()
            members = [Member(n, topo.client_targets[n], credentials=creds) for n in cluster.names]
            workers = make_workers(cfg, members, history, stop, watch_stop)
            for w in workers:
                w.start()
            nemesis.start()
            stop.wait(cfg.time_s)
        finally:
            if nemesis is not None:
                nemesis.stop()
            stop.set()
            watchers = [w for w in workers if isinstance(w, WatchWorker)]
            for w in workers:
                if not isinstance(w, WatchWorker):
                    w.join(timeout=10)
            try:
                if topo is not None and members:
                    topo.cluster.wait_ready(timeout=60, all_members=True)
                    # The quiet period itself (no traffic, no faults); lease runs also let every lease expire.
                    time.sleep(cfg.quiet_s + (LeaseWorker.TTL + 1 if cfg.workload in ("lease", "all") else 0))
                    catch_up_watchers(watchers, members, timeout=cfg.quiet_s + 10)
                    watch_stop.set()
                    for w in watchers:
                        w.close()
                        w.join(timeout=10)
                    final_reads(members, history, cfg.quiet_s)
            finally:
                watch_stop.set()
                for w in watchers:
                    w.close()
                for m in members:
                    m.close()
                try:
                    if topo is not None:
                        topo.cluster.stop()
                finally:
                    if topo is not None and topo.net is not None:
                        topo.net.close()
                    history.close()
    return out / HISTORY

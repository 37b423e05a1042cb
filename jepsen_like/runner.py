"""One test run: cluster up, proxies, workload threads, nemesis, heal, quiet period, final reads, check.

Everything started here is torn down in ``finally`` -- also on Ctrl-C and SIGTERM, which are turned into
``KeyboardInterrupt`` for the duration of the run.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from jepsen_like.client import Member
from jepsen_like.final import final_reads
from jepsen_like.history import HistoryWriter
from jepsen_like.nemesis import Nemesis
from jepsen_like.nemesis.proxy import Network
from jepsen_like.workloads import REG_PREFIX, LeaseWorker, RegisterWorker, WatchWorker, Worker
from raftkv.localcluster import HOST, LocalCluster

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


class ProxiedCluster(LocalCluster):
    """etcd members listen for peers on a private port; their advertised peer port is the inbound proxy."""

    listen_ports: dict[str, int]

    def command(self, name: str) -> list[str]:
        cmd = super().command(name)
        if self.kind == "etcd":
            i = cmd.index("--listen-peer-urls")
            cmd[i + 1] = f"http://{HOST}:{self.listen_ports[name]}"
        return cmd


def _free_port(rng: random.Random) -> int:
    """A bindable port below the kernel's ephemeral range, so the proxies' own outgoing connections (which
    use ephemeral ports) cannot take it between now and the member binding it."""
    while True:
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port


def build_cluster(cfg: RunConfig, base: Path) -> tuple[ProxiedCluster, Network | None]:
    extra = [] if cfg.planted_bug is None else ["--unsafe-planted-bug", cfg.planted_bug]
    cluster = ProxiedCluster(base, cfg.nodes, kind=cfg.target, tls=False,  # type: ignore[arg-type]
                             heartbeat_ms=100, election_ms=1000, extra_args=extra)
    if cfg.net != "proxy":
        raise ValueError(f"network back end {cfg.net!r} is not available; use proxy")
    net = Network(cluster.names, seed=cfg.seed)
    if cfg.target == "etcd":
        rng = random.Random()
        cluster.listen_ports = {n: _free_port(rng) for n in cluster.names}
        for n in cluster.names:
            net.inbound_listener(n, (HOST, cluster.listen_ports[n]), cluster.member(n).peer_port)
    else:
        overrides = {
            a: {b: f"{HOST}:{net.link_listener(a, b, (HOST, cluster.member(b).peer_port))}"
                for b in cluster.names if b != a}
            for a in cluster.names}
        cluster.set_peer_dial_overrides(overrides)
    return cluster, net


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
                 stop: threading.Event) -> list[Worker]:
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
            workers.append(WatchWorker(i + 10_000, members, history, stop, cfg.seed, prefix=REG_PREFIX))
        elif kind == "lease":
            workers.append(LeaseWorker(*args))
        else:
            raise ValueError(f"unknown workload {kind!r}")
    return workers


def run(cfg: RunConfig, out: Path) -> Path:
    """Run one test; returns the history path.  Checking is separate (``check_dir``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    history = HistoryWriter(out / HISTORY)
    cluster: ProxiedCluster | None = None
    net: Network | None = None
    members: list[Member] = []
    nemesis: Nemesis | None = None
    stop = threading.Event()
    workers: list[Worker] = []
    with signals_as_interrupt():
        try:
            cluster, net = build_cluster(cfg, out / "cluster")
            cluster.start()
            cluster.wait_ready(timeout=60, all_members=True)
            if cfg.target == "etcd":
                net.identify({format(cluster.member_id(n) or 0, "x"): n for n in cluster.names})
                cluster.wait_ready(timeout=60, all_members=True)
            members = [Member(n, f"{HOST}:{cluster.member(n).client_port}") for n in cluster.names]
            workers = make_workers(cfg, members, history, stop)
            for w in workers:
                w.start()
            nemesis = Nemesis(cluster, net, cfg.nemesis, history, cfg.seed)
            nemesis.start()
            stop.wait(cfg.time_s)
        finally:
            if nemesis is not None:
                nemesis.stop()
            stop.set()
            for w in workers:
                if isinstance(w, WatchWorker):
                    w.close()
            for w in workers:
                w.join(timeout=10)
            try:
                if cluster is not None and members:
                    cluster.wait_ready(timeout=60, all_members=True)
                    # The quiet period itself (no traffic, no faults); lease runs also let every lease expire.
                    time.sleep(cfg.quiet_s + (LeaseWorker.TTL + 1 if cfg.workload in ("lease", "all") else 0))
                    final_reads(members, history, cfg.quiet_s)
            finally:
                for m in members:
                    m.close()
                if cluster is not None:
                    cluster.stop()
                if net is not None:
                    net.close()
                history.close()
    return out / HISTORY

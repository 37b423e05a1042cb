"""Fault schedules: alternate calm and fault windows, each fault drawn from the enabled kinds.

Faults: ``kill`` (SIGKILL, restart at the end of the window), ``pause`` (SIGSTOP/SIGCONT), ``partition``
(random halves), ``isolate-leader``, ``bridge``, ``ring`` (majorities ring), ``one-way`` (a node hears nobody
but is heard), ``slow`` (delay + jitter on every link), ``lossy``.  Every window is logged to the history as
``nemesis`` events (``start``/``stop``) so the report can shade it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from jepsen_like.history import INFO, NEMESIS, Event, HistoryWriter
from jepsen_like.nemesis.proxy import Network
from raftkv.localcluster import LocalCluster

FAULTS = ("kill", "pause", "partition", "isolate-leader", "bridge", "ring", "one-way", "slow", "lossy")
NETWORK_FAULTS = frozenset({"partition", "isolate-leader", "bridge", "ring", "one-way", "slow", "lossy"})
Links = set[tuple[str, str]]


def cut(groups: list[list[str]], names: list[str]) -> Links:
    """Directed links between members in different groups (a member in no group reaches everyone)."""
    where = {n: i for i, g in enumerate(groups) for n in g}
    return {(a, b) for a in names for b in names
            if a != b and a in where and b in where and where[a] != where[b]}


def bridge(names: list[str], rng: random.Random) -> Links:
    """Two halves that only one bridge node can reach both of."""
    order = rng.sample(names, len(names))
    mid = len(order) // 2
    left, hub, right = order[:mid], order[mid], order[mid + 1:]
    links = cut([left, right], names)
    assert all(hub not in link for link in links)
    return links


def majorities_ring(names: list[str], rng: random.Random) -> Links:
    """Each member sees a majority (itself and its ring neighbours); no two see the same majority."""
    order = rng.sample(names, len(names))
    n = len(order)
    if n <= 3:
        a, b = order[0], order[1]
        return {(a, b), (b, a)}
    reach = (n // 2 + 1) // 2  # ring distance each member still reaches: 2*reach + 1 >= a majority
    pos = {name: i for i, name in enumerate(order)}

    def distance(a: str, b: str) -> int:
        d = abs(pos[a] - pos[b])
        return min(d, n - d)

    return {(a, b) for a in names for b in names if a != b and distance(a, b) > reach}


class Nemesis:
    """Runs the schedule in its own thread until ``stop()``; ``recover()`` undoes everything."""

    def __init__(self, cluster: LocalCluster, net: Network | None, faults: list[str], history: HistoryWriter,
                 seed: int, calm_s: float = 3.0, fault_s: float = 4.0,
                 leader: Callable[[], str | None] | None = None) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown nemesis {sorted(unknown)}; known: {', '.join(FAULTS)}")
        if net is None and NETWORK_FAULTS & set(faults):
            raise ValueError("network faults need a network back end")
        self.cluster, self.net, self.faults, self.history = cluster, net, list(faults), history
        self.rng = random.Random(seed)
        self.calm_s, self.fault_s = calm_s, fault_s
        self.leader = leader or cluster.leader_name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._killed: set[str] = set()
        self._paused: set[str] = set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.recover()

    def _log(self, f: str, value: object) -> None:
        self.history.log(Event(NEMESIS, INFO, f, value=value))

    def _run(self) -> None:
        while not self._stop.wait(self.calm_s * self.rng.uniform(0.5, 1.5)):
            if not self.faults:
                continue
            fault = self.rng.choice(self.faults)
            desc = self.inject(fault)
            self._log("start", {"fault": fault, "detail": desc})
            self._stop.wait(self.fault_s * self.rng.uniform(0.5, 1.5))
            self.recover()
            self._log("stop", {"fault": fault})

    def inject(self, fault: str) -> str:
        names = [n for n in self.cluster.names if n not in self._killed]
        victim = self.rng.choice(names)
        if fault == "kill":
            self.cluster.kill_member(victim)
            self._killed.add(victim)
            return f"killed {victim}"
        if fault == "pause":
            self.cluster.pause_member(victim)
            self._paused.add(victim)
            return f"paused {victim}"
        assert self.net is not None
        all_names = self.cluster.names
        if fault == "partition":
            order = self.rng.sample(all_names, len(all_names))
            groups = [order[: len(order) // 2], order[len(order) // 2:]]
            self.net.set_links(cut(groups, all_names))
            return f"halves {groups}"
        if fault == "isolate-leader":
            target = self.leader() or victim
            self.net.set_links(cut([[target], [n for n in all_names if n != target]], all_names))
            return f"isolated {target}"
        if fault == "bridge":
            links = bridge(all_names, self.rng)
            self.net.set_links(links)
            return f"bridge cutting {sorted(links)}"
        if fault == "ring":
            links = majorities_ring(all_names, self.rng)
            self.net.set_links(links)
            return f"ring cutting {sorted(links)}"
        if fault == "one-way":
            self.net.set_links({(n, victim) for n in all_names if n != victim})
            return f"{victim} hears nobody"
        if fault == "slow":
            self.net.set_quality(delay_ms=50, jitter_ms=40)
            return "50+-40 ms on every link"
        assert fault == "lossy"
        self.net.set_quality(loss=0.2)
        return "20% loss on every link"

    def recover(self) -> None:
        """Heal the network, resume paused members, restart killed ones."""
        if self.net is not None:
            self.net.heal()
        for name in sorted(self._paused):
            self.cluster.resume_member(name)
        self._paused.clear()
        for name in sorted(self._killed):
            self.cluster.start_member(name)
        self._killed.clear()

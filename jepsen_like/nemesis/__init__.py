"""Fault schedules: alternate calm and fault windows, each fault drawn from the enabled kinds.

Faults: ``kill`` (SIGKILL, restart at the end of the window), ``kill-leader`` (the same, always the
leader), ``pause`` (SIGSTOP/SIGCONT), ``partition``
(random halves: 1+2 of three, 2+3 of five), ``kill-minority`` (as many members as the cluster can lose, at
once: two of five), and the faults that lose the quorum until healed: ``kill-majority`` and
``pause-majority`` (a majority at once), ``no-majority`` (a partition in which no side has a majority:
three singletons of three, 2+2+1 of five); ``isolate-leader``, ``bridge``, ``ring`` (majorities ring),
``one-way`` (a node hears nobody but is heard), ``slow`` (delay + jitter on every link), ``lossy``,
``client-isolate`` (random halves, and the harness's clients cut off from the minority side too),
``membership`` (remove a member through another one,
wipe its data, and at the end of the window ``member add`` it back under its name and wait until it has caught
up).  Every window is logged to the history as ``nemesis`` events (``start``/``stop``) so the report can
shade it.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from jepsen_like.history import INFO, NEMESIS, Event, HistoryWriter
from jepsen_like.nemesis.proxy import Network
from raftkv.localcluster import ClusterError, LocalCluster

if TYPE_CHECKING:
    from jepsen_like.topology import FaultNetwork

FAULTS = ("kill", "kill-leader", "pause", "partition", "isolate-leader", "bridge", "ring", "one-way", "slow", "lossy",
          "client-isolate", "membership", "kill-minority", "kill-majority", "pause-majority", "no-majority")
NETWORK_FAULTS = frozenset({"partition", "isolate-leader", "bridge", "ring", "one-way", "slow", "lossy",
                            "client-isolate", "no-majority"})
#: Faults after which the cluster has no quorum until the window ends.
QUORUM_LOSS = frozenset({"kill-majority", "pause-majority", "no-majority"})
CATCH_UP_S = 60.0
Links = set[tuple[str, str]]


def cut(groups: list[list[str]], names: list[str]) -> Links:
    """Directed links between members in different groups (a member in no group reaches everyone)."""
    where = {n: i for i, g in enumerate(groups) for n in g}
    return {(a, b) for a in names for b in names
            if a != b and a in where and b in where and where[a] != where[b]}


def majority(n: int) -> int:
    return n // 2 + 1


def no_majority_groups(names: list[str], rng: random.Random) -> list[list[str]]:
    """Groups of at most ``majority - 1`` members each, as few as that allows: no side can elect a leader."""
    order = rng.sample(names, len(names))
    size = max(1, majority(len(names)) - 1)
    return [order[i:i + size] for i in range(0, len(order), size)]


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

    def __init__(self, cluster: LocalCluster, net: FaultNetwork | None, faults: list[str], history: HistoryWriter,
                 seed: int, calm_s: float = 3.0, fault_s: float = 4.0,
                 leader: Callable[[], str | None] | None = None,
                 readded: Callable[[str], None] = lambda name: None) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown nemesis {sorted(unknown)}; known: {', '.join(FAULTS)}")
        unsupported = NETWORK_FAULTS & set(faults) - (net.supported if net is not None else frozenset())
        if unsupported:
            raise ValueError(f"this network back end cannot make {sorted(unsupported)}")
        if "membership" in faults and isinstance(net, Network) and cluster.kind == "etcd":
            raise ValueError("membership churn behind proxies needs raftkv (etcd peers are told apart by id); "
                             "use --net netns for etcd")
        self.cluster, self.net, self.faults, self.history = cluster, net, list(faults), history
        self.readded = readded
        self.rng = random.Random(seed)
        self.calm_s, self.fault_s = calm_s, fault_s
        self.leader = leader or cluster.leader_name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._killed: set[str] = set()
        self._paused: set[str] = set()
        self._removed: set[str] = set()

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
            try:
                desc = self.inject(fault)
            except ClusterError as exc:  # e.g. no leader to take a membership change: try again later
                self._log("start", {"fault": fault, "detail": f"not injected: {exc}"})
                continue
            self._log("start", {"fault": fault, "detail": desc})
            self._stop.wait(self.fault_s * self.rng.uniform(0.5, 1.5))
            self.recover()
            self._log("stop", {"fault": fault})

    def inject(self, fault: str) -> str:
        names = [n for n in self.cluster.names if n not in self._killed]
        victim = self.rng.choice(names)
        leader = self.leader() if fault in ("kill", "kill-leader", "pause") else None
        if fault == "kill-leader":
            if leader is None:
                raise ClusterError("no leader to kill")
            self.cluster.kill_member(leader)
            self._killed.add(leader)
            return f"killed {leader} (the leader)"
        role = " (the leader)"
        if fault in ("kill", "kill-minority", "kill-majority"):
            count = {"kill": 1, "kill-minority": (len(self.cluster.names) - 1) // 2,
                     "kill-majority": majority(len(self.cluster.names))}[fault]
            victims = sorted(self.rng.sample(names, min(len(names), max(1, count))))
            for name in victims:
                self.cluster.kill_member(name)
            self._killed.update(victims)
            return f"killed {', '.join(victims)}" + (role if leader is not None and victims == [leader] else "")
        if fault in ("pause", "pause-majority"):
            count = 1 if fault == "pause" else majority(len(self.cluster.names))
            victims = sorted(self.rng.sample(names, min(len(names), count)))
            for name in victims:
                self.cluster.pause_member(name)
            self._paused.update(victims)
            return f"paused {', '.join(victims)}" + (role if leader is not None and victims == [leader] else "")
        if fault == "membership":
            self.cluster.remove_member(victim)
            shutil.rmtree(self.cluster.member_dir(victim) / "data")
            self._removed.add(victim)
            return f"removed {victim} and wiped its data"
        assert self.net is not None
        all_names = self.cluster.names
        if fault in ("partition", "client-isolate"):
            order = self.rng.sample(all_names, len(all_names))
            groups = [order[: len(order) // 2], order[len(order) // 2:]]
            minority = groups[0] if fault == "client-isolate" else []
            self.net.set_links(cut(groups, all_names), clients_cut=minority)
            return f"halves {groups}" + (f", clients cut from {minority}" if minority else "")
        if fault == "no-majority":
            groups = no_majority_groups(all_names, self.rng)
            self.net.set_links(cut(groups, all_names))
            return f"no majority anywhere: {groups}"
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
        """Heal the network, resume paused members, restart killed ones, add removed ones back."""
        if self.net is not None:
            self.net.heal()
        for name in sorted(self._paused):
            self.cluster.resume_member(name)
        self._paused.clear()
        for name in sorted(self._killed):
            self.cluster.start_member(name)
        self._killed.clear()
        for name in sorted(self._removed):
            self.cluster.add_member(name, start=False, timeout=CATCH_UP_S)
            self.readded(name)
            self.cluster.start_member(name)
            self._removed.discard(name)
            self.wait_caught_up(name, [n for n in self.cluster.names if n != name])

    def wait_caught_up(self, name: str, others: Iterable[str], timeout: float = CATCH_UP_S) -> None:
        """Until ``name`` has applied as far as the others had when we started waiting (it started empty)."""
        def revision(n: str) -> int:
            status = self.cluster.status(n)
            return int(status.header.revision) if status is not None else 0
        target = max((revision(n) for n in others), default=0)
        deadline = time.monotonic() + timeout
        while revision(name) < target:
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} did not catch up to revision {target} in {timeout:.0f}s; "
                                   f"see {self.cluster.log_path(name)}")
            time.sleep(0.2)

"""Network namespaces and nftables: kernel-level partitions between members with real per-member addresses.

Layout (``P`` = the harness's pid, ``S`` = a free /24 in 10.77.0.0/16)::

    root netns:   veth rkjlP 10.77.S.254/24 ──┐          (the harness: clients and admin calls)
    rkjl-P-hub:   bridge br0 ─────────────────┴─ n1 ─ n2 ─ ...
    rkjl-P-n1:    eth0 10.77.S.1/24  (member n1, started with ``ip netns exec``)

The bridge lives in its own namespace, so the root namespace gains exactly one interface (whose route covers
only the test /24); member namespaces have no default route, so nothing they send can leave the bridge.
Deleting the namespaces removes everything, veths included (a veth dies with its peer).

Faults are one nftables table per member namespace, replaced atomically on every change (filtering on the
receiving side, by source address):

* link ``a -> b`` blocked: in b, drop packets from a that travel in the *original* direction of their
  connection -- connections a opened to b go silent, while b's own connections to a keep working.  That is
  the proxy back end's notion of a directed link.  Both directions blocked is a symmetric partition, and
  then b drops *everything* from a, replies on b's own connections included: etcd streams its messages in
  response bodies, and with TCP_NODELAY and a congestion window grown over a long connection those
  replies would otherwise keep flowing for seconds after the cut.
* loss: member-to-member packets dropped at random (``numgen``); TCP turns that into retransmission stalls.
* client cut: in the member, drop everything from the harness address (its clients then time out).

There is no netem on this kernel, so delay is not offered (``slow`` needs ``--net proxy``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from typing import Any

from raftkv.local_processes import pid_alive

PREFIX = "rkjl"
TABLE = "rkjl"
NETWORK = ipaddress.IPv4Network("10.77.0.0/16")
HUB_BRIDGE = "br0"
_OWNED = re.compile(rf"^{PREFIX}-?(\d+)(?:-|$)")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def available() -> str | None:
    """None if this process can build namespaces, else why not (for skip messages)."""
    if os.geteuid() != 0:
        return "the netns back end needs root (ip netns add, nft)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    if _ip("netns", "list", check=False).returncode != 0:
        return "`ip netns` does not work here"
    return None


def _owned_names(lines: Iterable[str]) -> dict[str, int]:
    """Our resource names (namespace or root interface) mapped to the pid that made them."""
    out: dict[str, int] = {}
    for line in lines:
        name = line.split()[0].split("@")[0].rstrip(":") if line.split() else ""
        m = _OWNED.match(name)
        if m:
            out[name] = int(m.group(1))
    return out


def sweep_stale() -> list[str]:
    """Delete namespaces and root interfaces left behind by harness processes that no longer exist."""
    removed: list[str] = []
    namespaces = _owned_names(_ip("netns", "list").stdout.splitlines())
    for ns, pid in namespaces.items():
        if not pid_alive(pid):
            _ip("netns", "del", ns, check=False)
            removed.append(ns)
    links = _owned_names(line.split(": ", 1)[1] for line in _ip("-o", "link", "show").stdout.splitlines()
                         if ": " in line)
    for link, pid in links.items():
        if not pid_alive(pid):
            _ip("link", "del", link, check=False)
            removed.append(link)
    return removed


def _free_subnet(start: int) -> ipaddress.IPv4Network:
    """A /24 of 10.77.0.0/16 that no root-namespace address uses (concurrent runs each get their own)."""
    used: set[Any] = {ipaddress.ip_interface(w).network for line in _ip("-o", "-4", "addr", "show").stdout.splitlines()
            for w in line.split() if "/" in w and w[0].isdigit()}
    subnets = list(NETWORK.subnets(new_prefix=24))
    for i in range(len(subnets)):
        candidate = subnets[(start + i) % len(subnets)]
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise RuntimeError("no free /24 in 10.77.0.0/16")


class NetnsNetwork:
    """Namespaces, bridge and firewall rules for one cluster; ``close()`` removes all of it."""

    #: Nemesis kinds this back end can make (no netem: no delay).
    supported = frozenset({"partition", "isolate-leader", "bridge", "ring", "one-way", "lossy", "client-isolate",
                           "no-majority"})

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.tag = f"{PREFIX}-{os.getpid()}"
        self.root_link = f"{PREFIX}{os.getpid()}"
        assert len(self.root_link) <= 15, "interface names are at most 15 characters"
        sweep_stale()
        subnet = _free_subnet(os.getpid())
        hosts = list(subnet.hosts())
        self.hosts = {name: str(hosts[i]) for i, name in enumerate(self.names)}
        self.root_ip = str(hosts[-1])
        self.prefixlen = subnet.prefixlen
        self._blocked: set[tuple[str, str]] = set()
        self._clients_cut: set[str] = set()
        self._loss = 0.0
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def netns(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def exec_prefix(self, name: str) -> list[str]:
        """Prefix for a command that must run inside member ``name``'s namespace."""
        return ["ip", "netns", "exec", self.netns(name)]

    def _build(self) -> None:
        hub = self.netns("hub")
        _ip("netns", "add", hub)
        _ip("-n", hub, "link", "add", HUB_BRIDGE, "type", "bridge")
        _ip("-n", hub, "link", "set", HUB_BRIDGE, "up")
        _ip("link", "add", self.root_link, "type", "veth", "peer", "name", "root", "netns", hub)
        _ip("-n", hub, "link", "set", "root", "master", HUB_BRIDGE, "up")
        _ip("addr", "add", f"{self.root_ip}/{self.prefixlen}", "dev", self.root_link)
        _ip("link", "set", self.root_link, "up")
        for name in self.names:
            ns = self.netns(name)
            _ip("netns", "add", ns)
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", name, "netns", hub)
            _ip("-n", hub, "link", "set", name, "master", HUB_BRIDGE, "up")
            _ip("-n", ns, "addr", "add", f"{self.hosts[name]}/{self.prefixlen}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            self._track(name)

    # ------------------------------------------------------------------ faults

    def _rules(self, name: str) -> list[str]:
        rules = [f"ip saddr {self.hosts[src]}{'' if (name, src) in self._blocked else ' ct direction original'} drop"
                 for src, dst in sorted(self._blocked) if dst == name]
        if name in self._clients_cut:
            rules.append(f"ip saddr {self.root_ip} drop")
        if self._loss:
            percent = round(self._loss * 100)
            rules += [f"ip saddr {self.hosts[src]} numgen random mod 100 < {percent} drop"
                      for src in self.names if src != name]
        return rules

    def _nft(self, name: str, script: str) -> None:
        r = subprocess.run([*self.exec_prefix(name), "nft", "-f", "-"], input=script, text=True,
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"nft in {self.netns(name)}: {r.stderr.strip()}")

    def _track(self, name: str) -> None:
        """Connection tracking from before the member starts, for good.  Conntrack only runs in a namespace
        while some rule uses it; a connection it first meets mid-stream is recorded with whichever side
        happened to send next as its originator, which would turn "drop a's connections" into a coin toss."""
        self._nft(name, "\n".join([
            f"table inet {TABLE} {{",
            "  chain track {", "    type filter hook input priority -10; policy accept;",
            "    ct direction original counter", "  }",
            "  chain faults {", "    type filter hook input priority 0; policy accept;", "  }", "}", ""]))

    def _apply(self) -> None:
        """Replace every member's fault rules, one atomic nft transaction per member."""
        for name in self.names:
            self._nft(name, "\n".join([f"flush chain inet {TABLE} faults",
                                       *(f"add rule inet {TABLE} faults {r}" for r in self._rules(name)), ""]))

    def set_links(self, blocked: set[tuple[str, str]], clients_cut: Iterable[str] = ()) -> None:
        """Block exactly these directed member links, and the harness's path to ``clients_cut``."""
        assert all(a in self.hosts and b in self.hosts for a, b in blocked), blocked
        self._blocked, self._clients_cut = set(blocked), set(clients_cut)
        self._apply()

    def set_quality(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss: float = 0.0) -> None:
        if delay_ms or jitter_ms:
            raise ValueError("the netns back end cannot delay packets (no netem in this kernel); use --net proxy")
        self._loss = loss
        self._apply()

    def heal(self) -> None:
        self._blocked, self._clients_cut, self._loss = set(), set(), 0.0
        self._apply()

    def close(self) -> None:
        """Delete every namespace (their veths, the bridge and the root veth go with them)."""
        for ns in [self.netns(n) for n in self.names] + [self.netns("hub")]:
            _ip("netns", "del", ns, check=False)
        with contextlib.suppress(RuntimeError):
            _ip("link", "del", self.root_link, check=False)

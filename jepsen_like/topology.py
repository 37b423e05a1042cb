"""The cluster as one run sees it: member processes, the network back end between them, and the addresses
the harness's clients use.

* ``proxy``: every member on 127.0.0.1 in plaintext; peers dial each other through per-link proxies and the
  harness reaches each member through a client proxy.
* ``netns``: every member in its own network namespace with its own address, mutual TLS on every link
  (certificates carry the namespace addresses as IP SANs), clients straight to the members over the bridge.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import grpc

from jepsen_like.nemesis.netns import NetnsNetwork
from jepsen_like.nemesis.proxy import Network
from raftkv.local_processes import HOST, free_ports
from raftkv.localcluster import Kind, LocalCluster, MemberInfo
from raftkv.security.certs import init_cluster_certs

NETS = ("proxy", "netns")
#: Fixed ports inside a member's namespace (each has its own address).  The peer port is drawn per
#: incarnation: a member's id derives from its peer URL, and a re-added member must get a new id.
NETNS_CLIENT_PORT, NETNS_METRICS_PORT = 2379, 2381


class FaultNetwork(Protocol):
    """What the nemesis needs from a network back end."""

    supported: frozenset[str]

    def set_links(self, blocked: set[tuple[str, str]], clients_cut: Iterable[str] = ()) -> None: ...
    def set_quality(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss: float = 0.0) -> None: ...
    def heal(self) -> None: ...
    def close(self) -> None: ...


class ProxiedCluster(LocalCluster):
    """etcd members listen for peers on a private port; their advertised peer port is the inbound proxy."""

    listen_ports: dict[str, int]

    def command(self, name: str) -> list[str]:
        cmd = super().command(name)
        if self.kind == "etcd":
            i = cmd.index("--listen-peer-urls")
            cmd[i + 1] = f"http://{HOST}:{self.listen_ports[name]}"
        return cmd


class NetnsCluster(LocalCluster):
    """Members at their namespace addresses, started inside their namespaces."""

    def __init__(self, base: object, size: int, net: NetnsNetwork, **kw: object) -> None:
        self.net = net  # set first: the base constructor already asks for URLs
        super().__init__(base, size, **kw)  # type: ignore[arg-type]

    def _url(self, name: str, port: int) -> str:
        return f"{'https' if self.tls else 'http'}://{self.net.hosts[name]}:{port}"

    def client_url(self, name: str) -> str:
        return self._url(name, self.member(name).client_port)

    def peer_url(self, name: str) -> str:
        return self._url(name, self.member(name).peer_port)

    def metrics_url(self, name: str) -> str:
        return f"http://{self.net.hosts[name]}:{self.member(name).metrics_port}"

    def _initial_cluster(self, members: Iterable[MemberInfo]) -> str:
        return ",".join(f"{m.name}={self._url(m.name, m.peer_port)}" for m in members)

    def _allocate_ports(self, base_port: int | None, count: int, first_index: int) -> list[tuple[int, int, int]]:
        peers = [p for p, _, _ in super()._allocate_ports(None, count, first_index)]
        return [(NETNS_CLIENT_PORT, p, NETNS_METRICS_PORT) for p in peers]

    def _ensure_certs(self) -> None:
        if self.tls and not all(path.exists() for n in self.names for path in self._cert_files(n)):
            init_cluster_certs(self.certs_dir, self.names, extra_ips=self.net.hosts.values())

    def command(self, name: str) -> list[str]:
        return self.net.exec_prefix(name) + super().command(name)


@dataclass
class Topology:
    cluster: LocalCluster
    net: FaultNetwork | None
    #: member -> "host:port" the harness's clients dial.
    client_targets: dict[str, str]

    def credentials(self) -> grpc.ChannelCredentials | None:
        """Client TLS credentials (the cluster's client certificate), or None for plaintext."""
        if not self.cluster.tls:
            return None
        certs = self.cluster.certs_dir
        return grpc.ssl_channel_credentials((certs / "ca.crt").read_bytes(), (certs / "client.key").read_bytes(),
                                            (certs / "client.crt").read_bytes())

    def member_readded(self, name: str) -> None:
        """A member was removed and added back under its name with new ports: point its proxies at them.
        (netns members keep their address and client port; their new peer port needs nothing here.)"""
        if isinstance(self.net, Network):
            assert self.cluster.kind == "raftkv", "membership churn behind proxies needs raftkv"
            m = self.cluster.member(name)
            self.net.set_upstream(name, "peer", (HOST, m.peer_port))
            self.net.set_upstream(name, "client", (HOST, m.client_port))


def build(base: object, *, target: Kind, net: str, nodes: int, seed: int, extra_args: list[str]) -> Topology:
    """Describe (not start) a cluster and its network; on error nothing is left behind."""
    names = [f"n{i}" for i in range(1, nodes + 1)]
    timing = dict(heartbeat_ms=100, election_ms=1000, extra_args=extra_args)
    if net == "netns":
        ns = NetnsNetwork(names)
        try:
            nc = NetnsCluster(base, nodes, ns, kind=target, tls=True, **timing)
        except BaseException:
            ns.close()
            raise
        assert nc.names == names
        return Topology(nc, ns, {n: f"{ns.hosts[n]}:{nc.member(n).client_port}" for n in names})
    if net != "proxy":
        raise ValueError(f"unknown network back end {net!r}; known: {', '.join(NETS)}")
    cluster = ProxiedCluster(base, nodes, kind=target, tls=False, **timing)  # type: ignore[arg-type]
    proxies = Network(cluster.names, seed=seed)
    if target == "etcd":
        cluster.listen_ports = dict(zip(cluster.names, free_ports(len(cluster.names)), strict=True))
        for n in cluster.names:
            proxies.inbound_listener(n, (HOST, cluster.listen_ports[n]), cluster.member(n).peer_port)
    else:
        overrides = {
            a: {b: f"{HOST}:{proxies.link_listener(a, b, (HOST, cluster.member(b).peer_port))}"
                for b in cluster.names if b != a}
            for a in cluster.names}
        cluster.set_peer_dial_overrides(overrides)
    targets = {n: f"{HOST}:{proxies.client_listener(n, (HOST, cluster.member(n).client_port))}"
               for n in cluster.names}
    return Topology(cluster, proxies, targets)

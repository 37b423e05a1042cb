"""The ``raftkv`` process: configuration, storage, Raft driver, peer transport and client API, wired once.

This is the composition root, the one module that sees every layer (``tests/test_layers.py``): the server
layer never imports the API layer; the two meet here. Tools that need a member's own rules without running
one (``kvctl snapshot restore``) come through here too.

Start-up order matters for the errors an operator sees: configuration and certificates are checked first
(one line, exit 2, nothing touched), then the data directory (identity checked before any write), then the
ports (a port in use is one line, exit 2), and only then does the member join the cluster.
"""

from __future__ import annotations

from raftkv.grpc_engine import choose_polling_engine

choose_polling_engine()  # before the imports below load grpc: its core reads the choice once, at start

import asyncio
import errno
import gc
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc

from raftkv.api.front.port import ClientPort, RelayProcess, bind
from raftkv.api.gateway.calls import MethodTable
from raftkv.api.gateway.http import Gateway, PlainEndpoints
from raftkv.api.grpc_server import build_client_server
from raftkv.api.lease import LeaseServicer
from raftkv.api.receive_limit import ReceiveLimit
from raftkv.api.recipes import Recipes
from raftkv.api.watch import WatchServicer
from raftkv.client import ClientConfig
from raftkv.discovery.web import RegistryPage  # this module is the process's composition root
from raftkv.security.common_names import AUTH_COMMON_NAME
from raftkv.security.revocation import RevocationList, revocation_guards, revocation_list
from raftkv.security.tls import (
    ConfigError,
    ReloadingChannelCredentials,
    ReloadingSSLContext,
    common_name,
    load_tls,
    server_credentials,
)
from raftkv.server import quarantine
from raftkv.server.backend import ClientSession
from raftkv.server.config import (
    DEFAULT_NAME,
    DEFAULT_TOKEN,
    ServerConfig,
    default_peer_url,
    host_port,
    parse_config,
    parse_initial_cluster,
)
from raftkv.server.data_dir import initial_members, open_store
from raftkv.server.forwarding import LeaderLeaseForwarder
from raftkv.server.hash_check import HashCheck
from raftkv.server.heap import CollectorPauses, settle
from raftkv.server.integrity import mark_quarantined, quarantine_reason
from raftkv.server.member_channels import MemberChannels
from raftkv.server.metrics import MetricsServer
from raftkv.server.node import Node
from raftkv.server.watch_hub import WatchHub
from raftkv.statemachine.restore import RestoreError, restore_snapshot
from raftkv.storage.env import StorageFull
from raftkv.storage.integrity import FormatError
from raftkv.storage.sealed import CorruptionError
from raftkv.transport.peer import PeerTransport

__all__ = ["main", "serve", "restore_member", "RestoreError", "ConfigError", "DEFAULT_NAME", "DEFAULT_TOKEN",
           "default_peer_url"]

log = logging.getLogger("raftkv")


def _setup_logging(cfg: ServerConfig) -> None:
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper()),
        format=f"%(asctime)s %(levelname)s {cfg.name} %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _quarantined_client_server(
    cfg: ServerConfig, credentials: Any, crl: RevocationList | None
) -> quarantine.ClientServerFactory:
    """The client API of a quarantined member: the same servicers over a backend that refuses all but
    ``Status`` and ``Alarm`` (``raftkv.server.quarantine``), and the same revocation list."""

    def build(backend: quarantine.QuarantinedBackend) -> grpc.aio.Server:
        return build_client_server(
            backend=backend,
            watch_servicer=WatchServicer(backend, WatchHub(backend)),
            lease_servicer=LeaseServicer(backend),
            listen_addresses=[host_port(u) for u in cfg.listen_client_urls],
            server_credentials=credentials,
            max_request_bytes=cfg.max_request_bytes,
            guards=revocation_guards(crl),
        )

    return build


def registry_page(cfg: ServerConfig) -> RegistryPage:
    """The read-only registry page (``/ui``) on the metrics listener. It reads this member's own client port
    through ``raftkv.client``, with the member's certificate (issued for client use too)."""
    endpoint = cfg.advertise_client_urls[0]
    tls = cfg.client_tls
    config = (ClientConfig(endpoints=(endpoint,), insecure=True) if tls is None else
              ClientConfig(endpoints=(endpoint,), cacert=str(tls.ca), cert=str(tls.cert), key=str(tls.key)))
    return RegistryPage(config)


def _bind_error(what: str, urls: Sequence[str], exc: BaseException) -> ConfigError:
    """gRPC says only "Failed to bind"; binding each URL's address again finds which one and the reason
    the operating system gives (address already in use, cannot assign requested address, ...)."""
    for url in urls:
        parts = urlsplit(url)
        family = socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((parts.hostname or "", parts.port or 0))
            except OSError as refused:
                return ConfigError(f"cannot listen on {what} URL {url}: {refused.strerror or refused}")
    return ConfigError(f"cannot listen on {what} URL {','.join(urls)}: {exc}")


def healthy(node: Node) -> Callable[[], Awaitable[bool]]:
    """etcd's ``/health``: no alarm raised, a leader known, and a linearizable read within a second."""

    async def check() -> bool:
        if node.alarms() or not node.has_leader():
            return False
        try:
            await node.read_barrier(1.0)
        except Exception:
            return False
        return True

    return check


def member_identity(cfg: ServerConfig) -> dict[str, list[bytes]] | None:
    """The auth context of the member's own client-port certificate, as its gRPC server would see it: what
    the JSON gateway's calls carry, as etcd's gateway dials its member with that certificate."""
    if cfg.client_tls is None:
        return None
    return {"transport_security_type": [b"ssl"], AUTH_COMMON_NAME: [common_name(cfg.client_tls.cert).encode()]}


def bind_client_urls(cfg: ServerConfig) -> list[socket.socket]:
    """The client port's listening sockets, for the front that shares them between gRPC and HTTP."""
    listeners: list[socket.socket] = []
    try:
        for url in cfg.listen_client_urls:
            host, _, port = host_port(url).rpartition(":")
            listeners.append(bind(host, int(port)))
    except OSError as exc:
        for listener in listeners:
            listener.close()
        raise _bind_error("client", [url], exc) from None
    return listeners


async def serve(cfg: ServerConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    peer_server_creds = peer_channel_creds = client_server_creds = None
    if cfg.peer_tls is not None and cfg.client_tls is not None:
        load_tls(cfg.peer_tls)
        load_tls(cfg.client_tls)
        peer_server_creds = server_credentials(cfg.peer_tls)
        peer_channel_creds = ReloadingChannelCredentials(cfg.peer_tls)  # follows the files, as the servers do
        client_server_creds = server_credentials(cfg.client_tls)
    client_crl = revocation_list(cfg.client_crl_file, cfg.client_tls)
    peer_crl = revocation_list(cfg.peer_crl_file, cfg.peer_tls)

    reason = quarantine_reason(cfg.data_dir)
    if reason is None:
        try:
            store, member_id = open_store(cfg)
        except CorruptionError as exc:
            reason = str(exc)
            mark_quarantined(cfg.data_dir, reason)
    if reason is not None:
        return await quarantine.serve(cfg, reason, stop,
                                      _quarantined_client_server(cfg, client_server_creds, client_crl))
    node = Node(cfg, store, member_id, fatal=quarantine.fatal_hook(cfg.data_dir), on_removed=stop.set)
    transport = PeerTransport(
        node_id=member_id,
        cluster_id=cfg.cluster_id,
        listen_addr=host_port(cfg.listen_peer_urls[0]),
        server_credentials=peer_server_creds,
        channel_credentials=peer_channel_creds,
        on_messages=node.on_peer_messages,
        is_removed=node.is_removed,
        on_unreachable=node.on_unreachable,
        on_peer_gone=node.on_peer_gone,
        on_snapshot_status=node.on_snapshot_status,
        snapshot_sink=node.staged_snapshots,
        snapshot_source=node.staged_snapshots,
        name=cfg.name,
        guards=revocation_guards(peer_crl),
        advertise_address=host_port(cfg.advertise_peer_urls[0]),
    )
    try:
        await transport.start()
    except (OSError, RuntimeError) as exc:
        store.close()
        raise _bind_error("peer", cfg.listen_peer_urls[:1], exc) from None
    node.attach_transport(transport)
    channels = MemberChannels(cfg.client_tls)  # a client of the other members' client ports
    node.leases.forwarder = LeaderLeaseForwarder(node, channels)
    node.hash_check = HashCheck(
        member_id, cfg.name, cfg.corrupt_check_seconds, channels,
        is_leader=node.is_leader, revision=node.current_revision, local_hash=node.hash_kv, members=node.members,
        alarms=node.alarms, propose=lambda request: node.propose(request, ClientSession(), timeout=5),
    )

    hub = WatchHub(node)
    # With the gateway on, the front owns the client URLs and grpcio listens on a private unix socket.
    methods = MethodTable() if cfg.enable_grpc_gateway else None
    private = f"raftkv-{member_id:016x}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        listeners = bind_client_urls(cfg) if methods is not None else []
    except ConfigError:
        await transport.stop()
        store.close()
        raise
    try:
        client_server = build_client_server(
            backend=node,
            watch_servicer=WatchServicer(node, hub, planted_bug=cfg.planted_bug),
            lease_servicer=LeaseServicer(node),
            listen_addresses=[f"unix-abstract:{private}"] if methods is not None else
            [host_port(u) for u in cfg.listen_client_urls],
            server_credentials=client_server_creds,
            max_request_bytes=cfg.max_request_bytes,
            recipes=Recipes(node, hub),
            methods=methods,
            guards=revocation_guards(client_crl),
        )
        await client_server.start()
    except (OSError, RuntimeError) as exc:
        for listener in listeners:
            listener.close()
        await transport.stop()
        store.close()
        raise _bind_error("client", cfg.listen_client_urls, exc) from None
    relay = RelayProcess("@" + private, cfg.name) if methods is not None else None
    if relay is not None:
        relay.start()

    pauses = CollectorPauses()
    pauses.start()
    page = registry_page(cfg) if cfg.listen_metrics_urls else None
    if page is not None:
        await page.start()
    metrics = MetricsServer(
        [
            ("raftkv_is_leader", "1 if this member is the leader.", lambda: float(node.is_leader())),
            ("raftkv_has_leader", "1 if this member knows a leader.", lambda: float(node.has_leader())),
            ("raftkv_term", "Current Raft term.", lambda: float(node.loop.raw.status().hard_state.term)),
            ("raftkv_applied_index", "Last applied log index.", lambda: float(node.store.applied_index())),
            ("raftkv_mvcc_revision", "Current MVCC revision.", lambda: float(node.current_revision())),
            ("raftkv_leader_changes_seen_total", "Leader changes seen.", lambda: float(node.loop.leader_changes)),
            ("raftkv_ready_turns_total", "Ready batches handled.", lambda: float(node.loop.ready_turns)),
            ("raftkv_loop_turns_total", "Wake-ups of the Raft loop, with or without a Ready.",
             lambda: float(node.loop.loop_turns)),
            ("raftkv_read_index_rounds_total", "ReadIndex rounds this member started (each asks a quorum).",
             lambda: float(node.loop.reads.rounds_started)),
            ("raftkv_lease_reads_total", "Linearizable reads served under the leader lease, with no round.",
             lambda: float(node.loop.reads.lease_reads)),
            ("raftkv_fsyncs_total", "Synchronous disk flushes: one per LMDB commit, one more per durable commit.",
             lambda: float(node.store.writer.fsyncs)),
            ("raftkv_storage_commits_total", "LMDB write commits.", lambda: float(node.store.writer.commits)),
            ("raftkv_disk_writer_busy_seconds_total", "Seconds the LMDB writer thread spent on transactions.",
             lambda: node.store.writer.busy_seconds),
            ("raftkv_db_size_bytes", "Database size in bytes.", lambda: float(node.store.db_size())),
            ("raftkv_watchers", "Open watchers.", lambda: float(hub.watcher_count())),
            ("raftkv_watchers_replaying", "Watchers reading history (from the past, or fallen behind).",
             lambda: float(hub.replaying_count())),
            ("raftkv_watch_unsent_bytes", "Estimated bytes of watch events not yet sent.",
             lambda: float(hub.memory_bytes())),
            ("raftkv_watchers_fell_behind_total", "Watchers switched from live events to history replay.",
             lambda: float(hub.fell_behind_total)),
            ("raftkv_watch_replayed_bytes_total", "Bytes of history read to replay it to watchers.",
             lambda: float(hub.replayed_bytes_total)),
            ("raftkv_client_relay_cpu_seconds_total", "CPU seconds of the process relaying gRPC connections "
             "from the client port (not in process_cpu_seconds_total).",
             lambda: relay.cpu_seconds() if relay is not None else 0.0),
            ("raftkv_gc_pause_seconds_total", "Seconds Python's cyclic garbage collector stopped this member.",
             pauses.total_seconds),
            ("raftkv_gc_full_collections_total", "Full (oldest-generation) collections, each a longer pause.",
             lambda: float(pauses.collections[-1])),
            ("raftkv_gc_frozen_objects", "Objects from start-up that collections no longer scan.",
             lambda: float(gc.get_freeze_count())),
        ],
        healthy=node.has_leader,
        extra=page.handle if page is not None else None,
    )
    for url in cfg.listen_metrics_urls:
        parts = urlsplit(url)
        await metrics.start(parts.hostname or "127.0.0.1", parts.port or 2381)

    front = None
    if methods is not None and relay is not None:
        gateway = Gateway(methods, PlainEndpoints(healthy(node), metrics.render),
                          ReceiveLimit.for_requests(cfg.max_request_bytes), revoked=client_crl,
                          auth_enabled=lambda: node.auth_state().enabled, member_identity=member_identity(cfg))
        # HTTP's TLS follows the files as grpcio's does (the gRPC connections' TLS is grpcio's, via the relay).
        front = ClientPort(listeners, relay, gateway.serve,
                           ReloadingSSLContext(cfg.client_tls) if cfg.client_tls is not None else None)
        front.start()

    await node.start()
    log.info(
        "member %x of cluster %x serving clients on %s, peers on %s (%s)",
        member_id,
        cfg.cluster_id,
        ",".join(cfg.listen_client_urls),
        ",".join(cfg.listen_peer_urls),
        "plaintext: --insecure-plaintext" if cfg.insecure else "mutual TLS",
    )

    frozen = settle()
    log.debug("%s: %d objects from start-up frozen out of garbage collection", cfg.name, frozen)
    await stop.wait()
    log.info("shutting down")
    if front is not None:
        await front.stop()
    await client_server.stop(grace=1.0)
    if relay is not None:
        await relay.stop()
    await node.stop()
    await channels.close()
    await transport.stop()
    await metrics.stop()
    pauses.stop()
    if page is not None:
        await page.stop()
    store.close()
    log.info("stopped cleanly")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_config(argv)
        _setup_logging(cfg)
        try:
            import uvloop
        except ImportError:
            return asyncio.run(serve(cfg))
        return uvloop.run(serve(cfg))
    except ConfigError as exc:
        print(f"raftkv: error: {exc}", file=sys.stderr)
        return 2
    except (StorageFull, FormatError) as exc:
        print(f"raftkv: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            print(f"raftkv: error: no space left on device for {exc.filename or 'the data dir'}", file=sys.stderr)
            return 2
        raise


def restore_member(
    snapshot: str,
    *,
    name: str,
    data_dir: str | None,
    initial_cluster: str | None,
    token: str,
    advertise_peer_urls: str,
) -> tuple[ServerConfig, int]:
    """``kvctl snapshot restore``: make the data dir of one founder of a new cluster holding the snapshot's
    state. The flags are read with the server's own rules, so that ``raftkv`` started with the same ones
    derives the identity written here; returns that configuration and the restored revision.
    Raises ``ConfigError`` for bad flags and ``RestoreError`` for a snapshot that cannot be restored."""
    peer_urls = tuple(u.strip() for u in advertise_peer_urls.split(",") if u.strip())
    for url in peer_urls:
        host_port(url)
    cfg = ServerConfig(
        name=name,
        data_dir=Path(data_dir or f"{name}.raftkv"),
        listen_peer_urls=peer_urls,
        advertise_peer_urls=peer_urls,
        listen_client_urls=(),
        advertise_client_urls=(),
        initial_cluster=parse_initial_cluster(initial_cluster, name, peer_urls),
        initial_cluster_state="new",
        cluster_token=token,
        client_tls=None,
        peer_tls=None,
    )
    return cfg, restore_snapshot(snapshot, cfg.data_dir, cfg.cluster_id, cfg.member_id, initial_members(cfg))


if __name__ == "__main__":
    sys.exit(main())

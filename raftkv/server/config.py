"""The node's configuration: command-line flags (etcd's names), an optional TOML file, and validation.

Every mistake an operator can make here is reported as one ``ConfigError`` line naming the flag or file
(exit status 2), before anything touches the data directory or binds a port.
"""

from __future__ import annotations

import argparse
import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from raftkv.security.tls import ConfigError, TLSFiles, check_peer_name, check_separate_cas
from raftkv.statemachine.node_store import DEFAULT_SNAPSHOT_CATCHUP_ENTRIES

__all__ = [
    "ConfigError", "ServerConfig", "parse_config", "parse_initial_cluster", "default_peer_url", "host_port",
    "member_id_for",
]

# Every default of a flag, once (etcd's values unless said otherwise); the parser, its help texts, the
# configuration's own defaults and other tools that must agree with the server (kvctl snapshot restore) read these.
DEFAULT_NAME = "default"
DEFAULT_TOKEN = "raftkv"
DEFAULT_HEARTBEAT_MS = 100
DEFAULT_ELECTION_MS = 1000
DEFAULT_SNAPSHOT_COUNT = 10000
DEFAULT_MAX_REQUEST_BYTES = 1572864  # 1.5 MiB
#: See raftkv/server/batching.py for why and for what these were measured on.
DEFAULT_BATCH_DELAY_MS = 3.0
DEFAULT_BATCH_MIN_PENDING = 16
#: See raftkv/server/node/commit_notice.py: how long a leader waits for an append to carry a new commit index.
#: Off (0, etcd's behaviour) until the simulator and cluster suites have run with it on; 5 ms is the measured
#: sweet spot on the reference machine.
DEFAULT_COMMIT_NOTICE_DELAY_MS = 0.0
DEFAULT_QUOTA_BYTES = 2 * 1024**3  # 2 GiB
#: The leader's cross-member hash check (raftkv/server/hash_check.py); etcd 3.4 leaves it off by default.
DEFAULT_CORRUPT_CHECK_SECONDS = 300.0
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
N = TypeVar("N", int, float)
PLANTED_BUGS = (
    "stale-reads",
    "drop-watch-event",
    "skip-fsync",
    "ack-before-commit",
    "lease-query-before-apply",
    "apply-before-persist",
    "expiry-by-successor",
    "ack-unflushed-append",
    "read-lease-too-long",
)



@dataclass(frozen=True)
class ServerConfig:
    name: str
    data_dir: Path
    listen_peer_urls: tuple[str, ...]
    advertise_peer_urls: tuple[str, ...]
    listen_client_urls: tuple[str, ...]
    advertise_client_urls: tuple[str, ...]
    initial_cluster: tuple[tuple[str, str], ...]  # (name, peer url) in the order given
    initial_cluster_state: str
    cluster_token: str
    client_tls: TLSFiles | None
    peer_tls: TLSFiles | None
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS
    election_ms: int = DEFAULT_ELECTION_MS
    snapshot_count: int = DEFAULT_SNAPSHOT_COUNT
    snapshot_catchup_entries: int = DEFAULT_SNAPSHOT_CATCHUP_ENTRIES
    quota_backend_bytes: int = DEFAULT_QUOTA_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    batch_delay_ms: float = DEFAULT_BATCH_DELAY_MS
    batch_min_pending: int = DEFAULT_BATCH_MIN_PENDING
    commit_notice_delay_ms: float = DEFAULT_COMMIT_NOTICE_DELAY_MS
    corrupt_check_seconds: float = DEFAULT_CORRUPT_CHECK_SECONDS
    listen_metrics_urls: tuple[str, ...] = ()
    enable_grpc_gateway: bool = True
    #: Serve the leader's linearizable reads under a leader lease, with no ReadIndex round (``read_lease.py``).
    leader_lease_reads: bool = False
    peer_dial_overrides: dict[str, str] = field(default_factory=dict)
    log_level: str = "info"
    planted_bug: str | None = None
    #: Certificate revocation lists checked on every call of the client and of the peer port.
    client_crl_file: Path | None = None
    peer_crl_file: Path | None = None

    @property
    def insecure(self) -> bool:
        return self.client_tls is None

    @property
    def election_ticks(self) -> int:
        return max(2, self.election_ms // self.heartbeat_ms)

    @property
    def cluster_id(self) -> int:
        """Derived from the cluster token alone, so a member joining later computes the same id as the
        founders. Give every cluster its own token (as etcd advises); its CA already keeps strangers out."""
        return _hash64("cluster", self.cluster_token)

    @property
    def member_id(self) -> int:
        return member_id_for(self.cluster_token, self.advertise_peer_urls[0])


def member_id_for(token: str, peer_url: str) -> int:
    """A member's id derives from the cluster token and its first peer URL, so a member joining with
    ``--initial-cluster-state existing`` computes the id ``member add`` gave it without asking anyone."""
    return _hash64("member", token, peer_url)


def _hash64(*parts: str) -> int:
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def default_peer_url(insecure: bool = False) -> str:
    return f"{'http' if insecure else 'https'}://127.0.0.1:2380"


def default_client_url(insecure: bool = False) -> str:
    return f"{'http' if insecure else 'https'}://127.0.0.1:2379"


def parse_initial_cluster(
    value: str | None, name: str, advertise_peer_urls: tuple[str, ...], state: str = "new"
) -> tuple[tuple[str, str], ...]:
    """``--initial-cluster`` (``NAME=PEER_URL,...``; this member alone when empty), checked against this
    member's ``--name`` and ``--initial-advertise-peer-urls`` when it founds a new cluster."""
    items: list[tuple[str, str]] = []
    for item in _split(value) or (f"{name}={advertise_peer_urls[0]}",):
        member, sep, url = item.partition("=")
        if not sep or not member or not url:
            raise ConfigError(f"--initial-cluster entry {item!r} must be NAME=PEER_URL")
        host_port(url)
        items.append((member, url))
    names = [m for m, _ in items]
    if len(set(names)) != len(names):
        raise ConfigError(f"--initial-cluster names a member twice: {','.join(names)}")
    if state == "new" and name not in names:
        raise ConfigError(f"--initial-cluster does not include this member's --name {name!r}")
    if state == "new" and dict(items)[name] not in advertise_peer_urls:
        raise ConfigError(
            f"--initial-cluster gives {name}={dict(items)[name]} but this member advertises "
            f"{','.join(advertise_peer_urls)} (--initial-advertise-peer-urls)"
        )
    return tuple(items)


def host_port(url: str) -> str:
    """``https://127.0.0.1:2379`` -> ``127.0.0.1:2379`` (what gRPC binds and dials)."""
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise ConfigError(f"URL {url!r} must look like https://HOST:PORT")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raftkv",
        description="A raftkv member: Raft-replicated key-value store serving etcd's v3 gRPC API.",
    )
    p.add_argument("--config-file", help="TOML file whose keys are these flags' long names (dashes or underscores)")
    p.add_argument("--name", help="human-readable member name, unique in the cluster (default: default)")
    p.add_argument("--data-dir", help="where the member keeps its LMDB database (default: <name>.raftkv)")
    p.add_argument("--listen-peer-urls", help="comma-separated URLs to listen on for peer traffic")
    p.add_argument("--initial-advertise-peer-urls", help="this member's peer URLs as the others dial them")
    p.add_argument("--listen-client-urls", help="comma-separated URLs to serve the etcd v3 API on")
    p.add_argument("--advertise-client-urls", help="this member's client URLs as clients dial them")
    p.add_argument("--initial-cluster", help="name=peer-url,... for bootstrapping a new cluster")
    p.add_argument("--initial-cluster-state", choices=("new", "existing"), help="new (bootstrap) or existing (join)")
    p.add_argument("--initial-cluster-token", help="distinguishes clusters built from the same URLs")
    p.add_argument("--trusted-ca-file", help="CA certificate that signs clients (and peers by default)")
    p.add_argument("--cert-file", help="this member's certificate for the client port")
    p.add_argument("--key-file", help="key of --cert-file")
    p.add_argument("--peer-trusted-ca-file", help="CA certificate that signs peers (a CA of their own: not one "
                   "that --trusted-ca-file trusts, or client certificates could act as members)")
    p.add_argument("--peer-cert-file", help="certificate for the peer port; its CN must be --name")
    p.add_argument("--peer-key-file", help="key of --peer-cert-file")
    p.add_argument("--client-crl-file", help="CRL (PEM or DER) of revoked client certificates, signed by a CA "
                                             "of --trusted-ca-file; re-read on change")
    p.add_argument("--peer-crl-file", help="CRL of revoked peer certificates, signed by a CA of "
                                           "--peer-trusted-ca-file; re-read on change")
    p.add_argument(
        "--insecure-plaintext",
        action="store_true",
        default=None,
        help="serve and dial without TLS (http:// URLs); never use outside a sandbox",
    )
    p.add_argument("--heartbeat-interval", type=int,
                   help=f"milliseconds between leader heartbeats (default {DEFAULT_HEARTBEAT_MS})")
    p.add_argument("--election-timeout", type=int,
                   help=f"milliseconds before a follower campaigns (default {DEFAULT_ELECTION_MS})")
    p.add_argument("--snapshot-count", type=int,
                   help=f"applied entries between snapshots (default {DEFAULT_SNAPSHOT_COUNT})")
    p.add_argument(
        "--snapshot-catchup-entries",
        type=int,
        help=f"log entries kept after a snapshot for slow followers (default {DEFAULT_SNAPSHOT_CATCHUP_ENTRIES})",
    )
    p.add_argument("--quota-backend-bytes", type=int,
                   help=f"database size that raises the NOSPACE alarm (default {DEFAULT_QUOTA_BYTES >> 30} GiB)")
    p.add_argument("--max-request-bytes", type=int,
                   help=f"largest client request accepted (default {DEFAULT_MAX_REQUEST_BYTES / 2**20:g} MiB)")
    p.add_argument(
        "--batch-delay-ms",
        type=float,
        help=f"pause before a Raft turn while many proposals are in flight, so one turn carries more of them "
        f"(default {DEFAULT_BATCH_DELAY_MS:g}; 0 disables)",
    )
    p.add_argument(
        "--batch-min-pending",
        type=int,
        help=f"proposals in flight before --batch-delay-ms applies (default {DEFAULT_BATCH_MIN_PENDING})",
    )
    p.add_argument(
        "--commit-notice-delay-ms",
        type=float,
        help=f"how long the leader waits for the next append to carry a new commit index to the followers "
        f"before it sends one for that alone (default {DEFAULT_COMMIT_NOTICE_DELAY_MS:g}; 0 sends it at once, "
        f"as etcd does; 5 measured best on a 2-core machine)",
    )
    p.add_argument(
        "--experimental-corrupt-check-time",
        help="how often the leader compares every member's history hash, like 30s or 5m; 0 turns it off "
        f"(default {DEFAULT_CORRUPT_CHECK_SECONDS:g}s)",
    )
    p.add_argument("--listen-metrics-urls", help="plain-HTTP URLs serving /metrics (Prometheus) and /health")
    p.add_argument(
        "--enable-grpc-gateway",
        type=_boolean,
        nargs="?",
        const=True,
        metavar="true|false",
        help="serve etcd's JSON gateway and /health, /version, /metrics on the client URLs beside gRPC "
        "(default true); false binds the gRPC server to them directly, for the shortest request path",
    )
    p.add_argument(
        "--experimental-leader-lease-reads",
        type=_boolean,
        nargs="?",
        const=True,
        metavar="true|false",
        help="let the leader serve linearizable reads under a leader lease, with no heartbeat round per read "
        "(default false): it trusts members' clocks to run at rates within 10%% of each other "
        "(raftkv/server/node/read_lease.py)",
    )
    p.add_argument(
        "--peer-dial-override",
        action="append",
        metavar="NAME=HOST:PORT",
        help="dial peer NAME at another address (fault-injection proxies); repeatable",
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.add_argument("--unsafe-planted-bug", choices=PLANTED_BUGS, help=argparse.SUPPRESS)
    return p


def _duration(value: object, flag: str) -> float:
    """Seconds from an etcd-style duration (``500ms``, ``30s``, ``5m``, ``1h``) or a bare number of seconds."""
    text = str(value).strip()
    unit = next((u for u in ("ms", "s", "m", "h") if text.endswith(u)), "")
    try:
        seconds = float(text[: len(text) - len(unit)]) * _DURATION_UNITS.get(unit, 1.0)
    except ValueError:
        raise ConfigError(f"--{flag} {value!r} is not a duration (like 30s or 5m)") from None
    if seconds < 0:
        raise ConfigError(f"--{flag} must not be negative")
    return seconds


def _boolean(text: str) -> bool:
    """etcd's boolean flags: ``--flag``, ``--flag=true`` or ``--flag=false``."""
    value = {"true": True, "1": True, "false": False, "0": False}.get(str(text).lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return value


def _or_default(value: N | None, default: N) -> N:
    return default if value is None else value


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _load_file(path: str) -> dict[str, object]:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read --config-file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config-file {path} is not valid TOML: {exc}") from exc
    known = {a.dest for a in build_parser()._actions}
    out: dict[str, object] = {}
    for key, value in raw.items():
        dest = key.replace("-", "_")
        if dest not in known or dest == "config_file":
            raise ConfigError(f"--config-file {path}: unknown setting {key!r}")
        out[dest] = ",".join(value) if isinstance(value, list) and dest != "peer_dial_override" else value
    return out


def _tls(ca: str | None, cert: str | None, key: str | None, what: str) -> TLSFiles:
    given = ((f"--{what}trusted-ca-file", ca), (f"--{what}cert-file", cert), (f"--{what}key-file", key))
    missing = [flag for flag, v in given if not v]
    if missing:
        raise ConfigError(
            f"mutual TLS needs {', '.join(missing)} (or pass --insecure-plaintext to run without TLS)"
        )
    paths = TLSFiles(Path(ca), Path(cert), Path(key))  # type: ignore[arg-type]
    for flag, path in (("trusted-ca-file", paths.ca), ("cert-file", paths.cert), ("key-file", paths.key)):
        if not path.is_file():
            raise ConfigError(f"--{what}{flag} {path}: no such file")
    return paths


def parse_config(argv: list[str] | None = None) -> ServerConfig:
    args = vars(build_parser().parse_args(argv))
    if args.get("config_file"):
        for key, value in _load_file(args["config_file"]).items():
            if args.get(key) is None:
                args[key] = value

    name = args.get("name") or DEFAULT_NAME
    insecure = bool(args.get("insecure_plaintext"))
    listen_peer = _split(args.get("listen_peer_urls")) or (default_peer_url(insecure),)
    listen_client = _split(args.get("listen_client_urls")) or (default_client_url(insecure),)
    adv_peer = _split(args.get("initial_advertise_peer_urls")) or listen_peer
    adv_client = _split(args.get("advertise_client_urls")) or listen_client
    for url in (*listen_peer, *listen_client, *adv_peer, *adv_client):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ConfigError(f"URL {url!r}: scheme must be https (or http with --insecure-plaintext)")
        if parts.scheme == "http" and not insecure:
            raise ConfigError(f"URL {url!r} is plaintext: use https, or pass --insecure-plaintext explicitly")
        if parts.scheme == "https" and insecure:
            raise ConfigError(f"URL {url!r} is https but --insecure-plaintext disables TLS")
        host_port(url)

    state = args.get("initial_cluster_state") or "new"
    cluster_items = parse_initial_cluster(args.get("initial_cluster"), name, adv_peer, state)

    overrides: dict[str, str] = {}
    for item in args.get("peer_dial_override") or ():
        peer, sep, addr = item.partition("=")
        if not sep:
            raise ConfigError(f"--peer-dial-override {item!r} must be NAME=HOST:PORT")
        overrides[peer] = addr

    heartbeat = args.get("heartbeat_interval") or DEFAULT_HEARTBEAT_MS
    election = args.get("election_timeout") or DEFAULT_ELECTION_MS
    if heartbeat <= 0 or election < 2 * heartbeat:
        raise ConfigError("--election-timeout must be at least twice --heartbeat-interval (etcd suggests 10x)")
    # The default shrinks with a short heartbeat; a value given explicitly is checked instead.
    batch_delay_ms = _or_default(args.get("batch_delay_ms"), min(DEFAULT_BATCH_DELAY_MS, heartbeat / 4))
    batch_min_pending = _or_default(args.get("batch_min_pending"), DEFAULT_BATCH_MIN_PENDING)
    if not 0 <= batch_delay_ms <= heartbeat / 4:
        raise ConfigError(
            f"--batch-delay-ms must be between 0 and a quarter of --heartbeat-interval ({heartbeat / 4:g})"
        )
    if batch_min_pending < 1:
        raise ConfigError("--batch-min-pending must be at least 1")
    commit_notice_delay_ms = _or_default(
        args.get("commit_notice_delay_ms"), min(DEFAULT_COMMIT_NOTICE_DELAY_MS, heartbeat / 4)
    )
    if not 0 <= commit_notice_delay_ms <= heartbeat / 4:
        raise ConfigError(
            f"--commit-notice-delay-ms must be between 0 and a quarter of --heartbeat-interval ({heartbeat / 4:g})"
        )

    client_tls = peer_tls = None
    if not insecure:
        client_tls = _tls(args.get("trusted_ca_file"), args.get("cert_file"), args.get("key_file"), "")
        peer_tls = _tls(
            args.get("peer_trusted_ca_file") or args.get("trusted_ca_file"),
            args.get("peer_cert_file") or args.get("cert_file"),
            args.get("peer_key_file") or args.get("key_file"),
            "peer-",
        )
        check_separate_cas(client_tls, peer_tls)
        check_peer_name(peer_tls, name)

    return ServerConfig(
        name=name,
        data_dir=Path(args.get("data_dir") or f"{name}.raftkv"),
        listen_peer_urls=listen_peer,
        advertise_peer_urls=adv_peer,
        listen_client_urls=listen_client,
        advertise_client_urls=adv_client,
        initial_cluster=cluster_items,
        initial_cluster_state=state,
        cluster_token=args.get("initial_cluster_token") or DEFAULT_TOKEN,
        client_tls=client_tls,
        peer_tls=peer_tls,
        heartbeat_ms=heartbeat,
        election_ms=election,
        snapshot_count=args.get("snapshot_count") or DEFAULT_SNAPSHOT_COUNT,
        snapshot_catchup_entries=_or_default(args.get("snapshot_catchup_entries"), DEFAULT_SNAPSHOT_CATCHUP_ENTRIES),
        quota_backend_bytes=args.get("quota_backend_bytes") or DEFAULT_QUOTA_BYTES,
        max_request_bytes=args.get("max_request_bytes") or DEFAULT_MAX_REQUEST_BYTES,
        batch_delay_ms=batch_delay_ms,
        batch_min_pending=batch_min_pending,
        commit_notice_delay_ms=commit_notice_delay_ms,
        corrupt_check_seconds=_duration(args["experimental_corrupt_check_time"], "experimental-corrupt-check-time")
        if args.get("experimental_corrupt_check_time") is not None else DEFAULT_CORRUPT_CHECK_SECONDS,
        listen_metrics_urls=_split(args.get("listen_metrics_urls")),
        enable_grpc_gateway=_boolean(_or_default(args.get("enable_grpc_gateway"), True)),
        leader_lease_reads=_boolean(_or_default(args.get("experimental_leader_lease_reads"), False)),
        peer_dial_overrides=overrides,
        log_level=args.get("log_level") or "info",
        planted_bug=args.get("unsafe_planted_bug"),
        client_crl_file=_crl(args.get("client_crl_file"), insecure, "client"),
        peer_crl_file=_crl(args.get("peer_crl_file"), insecure, "peer"),
    )


def _crl(path: str | None, insecure: bool, what: str) -> Path | None:
    if path and insecure:
        raise ConfigError(f"--{what}-crl-file needs TLS; it cannot be combined with --insecure-plaintext")
    return Path(path) if path else None

"""Run a raftkv (or etcd) cluster as local processes: for `kvctl cluster up`, tests and fault injection.

Members outlive the Python process that started them (`kvctl cluster up` returns while the cluster keeps
running), so everything needed to manage them later lives in files under ``base_dir``:

    base_dir/cluster.json        kind, TLS, timing and every member's name, ports and pid
    base_dir/certs/              CA, one certificate per member, client.crt/client.key
    base_dir/<name>/data/        the member's data directory
    base_dir/<name>/member.log   its stdout and stderr
    base_dir/<name>/member.pid   its process id

etcd and raftkv take the same flags for everything used here, which lets the same tests run against the
reference implementation.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar

import grpc

from raftkv.client.config import ClientConfig
from raftkv.local_processes import HOST, free_ports, pid_alive, wait_until
from raftkv.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.security.certs import PEER_DIR, init_cluster_certs

Kind = Literal["raftkv", "etcd"]
CLUSTER_FILE = "cluster.json"
#: Prefix of every local cluster's ``--initial-cluster-token``. Each cluster adds random bytes, so that each
#: has its own cluster id (ids derive from the token) and members of two clusters never take each other's
#: messages; clusters described before tokens were per cluster use the bare prefix.
CLUSTER_TOKEN = "raftkv-local"
T = TypeVar("T")
#: How a member's log line says how bad it is, worst first: etcd 3.4's level letter (``... C | etcdmain:``,
#: critical, fatal, panic), raftkv's level name or the line it exits with (``raftkv: error: ...``), else
#: words a line of any level may contain.
LOG_SEVERITIES = (
    re.compile(r" [CFP] \| | (CRITICAL|FATAL) |^raftkv: error: "),
    re.compile(r" E \| | ERROR "),
    re.compile(r"error|fatal|panic", re.IGNORECASE),
)


class ClusterError(RuntimeError):
    """A member failed to start or the cluster did not become ready; the message names the log to read."""


@dataclass
class MemberInfo:
    """One member's fixed identity (name, ports) plus its last known process id."""

    name: str
    client_port: int
    peer_port: int
    metrics_port: int
    pid: int | None = None
    #: ``new`` for founding members; ``existing`` for members added to a running cluster.
    initial_state: str = "new"
    #: Founding members plus this one, as passed to ``--initial-cluster`` (needed again on restart).
    initial_cluster: str = ""

    def url(self, port: int, tls: bool) -> str:
        return f"{'https' if tls else 'http'}://{HOST}:{port}"


@dataclass
class _Settings:
    kind: Kind
    tls: bool
    heartbeat_ms: int
    election_ms: int
    extra_args: list[str] = field(default_factory=list)
    token: str = CLUSTER_TOKEN
    #: member -> {peer -> "host:port"}: where that member dials that peer (raftkv only; e.g. a proxy).
    peer_dial_overrides: dict[str, dict[str, str]] = field(default_factory=dict)


def _member_env() -> dict[str, str]:
    """The environment for member processes: ours, plus this checkout on PYTHONPATH so that
    ``python -m raftkv.main`` finds the same code whether or not raftkv is installed."""
    source_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH")) if p)
    return env


class LocalCluster:
    """A cluster of local member processes named n1..nN, managed through files in ``base_dir``.

    Constructing it does not start anything. If ``base_dir`` already describes a cluster, that description
    (members, ports, pids) is reused and ``size``/``base_port`` are ignored; ``kind`` and ``tls`` must match.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        size: int = 3,
        *,
        kind: Kind = "raftkv",
        tls: bool = True,
        base_port: int | None = None,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        extra_args: Sequence[str] = (),
        peer_dial_overrides: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        self._settings: _Settings
        if (self.base_dir / CLUSTER_FILE).exists():
            self._load()
            if (self._settings.kind, self._settings.tls) != (kind, tls):
                raise ClusterError(
                    f"{self.base_dir} holds a {self._settings.kind} cluster with tls={self._settings.tls}; "
                    f"use another directory or LocalCluster.open()"
                )
            return
        if kind not in ("raftkv", "etcd"):
            raise ValueError(f"unknown kind {kind!r}")
        if size < 1:
            raise ValueError("a cluster needs at least one member")
        self._settings = _Settings(
            kind=kind, tls=tls, heartbeat_ms=heartbeat_ms, election_ms=election_ms,
            extra_args=list(extra_args), token=f"{CLUSTER_TOKEN}-{secrets.token_hex(6)}",
            peer_dial_overrides={m: dict(o) for m, o in (peer_dial_overrides or {}).items()},
        )
        if kind == "etcd" and self._settings.peer_dial_overrides:
            raise ValueError("peer_dial_overrides need raftkv; etcd has no such flag")
        names = [f"n{i}" for i in range(1, size + 1)]
        ports = self._allocate_ports(base_port, len(names), first_index=0)
        self._members = {
            name: MemberInfo(name, *ports[i]) for i, name in enumerate(names)
        }
        initial = self._initial_cluster(self._members.values())
        for member in self._members.values():
            member.initial_cluster = initial
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._save()

    @classmethod
    def open(cls, base_dir: str | os.PathLike[str]) -> LocalCluster:
        """Attach to the cluster described in ``base_dir/cluster.json`` (whatever its kind)."""
        path = Path(base_dir).resolve() / CLUSTER_FILE
        if not path.exists():
            raise ClusterError(f"no cluster in {path.parent}; start one with `kvctl cluster up --dir {base_dir}`")
        settings = json.loads(path.read_text())["settings"]
        return cls(base_dir, kind=settings["kind"], tls=settings["tls"])

    # ----------------------------------------------------------------- state files

    def _load(self) -> None:
        data = json.loads((self.base_dir / CLUSTER_FILE).read_text())
        self._settings = _Settings(**data["settings"])
        self._members = {m["name"]: MemberInfo(**m) for m in data["members"]}

    def _save(self) -> None:
        """Write cluster.json atomically: another process may be reading it."""
        data = {
            "settings": asdict(self._settings),
            "members": [asdict(m) for m in self._members.values()],
            "endpoints": self.endpoints,
        }
        tmp = self.base_dir / f".{CLUSTER_FILE}.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.base_dir / CLUSTER_FILE)

    # ----------------------------------------------------------------- description

    @property
    def kind(self) -> Kind:
        return self._settings.kind

    @property
    def tls(self) -> bool:
        return self._settings.tls

    @property
    def token(self) -> str:
        """The cluster's ``--initial-cluster-token`` (its cluster id derives from it)."""
        return self._settings.token

    @property
    def members(self) -> list[MemberInfo]:
        return list(self._members.values())

    @property
    def names(self) -> list[str]:
        return list(self._members)

    @property
    def peer_dial_overrides(self) -> dict[str, dict[str, str]]:
        return self._settings.peer_dial_overrides

    def set_peer_dial_overrides(self, overrides: Mapping[str, Mapping[str, str]]) -> None:
        """Change where members dial their peers; takes effect when a member is (re)started."""
        if self.kind == "etcd" and overrides:
            raise ValueError("peer_dial_overrides need raftkv; etcd has no such flag")
        self._settings.peer_dial_overrides = {m: dict(o) for m, o in overrides.items()}
        self._save()

    def member(self, name: str) -> MemberInfo:
        try:
            return self._members[name]
        except KeyError:
            raise ClusterError(f"no member {name!r}; members are {', '.join(self._members)}") from None

    def client_url(self, name: str) -> str:
        return self.member(name).url(self.member(name).client_port, self.tls)

    def peer_url(self, name: str) -> str:
        return self.member(name).url(self.member(name).peer_port, self.tls)

    def metrics_url(self, name: str) -> str:
        return f"http://{HOST}:{self.member(name).metrics_port}"

    @property
    def endpoints(self) -> list[str]:
        return [self.client_url(name) for name in self._members]

    @property
    def certs_dir(self) -> Path:
        return self.base_dir / "certs"

    def member_dir(self, name: str) -> Path:
        return self.base_dir / name

    def log_path(self, name: str) -> Path:
        return self.member_dir(name) / "member.log"

    def client_config(self, endpoints: Sequence[str] | None = None) -> ClientConfig:
        """Connection settings for this cluster's client certificate (all members unless ``endpoints``)."""
        eps = tuple(endpoints or self.endpoints)
        if not self.tls:
            return ClientConfig(endpoints=eps, insecure=True)
        return ClientConfig(
            endpoints=eps,
            cacert=str(self.certs_dir / "ca.crt"),
            cert=str(self.certs_dir / "client.crt"),
            key=str(self.certs_dir / "client.key"),
        )

    def env(self) -> dict[str, str]:
        """Variables that point kvctl (KVCTL_*) and etcdctl (ETCDCTL_*) at this cluster."""
        joined = ",".join(self.endpoints)
        env = {"KVCTL_ENDPOINTS": joined, "ETCDCTL_API": "3", "ETCDCTL_ENDPOINTS": joined}
        if self.tls:
            files = {"CACERT": "ca.crt", "CERT": "client.crt", "KEY": "client.key"}
            for var, file in files.items():
                env[f"KVCTL_{var}"] = env[f"ETCDCTL_{var}"] = str(self.certs_dir / file)
        else:
            env["KVCTL_INSECURE"] = "1"
        return env

    # ----------------------------------------------------------------- processes

    def pid(self, name: str) -> int | None:
        """The member's pid if it is running, else None."""
        pid = self.member(name).pid
        return pid if pid is not None and pid_alive(pid) else None

    def is_running(self, name: str) -> bool:
        return self.pid(name) is not None

    def running(self) -> list[str]:
        return [name for name in self._members if self.is_running(name)]

    def _ensure_certs(self) -> None:
        """Make the CA and all certificates on first use; issue certificates for members added later."""
        missing = [n for n in self._members if not all(p.exists() for p in self._cert_files(n))]
        if self.tls and missing:
            init_cluster_certs(self.certs_dir, list(self._members))

    def _cert_files(self, name: str) -> tuple[Path, Path]:
        """The member's certificates for its client port and its peer port (``raftkv.security.certs``)."""
        return self.certs_dir / f"{name}.crt", self.certs_dir / PEER_DIR / f"{name}.crt"

    def command(self, name: str) -> list[str]:
        """The full command line that starts member ``name``."""
        member = self.member(name)
        settings = self._settings
        data_dir = self.member_dir(name) / "data"
        base = [sys.executable, "-m", "raftkv.main"] if settings.kind == "raftkv" else ["etcd"]
        args = [
            "--name", name,
            "--data-dir", str(data_dir),
            "--listen-peer-urls", self.peer_url(name),
            "--initial-advertise-peer-urls", self.peer_url(name),
            "--listen-client-urls", self.client_url(name),
            "--advertise-client-urls", self.client_url(name),
            "--listen-metrics-urls", self.metrics_url(name),
            "--initial-cluster", member.initial_cluster,
            "--initial-cluster-state", member.initial_state,
            "--initial-cluster-token", settings.token,
            "--heartbeat-interval", str(settings.heartbeat_ms),
            "--election-timeout", str(settings.election_ms),
        ]
        if settings.tls:
            certs = self.certs_dir
            args += [
                "--trusted-ca-file", str(certs / "ca.crt"),
                "--cert-file", str(certs / f"{name}.crt"),
                "--key-file", str(certs / f"{name}.key"),
                "--peer-trusted-ca-file", str(certs / PEER_DIR / "ca.crt"),
                "--peer-cert-file", str(certs / PEER_DIR / f"{name}.crt"),
                "--peer-key-file", str(certs / PEER_DIR / f"{name}.key"),
            ]
            if settings.kind == "etcd":
                args += ["--client-cert-auth", "--peer-client-cert-auth"]
        elif settings.kind == "raftkv":
            args.append("--insecure-plaintext")
        for peer, address in sorted(settings.peer_dial_overrides.get(name, {}).items()):
            args += ["--peer-dial-override", f"{peer}={address}"]
        return base + args + list(settings.extra_args)

    def start(self) -> None:
        """Start every member that is not running (running members are left alone)."""
        for name in self._members:
            if not self.is_running(name):
                self.start_member(name)

    def start_member(self, name: str) -> int:
        """Start one member in the background (no-op if it runs); returns its pid."""
        pid = self.pid(name)
        if pid is not None:
            return pid
        self._ensure_certs()
        member_dir = self.member_dir(name)
        member_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "ab") as log:
            # A new session: Ctrl-C in the terminal that ran `kvctl cluster up` must not reach the members.
            process = subprocess.Popen(
                self.command(name), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=member_dir, env=_member_env(),
            )
        self.member(name).pid = process.pid
        (member_dir / "member.pid").write_text(f"{process.pid}\n")
        self._save()
        return process.pid

    def _signal(self, name: str, sig: signal.Signals) -> int | None:
        pid = self.pid(name)
        if pid is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return None
        return pid

    def _forget(self, name: str) -> None:
        self.member(name).pid = None
        (self.member_dir(name) / "member.pid").unlink(missing_ok=True)
        self._save()

    def stop_member(self, name: str, timeout: float = 10.0) -> None:
        """SIGTERM and wait for a clean exit; SIGKILL if it does not exit within ``timeout`` seconds."""
        pid = self._signal(name, signal.SIGCONT)  # a paused member cannot handle SIGTERM
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):  # it may stop on its own meanwhile (it was removed)
                os.kill(pid, signal.SIGTERM)
            if not wait_until(lambda: not pid_alive(pid), timeout):
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda: not pid_alive(pid), timeout)
        self._forget(name)

    def kill_member(self, name: str) -> None:
        """SIGKILL: a crash, with no chance to flush or say goodbye."""
        pid = self._signal(name, signal.SIGKILL)
        if pid is not None:
            wait_until(lambda: not pid_alive(pid), 10.0)
        self._forget(name)

    def pause_member(self, name: str) -> None:
        """SIGSTOP: the member keeps its sockets but stops answering (a stalled machine)."""
        if self._signal(name, signal.SIGSTOP) is None:
            raise ClusterError(f"{name} is not running")

    def resume_member(self, name: str) -> None:
        if self._signal(name, signal.SIGCONT) is None:
            raise ClusterError(f"{name} is not running")

    def restart_member(self, name: str) -> int:
        self.stop_member(name)
        return self.start_member(name)

    def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL for stragglers)."""
        for name in self._members:
            self.stop_member(name)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- health and leadership

    def status(self, name: str, timeout: float = 1.0) -> rpc_pb2.StatusResponse | None:
        """The member's Maintenance/Status answer, or None if it does not answer in time."""
        config = self.client_config([self.client_url(name)])
        with config.channel(self.client_url(name)) as channel:
            try:
                return rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest(), timeout=timeout)
            except grpc.RpcError:
                return None

    def _statuses(self) -> Iterator[tuple[str, rpc_pb2.StatusResponse]]:
        for name in self.running():
            answer = self.status(name)
            if answer is not None:
                yield name, answer

    def leader_name(self) -> str | None:
        """The member that some running member reports as leader, or None if none knows a leader."""
        statuses = dict(self._statuses())
        ids = {s.header.member_id: name for name, s in statuses.items()}
        for answer in statuses.values():
            if answer.leader and answer.leader in ids:
                return ids[answer.leader]
        return None

    def member_id(self, name: str, timeout: float = 15.0) -> int | None:
        """The running member's id from its own Status answer, asked again until ``timeout``: on a loaded
        machine one Status (a fresh TLS channel) can miss its second while the member is healthy. None
        only when the member has stopped or never answered in time."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.status(name, timeout=max(1.0, min(5.0, deadline - time.monotonic())))
            if answer is not None:
                return answer.header.member_id
            if not self.is_running(name) or time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def wait_ready(self, timeout: float = 30.0, *, all_members: bool = False) -> str:
        """Wait until some member reports a leader that answers (and, with ``all_members``, until every
        member answers Status and knows a leader); returns the leader's name.

        Raises ClusterError naming each member that died and the last error line of its log, which is
        nearly always why; with ``all_members`` as soon as one has died (it cannot come back by itself)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n in self._members if not self.is_running(n)]
            if (all_members and dead) or len(dead) == len(self._members):
                break  # waiting longer cannot help
            leader = self.leader_name()
            if leader is not None and (
                not all_members or all((s := self.status(n)) is not None and s.leader for n in self._members)
            ):
                return leader
            time.sleep(0.1)
        dead = [n for n in self._members if not self.is_running(n)]
        if dead:
            raise ClusterError("; ".join(f"{n} exited: {self.last_error(n)} (log {self.log_path(n)})" for n in dead))
        waiting = "every member to know a leader" if all_members else "a leader"
        raise ClusterError(f"members run but after {timeout:.0f}s there is still no {waiting}; "
                           f"see {self.base_dir}/*/member.log")

    def last_error(self, name: str) -> str:
        """The line of a member's log that best says why it stopped: its last line of the worst severity
        found (``LOG_SEVERITIES``), else its last line. By severity, not simply the last line that says
        "error": etcd goes on logging while it shuts down after a fatal error, at info level, and such a
        line can mention an error ("rejected connection ... use of closed network connection")."""
        try:
            lines = [line.strip() for line in self.log_path(name).read_text(errors="replace").splitlines()]
        except OSError:
            return "no log"
        lines = [line for line in lines if line]
        for severity in LOG_SEVERITIES:
            for line in reversed(lines):
                if severity.search(line):
                    return line
        return lines[-1] if lines else "nothing in its log"

    def wait_member_ready(self, name: str, timeout: float = 30.0) -> None:
        """Wait until ``name`` answers Status and knows a leader."""
        if not wait_until(lambda: bool((s := self.status(name)) and s.leader), timeout, 0.1):
            raise ClusterError(f"{name} not ready after {timeout:.0f}s; see {self.log_path(name)}")

    # ----------------------------------------------------------------- membership changes

    def _allocate_ports(self, base_port: int | None, count: int, first_index: int) -> list[tuple[int, int, int]]:
        """(client, peer, metrics) ports: base+10i, +1, +2 (n1 gets etcd's 2379/2380/2381) or free ones."""
        if base_port is None:
            flat = free_ports(3 * count)
            return [(flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]) for i in range(count)]
        return [
            (base_port + 10 * i, base_port + 10 * i + 1, base_port + 10 * i + 2)
            for i in range(first_index, first_index + count)
        ]

    def _initial_cluster(self, members: Iterable[MemberInfo]) -> str:
        return ",".join(f"{m.name}={m.url(m.peer_port, self.tls)}" for m in members)

    def add_member(
        self, name: str | None = None, *, learner: bool = False, start: bool = True, timeout: float = 15.0
    ) -> str:
        """`member add` through a running member, then (by default) start the new member with
        ``--initial-cluster-state existing``. Returns the new member's name."""
        if name is None:
            index = len(self._members) + 1
            while f"n{index}" in self._members:
                index += 1
            name = f"n{index}"
        if name in self._members:
            raise ClusterError(f"member {name} already exists")
        existing = list(self._members.values())
        used_base = min(m.client_port for m in existing)
        sequential = all(m.client_port == used_base + 10 * i for i, m in enumerate(existing))
        ports = self._allocate_ports(used_base if sequential else None, 1, first_index=len(existing))[0]
        member = MemberInfo(name, *ports, initial_state="existing")
        self._members[name] = member
        try:
            self._ensure_certs()
            running = [m for m in existing if self.is_running(m.name)]
            if not running:
                raise ClusterError("no member is running to accept `member add`")
            config = self.client_config([self.client_url(m.name) for m in running])
            request = rpc_pb2.MemberAddRequest(peerURLs=[self.peer_url(name)], isLearner=learner)
            self._reconfigure(config, lambda ch: rpc_pb2_grpc.ClusterStub(ch).MemberAdd(request, timeout=5),
                              timeout)
        except BaseException:
            del self._members[name]
            raise
        member.initial_cluster = self._initial_cluster([*existing, member])
        self._save()
        if start:
            self.start_member(name)
        return name

    def move_peer(self, name: str, peer_port: int) -> None:
        """Give a stopped member another peer port, for restarting it on the peer URL that ``member
        update`` recorded for it (its data dir, and so its member id, stay the same)."""
        if self.is_running(name):
            raise ClusterError(f"stop {name} before moving its peer port")
        member = self.member(name)
        old = self.peer_url(name)
        member.peer_port = peer_port
        member.initial_cluster = member.initial_cluster.replace(f"{name}={old}", f"{name}={self.peer_url(name)}")
        self._save()

    def remove_member(self, name: str, *, timeout: float = 15.0) -> None:
        """`member remove` through another running member, then stop the removed member's process."""
        target_id = self.member_id(name)
        if target_id is None:
            raise ClusterError(f"{name} is not answering, so its member id is unknown")
        others = [n for n in self.running() if n != name]
        config = self.client_config([self.client_url(n) for n in others])
        request = rpc_pb2.MemberRemoveRequest(ID=target_id)
        self._reconfigure(config, lambda ch: rpc_pb2_grpc.ClusterStub(ch).MemberRemove(request, timeout=5),
                          timeout)
        self.stop_member(name)
        del self._members[name]
        self._save()

    @classmethod
    def _reconfigure(cls, config: ClientConfig, call: Callable[[grpc.Channel], T], timeout: float) -> T:
        """A membership change through any member. etcd refuses them ("unhealthy cluster") until every
        member has been connected for a few seconds, e.g. just after a start, and both refuse them while
        no leader is known (a two-member cluster whose new member is still starting loses its leader to
        check-quorum); both are worth waiting for, and neither change entered the log."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return cls._call_any(config, call)
            except ClusterError as exc:
                transient = "unhealthy cluster" in str(exc) or "no leader" in str(exc)
                if not transient or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @staticmethod
    def _call_any(config: ClientConfig, call: Callable[[grpc.Channel], T]) -> T:
        """Try ``call(channel)`` on each endpoint until one succeeds (admin calls need no leader routing)."""
        errors: list[str] = []
        for endpoint in config.endpoints:
            with config.channel(endpoint) as channel:
                try:
                    return call(channel)
                except grpc.RpcError as exc:
                    errors.append(f"{endpoint}: {exc.details()}")
        raise ClusterError("no member accepted the request: " + "; ".join(errors))

"""The chaos run: start everything, drive the load and the nemesis, collect, write the results.

Processes (all started here, all stopped at the end, even on failure):

    raftkv cluster (3 members, mutual TLS)         the registry; its leader is SIGKILLed every 20 s
    demo instances i0..i2 (fixed ports)            each registered through raftkv, health-gated
    kvctl xds serve (mutual TLS)                   the xDS control plane for the "xds" target
    haproxy, nginx                                 in front of the same instances
    one load generator per target                  ``load.py``
    throwaway registrations ("sidecars")           SIGKILLed to time their key's removal

By default the targets take turns, each under the same nemesis plan on the same instances and cluster: a
2-core machine cannot serve four times 500 calls/s of Python gRPC at once (measured: every target's p50 went
to seconds, which benchmarks the machine, not the balancers). ``concurrent`` runs them at once where the
cores exist. Instances keep their port across restarts, as they would on a machine, so the proxies' static
server lists stay right.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc

from raftkv import discovery
from raftkv.discovery import demo, record
from raftkv.discovery.chaos import hashing, html, proxies, report
from raftkv.discovery.chaos.schedule import Event, Fault, plan
from raftkv.discovery.view import Change, ChangeKind
from raftkv.discovery.xds import bootstrap
from raftkv.local_processes import free_ports
from raftkv.localcluster import LocalCluster
from raftkv.security import certs

log = logging.getLogger("raftkv.discovery.chaos")
SERVICE = "demo"
SIDECARS = "chaos-sidecars"
TARGETS = ("raftkv", "xds", "haproxy", "nginx")
REPO = Path(__file__).resolve().parents[3]
#: How long a restarted instance may take to say ready (its next kill may come first: that ends the wait).
RESTART_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class Options:
    duration: float
    out: Path
    rate: float = 500.0
    instances: int = 3
    #: SHA-256 rounds per call on the instances: real CPU work, a fraction of a millisecond.
    work: int = 200
    ttl: int = 5
    deadline: float = 2.0
    #: Seconds of calm load before the chaos to compare the balanced channel's CPU per call with a plain one's.
    calibrate: float = 10.0
    #: All targets at once instead of one after the other (needs cores for 4x the rate).
    concurrent: bool = False


class Instance:
    """One demo instance process on a fixed port, registered through raftkv.discovery."""

    def __init__(self, name: str, port: int, work: int, ttl: int, env: Mapping[str, str], logs: Path,
                 service: str = SERVICE, health: str = "grpc") -> None:
        self.name, self.port, self.addr = name, port, f"127.0.0.1:{port}"
        self.args = ["--port", str(port), "--name", name, "--work", str(work), "--register", service,
                     "--ttl", str(ttl), "--health", health]
        self.env, self.logs = dict(env), logs
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.close()  # a previous process that never said ready must not live on beside the new one
        log_file = open(self.logs / f"{self.name}.log", "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "raftkv.discovery.demo", *self.args], env=self.env,
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=log_file, text=True)
        log_file.close()
        assert self.proc.stdout is not None
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        if not ready or not ready[0].startswith("ready"):
            raise RuntimeError(f"instance {self.name} did not start; see {self.logs / (self.name + '.log')}")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def control(self, *commands: str) -> None:
        for command in commands:
            demo.control(self.addr, command, timeout=2.0)

    def close(self) -> None:
        if self.proc is not None:
            self.signal(signal.SIGCONT)
            self.kill()
            if self.proc.stdout is not None:
                self.proc.stdout.close()


class RegistryLog:
    """Every change to the demo and sidecar registrations, with its monotonic time."""

    def __init__(self, client: Any) -> None:
        self.events: list[tuple[float, str, str, str]] = []  # (t, service, kind, instance id)
        self.resolvers = []
        for service in (SERVICE, SIDECARS):
            resolver = discovery.resolve(service, client=client, wait=30.0)
            resolver.subscribe(self._recorder(service))
            self.resolvers.append(resolver)

    def _recorder(self, service: str) -> Any:
        def changed(changes: list[Change], _instances: Mapping[str, record.Instance]) -> None:
            now = time.monotonic()
            for change in changes:
                self.events.append((now, service, change.kind.value, change.instance.id))
        return changed

    def instances(self, service: str = SERVICE) -> set[str]:
        return set(self.resolvers[0 if service == SERVICE else 1].instances)

    def removed_after(self, service: str, instance: str, since: float) -> float | None:
        for t, s, kind, name in self.events:
            if s == service and name == instance and kind == ChangeKind.REMOVED.value and t >= since:
                return t
        return None

    def close(self) -> None:
        for resolver in self.resolvers:
            resolver.stop()


class Run:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.o, self.work = options, workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cluster = LocalCluster(workdir / "cluster", 3, kind="raftkv", tls=True)
        self.procs: list[subprocess.Popen[Any]] = []
        self.instances: list[Instance] = []
        self.sidecars: list[Instance] = []
        self.errors: list[str] = []
        self._background: list[threading.Thread] = []

    # ------------------------------------------------------------------ set up

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("KVCTL_", "ETCDCTL_", "GRPC_"))}
        source = str(REPO)
        base["PYTHONPATH"] = os.pathsep.join(p for p in (source, base.get("PYTHONPATH")) if p)
        return {**base, **self.cluster.env()}

    def start(self) -> None:
        self.cluster.start()
        self.cluster.wait_ready(60.0, all_members=True)
        ports = free_ports(self.o.instances + 3)
        env = self.env()
        for i in range(self.o.instances):
            instance = Instance(f"i{i}", ports[i], self.o.work, self.o.ttl, env, self.logs)
            instance.start()
            self.instances.append(instance)
        self.haproxy_port, self.nginx_port, self.xds_port = ports[self.o.instances:]
        backends = [(i.name, i.addr) for i in self.instances]
        self.procs.append(proxies.start_haproxy(self.haproxy_port, backends, self.work))
        self.procs.append(proxies.start_nginx(self.nginx_port, backends, self.work))
        self._start_xds(env)
        self.client = self.cluster_client()
        self.registry = RegistryLog(self.client)
        self._new_sidecar()
        _poll(lambda: self.registry.instances() == {i.name for i in self.instances}, 30.0,
              "every instance registered")
        for port in (self.haproxy_port, self.nginx_port):
            _poll(lambda: _answers(f"127.0.0.1:{port}"), 30.0, f"the proxy on port {port} answering")

    def cluster_client(self) -> Any:
        from raftkv.client import Client

        return Client(config=self.cluster.client_config(None))

    def _start_xds(self, env: dict[str, str]) -> None:
        root = self.cluster.base_dir / "certs"
        ca = certs.load_issued(root / "ca.crt", root / "ca.key")
        cert, key = root / "xds.crt", root / "xds.key"
        certs.write_issued(certs.issue_node(ca, "xds"), cert, key)
        out = open(self.logs / "xds.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "cli.kvctl", "xds", "serve", "--listen",
                                 f"127.0.0.1:{self.xds_port}", "--listen-cert", str(cert), "--listen-key", str(key),
                                 "--retry-on", "unavailable"],
                                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.procs.append(proc)
        document = bootstrap.bootstrap(SERVICE, f"127.0.0.1:{self.xds_port}", cacert=str(root / "ca.crt"),
                                       cert=str(root / "client.crt"), key=str(root / "client.key"))
        self.bootstrap_file = self.work / "xds-bootstrap.json"
        self.bootstrap_file.write_text(bootstrap.dumps(document))

    def _new_sidecar(self) -> None:
        [port] = free_ports(1)
        sidecar = Instance(f"sidecar-{len(self.sidecars)}", port, 0, self.o.ttl, self.env(), self.logs,
                           service=SIDECARS, health="none")
        self.sidecars.append(sidecar)  # before it starts: one that is slow to say ready is still stopped at the end
        sidecar.start()

    # ------------------------------------------------------------------ load

    def load(self, kind: str, address: str, *, start_at: float, duration: float, name: str) -> subprocess.Popen[Any]:
        env = self.env()
        if kind == "xds":
            env["GRPC_XDS_BOOTSTRAP"] = str(self.bootstrap_file)
        out = self.work / f"load-{name}.json"
        err = open(self.logs / f"load-{name}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "raftkv.discovery.chaos.load", "--kind", kind,
                                 "--address", address, "--service", SERVICE, "--rate", str(self.o.rate),
                                 "--duration", str(duration), "--start-at", str(start_at),
                                 "--deadline", str(self.o.deadline), "--out", str(out)],
                                env=env, cwd=REPO, stdout=err, stderr=subprocess.STDOUT)
        err.close()
        self.procs.append(proc)
        return proc

    def collect(self, name: str, proc: subprocess.Popen[Any], timeout: float) -> dict[str, Any] | None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        path = self.work / f"load-{name}.json"
        if proc.returncode != 0 or not path.exists():
            self.errors.append(f"load generator {name} failed (exit {proc.returncode}); "
                               f"see {self.logs / f'load-{name}.log'}")
            return None
        return dict(json.loads(path.read_text()))

    def calibrate(self) -> dict[str, Any]:
        """Calm load, same rate, three clients at once: a plain channel straight to one instance, a plain
        channel with grpc's own round_robin over every instance, and the balanced channel over the same
        instances. Balanced against round_robin is the overhead of balancing in Python, like for like
        (spreading calls over three connections costs more per call than one, for grpc's balancer too)."""
        start_at = time.monotonic() + 3.0
        every = ",".join(i.addr for i in self.instances)
        procs = {"plain": self.load("direct", self.instances[0].addr, start_at=start_at, duration=self.o.calibrate,
                                    name="calibrate-plain"),
                 "round_robin": self.load("round_robin", every, start_at=start_at, duration=self.o.calibrate,
                                          name="calibrate-round_robin"),
                 "balanced": self.load("raftkv", "", start_at=start_at, duration=self.o.calibrate,
                                       name="calibrate-balanced")}
        results = {name: self.collect(f"calibrate-{name}", p, self.o.calibrate + 60) for name, p in procs.items()}
        return report.calibration(results)

    def chaos(self) -> dict[str, Any]:
        """Each target in turn under the same plan (or all at once with ``concurrent``), then the figures."""
        addresses = {"raftkv": ("raftkv", ""), "xds": ("xds", ""),
                     "haproxy": ("direct", f"127.0.0.1:{self.haproxy_port}"),
                     "nginx": ("direct", f"127.0.0.1:{self.nginx_port}")}
        events = plan(self.o.duration, self.o.instances)
        groups = [list(addresses)] if self.o.concurrent else [[name] for name in addresses]
        phases: dict[str, report.Phase] = {}
        for group in groups:
            self.ready_for_phase()
            start_at = time.monotonic() + 5.0
            procs = {name: self.load(*addresses[name], start_at=start_at, duration=self.o.duration, name=name)
                     for name in group}
            faults = self.nemesis(start_at, events)
            for thread in self._background:
                thread.join(60)
            self._background.clear()
            for name, proc in procs.items():
                # a starved generator may finish its schedule late: that is its figure to report, not a hang
                timeout = self.o.duration + self.o.deadline * 3 + 120
                phases[name] = report.Phase(self.collect(name, proc, timeout), faults, start_at)
        return report.result(phases, self.registry.events, self.o)

    def ready_for_phase(self) -> None:
        """Every instance up, serving and registered, every member up, before a phase starts."""
        for instance in self.instances:
            if instance.proc is None or instance.proc.poll() is not None:
                instance.start()
            instance.control("ok", "serving")
        self.cluster.start()
        self.cluster.wait_ready(60.0, all_members=True)
        _poll(lambda: self.registry.instances() == {i.name for i in self.instances}, 30.0,
              "every instance registered")

    # ------------------------------------------------------------------ nemesis

    def nemesis(self, start_at: float, events: list[Event]) -> list[dict[str, Any]]:
        """Apply the plan from ``start_at``; returns what was done when (seconds from ``start_at``)."""
        done: list[dict[str, Any]] = []
        for event in events:
            wait = start_at + event.at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                target = self.apply(event)
            except Exception as exc:  # noqa: BLE001 - a failed fault is reported, the run goes on
                self.errors.append(f"{event.fault.value} at {event.at:g}s failed: {exc}")
                continue
            done.append({"at": round(time.monotonic() - start_at, 3), "planned": event.at,
                         "fault": event.fault.value, "target": target})
        wait = start_at + self.o.duration - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return done

    def apply(self, event: Event) -> str:
        f = event.fault
        if f is Fault.LEADER_KILL:
            self._killed_leader = self.cluster.wait_ready(10.0)
            self.cluster.kill_member(self._killed_leader)
            return self._killed_leader
        if f is Fault.LEADER_RESTART:
            self.cluster.start_member(self._killed_leader)
            return self._killed_leader
        if f is Fault.SIDECAR_KILL:
            victim = self.sidecars[-1]
            victim.kill()
            self._in_background(self._new_sidecar)
            return victim.name
        instance = self.instances[event.target]
        if f is Fault.KILL:
            instance.kill()
        elif f is Fault.RESTART:
            # a loaded machine may take long to start Python and gRPC: wait rather than kill and retry
            self._in_background(lambda: instance.start(timeout=RESTART_TIMEOUT))
        elif f is Fault.STOP:
            instance.signal(signal.SIGSTOP)
        elif f is Fault.CONT:
            instance.signal(signal.SIGCONT)
        elif f is Fault.NOT_SERVING:
            instance.control("not-serving", "fail")
        elif f is Fault.SERVING:
            instance.control("ok", "serving")
        return instance.name

    def _in_background(self, work: Any) -> None:
        def run() -> None:
            try:
                work()
            except Exception as exc:  # noqa: BLE001
                self.errors.append(str(exc))
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._background.append(thread)

    # ------------------------------------------------------------------ tear down

    def close(self) -> None:
        for thread in self._background:  # a restart in flight would start an instance after the kill below
            thread.join(60)
        with contextlib.suppress(Exception):
            self.registry.close()
        with contextlib.suppress(Exception):
            self.client.close()
        for instance in [*self.instances, *self.sidecars]:
            instance.close()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.cluster.stop()


def _answers(addr: str) -> bool:
    try:
        with grpc.insecure_channel(addr) as channel:
            channel.unary_unary(demo.ECHO)(b"probe", timeout=2.0)
        return True
    except grpc.RpcError:
        return False


def _poll(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def execute(options: Options) -> dict[str, Any]:
    """Run everything; write ``result.json`` and ``report.html`` into ``options.out``; return the result."""
    options.out.mkdir(parents=True, exist_ok=True)
    work = options.out / "work"
    work.mkdir(exist_ok=True)
    run = Run(options, work)
    try:
        run.start()
        calibration = run.calibrate() if options.calibrate > 0 else {}
        result = run.chaos()
    finally:
        run.close()
    result["calibration"] = calibration
    result["hashing"] = hashing.measure()
    result["errors"] = run.errors
    result["floors"] = report.floors(result)
    (options.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    (options.out / "report.html").write_text(html.render(result))
    return result

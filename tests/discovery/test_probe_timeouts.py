"""Health gating tells an answer from silence, with real instance processes, real gRPC health and a real
cluster: an instance that *answers* NOT_SERVING leaves rotation within the issue's bound, while probes
that time out together (every instance SIGSTOPped at once, as a loaded machine makes them) empty nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping

from raftkv.client import Client
from raftkv.discovery import Change, ChangeKind, Instance, Registration, State, Verdict, channel, register, resolve
from raftkv.discovery.demo import ECHO, control
from tests.discovery.conftest import Instances, eventually


@contextlib.contextmanager
def gated(service: str, addrs: list[str], client: Client, **options: object) -> Iterator[list[Registration]]:
    regs = [register(service, addr, instance_id=f"i{n}", health="grpc", client=client, wait=None, **options)
            for n, addr in enumerate(addrs)]
    try:
        yield regs
    finally:
        for reg in regs:
            reg.stop()


def test_an_instance_answering_not_serving_gets_no_call_1s_after(client: Client, service: str,
                                                                 instances: Instances) -> None:
    addrs = [instances.process()[1] for _ in range(2)]
    attempts: list[tuple[str, float]] = []
    lock = threading.Lock()

    def seen(instance_id: str, started: float, code: object) -> None:
        with lock:
            attempts.append((instance_id, started))

    with gated(service, addrs, client, health_interval=0.1) as regs:
        eventually(lambda: all(r.registered for r in regs), 60, "both instances registered")
        # Without its own health watch the channel learns of NOT_SERVING only from the registry: the path
        # the registrar's gate decides, and the one grpc-go's etcd resolver and the xDS clients see.
        with channel(service, client=client, health_check=False, on_attempt=seen) as ch:
            assert ch.wait_for_instances(2, 30)
            echo = ch.unary_unary(ECHO)
            turned = time.monotonic()
            control(addrs[0], "not-serving")
            while time.monotonic() < turned + 2.0 or any(i["id"] == "i0" for i in ch.instances()):
                echo(b"x", timeout=10)
                assert time.monotonic() < turned + 30, "i0 was never withdrawn"
        gate = regs[0].lifecycle.gate
        assert gate is not None and not gate.passing and gate.reason == "2 failing checks"
    with lock:
        late = [started - turned for instance_id, started in attempts if instance_id == "i0"]
        others = sum(1 for instance_id, _ in attempts if instance_id == "i1")
    assert others > 0
    assert max(late, default=0.0) < 1.0, f"a call reached the NOT_SERVING instance {max(late):.3f}s after it said so"


def test_probes_timing_out_together_do_not_empty_the_service(client: Client, service: str,
                                                             instances: Instances) -> None:
    procs = [instances.process() for _ in range(3)]
    removed: list[str] = []

    def follow(changes: list[Change], _: Mapping[str, Instance]) -> None:
        removed.extend(c.instance.id for c in changes if c.kind is ChangeKind.REMOVED)

    # Probes every 0.1 s with a 0.3 s timeout: under the old rule two timeouts (well under a second)
    # withdrew an instance; now only 30 s without any answer does.
    with gated(service, [addr for _, addr in procs], client, health_interval=0.1, health_timeout=0.3) as regs, \
            resolve(service, client=client) as resolver:
        eventually(lambda: len(resolver.instances) == 3, 60, "three instances registered")
        resolver.subscribe(follow)
        gates = [r.lifecycle.gate for r in regs]
        assert all(g is not None for g in gates)
        before = [g.unknowns for g in gates if g is not None]
        stopped = time.monotonic()
        for proc, _ in procs:
            os.kill(proc.pid, signal.SIGSTOP)  # every instance stops answering at the same moment
        try:
            # Each registration saw more timeouts in a row than its ``fall``: each would have withdrawn.
            eventually(lambda: all(g.unknowns >= b + 3 for g, b in zip(gates, before) if g is not None), 25,
                       "three unanswered probes per instance")
            assert len(resolver.instances) == 3 and not removed
        finally:
            for proc, _ in procs:
                os.kill(proc.pid, signal.SIGCONT)
        # The instances answer again and nothing was ever withdrawn.
        eventually(lambda: all(g.last is Verdict.PASS for g in gates if g is not None), 20,
                   "answered checks after SIGCONT")
        assert not removed and len(resolver.instances) == 3
        assert all(r.state is not State.WITHDRAWN and r.lifecycle.registrations == 1 for r in regs)
        # (A keep-alive slowed by the load may pass through ``retrying``; the key stays meanwhile.)
        assert State.WITHDRAWN not in [s for r in regs for at, s in r.lifecycle.history if at >= stopped]
        # An instance that answers is still judged on its answers: one that refuses connections goes.
        procs[0][0].kill()
        procs[0][0].wait()
        eventually(lambda: "i0" in removed, 30, "withdrawal of the killed instance")
        assert gates[0] is not None and not gates[0].passing and gates[0].reason == "2 failing checks"

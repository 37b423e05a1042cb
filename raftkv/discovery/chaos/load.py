"""One target's load generator, a process of its own: ``python -m raftkv.discovery.chaos.load ...``.

Open loop at a fixed rate: call *i* starts at ``start + i / rate`` whether or not earlier calls have
answered (a closed loop would slow down exactly when the target fails, and hide the failure). Every target
gets the same client code, a blocking gRPC channel's ``future()`` with a completion callback, so the
figures differ by the path the call takes, not by the client that sends it:

- ``raftkv``: ``raftkv.discovery.channel("demo")``, balanced in this process from raftkv's registry;
- ``xds``: ``grpc.insecure_channel("xds:///demo")``, grpcio's xDS client fed by ``kvctl xds serve``;
- ``direct``: a plain channel to one address (HAProxy, Nginx, or one instance for the CPU baseline).

Each call is recorded as (start offset s, latency ms, status, instance): the instance is read from the
answer (``<name>:...``) or from the error text (a failing demo instance names itself), else "".
The process CPU time over the run gives the client's CPU per call. Results go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import sys
import threading
import time
from typing import Any

import grpc

ECHO = "/raftkv.demo.Echo/Echo"
#: A call's deadline: a stopped instance costs the calls sent to it this long.
DEFAULT_DEADLINE = 2.0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def open_channel(kind: str, address: str, service: str) -> Any:
    if kind == "direct":
        return grpc.insecure_channel(address)
    if kind == "xds":
        return grpc.insecure_channel(f"xds:///{service}")
    if kind == "raftkv":
        from raftkv import discovery

        # KVCTL_* from the environment say where raftkv is; Echo is idempotent, as every target is told
        channel = discovery.channel(service, idempotent=True)
        channel.wait_for_instances(1, timeout=30.0)
        return channel
    raise ValueError(f"unknown target kind {kind!r}")


def instance_of(text: str) -> str:
    """The demo instance an answer or an error text names (``i1:...``, ``i1 is failing on purpose``)."""
    for sep in (":", " "):
        head, found, _ = text.partition(sep)
        if found and head.startswith("i") and head[1:].isdigit():
            return head
    return ""


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[float, float, str, str]] = []
        self._outstanding = 0
        self._lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()
        #: (offset s, instance id, attempts since the previous sample): from the balanced channel only.
        self.routing: list[tuple[float, str, int]] = []
        self.done = False
        #: Failures by status and error text: why calls failed, for a person reading the result.
        self.reasons: collections.Counter[str] = collections.Counter()

    def started(self) -> None:
        with self._lock:
            self._outstanding += 1
            self.idle.clear()

    def finished(self, record: tuple[float, float, str, str]) -> None:
        self.calls.append(record)
        with self._lock:
            self._outstanding -= 1
            if self._outstanding == 0:
                self.idle.set()


def run(kind: str, address: str, service: str, rate: float, duration: float, start_at: float,
        deadline: float, warmup: int = 20) -> dict[str, Any]:
    channel = open_channel(kind, address, service)
    echo = channel.unary_unary(ECHO)
    for _ in range(warmup):  # connect before the clock starts; failures here are not counted
        try:
            echo(b"warmup", timeout=deadline * 5)
        except grpc.RpcError:
            time.sleep(0.05)
    recorder = Recorder()
    payload = b"x" * 64

    def issue(scheduled: float) -> None:
        began = time.monotonic()
        recorder.started()
        future = echo.future(payload, timeout=deadline)

        def done(f: Any) -> None:
            latency = (time.monotonic() - began) * 1000
            try:
                answer = f.result()
                recorder.finished((scheduled, latency, "OK", instance_of(answer.decode(errors="replace"))))
            except grpc.RpcError as exc:
                details = exc.details() or ""
                recorder.reasons[f"{exc.code().name}: {details[:160]}"] += 1
                recorder.finished((scheduled, latency, exc.code().name, instance_of(details)))
            except Exception as exc:  # noqa: BLE001 - a client bug must show in the results, not kill the run
                recorder.finished((scheduled, latency, type(exc).__name__, ""))

        future.add_done_callback(done)

    total = int(rate * duration)
    while time.monotonic() < start_at:
        time.sleep(min(0.05, max(0.0, start_at - time.monotonic())))
    sampler = None
    if hasattr(channel, "instances"):  # the balanced channel says which instance each attempt went to
        sampler = threading.Thread(target=_sample_routing, args=(channel, start_at, recorder),
                                   daemon=True)
        sampler.start()
    cpu0 = _cpu_seconds()
    late = 0
    for i in range(total):
        due = start_at + i / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -0.05:
            late += 1
        issue(due - start_at)
    recorder.idle.wait(deadline * 3 + 5)
    cpu = _cpu_seconds() - cpu0
    recorder.done = True
    if sampler is not None:
        sampler.join()
    # Closing waits for calls still stuck on a stopped instance; the figures must not wait for that.
    threading.Thread(target=channel.close, daemon=True).start()
    return {"kind": kind, "address": address, "rate": rate, "duration": duration, "start_at": start_at,
            "cpu_s": cpu, "late_starts": late, "calls": sorted(recorder.calls),
            "routing": recorder.routing, "reasons": dict(recorder.reasons.most_common(20))}


#: How often the balanced channel's per-instance attempt counters are read.
SAMPLE_EVERY = 0.05


def _sample_routing(channel: Any, start_at: float, recorder: Recorder) -> None:
    """Record, per instance, each sampling interval in which attempts to it started: when the balancer
    last routed a call there, to within ``SAMPLE_EVERY`` (what the answers alone cannot tell for an
    instance that is dead: its attempts fail on connect and are retried elsewhere)."""
    last: dict[str, int] = {}
    while not recorder.done:
        now = time.monotonic() - start_at
        for instance in channel.instances():
            # attempts started = finished + in flight: grows when an attempt starts, not when it ends
            calls, before = int(instance["calls"]) + int(instance["outstanding"]), last.get(instance["id"], 0)
            if calls < before:  # the instance left the pool and came back: a fresh counter
                before = 0
            if calls > before:
                recorder.routing.append((round(now, 3), instance["id"], calls - before))
            last[instance["id"]] = calls
        time.sleep(SAMPLE_EVERY)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raftkv.discovery.chaos.load")
    p.add_argument("--kind", choices=("raftkv", "xds", "direct"), required=True)
    p.add_argument("--address", default="", help="host:port for --kind direct")
    p.add_argument("--service", default="demo")
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--start-at", type=float, required=True, help="time.monotonic() of the first call")
    p.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    result = run(args.kind, args.address, args.service, args.rate, args.duration, args.start_at, args.deadline)
    tmp = f"{args.out}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, args.out)
    sys.stdout.flush()
    os._exit(0)  # the results are written: do not wait for gRPC's threads to wind down


if __name__ == "__main__":
    sys.exit(main())

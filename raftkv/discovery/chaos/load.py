"""One target's load generator, a process of its own: ``python -m raftkv.discovery.chaos.load ...``.

Open loop at a fixed rate: call *i* starts at ``start + i / rate`` whether or not earlier calls have
answered (a closed loop would slow down exactly when the target fails, and hide the failure). Every target
gets the same client code, a blocking gRPC channel's ``future()`` with a completion callback, so the
figures differ by the path the call takes, not by the client that sends it:

- ``raftkv``: ``raftkv.discovery.channel("demo")``, balanced in this process from raftkv's registry;
- ``xds``: ``grpc.insecure_channel("xds:///demo")``, grpcio's xDS client fed by ``kvctl xds serve``;
- ``direct``: a plain channel to one address (HAProxy, Nginx, or one instance for the CPU baseline);
- ``round_robin``: a plain channel with grpc's own ``round_robin`` over the same instances (the like-for-like
  CPU baseline of balancing: three connections cost more per call than one, for any balancer).

Each call is recorded as (start offset s, latency ms, status, instance): the instance is read from the
answer (``<name>:...``) or from the error text (a failing demo instance names itself), else "". The
balanced channel also tells every attempt (``on_attempt``): where each went and when it started, so the
time from a kill to the last attempt at the dead instance is exact.
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


ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def open_channel(kind: str, address: str, service: str, recorder: Recorder) -> Any:
    if kind == "direct":
        return grpc.insecure_channel(address)
    if kind == "round_robin":  # grpc's own balancer over a fixed list: the CPU baseline for balancing
        return grpc.insecure_channel("ipv4:" + address, options=[("grpc.service_config", ROUND_ROBIN)])
    if kind == "xds":
        return grpc.insecure_channel(f"xds:///{service}")
    if kind == "raftkv":
        from raftkv import discovery

        # KVCTL_* from the environment say where raftkv is; Echo is idempotent, as every target is told
        channel = discovery.channel(service, idempotent=True, on_attempt=recorder.attempted)
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
        #: (monotonic start, instance id) of every attempt of the balanced channel (its ``on_attempt``),
        #: which also sees attempts to a dead instance that were retried elsewhere.
        self.attempts: list[tuple[float, str]] = []
        #: Failures by status and error text: why calls failed, for a person reading the result.
        self.reasons: collections.Counter[str] = collections.Counter()

    def started(self) -> None:
        with self._lock:
            self._outstanding += 1
            self.idle.clear()

    def attempted(self, instance_id: str, started: float, _code: grpc.StatusCode) -> None:
        self.attempts.append((started, instance_id))  # list.append is atomic: no lock on the call path

    def finished(self, record: tuple[float, float, str, str]) -> None:
        self.calls.append(record)
        with self._lock:
            self._outstanding -= 1
            if self._outstanding == 0:
                self.idle.set()


def run(kind: str, address: str, service: str, rate: float, duration: float, start_at: float,
        deadline: float, warmup: int = 20) -> dict[str, Any]:
    recorder = Recorder()
    channel = open_channel(kind, address, service, recorder)
    echo = channel.unary_unary(ECHO)
    for _ in range(warmup):  # connect before the clock starts; failures here are not counted
        try:
            echo(b"warmup", timeout=deadline * 5)
        except grpc.RpcError:
            time.sleep(0.05)
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
    routing = [(round(t - start_at, 3), instance, 1) for t, instance in list(recorder.attempts) if t >= start_at]
    # Closing waits for calls still stuck on a stopped instance; the figures must not wait for that.
    threading.Thread(target=channel.close, daemon=True).start()
    return {"kind": kind, "address": address, "rate": rate, "duration": duration, "start_at": start_at,
            "cpu_s": cpu, "late_starts": late, "calls": sorted(recorder.calls),
            "routing": routing, "reasons": dict(recorder.reasons.most_common(20))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raftkv.discovery.chaos.load")
    p.add_argument("--kind", choices=("raftkv", "xds", "direct", "round_robin"), required=True)
    p.add_argument("--address", default="", help="host:port for --kind direct; host:port,host:port,... for "
                                                 "round_robin")
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

"""From raw call records to ``result.json``: per-target figures, fault-to-last-call times, the floors.

Pure functions of what the run recorded (``load.py`` records, the nemesis's log with actual times, the
registry's change log), so they are tested on made-up records. ``html.py`` draws the report from the result.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Floors of the benchmark (the issue's "Must show").
MIN_SUCCESS_RATE = 0.999
MAX_LAST_CALL_S = 1.0
MAX_CPU_RATIO = 1.15
#: Faults that take an instance out, and the fault that brings it back.
WINDOWS = {"kill": "restart", "not-serving": "serving", "stop": "cont"}


@dataclasses.dataclass(frozen=True)
class Phase:
    """One target's run: its load generator's records (None if it failed), the faults applied while it
    ran (seconds from ``start_at``) and the monotonic time its first call was due."""

    load: Mapping[str, Any] | None
    faults: list[dict[str, Any]]
    start_at: float


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(load: Mapping[str, Any]) -> dict[str, Any]:
    calls = load["calls"]
    ok = sum(1 for c in calls if c[2] == "OK")
    latencies = sorted(c[1] for c in calls)
    codes = collections.Counter(c[2] for c in calls if c[2] != "OK")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return {
        "calls": len(calls), "ok": ok, "success_rate": round(ok / len(calls), 6) if calls else 0.0,
        "p50_ms": None if p50 is None else round(p50, 2), "p99_ms": None if p99 is None else round(p99, 2),
        "failures_by_code": dict(codes),
        "client_cpu_us_per_call": round(load["cpu_s"] / len(calls) * 1e6, 1) if calls else None,
        "late_starts": load.get("late_starts", 0),
        "failure_reasons": load.get("reasons", {}),
    }


def windows(faults: Iterable[Mapping[str, Any]], end: float) -> list[tuple[str, str, float, float]]:
    """(fault, instance, start, end) of every impairment, from the nemesis's log of actual times."""
    open_: dict[tuple[str, str], float] = {}
    out = []
    for f in faults:
        if f["fault"] in WINDOWS:
            open_[(f["fault"], f["target"])] = f["at"]
        for start_fault, end_fault in WINDOWS.items():
            if f["fault"] == end_fault and (start_fault, f["target"]) in open_:
                out.append((start_fault, f["target"], open_.pop((start_fault, f["target"])), f["at"]))
    out += [(fault, target, at, end) for (fault, target), at in open_.items()]
    return sorted(out, key=lambda w: w[2])


def last_calls(load: Mapping[str, Any], spans: Sequence[tuple[str, str, float, float]]) -> dict[str, Any]:
    """Per kind of fault, the worst time from the fault to the last call that reached the instance while it
    was out: seen in the answers (a failing instance names itself) and, for the balanced channel, in its
    per-instance attempt counters (which also see attempts to a dead instance). 0.0: none reached it."""
    answered: dict[str, list[float]] = collections.defaultdict(list)
    for c in load["calls"]:
        if c[3]:
            answered[c[3]].append(c[0])
    routed: dict[str, list[float]] = collections.defaultdict(list)
    for t, instance, _ in load.get("routing") or []:
        routed[instance].append(t)
    has_routing = bool(load.get("routing"))
    worst: dict[str, float | None] = {}
    for fault, instance, start, end in spans:
        seen = [t for t in answered[instance] if start <= t < end]
        seen += [t for t in routed[instance] if start <= t < end]
        delay = max(seen) - start if seen else 0.0
        if fault == "kill" and not has_routing:
            continue  # nobody can tell from the answers alone
        worst[fault] = max(worst.get(fault) or 0.0, delay)
    return {f"{fault}_to_last_call_s": None if value is None else round(value, 3) for fault, value in worst.items()}


def sidecar_removals(faults: Iterable[Mapping[str, Any]], registry: Iterable[Sequence[Any]],
                     start_at: float) -> list[float | None]:
    """Seconds from each sidecar's SIGKILL to its key's removal (None: not removed before the run ended)."""
    removed = {(e[1], e[3]): e[0] - start_at for e in registry if e[2] == "removed"}
    out: list[float | None] = []
    for f in faults:
        if f["fault"] == "sidecar-kill":
            t = removed.get(("chaos-sidecars", f["target"]))
            out.append(None if t is None else round(t - f["at"], 3))
    return out


def timeline(load: Mapping[str, Any], duration: float) -> dict[str, Any]:
    """Calls per second and instance (answered ones), failures per second."""
    seconds = int(math.ceil(duration))
    per: dict[str, list[int]] = collections.defaultdict(lambda: [0] * seconds)
    failures = [0] * seconds
    for t, _, code, instance in load["calls"]:
        s = min(seconds - 1, max(0, int(t)))
        if code == "OK":
            per[instance or "?"][s] += 1
        else:
            failures[s] += 1
    return {"per_instance": dict(sorted(per.items())), "failures": failures}


def calibration(results: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, load in results.items():
        if load is not None:
            out[name] = summary(load)
    balanced = out.get("balanced")

    def ratio(baseline: Mapping[str, Any] | None) -> float | None:
        if not (baseline and balanced and baseline["client_cpu_us_per_call"] and balanced["client_cpu_us_per_call"]):
            return None
        return round(balanced["client_cpu_us_per_call"] / baseline["client_cpu_us_per_call"], 3)

    # The floor's figure: against grpc's round_robin over the same instances (like for like); against
    # one connection to one instance as well, for the reader.
    out["cpu_ratio"] = ratio(out.get("round_robin"))
    out["cpu_ratio_vs_one_instance"] = ratio(out.get("plain"))
    return out


def result(phases: Mapping[str, Phase], registry: list[tuple[float, str, str, str]],
           options: Any) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    lines: dict[str, Any] = {}
    faults: dict[str, Any] = {}
    spans_out: dict[str, Any] = {}
    removals: list[float | None] = []
    for name, phase in phases.items():
        spans = windows(phase.faults, options.duration)
        faults[name] = phase.faults
        spans_out[name] = [{"fault": f, "instance": i, "start": s, "end": e} for f, i, s, e in spans]
        removals += sidecar_removals(phase.faults, registry, phase.start_at)
        if phase.load is None:
            targets[name] = {"calls": 0, "ok": 0, "success_rate": 0.0, "p50_ms": None, "p99_ms": None,
                             "error": "load generator failed"}
            continue
        targets[name] = {**summary(phase.load), **last_calls(phase.load, spans)}
        lines[name] = timeline(phase.load, options.duration)
    known = [r for r in removals if r is not None]
    targets.setdefault("raftkv", {})["sidecar_key_removal_s"] = max(known) if known else None
    return {
        "targets": targets,
        "registry": {"ttl_s": options.ttl, "sidecar_key_removal_s": removals},
        "faults": faults,
        "windows": spans_out,
        "timeline": lines,
        "conditions": conditions(options),
    }


def conditions(options: Any) -> dict[str, Any]:
    return {"duration_s": options.duration, "rate_per_target": options.rate, "instances": options.instances,
            "work_sha256_rounds": options.work, "deadline_s": options.deadline, "ttl_s": options.ttl,
            "targets_at_once": bool(getattr(options, "concurrent", False)),
            "cpus": os.cpu_count(), "loadavg_at_end": [round(v, 2) for v in os.getloadavg()]}


def floors(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each floor of the benchmark: the figure and whether it is met (None: not measured in this run)."""
    t = result["targets"]
    raftkv = t.get("raftkv", {})
    rate = raftkv.get("success_rate")
    others = [t[n]["success_rate"] for n in ("haproxy", "nginx") if n in t]
    last = [raftkv.get(k) for k in ("kill_to_last_call_s", "not-serving_to_last_call_s")]
    removal = raftkv.get("sidecar_key_removal_s")
    ttl = result.get("registry", {}).get("ttl_s")
    ratio = result.get("calibration", {}).get("cpu_ratio")
    hashing = result.get("hashing") or {}

    def verdict(ok: bool | None, figure: Any) -> dict[str, Any]:
        return {"figure": figure, "met": ok}

    removals = result.get("registry", {}).get("sidecar_key_removal_s") or []
    return {
        "success_rate >= 99.9% and >= haproxy, nginx": verdict(
            None if rate is None else rate >= MIN_SUCCESS_RATE and all(rate >= o for o in others), rate),
        "killed / NOT_SERVING instance: no call 1 s after": verdict(
            None if None in last else all(v <= MAX_LAST_CALL_S for v in last), last),
        "dead sidecar's key gone within TTL + 1 s": verdict(
            None if removal is None or ttl is None else (None not in removals and removal <= ttl + 1), removal),
        "bounded-load hashing: >= 90% keys stay, max <= (1+eps) mean": verdict(
            hashing.get("met"), [f"{r['instances']}: {r['kept_of_keys_not_taken_by_newcomer']:.2%} of the keys the "
                                 f"newcomer did not take stayed, busiest {r['max_load_over_mean']:.3f}x mean "
                                 f"(eps {r['epsilon']})" for r in hashing.get("runs", [])] or None),
        "balanced channel CPU per call <= 1.15x plain round_robin": verdict(
            None if ratio is None else ratio <= MAX_CPU_RATIO, ratio),
    }

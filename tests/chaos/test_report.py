"""Figures and floors from made-up records: what result.json says for known inputs."""

from __future__ import annotations

from types import SimpleNamespace

from raftkv.discovery.chaos import html, report
from raftkv.discovery.chaos.load import instance_of

OPTIONS = SimpleNamespace(duration=10.0, rate=10.0, instances=3, work=0, deadline=2.0, ttl=5)


def load(calls: list[tuple[float, float, str, str]], routing: list | None = None) -> dict:
    return {"calls": calls, "cpu_s": 0.01, "routing": routing or []}


def test_instance_named_by_answer_or_error() -> None:
    assert instance_of("i2:xxxx") == "i2"
    assert instance_of("i10 is failing on purpose") == "i10"
    assert instance_of("upstream connect error") == "" and instance_of("") == ""


def test_summary_percentiles_and_codes() -> None:
    calls = [(i / 10, float(i), "OK", "i0") for i in range(1, 100)] + [(9.9, 100.0, "UNAVAILABLE", "")]
    s = report.summary(load(calls))
    assert s["calls"] == 100 and s["ok"] == 99 and s["success_rate"] == 0.99
    assert s["p50_ms"] == 50.0 and s["p99_ms"] == 99.0 and s["failures_by_code"] == {"UNAVAILABLE": 1}
    assert s["client_cpu_us_per_call"] == 100.0


def test_windows_pair_faults_with_their_ends() -> None:
    faults = [{"at": 1.0, "fault": "kill", "target": "i0"}, {"at": 2.0, "fault": "not-serving", "target": "i1"},
              {"at": 4.0, "fault": "restart", "target": "i0"}, {"at": 5.0, "fault": "serving", "target": "i1"},
              {"at": 6.0, "fault": "leader-kill", "target": "n1"}, {"at": 9.0, "fault": "stop", "target": "i2"}]
    assert report.windows(faults, 10.0) == [("kill", "i0", 1.0, 4.0), ("not-serving", "i1", 2.0, 5.0),
                                            ("stop", "i2", 9.0, 10.0)]


def test_last_call_after_fault_from_answers_and_routing() -> None:
    spans = [("kill", "i0", 1.0, 4.0), ("not-serving", "i1", 2.0, 5.0)]
    calls = [(0.5, 1.0, "OK", "i0"), (2.3, 1.0, "UNAVAILABLE", "i1"), (6.0, 1.0, "OK", "i1")]
    assert report.last_calls(load(calls), spans) == {"not-serving_to_last_call_s": 0.3}  # kill: unobservable
    routed = load(calls, routing=[(1.05, "i0", 1), (1.4, "i0", 2)])
    assert report.last_calls(routed, spans) == {"kill_to_last_call_s": 0.4, "not-serving_to_last_call_s": 0.3}


def test_sidecar_removal_and_floors() -> None:
    faults = [{"at": 2.0, "fault": "sidecar-kill", "target": "sidecar-0"}]
    registry = [(100.0 + 6.5, "chaos-sidecars", "removed", "sidecar-0")]
    assert report.sidecar_removals(faults, registry, start_at=100.0) == [4.5]
    ok = [(i / 10, 1.0, "OK", f"i{i % 3}") for i in range(100)]
    phases = {name: report.Phase(data, faults, 100.0) for name, data in
              {"raftkv": load(ok, [(0.1, "i0", 1)]), "haproxy": load(ok), "nginx": load(ok), "xds": None}.items()}
    result = report.result(phases, registry, OPTIONS)
    assert result["targets"]["xds"]["error"] == "load generator failed"
    assert result["targets"]["raftkv"]["sidecar_key_removal_s"] == 4.5
    assert result["registry"]["sidecar_key_removal_s"] == [4.5] * 4  # one kill in each target's phase
    result["calibration"] = {"cpu_ratio": 1.2}
    floors = report.floors(result)
    assert floors["dead sidecar's key gone within TTL + 1 s"]["met"] is True
    assert floors["success_rate >= 99.9% and >= haproxy, nginx"]["met"] is True
    assert floors["balanced channel CPU per call <= 1.15x plain round_robin"]["met"] is False
    assert floors["killed / NOT_SERVING instance: no call 1 s after"]["met"] is None  # no such fault here
    result["floors"] = floors
    page = html.render(result)
    assert "time since the load started (s)" in page and "calls per second" in page and "NOT met" in page


def test_bounded_load_hashing_across_a_join() -> None:
    from raftkv.discovery.chaos import hashing

    run = hashing.join(3, keys=2000)
    assert run["max_load_over_mean"] <= 1 + run["epsilon"]
    assert run["kept_of_keys_not_taken_by_newcomer"] >= hashing.MIN_KEPT and run["met"]
    assert 0.2 <= run["newcomer_share"] <= 0.25 * (1 + run["epsilon"])


def test_calibration_ratio_is_like_for_like() -> None:
    def cpu(us: float) -> dict:
        return {"calls": [(0.0, 1.0, "OK", "i0")] * 100, "cpu_s": us * 100 / 1e6}

    out = report.calibration({"plain": cpu(200.0), "round_robin": cpu(250.0), "balanced": cpu(275.0)})
    assert out["cpu_ratio"] == 1.1  # against grpc's round_robin over the same instances
    assert out["cpu_ratio_vs_one_instance"] == 1.375
    assert report.calibration({"plain": cpu(200.0), "round_robin": None, "balanced": cpu(275.0)})["cpu_ratio"] is None

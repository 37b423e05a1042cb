"""Checker self-tests: valid histories pass, every planted anomaly is caught with its minimal witness."""

from __future__ import annotations

import time

from jepsen_like.checkers import (
    check_all,
    convergence,
    durability,
    lease,
    linearizable,
    recovery,
    revisions,
    truth,
    watch,
)
from jepsen_like.history import FAIL, INFO, NEMESIS, Event, pair
from tests.jepsen.synth import Builder, register_history


def kinds(res) -> set[str]:  # type: ignore[no-untyped-def]
    return {a.kind for a in res.anomalies}


def test_valid_random_history_passes_all_kv_checkers_quickly() -> None:
    b, _ = register_history(seed=1, n_ops=5000, keys=10, clients=30)
    ops = pair(b.sorted())
    t0 = time.monotonic()
    lin = linearizable.check(ops)
    rev = revisions.check(ops)
    assert lin.valid is True, lin.anomalies[:2]
    assert rev.valid is True, rev.anomalies[:2]
    assert time.monotonic() - t0 < 10


def test_stale_read_is_caught_with_the_write_it_missed() -> None:
    b = Builder()
    b.op(0, "write", "k", "a", 0, 10, revision=2)
    b.op(1, "write", "k", "b", 20, 30, revision=3)
    b.op(2, "read", "k", None, 40, 50, result="a", revision=2, mod_revision=2)
    ops = pair(b.sorted())
    lin = linearizable.check(ops)
    assert lin.valid is False
    witness = lin.anomalies[0].ops
    assert {o["value"] if o["f"] == "write" else o["result"] for o in witness} == {"a", "b"}
    assert len(witness) == 3
    rev = revisions.check(ops)
    assert "revision-went-back" in kinds(rev)
    assert len(rev.anomalies[0].ops) == 2


def test_stale_read_with_a_consistent_looking_revision_is_caught_by_r3() -> None:
    b = Builder()
    b.op(0, "write", "k", "a", 0, 10, revision=2)
    b.op(1, "write", "k", "b", 20, 30, revision=3)
    b.op(2, "read", "k", None, 40, 50, result="a", revision=3, mod_revision=2)
    assert "stale-read" in kinds(revisions.check(pair(b.sorted())))


def test_info_writes_may_or_may_not_have_happened() -> None:
    b = Builder()
    b.op(0, "write", "k", "a", 0, 10, revision=2)
    b.op(1, "write", "k", "b", 20, 30, type=INFO)  # maybe applied
    b.op(2, "read", "k", None, 40, 50, result="b", revision=3, mod_revision=3)
    b.op(3, "read", "k", None, 60, 70, result="b", revision=3, mod_revision=3)
    b.op(4, "write", "k", "c", 80, 90, type=INFO)  # never seen: pruned
    b.op(5, "read", "k", None, 100, 110, result="b", revision=3, mod_revision=3)
    ops = pair(b.sorted())
    lin = linearizable.check(ops)
    assert lin.valid is True
    assert lin.stats["tightened"] == 1 and lin.stats["pruned"] == 1
    assert revisions.check(ops).valid is True


def test_read_flipping_back_after_info_write_is_caught() -> None:
    b = Builder()
    b.op(0, "write", "k", "a", 0, 10, revision=2)
    b.op(1, "write", "k", "b", 20, 30, type=INFO)
    b.op(2, "read", "k", None, 40, 50, result="b")
    b.op(3, "read", "k", None, 60, 70, result="a")
    assert linearizable.check(pair(b.sorted())).valid is False


def test_failed_cas_reports_what_it_saw_and_is_checked() -> None:
    b = Builder()
    b.op(0, "write", "k", "a", 0, 10, revision=2)
    b.op(1, "cas", "k", ["x", "y"], 20, 30, type="fail", result="zzz", revision=2, observed=True)
    lin = linearizable.check(pair(b.sorted()))
    assert lin.valid is False and [o["f"] for o in lin.anomalies[0].ops] == ["cas"]


def test_duplicate_write_revision_is_caught() -> None:
    b = Builder()
    b.op(0, "write", "k1", "a", 0, 10, revision=2)
    b.op(1, "write", "k2", "b", 5, 15, revision=2)
    rev = revisions.check(pair(b.sorted()))
    assert "duplicate-revision" in kinds(rev)


def test_revision_going_back_is_caught() -> None:
    b = Builder()
    b.op(0, "write", "k1", "a", 0, 10, revision=5)
    b.op(1, "read", "k2", None, 20, 30, result=None, revision=4)
    rev = revisions.check(pair(b.sorted()))
    assert kinds(rev) == {"revision-went-back"}


def test_single_key_high_concurrency_illegal_is_decided() -> None:
    b, _ = register_history(seed=7, n_ops=2000, keys=1, clients=10)
    first = next(e.value for e in b.events if e.f == "write")
    b.op(99, "read", "k0", None, 10**9, 10**9 + 5, result=first)  # long overwritten: a stale read
    t0 = time.monotonic()
    res = linearizable.check(pair(b.sorted()), time_limit=20)
    assert res.valid is False
    assert time.monotonic() - t0 < 20


def _final(b: Builder, kvs: dict, dump: list, members: tuple[str, ...] = ("n1", "n2", "n3")) -> None:
    for m in members:
        b.record("final-read", member=m, revision=10, kvs=kvs)
        b.record("final-dump", member=m, revision=10, events=dump)
        b.record("hash-kv", member=m, revision=10, hash=123)


def test_lost_write_is_caught_by_durability() -> None:
    b = Builder()
    b.op(0, "write", "k", "a", 0, 10, revision=2)
    b.op(0, "write", "k", "b", 20, 30, revision=3)
    _final(b, {"k": ["a", 2]}, [["PUT", "k", "a", 2]])
    res = durability.check(b.sorted(), pair(b.sorted()))
    assert kinds(res) == {"lost-write"}
    assert all(a.ops[0]["value"] == "b" for a in res.anomalies)


def test_absence_after_an_info_delete_that_happened_is_durable() -> None:
    b = Builder()
    b.op(0, "write", "k", "a", 0, 10, revision=2)
    b.op(0, "delete", "k", None, 20, 30, type=INFO)
    _final(b, {}, [["PUT", "k", "a", 2], ["DELETE", "k", None, 3]])
    assert durability.check(b.sorted(), pair(b.sorted())).valid is True
    b = Builder()
    b.op(0, "write", "k", "a", 0, 10, revision=2)
    b.op(0, "delete", "k", None, 20, 30, type=INFO)
    _final(b, {}, [["PUT", "k", "a", 2]])  # absent, yet no member's log deletes it
    assert kinds(durability.check(b.sorted(), pair(b.sorted()))) == {"lost-write"}


def test_durable_history_passes_everything() -> None:
    b = Builder()
    b.op(0, "write", "k", "a", 0, 10, revision=2)
    b.op(0, "delete", "k", None, 20, 30, result="a", revision=3)
    b.op(0, "write", "j", "c", 40, 50, revision=4)
    dump = [["PUT", "k", "a", 2], ["DELETE", "k", None, 3], ["PUT", "j", "c", 4]]
    _final(b, {"j": ["c", 4]}, dump)
    b.record("watch-response", process=5, revision=4, watch=1, prefix="", start=1, events=dump[:2])
    b.record("watch-response", process=5, revision=4, watch=1, prefix="", start=1, events=dump[2:])
    results = check_all(b.sorted())
    assert all(r.valid for r in results), [r.to_dict() for r in results if not r.valid]


def _watch_case(responses: list[list[list]], start: int = 2, progress: int | None = None) -> set[str]:
    b = Builder()
    dump = [["PUT", "w/a", "1", 2], ["PUT", "w/b", "2", 3], ["PUT", "w/a", "3", 4], ["DELETE", "w/b", None, 4],
            ["PUT", "x", "9", 5], ["PUT", "w/c", "4", 6]]
    for i, evs in enumerate(responses):
        b.record("watch-response", process=7, revision=6, time=i, watch=1, prefix="w/", start=start, events=evs)
    if progress is not None:
        b.record("watch-response", process=7, revision=progress, time=99, watch=1, prefix="w/", start=start,
                 events=[], progress=True)
    b.record("final-dump", member="n1", events=dump)
    ev = b.sorted()
    return kinds(watch.check(ev, truth.committed(ev, pair(ev))))


def test_watch_valid_stream_passes() -> None:
    assert _watch_case([[["PUT", "w/a", "1", 2]], [["PUT", "w/b", "2", 3]],
                        [["PUT", "w/a", "3", 4], ["DELETE", "w/b", None, 4]], [["PUT", "w/c", "4", 6]]]) == set()


def test_watch_duplicate_gap_split_unordered_and_resume_are_caught() -> None:
    a2, b3, a4, d4, c6 = (["PUT", "w/a", "1", 2], ["PUT", "w/b", "2", 3], ["PUT", "w/a", "3", 4],
                          ["DELETE", "w/b", None, 4], ["PUT", "w/c", "4", 6])
    assert "watch-duplicate" in _watch_case([[a2], [b3], [b3], [a4, d4], [c6]])
    assert "watch-gap" in _watch_case([[a2], [a4, d4], [c6]])
    assert "watch-gap" in _watch_case([[a2], [b3], [a4, d4]], progress=6)
    assert "watch-split-revision" in _watch_case([[a2], [b3], [a4], [d4], [c6]])
    assert "watch-unordered" in _watch_case([[a2], [a4, d4], [b3], [c6]])
    assert "watch-not-resumable" in _watch_case([[b3], [a4, d4], [c6]])
    assert "watch-phantom" in _watch_case([[a2], [b3], [["PUT", "w/a", "zzz", 4], d4], [c6]])
    assert "watch-bookmark-behind" in _watch_case([[a2], [b3]], progress=2)


def test_lease_checker_catches_early_vanish_and_split_expiry() -> None:
    b = Builder()
    s = 1_000_000_000
    b.op(0, "lease-grant", None, 5, 0, 10, lease=7, ttl=5)
    b.op(0, "lease-put", "l/7/0", "a", 20, 30, revision=2, lease=7)
    b.op(0, "lease-put", "l/7/1", "b", 40, 50, revision=3, lease=7)
    b.op(1, "read", "l/7/0", None, 2 * s, 2 * s + 10, result=None, revision=3)
    b.record("final-dump", member="n1", events=[["PUT", "l/7/0", "a", 2], ["PUT", "l/7/1", "b", 3],
                                                  ["DELETE", "l/7/0", None, 4], ["DELETE", "l/7/1", None, 5]])
    ev = b.sorted()
    ops = pair(ev)
    assert kinds(lease.check(ev, ops, truth.committed(ev, ops))) == {"lease-early-vanish", "lease-split-expiry"}


def test_convergence_catches_divergent_members() -> None:
    b = Builder()
    b.record("hash-kv", member="n1", revision=9, hash=1)
    b.record("hash-kv", member="n2", revision=9, hash=2)
    b.record("final-read", member="n1", kvs={"k": ["a", 2]})
    b.record("final-read", member="n2", kvs={"k": ["b", 3]})
    assert kinds(convergence.check(b.sorted())) == {"hash-mismatch", "final-read-mismatch"}


def test_absence_after_an_info_delete_is_not_a_stale_read() -> None:
    b = Builder()
    b.op(0, "write", "k", "a", 0, 10, revision=2)
    b.op(1, "delete", "k", None, 20, 30, type=INFO)
    b.op(2, "read", "k", None, 40, 50, result=None, revision=3)
    ops = pair(b.sorted())
    assert revisions.check(ops).valid is True
    assert linearizable.check(ops).valid is True


def test_header_revision_newer_than_the_data_returned_is_caught() -> None:
    b = Builder()
    b.op(0, "write", "k", "a", 0, 10, revision=2)
    b.op(1, "delete", "k", None, 20, 40, result="a", revision=3)
    b.op(2, "read", "k", None, 25, 45, result="a", revision=3, mod_revision=2)
    ops = pair(b.sorted())
    assert linearizable.check(ops).valid is True  # values alone look fine
    assert "stale-read" in kinds(revisions.check(ops))


def test_recovery_demands_a_success_after_every_fault_window() -> None:
    s = 1_000_000_000
    b = Builder()
    b.op(1, "write", "k", "a", 0, s // 10, revision=2)
    b.events.append(Event(NEMESIS, INFO, "start", value={"fault": "kill-majority", "detail": "killed n1, n2"}, time=s))
    b.events.append(Event(NEMESIS, INFO, "stop", value={"fault": "kill-majority"}, time=2 * s))
    b.op(2, "read", "k", None, 3 * s, 3 * s + s // 2, result="a", revision=2, mod_revision=2)
    events = b.sorted()
    healthy = recovery.check(events, pair(events))
    assert healthy.valid and healthy.stats["recovery_s"]["kill-majority"]["max"] == 1.5
    b.events.append(Event(NEMESIS, INFO, "start", value={"fault": "no-majority", "detail": "all apart"}, time=4 * s))
    b.events.append(Event(NEMESIS, INFO, "stop", value={"fault": "no-majority"}, time=5 * s))
    b.op(3, "read", "k", None, 6 * s, 40 * s, type=FAIL, error="timeout")
    events = b.sorted()
    stuck = recovery.check(events, pair(events))
    assert not stuck.valid and [a.kind for a in stuck.anomalies] == ["no-recovery"]

"""Linear-time revision witness checks (R1-R3).

An etcd-style store numbers every mutation with a global revision and reports it, so the history *tells* us
the write order; these checks verify that order is a valid witness, in O(n log n), and name the two or
three operations that break it:

* R1 -- every mutation (put, successful CAS, delete that removed something) has its own revision;
* R2 -- revisions never go back in real time: if A returned before B was invoked, rev(A) <= rev(B), and
  strictly if B mutates;
* R3 -- a read at header revision r that returned v with mod_revision m: m <= r, the mutation with revision
  m wrote v to that key, and no mutation of that key has a revision in (m, r]; a read of absence at r: the
  last mutation of the key at or below r is a delete (or there is none).

Unique values let an ``info`` write's revision be learned from whoever read it.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence

from jepsen_like.checkers.result import CheckResult
from jepsen_like.history import FAIL, INFO, OK, Op


def is_mutation(op: Op) -> bool:
    """Did this ``ok`` operation create a new revision?"""
    if op.type != OK:
        return False
    if op.f in ("write", "cas", "lease-put"):
        return True
    return op.f == "delete" and op.result is not None


def observation(op: Op) -> tuple[object, int | None] | None:
    """(value seen, its mod_revision) for operations that observed the register at their header revision."""
    if op.type == OK and op.f == "read":
        return op.result, op.mod_revision
    if op.type == FAIL and op.f == "cas" and op.extra.get("observed"):
        return op.result, op.mod_revision
    return None


def written(op: Op) -> object:
    if op.f == "cas":
        return op.value[1]
    if op.f == "delete":
        return None
    return op.value


def check(ops: Sequence[Op]) -> CheckResult:
    res = CheckResult("revisions", True)
    # Learn revisions of every mutation: its own header when ok, else from a reader of its unique value.
    writer_of: dict[tuple[str, object], Op] = {}
    for op in ops:
        if op.key is not None and op.f in ("write", "cas", "lease-put") and op.type in (OK, INFO):
            writer_of[(op.key, written(op))] = op
    mutations: dict[int, Op] = {}
    key_revs: dict[str, list[tuple[int, Op]]] = defaultdict(list)
    learned: dict[int, int] = {}
    for op in ops:
        obs = observation(op)
        if obs is None or obs[0] is None or op.key is None:
            continue
        w = writer_of.get((op.key, obs[0]))
        if w is None:
            res.add("aborted-read", f"key {op.key!r}: read {obs[0]!r}, which no ok or info write wrote",
                    [op.brief()])
            continue
        if w.call > op.ret:
            res.add("future-read", f"key {op.key!r}: read {obs[0]!r} before its write was invoked",
                    [op.brief(), w.brief()])
        if w.type == INFO and obs[1] is not None:
            prev = learned.setdefault(w.index, obs[1])
            if prev != obs[1]:
                res.add("split-revision", f"key {op.key!r}: value {obs[0]!r} seen at mod revisions {prev} "
                        f"and {obs[1]}", [w.brief(), op.brief()])
    for op in ops:
        rev = op.revision if is_mutation(op) else learned.get(op.index)
        if rev is None or op.key is None:
            continue
        other = mutations.get(rev)
        if other is not None:
            res.add("duplicate-revision", f"revision {rev} given to two mutations", [other.brief(), op.brief()])
        else:
            mutations[rev] = op
        key_revs[op.key].append((rev, op))
    for lst in key_revs.values():
        lst.sort(key=lambda t: t[0])
    check_real_time(ops, res)
    check_reads(ops, key_revs, res)
    res.stats = {"mutations": len(mutations), "learned": len(learned)}
    return res


def check_real_time(ops: Sequence[Op], res: CheckResult) -> None:
    """R2 by a sweep: ops in call order, the max revision of everything already returned before each call."""
    timed = [op for op in ops if op.revision is not None and op.type in (OK, FAIL)]
    by_ret = sorted(timed, key=lambda o: o.ret)
    best: Op | None = None  # the highest revision returned so far
    best_rev = 0
    j = 0
    for op in sorted(timed, key=lambda o: o.call):
        while j < len(by_ret) and by_ret[j].ret < op.call:
            done = by_ret[j]
            if done.revision is not None and done.revision > best_rev:
                best, best_rev = done, done.revision
            j += 1
        rev = op.revision or 0
        if best is None:
            continue
        if rev < best_rev:
            res.add("revision-went-back", f"revision {rev} observed after {best_rev} had already been "
                    "returned (a stale read or the store's clock going back)", [best.brief(), op.brief()])
        elif rev == best_rev and is_mutation(op) and not is_mutation(best):
            res.add("mutation-not-after", f"mutation got revision {rev}, which a read had already "
                    "returned before it was invoked", [best.brief(), op.brief()])


def check_reads(ops: Sequence[Op], key_revs: dict[str, list[tuple[int, Op]]], res: CheckResult) -> None:
    """R3: each observation is the latest mutation of its key at or below the header revision.

    Keys written under leases are skipped: their expiry deletions are not client operations."""
    lease_keys = {op.key for op in ops if op.f == "lease-put"}
    # An info delete has no known revision and may explain any later absence.
    first_info_delete: dict[str, int] = {}
    for op in ops:
        if op.f == "delete" and op.type == INFO and op.key is not None:
            first_info_delete[op.key] = min(first_info_delete.get(op.key, op.call), op.call)
    for op in ops:
        obs = observation(op)
        if obs is None or op.key is None or op.revision is None or op.key in lease_keys:
            continue
        value, mod = obs
        r = op.revision
        lst = key_revs.get(op.key, [])
        revs = [t[0] for t in lst]
        i = bisect.bisect_right(revs, r)
        last = lst[i - 1] if i else None
        if value is None:
            maybe_deleted = first_info_delete.get(op.key, op.ret + 1) < op.ret
            if last is not None and last[1].f != "delete" and not maybe_deleted:
                res.add("stale-read", f"key {op.key!r}: read absence at revision {r}, but {written(last[1])!r} "
                        f"was written at revision {last[0]}", [last[1].brief(), op.brief()])
            continue
        if mod is None:
            continue
        if mod > r:
            res.add("future-revision", f"key {op.key!r}: mod revision {mod} above header revision {r}", [op.brief()])
            continue
        if last is not None and last[0] > mod:
            res.add("stale-read", f"key {op.key!r}: read {value!r} (mod revision {mod}) at revision {r}, but "
                    f"{written(last[1])!r} was written at revision {last[0]}", [last[1].brief(), op.brief()])
            continue
        k = bisect.bisect_left(revs, mod)
        if k < len(lst) and lst[k][0] == mod and written(lst[k][1]) != value:
            res.add("wrong-value", f"key {op.key!r}: revision {mod} wrote {written(lst[k][1])!r}, read says "
                    f"{value!r}", [lst[k][1].brief(), op.brief()])

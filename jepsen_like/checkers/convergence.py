"""Convergence: after healing and a quiet period all members hold the same data.

Compared: HashKV at a common revision, the final read of every key, and the final dumps (each member's
history of events); the first differing member is reported against the first member.
"""

from __future__ import annotations

from collections.abc import Sequence

from jepsen_like.checkers.result import CheckResult
from jepsen_like.checkers.truth import dumps
from jepsen_like.history import Event, records


def check(events: Sequence[Event]) -> CheckResult:
    res = CheckResult("convergence", True)
    hashes = [e for e in records(events, "hash-kv")]
    by_rev: dict[int, list[Event]] = {}
    for h in hashes:
        by_rev.setdefault(h.revision or 0, []).append(h)
    for rev, hs in sorted(by_rev.items()):
        if len({h.extra["hash"] for h in hs}) > 1:
            res.add("hash-mismatch", f"HashKV at revision {rev} differs between members",
                    [{"member": h.member, "hash": h.extra["hash"]} for h in hs])
    finals = list(records(events, "final-read"))
    for fr in finals[1:]:
        if fr.revision != finals[0].revision:
            res.stats["final_reads_at_other_revisions"] = res.stats.get("final_reads_at_other_revisions", 0) + 1
            continue  # taken at different revisions (e.g. a lease expired in between): HashKV decides
        a, b = finals[0].extra["kvs"], fr.extra["kvs"]
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            res.add("final-read-mismatch", f"members {finals[0].member} and {fr.member} disagree on "
                    f"{len(diff)} keys", [{"key": k, str(finals[0].member): a.get(k), str(fr.member): b.get(k)}
                                           for k in diff[:5]])
    ds = dumps(events)
    names = sorted(ds)
    for name in names[1:]:
        a, b = set(ds[names[0]]), set(ds[name])
        if a != b:
            res.add("log-mismatch", f"members {names[0]} and {name} have different histories",
                    [{"only_" + names[0]: sorted(a - b)[:5], "only_" + name: sorted(b - a)[:5]}])
    if not hashes and not finals:
        res.valid = None
    res.stats.update({"members": len(finals), "hashes": len(hashes)})
    return res

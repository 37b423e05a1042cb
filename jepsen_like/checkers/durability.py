"""Durability: nothing acknowledged is lost.

Every acknowledged mutation must (a) be in every member's final dump at its revision with its value, and
(b) still be visible in every member's final read of its key unless a later mutation replaced it: the final
read's mod revision may never be below the revision of an acknowledged mutation of that key, and the key may
only be absent if that member's log deletes it after its last acknowledged write (a delete whose answer was
lost -- ``info`` -- may well have happened).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from jepsen_like.checkers.result import CheckResult
from jepsen_like.checkers.revisions import is_mutation, written
from jepsen_like.checkers.truth import dumps
from jepsen_like.history import Event, Op, records


def check(events: Sequence[Event], ops: Sequence[Op]) -> CheckResult:
    res = CheckResult("durability", True)
    acked: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if is_mutation(op) and op.revision is not None and op.key is not None:
            acked[op.key].append(op)
    for lst in acked.values():
        lst.sort(key=lambda o: o.revision or 0)
    member_dumps = dumps(events)
    deleted_at: dict[tuple[str, str], int] = {}  # (member, key) -> revision of the last delete in its log
    for member, evs in member_dumps.items():
        for rev, typ, key, _ in evs:
            if typ == "DELETE":
                deleted_at[(member, key)] = max(rev, deleted_at.get((member, key), 0))
    for member, evs in sorted(member_dumps.items()):
        index = {(rev, key): (typ, value) for rev, typ, key, value in evs}
        top = max((e[0] for e in evs), default=0)
        for key, lst in acked.items():
            for op in lst:
                assert op.revision is not None
                got = index.get((op.revision, key))
                want = ("DELETE" if op.f == "delete" else "PUT", written(op))
                if got != want and (op.revision <= top or got is not None):
                    res.add("lost-write", f"member {member}: acknowledged {op.f} of {key!r} at revision "
                            f"{op.revision} is {'missing from' if got is None else 'different in'} its log",
                            [op.brief()])
    finals = list(records(events, "final-read"))
    if not finals:
        res.valid = None if res.valid else res.valid
        res.stats["note"] = "no final reads recorded"
    for fr in finals:
        kvs: dict[str, list[object]] = fr.extra["kvs"]
        for key, lst in acked.items():
            if lst[-1].f == "lease-put":
                continue  # lease keys may vanish legitimately; the lease checker owns them
            last = lst[-1]
            found = kvs.get(key)
            mod = int(found[1]) if found else None  # type: ignore[call-overload]
            deleted_later = deleted_at.get((str(fr.member), key), 0) > (last.revision or 0)
            if found is None and last.f != "delete" and not deleted_later:
                res.add("lost-write", f"member {fr.member}: {key!r} absent in the final read, but its last "
                        f"acknowledged write is revision {last.revision}", [last.brief()])
            elif mod is not None and last.revision is not None and mod < last.revision:
                res.add("lost-write", f"member {fr.member}: final read of {key!r} shows mod revision {mod}, "
                        f"older than acknowledged revision {last.revision}", [last.brief()])
    res.stats.update({"acknowledged": sum(len(v) for v in acked.values()), "members": sorted(member_dumps)})
    return res

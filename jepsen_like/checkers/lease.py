"""Leases: keys vanish only when their lease is gone, and all at once.

Keys of the lease workload are ``<prefix><lease id>/<n>`` and are only ever written under that lease, so:

* L1 -- a key put under lease L and later read absent: L must have been revoked (revoke invoked before the
  read returned) or expired, which is impossible while the read returned before ``call(k) + TTL`` for some
  keep-alive or grant ``k`` of L that answered with a positive TTL (the lease was then alive, so its
  deadline was at least that far);
* L2 -- the deletions of one lease's keys in the committed history share one revision;
* L3 -- keys of a lease whose revoke was acknowledged are absent from every final read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from jepsen_like.checkers.result import CheckResult
from jepsen_like.checkers.truth import TruthEvent
from jepsen_like.history import OK, Event, Op, records

SLACK_NS = 200_000_000
"""Tolerance for timer granularity between the harness clock and the server's lease clock."""


def lease_of(op: Op) -> int | None:
    lease = op.extra.get("lease")
    return int(lease) if lease is not None else None


def check(events: Sequence[Event], ops: Sequence[Op], truth: Sequence[TruthEvent]) -> CheckResult:
    res = CheckResult("lease", True)
    key_lease: dict[str, int] = {}
    put_ret: dict[str, int] = {}
    alive_until: dict[int, tuple[int, Op]] = {}
    revoked_call: dict[int, int] = {}
    revoked_ok: set[int] = set()
    for op in ops:
        if op.f == "lease-put" and op.type == OK and op.key is not None:
            lease = lease_of(op)
            assert lease is not None
            key_lease[op.key] = lease
            put_ret[op.key] = min(put_ret.get(op.key, op.ret), op.ret)
        elif op.f in ("lease-grant", "lease-keepalive") and op.type == OK and (op.extra.get("ttl") or 0) > 0:
            lease = int(op.extra["lease"])
            until = op.call + int(op.extra["ttl"]) * 1_000_000_000
            if until > alive_until.get(lease, (0, op))[0]:
                alive_until[lease] = (until, op)
        elif op.f == "lease-revoke":
            lease = int(op.value)
            revoked_call[lease] = min(revoked_call.get(lease, op.call), op.call)
            if op.type == OK:
                revoked_ok.add(lease)
    for op in ops:
        if op.f != "read" or op.type != OK or op.result is not None or op.key not in key_lease:
            continue
        lease = key_lease[op.key]
        if put_ret[op.key] >= op.call:
            continue
        if revoked_call.get(lease, 1 << 62) < op.ret:
            continue
        until, proof = alive_until.get(lease, (0, op))
        if op.ret + SLACK_NS < until:
            res.add("lease-early-vanish", f"{op.key!r} of lease {lease:x} read absent while the lease was "
                    "alive", [proof.brief(), op.brief()])
    deletions: dict[int, set[int]] = defaultdict(set)
    for rev, typ, key, _ in truth:
        if typ == "DELETE" and key in key_lease:
            deletions[key_lease[key]].add(rev)
    for lease, revs in deletions.items():
        if len(revs) > 1:
            res.add("lease-split-expiry", f"keys of lease {lease:x} deleted at revisions {sorted(revs)}",
                    [{"lease": lease, "revisions": sorted(revs)}])
    for fr in records(events, "final-read"):
        for key in fr.extra["kvs"]:
            if key_lease.get(key) in revoked_ok:
                res.add("lease-survived-revoke", f"member {fr.member}: {key!r} survived the revoke of its lease",
                        [{"key": key, "lease": key_lease[key], "member": fr.member}])
    res.stats = {"leases": len(alive_until), "lease_keys": len(key_lease), "revoked": len(revoked_ok)}
    return res

"""Linearizability of a key-value register history: Wing & Gong search with Lowe's memoisation.

The KV map is a product of independent registers, so (Horn & Kroening's P-compositionality) the history is
linearizable iff every per-key sub-history is; each key is searched on its own.

Per key the search walks a doubly linked list of call/return entries sorted by time (calls before returns on
ties: intervals are closed).  At a call it tries to linearize that operation next; a configuration
(linearized-set bitset, register value) already explored is never explored again.  Reaching a return entry
means the pending operation can no longer be deferred, so the search backtracks.  ``info`` operations have no
return entry: they may take effect at any point after their call, or never, so the search succeeds once every
``ok`` operation is placed.

Two sound reductions run first (unique written values make them exact):
* tighten -- an ``info`` write whose value some completed operation observed must have taken effect before
  that observer returned, so its return becomes the earliest observer's return;
* prune -- an ``info`` write nobody could depend on (value never observed or expected; for a delete, absence
  never observed) is dropped: it could only ever be overwritten unseen.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jepsen_like.checkers.result import CheckResult
from jepsen_like.history import FAIL, INFINITY, INFO, OK, Op

# Step kinds of the register model.
READ, WRITE, CAS, CAS_FAILED, DELETE, DELETE_ANY = range(6)


@dataclass(frozen=True)
class RegOp:
    """An operation reduced to what the register model needs."""

    op: Op
    kind: int
    a: Any
    b: Any
    call: int
    ret: int

    @property
    def certain(self) -> bool:
        return self.ret < INFINITY


def step(state: Any, kind: int, a: Any, b: Any) -> tuple[bool, Any]:
    """The register model: (is the outcome possible in ``state``, next state).  ``None`` = key absent."""
    if kind == READ:
        return state == a, state
    if kind == WRITE:
        return True, a
    if kind == CAS:
        return (True, b) if state == a else (False, state)
    if kind == CAS_FAILED:
        return state == b and state != a, state
    if kind == DELETE:
        return state == a, None
    return True, None  # DELETE_ANY: an info delete, prior value unknown


def to_regop(op: Op) -> RegOp | None:
    """Map a history operation to a model step; ``None`` if it carries no constraint."""
    if op.type == FAIL:
        # A failed CAS still observed the value it compared against: keep it as a read.
        if op.f == "cas" and op.extra.get("observed"):
            return RegOp(op, CAS_FAILED, op.value[0], op.result, op.call, op.ret)
        return None
    if op.type == INFO and op.f == "read":
        return None
    if op.f == "read":
        return RegOp(op, READ, op.result, None, op.call, op.ret)
    if op.f in ("write", "lease-put"):
        return RegOp(op, WRITE, op.value, None, op.call, op.ret)
    if op.f == "cas":
        return RegOp(op, CAS, op.value[0], op.value[1], op.call, op.ret)
    if op.f == "delete":
        if op.type == INFO:
            return RegOp(op, DELETE_ANY, None, None, op.call, op.ret)
        return RegOp(op, DELETE, op.result, None, op.call, op.ret)
    return None


def present_value(r: RegOp) -> tuple[Any, ...]:
    """The value a completed operation saw in the register (``None`` = absence), if it reveals one."""
    if not r.certain:
        return ()
    if r.kind in (READ, CAS, DELETE):
        return (r.a,)
    if r.kind == CAS_FAILED:
        return (r.b,)
    return ()


def depends_on(r: RegOp) -> tuple[Any, ...]:
    """Values whose presence could make this operation's outcome possible."""
    if not r.certain and r.kind == CAS:
        return (r.a,)
    return present_value(r)


def written_value(r: RegOp) -> Any:
    return r.b if r.kind == CAS else (None if r.kind in (DELETE, DELETE_ANY) else r.a)


def reduce_infos(rops: list[RegOp]) -> tuple[list[RegOp], int, int]:
    """Tighten and prune indeterminate writes (see module docstring).  Returns (ops, tightened, pruned)."""
    first_seen: dict[Any, int] = {}
    depended: set[Any] = set()
    for r in rops:
        depended.update(depends_on(r))
        for v in present_value(r):
            first_seen[v] = min(first_seen.get(v, INFINITY), r.ret)
    out: list[RegOp] = []
    tightened = pruned = 0
    for r in rops:
        if r.certain:
            out.append(r)
            continue
        v = written_value(r)
        if v not in depended:
            pruned += 1
        elif v is not None and v in first_seen:
            out.append(RegOp(r.op, r.kind, r.a, r.b, r.call, max(r.call, first_seen[v])))
            tightened += 1
        else:
            out.append(r)
    return out, tightened, pruned


class Unknown(Exception):
    """The search ran out of its time budget."""


def wgl(rops: Sequence[RegOp], init: Any = None, deadline: float = INFINITY) -> bool:
    """Is this single-register history linearizable?  Raises ``Unknown`` past ``deadline`` (monotonic s)."""
    n = len(rops)
    ents: list[tuple[int, int, int]] = []
    for i, r in enumerate(rops):
        ents.append((r.call, 0, i))
        if r.certain:
            ents.append((r.ret, 1, i))
    ents.sort()
    m = len(ents)
    # Entry 0 is the head sentinel; entries 1..m follow time order.
    nxt = list(range(1, m + 2))
    nxt[m] = 0
    prv = list(range(-1, m))
    is_call = [False] + [e[1] == 0 for e in ents]
    op_of = [-1] + [e[2] for e in ents]
    ret_entry = [0] * n
    for idx in range(1, m + 1):
        if not is_call[idx]:
            ret_entry[op_of[idx]] = idx
    kind = [r.kind for r in rops]
    arg_a = [r.a for r in rops]
    arg_b = [r.b for r in rops]
    certain = [r.certain for r in rops]
    remaining = sum(certain)

    def lift(e: int) -> None:
        nxt[prv[e]] = nxt[e]
        prv[nxt[e]] = prv[e]
        r = ret_entry[op_of[e]]
        if r:
            nxt[prv[r]] = nxt[r]
            prv[nxt[r]] = prv[r]

    def unlift(e: int) -> None:
        r = ret_entry[op_of[e]]
        if r:
            nxt[prv[r]] = r
            prv[nxt[r]] = r
        nxt[prv[e]] = e
        prv[nxt[e]] = e

    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any]] = []
    bits = 0
    state = init
    entry = nxt[0]
    steps = 0
    while True:
        if remaining == 0:
            return True
        steps += 1
        if steps & 0xFFFF == 0 and time.monotonic() > deadline:
            raise Unknown()
        if entry != 0 and is_call[entry]:
            i = op_of[entry]
            ok, new_state = step(state, kind[i], arg_a[i], arg_b[i])
            if ok:
                new_bits = bits | (1 << i)
                key = (new_bits, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state, bits = new_state, new_bits
                    if certain[i]:
                        remaining -= 1
                    lift(entry)
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
            continue
        # A return entry (or the end of the list): backtrack.
        if not stack:
            return False
        entry, state = stack.pop()
        i = op_of[entry]
        bits &= ~(1 << i)
        if certain[i]:
            remaining += 1
        unlift(entry)
        entry = nxt[entry]


def shrink(rops: list[RegOp], deadline: float) -> list[RegOp]:
    """A small non-linearizable subset, for the report.

    Operations are removed greedily (halves first, then one at a time) while the rest stays illegal; a write
    whose value a kept operation observed is never removed, otherwise removing it would *create* an illegal
    read rather than expose the real one.
    """
    def removable(keep: list[RegOp], removed: list[RegOp]) -> bool:
        seen = {v for r in keep for v in depends_on(r)}
        return bool(keep) and not any(written_value(r) in seen for r in removed if r.kind != READ)

    current = list(rops)
    chunk = max(1, len(current) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        i = 0
        changed = False
        while i < len(current) and time.monotonic() < deadline:
            candidate = current[:i] + current[i + chunk:]
            removed = current[i:i + chunk]
            if removable(candidate, removed):
                try:
                    if not wgl(candidate, deadline=deadline):
                        current = candidate
                        changed = True
                        continue
                except Unknown:
                    return current
            i += chunk
        if not changed:
            chunk //= 2
    return current


def check(ops: Sequence[Op], time_limit: float = 60.0,
          on_key: Callable[[str], None] | None = None) -> CheckResult:
    """Check every key's register sub-history; the result names each illegal key with a minimal witness."""
    res = CheckResult("linearizable", True)
    by_key: dict[str, list[RegOp]] = defaultdict(list)
    lease_keys = {op.key for op in ops if op.f == "lease-put"}
    for op in ops:
        # Lease keys vanish when their lease expires, which no client op records: the lease checker owns them.
        if op.key is None or op.key in lease_keys or op.f not in ("read", "write", "cas", "delete"):
            continue
        r = to_regop(op)
        if r is not None:
            by_key[op.key].append(r)
    deadline = time.monotonic() + time_limit
    t0 = time.monotonic()
    stats: dict[str, Any] = {"keys": len(by_key), "ops": 0, "tightened": 0, "pruned": 0, "unknown_keys": []}
    for key in sorted(by_key):
        if on_key:
            on_key(key)
        rops, tightened, pruned = reduce_infos(by_key[key])
        stats["ops"] += len(rops)
        stats["tightened"] += tightened
        stats["pruned"] += pruned
        try:
            legal = wgl(rops, deadline=deadline)
        except Unknown:
            stats["unknown_keys"].append(key)
            if res.valid:
                res.valid = None
            continue
        if not legal:
            witness = shrink(rops, min(deadline, time.monotonic() + 5.0))
            witness.sort(key=lambda r: r.call)
            res.add("nonlinearizable", f"key {key!r}: no linearization of its {len(rops)} operations exists; "
                    f"these {len(witness)} already have none", [r.op.brief() for r in witness])
    stats["seconds"] = round(time.monotonic() - t0, 3)
    res.stats = stats
    return res


__all__ = ["check", "wgl", "RegOp", "to_regop", "reduce_infos", "Unknown", "OK"]

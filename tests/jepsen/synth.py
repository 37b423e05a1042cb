"""Builders for synthetic histories used by the checker self-tests."""

from __future__ import annotations

import random
from typing import Any

from jepsen_like.history import INVOKE, OK, Event


class Builder:
    """Appends invoke/completion pairs; times are explicit so real-time order is exact."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def op(self, process: int, f: str, key: str, value: Any, call: int, ret: int, type: str = OK,
           result: Any = None, revision: int | None = None, mod_revision: int | None = None,
           **extra: Any) -> None:
        self.events.append(Event(process, INVOKE, f, key, value, call, extra=dict(extra)))
        self.events.append(Event(process, type, f, key, result, ret, revision=revision,
                                 mod_revision=mod_revision, extra=dict(extra)))

    def record(self, f: str, member: str | None = None, revision: int | None = None, time: int = 0,
               process: int | str = "final", **extra: Any) -> None:
        self.events.append(Event(process, OK, f, None, None, time, revision=revision, member=member,
                                 extra={"record": True, **extra}))

    def sorted(self) -> list[Event]:
        """Histories are in time order (invokes before completions at equal time, as logged)."""
        return sorted(self.events, key=lambda e: (e.time, e.type != INVOKE))


def register_history(seed: int, n_ops: int, keys: int, clients: int) -> tuple[Builder, dict[str, list[Any]]]:
    """A valid concurrent history of an etcd-like store, simulated with atomic points inside each interval.

    Returns the builder and the final state per key (value, mod revision) for final reads.
    """
    rng = random.Random(seed)
    b = Builder()
    state: dict[str, tuple[str | None, int]] = {}
    rev = 1
    t = 0
    busy_until = [0] * clients
    for i in range(n_ops):
        c = rng.randrange(clients)
        call = max(t, busy_until[c]) + rng.randrange(1, 5)
        point = call + rng.randrange(1, 10)
        ret = point + rng.randrange(1, 10)
        t = call
        # Interleave by processing in call order with the linearization point fixed now: still valid.
        key = f"k{rng.randrange(keys)}"
        cur, mod = state.get(key, (None, 0))
        choice = rng.random()
        if choice < 0.4:
            b.op(c, "read", key, None, call, ret, result=cur, revision=rev, mod_revision=mod or None)
        elif choice < 0.7:
            rev += 1
            v = f"v{i}"
            state[key] = (v, rev)
            b.op(c, "write", key, v, call, ret, revision=rev)
        elif choice < 0.9:
            new = f"v{i}"
            expected = cur if rng.random() < 0.5 else f"v{rng.randrange(i + 1)}"
            if expected == cur:
                rev += 1
                state[key] = (new, rev)
                b.op(c, "cas", key, [expected, new], call, ret, revision=rev)
            else:
                b.op(c, "cas", key, [expected, new], call, ret, type="fail", result=cur, revision=rev,
                     mod_revision=mod or None, observed=True)
        else:
            if cur is not None:
                rev += 1
                state.pop(key)
            b.op(c, "delete", key, None, call, ret, result=cur, revision=rev)
        busy_until[c] = ret
    return b, {k: [v, m] for k, (v, m) in state.items()}

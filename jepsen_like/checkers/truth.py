"""The committed history of the store, reconstructed for the checkers that need ground truth.

Sources: every member's final dump (a watch from revision 1 over the whole keyspace, taken after the quiet
period) and every acknowledged mutation in the client history.  Events are ``(revision, type, key, value)``
tuples with type ``PUT`` or ``DELETE``; the union is taken so a member that lost data cannot hide events the
others (or the clients) saw committed -- conflicts are the durability and convergence checkers' business.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from jepsen_like.checkers.revisions import is_mutation, written
from jepsen_like.history import Event, Op, records

TruthEvent = tuple[int, str, str, object]


def event_tuple(raw: Sequence[object]) -> TruthEvent:
    """Watch events are stored as ``[type, key, value, mod_revision]`` lists."""
    typ, key, value, rev = raw
    assert typ in ("PUT", "DELETE"), raw
    return int(rev), str(typ), str(key), None if typ == "DELETE" else value  # type: ignore[call-overload]


def dumps(events: Iterable[Event]) -> dict[str, list[TruthEvent]]:
    """Each member's final dump, by member name."""
    return {str(e.member): [event_tuple(x) for x in e.extra["events"]] for e in records(events, "final-dump")}


def committed(events: Sequence[Event], ops: Sequence[Op]) -> list[TruthEvent]:
    """The union of all dumps and acknowledged mutations, in revision order."""
    out: set[TruthEvent] = set()
    for evs in dumps(events).values():
        out.update(evs)
    for op in ops:
        if is_mutation(op) and op.revision is not None and op.key is not None:
            typ = "DELETE" if op.f == "delete" else "PUT"
            out.add((op.revision, typ, op.key, written(op)))
    return sorted(out, key=lambda t: (t[0], t[2], t[1]))

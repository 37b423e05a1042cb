"""What clients may see, judged against what the cluster actually did.

The *history* is the cluster's one sequence of revisions, learned from the members themselves: every member
reports each revision it applies (``Backend.subscribe_applied``) and the first report of a revision defines
it. Every later report must be identical (state machine safety at the API level: one revision, one set of
events, everywhere), and within one life a member never reports a revision twice (its applied state never goes
back). A crash may take a member's applied state back to what its disk holds (an apply is not flushed: the log
replays it), so a restarted member reports again, identically, what it applied after that. Leases are tracked
the same way, from each member's lease table after every write.

Against that history every answer is checked as it arrives:

- **Reads** (linearizable or serializable) return exactly the history's state of the key at the response's
  revision; a linearizable read's revision is at least that of everything acknowledged before it began
  (writes, txns, deletes and other linearizable reads): real-time order.
- **Writes and txns** are at the revision they claim, with the effect they claim (a txn's comparison is
  judged on the state just before it), and were acknowledged only once applied.
- **Leases**: an answer saying a lease is gone (time-to-live -1, keep-alive 0) while its grant was
  acknowledged before the question and no member has applied its revoke is a stale answer — unless, for a
  keep-alive, the lease may have legitimately expired (its TTL passed since the last acknowledged renewal
  began). An answer saying it is alive after its revoke was applied before the question began is stale too.
  A lease no client asked to revoke is never revoked before its TTL has passed since the start of its latest
  acknowledged grant or renewal (the leader's deadline is at least that far): an early expiry deletes keys a
  client was promised.
- **Watches** deliver exactly the history's events of their range, in revision order, with no gap and no
  duplicate, from their start revision on.
- **At the end** every member holds exactly the history's final state, and no key outlives its lease.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

from raftkv.proto import kv_pb2
from raftkv.server.backend import RevisionEvents
from raftkv.server.watch_hub import WatchSpec

_PUT = kv_pb2.Event.EventType.PUT

#: (type, key, value, lease) of one event: what every member must agree on for a revision.
EventKey = tuple[int, bytes, bytes, int]


def event_key(event: kv_pb2.Event) -> EventKey:
    return (int(event.type), event.kv.key, event.kv.value, event.kv.lease)


@dataclass(slots=True)
class _LeaseFacts:
    granted_at: float | None = None  # virtual time the grant was first applied anywhere
    revoked_at: float | None = None  # ... and the revoke
    grant_acked_at: float | None = None
    ttl: int = 0
    renewed_from: float = 0.0  # start time of the latest acknowledged grant or keep-alive
    revoke_asked_at: float | None = None  # when a client first asked to revoke it
    revoke_acked_at: float | None = None


@dataclass(slots=True)
class HistoryStats:
    revisions: int = 0
    reads_checked: int = 0
    watch_events_checked: int = 0
    lease_answers_checked: int = 0


class History:
    def __init__(self, now: Callable[[], float], violation: Callable[[str], None]) -> None:
        self._now = now
        self.violation = violation
        self.revisions: dict[int, tuple[EventKey, ...]] = {}
        self.first_reported_by: dict[int, str] = {}
        self._keys: dict[bytes, list[tuple[int, bytes | None, int]]] = {}  # key -> [(rev, value|None, lease)]
        self._key_revs: dict[bytes, list[int]] = {}
        self._last_reported: dict[str, int] = {}  # member name -> highest revision it reported
        self.linear_floor = 0  # highest revision every linearizable operation from now on must reach
        self._leases: dict[int, _LeaseFacts] = {}
        self.stats = HistoryStats()

    # --- from the members ----------------------------------------------------------------------------------
    def restarted(self, member: str, revision: int) -> None:
        """``member`` started again on its disk, at ``revision``: it applies again from there."""
        self._last_reported[member] = revision

    def applied(self, member: str, revision: RevisionEvents) -> None:
        rev = revision.revision
        last = self._last_reported.get(member, 0)
        if rev <= last:
            self.violation(
                f"{member} applied revision {rev} again (it had applied up to {last}): its applied state went back"
            )
        self._last_reported[member] = rev
        events = tuple(event_key(e) for e in revision.events)
        known = self.revisions.get(rev)
        if known is None:
            self.revisions[rev] = events
            self.first_reported_by[rev] = member
            self.stats.revisions += 1
            for kind, key, value, lease in events:
                self._keys.setdefault(key, []).append((rev, value if kind == _PUT else None, lease))
                self._key_revs.setdefault(key, []).append(rev)
        elif known != events:
            self.violation(
                f"state machine safety: {member} applied revision {rev} as {_show(events)}, but "
                f"{self.first_reported_by[rev]} applied it as {_show(known)}"
            )

    def member_lease_table(self, member: str, before: set[int], after: set[int]) -> None:
        """A member's lease table changed with one of its writes: note first grants and revokes."""
        now = self._now()
        for lease_id in sorted(after - before):
            facts = self._leases.setdefault(lease_id, _LeaseFacts())
            if facts.granted_at is None:
                facts.granted_at = now
        for lease_id in sorted(before - after):
            facts = self._leases.setdefault(lease_id, _LeaseFacts())
            if facts.revoked_at is None:
                facts.revoked_at = now
                self._check_not_early(lease_id, facts)

    # --- the state at a revision --------------------------------------------------------------------------
    @property
    def last_revision(self) -> int:
        return max(self.revisions, default=0)

    def value_at(self, key: bytes, rev: int) -> tuple[int, bytes | None, int]:
        """(mod revision, value or None if absent, lease) of ``key`` as of revision ``rev``."""
        revs = self._key_revs.get(key, [])
        i = bisect_right(revs, rev)
        if i == 0:
            return (0, None, 0)
        return self._keys[key][i - 1]

    # --- client answers --------------------------------------------------------------------------------------
    def check_read(self, what: str, member: str, key: bytes, header_rev: int, kvs: list[kv_pb2.KeyValue],
                   floor: int | None) -> None:
        """A range of one key answered at ``header_rev``; ``floor`` for a linearizable read."""
        self.stats.reads_checked += 1
        if floor is not None and header_rev < floor:
            self.violation(
                f"stale read: {what} of {key!r} on {member} answered at revision {header_rev}, but revision "
                f"{floor} was acknowledged before the read began"
            )
        if header_rev > max(self.last_revision, 1):  # an empty store is at revision 1
            self.violation(f"{what} on {member} answered at revision {header_rev}, beyond any applied revision")
        mod, value, lease = self.value_at(key, header_rev)
        got = (kvs[0].mod_revision, kvs[0].value, kvs[0].lease) if kvs else (0, None, 0)
        want = (mod, value, lease) if value is not None else (0, None, 0)
        if got != want:
            self.violation(
                f"{what} of {key!r} on {member} at revision {header_rev} returned {_show_kv(got)}; the history "
                f"holds {_show_kv(want)} there"
            )

    def check_write(self, what: str, member: str, key: bytes, value: bytes | None, rev: int) -> None:
        """A put (value) or delete (None) acknowledged at revision ``rev``."""
        events = self.revisions.get(rev)
        if events is None:
            self.violation(f"{what} of {key!r} acknowledged by {member} at revision {rev}, which nobody applied")
            return
        if not any(k == key and (v if kind == _PUT else None) == value for kind, k, v, _ in events):
            self.violation(f"{what} of {key!r} acknowledged by {member} at revision {rev}, which holds {_show(events)}")

    def check_cas(self, member: str, key: bytes, expected_mod: int, succeeded: bool, rev: int) -> None:
        """``if mod_revision(key) == expected_mod then put``: judged on the state before revision ``rev``."""
        before = rev - 1 if succeeded else rev
        mod, value, _ = self.value_at(key, before)
        actual = mod if value is not None else 0  # a missing key compares as mod revision 0
        if (actual == expected_mod) != succeeded:
            self.violation(
                f"txn on {member}: compare mod_revision({key!r}) == {expected_mod} "
                f"{'succeeded' if succeeded else 'failed'} "
                f"at revision {rev}, but the key's mod revision there was {actual}"
            )

    def acknowledged(self, rev: int) -> None:
        """A linearizable operation completed having observed revision ``rev``."""
        self.linear_floor = max(self.linear_floor, rev)

    # --- leases ---------------------------------------------------------------------------------------------
    def lease_granted(self, lease_id: int, ttl: int, started: float) -> None:
        facts = self._leases.setdefault(lease_id, _LeaseFacts())
        facts.grant_acked_at = self._now()
        facts.ttl = ttl
        facts.renewed_from = max(facts.renewed_from, started)

    def lease_renewed(self, lease_id: int, started: float) -> None:
        facts = self._leases.setdefault(lease_id, _LeaseFacts())
        facts.renewed_from = max(facts.renewed_from, started)
        if facts.revoked_at is not None:
            self._check_not_early(lease_id, facts)  # a renewal that took effect before the revoke applied

    def lease_revoke_asked(self, lease_id: int) -> None:
        facts = self._leases.setdefault(lease_id, _LeaseFacts())
        if facts.revoke_asked_at is None:
            facts.revoke_asked_at = self._now()

    def _check_not_early(self, lease_id: int, facts: _LeaseFacts) -> None:
        """The lease's revoke has applied: unless a client asked for it, its deadline must have passed."""
        revoked_at = facts.revoked_at
        assert revoked_at is not None
        if facts.revoke_asked_at is not None and facts.revoke_asked_at <= revoked_at:
            return
        if facts.grant_acked_at is None or revoked_at <= facts.renewed_from:
            return  # nothing acknowledged yet, or the renewal began after the revoke (a stale-answer matter)
        deadline = facts.renewed_from + facts.ttl
        if revoked_at < deadline:
            self.violation(
                f"lease {lease_id:x} expired early: its revoke applied at {revoked_at:.2f}, no client asked for "
                f"it, and a grant or keep-alive begun at {facts.renewed_from:.2f} had promised {facts.ttl}s "
                f"(until {deadline:.2f})"
            )

    def lease_revoked(self, lease_id: int) -> None:
        facts = self._leases.setdefault(lease_id, _LeaseFacts())
        facts.revoke_acked_at = self._now()

    def check_lease_answer(self, what: str, member: str, lease_id: int, alive: bool, started: float) -> None:
        """``alive``: the answer says the lease exists (TTL >= 0, or a keep-alive renewed it)."""
        self.stats.lease_answers_checked += 1
        facts = self._leases.get(lease_id)
        if facts is None:
            return
        now = self._now()
        if alive and facts.revoked_at is not None and facts.revoked_at <= started:
            self.violation(
                f"stale lease answer: {what} of lease {lease_id:x} on {member} says it is alive, but its revoke "
                f"was applied at {facts.revoked_at:.2f}, before the question began at {started:.2f}"
            )
        if alive or facts.grant_acked_at is None or facts.grant_acked_at > started:
            return
        if facts.revoked_at is not None and facts.revoked_at <= now:
            return
        if what == "keep-alive" and now >= facts.renewed_from + facts.ttl:
            return  # the leader may have expired it (its revoke not applied yet)
        self.violation(
            f"stale lease answer: {what} of lease {lease_id:x} on {member} (asked at {started:.2f}) says it is "
            f"gone, but its grant was acknowledged at {facts.grant_acked_at:.2f} and no member has revoked it"
            + (f"; it cannot have expired before {facts.renewed_from + facts.ttl:.2f}" if what == "keep-alive" else "")
        )

    # --- watches --------------------------------------------------------------------------------------------
    def check_watch(self, watcher: str, spec: WatchSpec, next_rev: int, delivered: list[RevisionEvents]) -> int:
        """``delivered`` follows everything up to ``next_rev - 1``; returns the new ``next_rev``."""
        for revision in delivered:
            rev = revision.revision
            if rev < next_rev:
                self.violation(f"watch {watcher}: revision {rev} delivered again (expected {next_rev} or later)")
            for missed in range(next_rev, rev):
                wanted = [e for e in self.revisions.get(missed, ()) if spec.matches(e[1])]
                if wanted:
                    self.violation(
                        f"watch {watcher}: skipped revision {missed} ({_show(tuple(wanted))}), delivered {rev} next"
                    )
            expected = tuple(e for e in self.revisions.get(rev, ()) if spec.matches(e[1]))
            got = tuple(event_key(e) for e in revision.events)
            if got != expected:
                self.violation(
                    f"watch {watcher}: revision {rev} delivered as {_show(got)}, history has {_show(expected)}"
                )
            self.stats.watch_events_checked += len(got)
            next_rev = rev + 1
        return next_rev

    # --- the end ---------------------------------------------------------------------------------------------
    def final_state(self) -> dict[bytes, tuple[int, bytes, int]]:
        rev = self.last_revision
        out = {}
        for key in sorted(self._keys):
            mod, value, lease = self.value_at(key, rev)
            if value is not None:
                out[key] = (mod, value, lease)
        return out

    def check_final(self, member: str, kvs: list[kv_pb2.KeyValue], leases: set[int]) -> None:
        want = self.final_state()
        got = {kv.key: (kv.mod_revision, kv.value, kv.lease) for kv in kvs}
        if got != want:
            diff = sorted(set(got.items()) ^ set(want.items()))[:4]
            self.violation(f"{member} ends with a state that differs from the history: {diff}")
        for key, (_, _, lease) in sorted(want.items()):
            if lease and lease not in leases:
                self.violation(f"key {key!r} outlived its lease {lease:x} on {member}")


def _show(events: tuple[EventKey, ...]) -> str:
    return "[" + ", ".join(f"{'put' if k == _PUT else 'del'} {key!r}={v!r}" for k, key, v, _ in events) + "]"


def _show_kv(kv: tuple[int, bytes | None, int]) -> str:
    return "nothing" if kv[1] is None else f"{kv[1]!r}@{kv[0]}" + (f" lease {kv[2]:x}" if kv[2] else "")


@dataclass(slots=True)
class WatchState:
    name: str
    spec: WatchSpec
    next_rev: int
    events: int = 0
    restarts: int = field(default=0)

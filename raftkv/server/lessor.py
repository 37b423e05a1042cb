"""When leases expire: the leader's clock for the replicated lease table.

Which leases exist, their granted TTL and attached keys is replicated state (``raftkv.statemachine``); when a
lease *expires* is a decision only the current leader takes, by proposing ``lease_revoke``. Expiry deadlines
are therefore plain in-memory monotonic times on the leader, rebuilt on every promotion, exactly as etcd's
lessor does. This class is pure: the caller passes the monotonic clock reading into each call, so the whole
timing policy (failover extension, renew of an already expired lease, rate-limited revocation) is unit
tested without sleeping.

The node's duties around it: call :meth:`Lessor.promote` when it becomes leader with the state machine's
leases, :meth:`Lessor.demote` when it stops being leader, :meth:`Lessor.grant` / :meth:`Lessor.revoke` as
lease grants and revocations are applied, and every 500 ms propose ``lease_revoke`` for each id returned by
:meth:`Lessor.expired`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass

#: etcd revokes at most this many expired leases per second, so a mass expiry does not flood the log.
REVOKE_RATE_PER_SECOND = 1000

#: How long an expired lease handed to the node waits before :meth:`Lessor.expired` offers it again. The
#: revoke proposal normally applies long before; the retry covers a proposal lost to a leader change.
EXPIRED_RETRY_INTERVAL = 3.0


class NotPrimaryError(Exception):
    """This member is not the leader, so it keeps no expiry clock (keep-alives must go to the leader)."""


@dataclass(slots=True)
class _Deadline:
    ttl: int
    expiry: float
    #: Set once the lease was handed out as expired: when to offer it again if still not revoked.
    retry_at: float | None = None

    def due(self) -> float:
        """The time this lease's live heap entry is keyed on."""
        return self.expiry if self.retry_at is None else self.retry_at


class Lessor:
    """Expiry deadlines of the leases, meaningful only while this member is the leader ("primary")."""

    def __init__(self, retry_interval: float = EXPIRED_RETRY_INTERVAL) -> None:
        self._retry_interval = retry_interval
        self._primary = False
        self._leases: dict[int, _Deadline] = {}
        # Min-heap of (due time, id) with lazy deletion: an entry is live only while it matches _leases. A
        # renewal leaves its old entry behind until that time passes, so the heap stays within a small
        # multiple of the lease count (clients renew every TTL/3).
        self._heap: list[tuple[float, int]] = []

    @property
    def is_primary(self) -> bool:
        return self._primary

    def promote(self, leases: Mapping[int, int], now: float, extend: float) -> None:
        """Start the clocks on becoming leader: every lease (id -> granted TTL) gets ``now + ttl + extend``.

        ``extend`` (the election timeout) is the grace a failover costs: keep-alives sent to the old leader
        during the election were lost, so without it every short lease would expire right after failover.
        """
        assert extend >= 0, extend
        self._primary = True
        self._leases = {}
        self._heap = []
        for lease_id, ttl in leases.items():
            self._set(lease_id, ttl, now + ttl + extend)

    def demote(self) -> None:
        """Forget all deadlines: a follower never expires leases, and a later promotion rebuilds them."""
        self._primary = False
        self._leases = {}
        self._heap = []

    def grant(self, lease_id: int, ttl: int, now: float) -> None:
        """A grant was applied: start its clock (no-op on a follower, which keeps no clocks)."""
        if self._primary:
            self._set(lease_id, ttl, now + ttl)

    def revoke(self, lease_id: int) -> None:
        """A revocation was applied: stop tracking the lease."""
        self._leases.pop(lease_id, None)

    def renew(self, lease_id: int, now: float) -> int:
        """Keep-alive: restart the lease's clock and return its granted TTL; 0 if it is unknown or expired.

        An expired lease is not revived even though its revocation may not have applied yet: the leader has
        already decided it is gone (and may have proposed the revoke), so the client must see it as gone.
        """
        if not self._primary:
            raise NotPrimaryError(lease_id)
        deadline = self._leases.get(lease_id)
        if deadline is None or deadline.expiry <= now:
            return 0
        self._set(lease_id, deadline.ttl, now + deadline.ttl)
        return deadline.ttl

    def remaining(self, lease_id: int, now: float) -> float | None:
        """Seconds left before expiry (0 once expired), or None when unknown or this member is not leader."""
        deadline = self._leases.get(lease_id) if self._primary else None
        if deadline is None:
            return None
        return max(0.0, deadline.expiry - now)

    def expired(self, now: float, limit: int) -> list[int]:
        """Up to ``limit`` leases whose deadline has passed, earliest first, for the node to revoke.

        A returned lease is not offered again for ``retry_interval`` seconds, so a revoke proposal in flight
        is not duplicated every check; if it was lost (leader change), the lease comes back after that.
        """
        if not self._primary:
            return []
        out: list[int] = []
        while self._heap and len(out) < limit:
            due, lease_id = self._heap[0]
            if due > now:
                break
            heapq.heappop(self._heap)
            deadline = self._leases.get(lease_id)
            if deadline is None or deadline.due() != due:
                continue  # stale heap entry: renewed or revoked since
            out.append(lease_id)
            # The deadline itself stays in the past (renew() keeps refusing); only the offer is deferred.
            deadline.retry_at = now + self._retry_interval
            heapq.heappush(self._heap, (deadline.retry_at, lease_id))
        return out

    def _set(self, lease_id: int, ttl: int, expiry: float) -> None:
        assert ttl > 0, (lease_id, ttl)
        self._leases[lease_id] = _Deadline(ttl, expiry)
        heapq.heappush(self._heap, (expiry, lease_id))


def min_lease_ttl(election_ms: int) -> int:
    """etcd's shortest lease: 1.5 election timeouts, rounded up to whole seconds (2 s at defaults), so a
    lease always outlives the leader election that may follow its last keep-alive. The applier raises a
    shorter grant to it (``ApplyConfig.min_lease_ttl``), so every member grants the same TTL."""
    return math.ceil(1.5 * election_ms / 1000)


def revoke_limit(check_interval: float) -> int:
    """How many expired leases one check may revoke to stay within etcd's rate (500 per 500 ms check)."""
    return max(1, math.floor(REVOKE_RATE_PER_SECOND * check_interval))

"""The leader's lease clock: deadlines, failover grace, renewals of expired leases, rate-limited expiry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.server.lessor import Lessor, NotPrimaryError, revoke_limit


def leader(leases: dict[int, int] | None = None, now: float = 0.0, extend: float = 0.0) -> Lessor:
    lessor = Lessor(retry_interval=3.0)
    lessor.promote(leases or {}, now, extend)
    return lessor


def test_granted_lease_expires_after_its_ttl() -> None:
    lessor = leader()
    lessor.grant(7, 10, now=100.0)
    assert lessor.remaining(7, 104.0) == pytest.approx(6.0)
    assert lessor.expired(109.9, limit=10) == []
    assert lessor.expired(110.0, limit=10) == [7]


def test_renew_restarts_the_clock_and_returns_the_granted_ttl() -> None:
    lessor = leader()
    lessor.grant(7, 10, now=0.0)
    assert lessor.renew(7, now=8.0) == 10
    assert lessor.expired(17.0, limit=10) == []
    assert lessor.remaining(7, 17.0) == pytest.approx(1.0)
    assert lessor.expired(18.0, limit=10) == [7]


def test_unknown_or_revoked_lease_renews_to_zero() -> None:
    lessor = leader()
    assert lessor.renew(99, now=0.0) == 0
    lessor.grant(7, 10, now=0.0)
    lessor.revoke(7)
    assert lessor.renew(7, now=1.0) == 0
    assert lessor.remaining(7, 1.0) is None
    assert lessor.expired(100.0, limit=10) == []


def test_expired_lease_is_not_revived_by_a_late_keepalive() -> None:
    """Once the deadline passed the leader treats the lease as gone, even before the revoke applies."""
    lessor = leader()
    lessor.grant(7, 5, now=0.0)
    assert lessor.expired(6.0, limit=10) == [7]
    assert lessor.renew(7, now=6.5) == 0
    assert lessor.remaining(7, 6.5) == 0.0


def test_promotion_extends_every_lease_by_the_election_timeout() -> None:
    """Keep-alives lost during an election must not make every lease expire right after failover."""
    lessor = leader({1: 5, 2: 60}, now=1000.0, extend=1.0)
    assert lessor.expired(1005.5, limit=10) == []
    assert lessor.expired(1006.0, limit=10) == [1]
    assert lessor.remaining(2, 1006.0) == pytest.approx(55.0)


def test_follower_keeps_no_clock() -> None:
    lessor = Lessor()
    lessor.grant(7, 5, now=0.0)
    assert lessor.expired(100.0, limit=10) == []
    assert lessor.remaining(7, 0.0) is None
    with pytest.raises(NotPrimaryError):
        lessor.renew(7, now=0.0)


def test_demotion_stops_expiry_and_a_new_promotion_starts_from_the_replicated_ttls() -> None:
    lessor = leader()
    lessor.grant(7, 5, now=0.0)
    lessor.demote()
    assert not lessor.is_primary
    assert lessor.expired(100.0, limit=10) == []
    lessor.promote({7: 5}, now=200.0, extend=1.0)
    assert lessor.expired(205.9, limit=10) == []
    assert lessor.expired(206.0, limit=10) == [7]


def test_expired_is_rate_limited_and_earliest_first() -> None:
    lessor = leader()
    for lease_id in range(1, 11):
        lessor.grant(lease_id, 10 + lease_id, now=0.0)
    assert lessor.expired(100.0, limit=4) == [1, 2, 3, 4]
    assert lessor.expired(100.0, limit=4) == [5, 6, 7, 8]
    assert lessor.expired(100.0, limit=4) == [9, 10]
    assert revoke_limit(0.5) == 500


def test_expired_lease_is_offered_again_only_after_the_retry_interval() -> None:
    """A revoke lost to a leader change is retried; one still in flight is not duplicated."""
    lessor = leader()
    lessor.grant(7, 5, now=0.0)
    assert lessor.expired(5.0, limit=10) == [7]
    assert lessor.expired(7.9, limit=10) == []
    assert lessor.expired(8.0, limit=10) == [7]
    lessor.revoke(7)
    assert lessor.expired(20.0, limit=10) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["grant", "renew", "revoke", "tick"]), st.integers(1, 4), st.integers(1, 9)),
        max_size=60,
    )
)
def test_expired_matches_a_simple_model(ops: list[tuple[str, int, int]]) -> None:
    """Every lease offered as expired is past its deadline by the model, and no expired lease is missed."""
    lessor = leader()
    deadline: dict[int, float] = {}
    offered: set[int] = set()
    now = 0.0
    for op, lease_id, amount in ops:
        if op == "grant" and lease_id not in deadline:
            lessor.grant(lease_id, amount, now)
            deadline[lease_id] = now + amount
        elif op == "renew":
            ttl = lessor.renew(lease_id, now)
            alive = lease_id in deadline and deadline[lease_id] > now
            assert (ttl > 0) == alive
            if alive:
                deadline[lease_id] = now + ttl
        elif op == "revoke":
            lessor.revoke(lease_id)
            deadline.pop(lease_id, None)
            offered.discard(lease_id)
        elif op == "tick":
            now += amount / 2
            for expired in lessor.expired(now, limit=100):
                assert deadline[expired] <= now
                offered.add(expired)
            assert {i for i, d in deadline.items() if d <= now} <= offered

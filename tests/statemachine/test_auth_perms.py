"""etcd 3.4's key-range permission rules (``auth/range_perm_cache_test.go`` cases and more)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from raftkv.proto import auth_pb2
from raftkv.statemachine.auth_perms import READ, READWRITE, WRITE, UnifiedPermissions


def perms(*grants: tuple[int, bytes, bytes]) -> UnifiedPermissions:
    return UnifiedPermissions.of(auth_pb2.Permission(permType=t, key=k, range_end=e) for t, k, e in grants)


def test_single_key_permission_allows_only_that_key() -> None:
    p = perms((READ, b"/config", b""))
    assert p.allows(READ, b"/config")
    assert not p.allows(READ, b"/config2")
    assert not p.allows(WRITE, b"/config")
    assert not p.allows(READ, b"/config", b"/config0")  # a range from it is more than the key


def test_prefix_covers_its_keys_and_subranges_only() -> None:
    p = perms((READWRITE, b"/svc/", b"/svc0"))
    assert p.allows(READ, b"/svc/a") and p.allows(WRITE, b"/svc/a")
    assert p.allows(READ, b"/svc/", b"/svc0")
    assert p.allows(READ, b"/svc/a", b"/svc/b")
    assert not p.allows(READ, b"/svc", b"/svd")  # starts before the grant
    assert not p.allows(READ, b"/svc/", b"\0")  # from-key: open-ended, beyond the grant
    assert not p.allows(READ, b"/svc0")


def test_from_key_grant_is_open_ended() -> None:
    p = perms((READ, b"m", b"\0"))
    assert p.allows(READ, b"zzzz")
    assert p.allows(READ, b"m", b"\0")
    assert not p.allows(READ, b"a", b"\0")


def test_union_of_touching_ranges_covers_and_a_gap_does_not() -> None:
    touching = perms((READ, b"a", b"c"), (READ, b"c", b"e"))
    assert touching.allows(READ, b"a", b"e")
    gap = perms((READ, b"a", b"c"), (READ, b"d", b"e"))
    assert not gap.allows(READ, b"a", b"e")
    assert gap.allows(READ, b"d", b"e")


def test_whole_keyspace() -> None:
    p = perms((READWRITE, b"\0", b"\0"))
    assert p.allows(WRITE, b"anything") and p.allows(READ, b"\0", b"\0")


keys = st.binary(min_size=1, max_size=3)


@given(st.lists(st.tuples(keys, keys), max_size=4), keys, keys)
def test_range_allowed_iff_every_key_in_it_is(grants: list[tuple[bytes, bytes]], begin: bytes, end: bytes) -> None:
    """A range is covered exactly when no key in it is outside every grant. The first uncovered key, if
    any, is the range's beginning or the end of some grant, so checking those keys decides it."""
    grants = [(min(a, b), max(a, b)) for a, b in grants if a != b]
    if begin >= end:
        return
    p = perms(*((READ, a, b) for a, b in grants))
    candidates = [k for k in {begin, *(b for _, b in grants)} if begin <= k < end]
    every_key = all(any(a <= k < b for a, b in grants) for k in candidates)
    assert p.allows(READ, begin, end) == every_key

"""The instance set a resolver keeps: listing, events, and the diff after a re-list."""

from __future__ import annotations

from raftkv.client.types import Event, EventType, KeyValue
from raftkv.discovery import record
from raftkv.discovery.view import ChangeKind, ServiceView


def kv(key: str, addr: str | None, rev: int, raw: bytes | None = None) -> KeyValue:
    value = raw if raw is not None else (record.encode(addr) if addr else b"")
    return KeyValue(key.encode(), value, rev, rev, 1, 0)


def test_listing_then_events() -> None:
    v = ServiceView("s")
    changes = v.reset([kv("/services/s/a", "h:1", 3), kv("/services/s/b", "h:2", 4)], 5)
    assert {(c.kind, c.instance.id) for c in changes} == {(ChangeKind.ADDED, "a"), (ChangeKind.ADDED, "b")}
    assert v.apply(Event(EventType.DELETE, kv("/services/s/a", None, 6), None)).kind is ChangeKind.REMOVED  # type: ignore[union-attr]
    assert v.apply(Event(EventType.PUT, kv("/services/s/b", "h:3", 7), None)).kind is ChangeKind.UPDATED  # type: ignore[union-attr]
    assert v.apply(Event(EventType.PUT, kv("/services/s/b", "h:3", 8), None)) is None  # re-registration, same endpoint
    assert set(v.instances) == {"b"} and v.revision == 8


def test_relist_reports_only_real_differences() -> None:
    v = ServiceView("s")
    v.reset([kv("/services/s/a", "h:1", 3), kv("/services/s/b", "h:2", 4)], 5)
    changes = v.reset([kv("/services/s/b", "h:2", 4), kv("/services/s/c", "h:9", 20)], 21)
    assert sorted((c.kind.value, c.instance.id) for c in changes) == [("added", "c"), ("removed", "a")]


def test_bad_values_and_deeper_keys_stay_out_of_the_pool() -> None:
    v = ServiceView("s")
    v.reset([kv("/services/s/a", None, 3, raw=b"garbage"), kv("/services/s/cfg/x", "h:1", 4),
             kv("/services/s/b", "h:2", 4)], 5)
    assert set(v.instances) == {"b"} and "a" in v.invalid
    change = v.apply(Event(EventType.PUT, kv("/services/s/b", None, 6, raw=b"{}"), None))
    assert change is not None and change.kind is ChangeKind.REMOVED and "b" in v.invalid

"""The known instances of one service, kept from a listing plus watch events: pure bookkeeping.

The resolver (``resolver.py``) lists ``<namespace>/<service>/`` at some revision R, then feeds the events of
a watch from R+1. When the watch cannot continue (history compacted, watch canceled) it lists again and
``reset`` diffs the new listing against what is known, so consumers see only the real changes: an instance
that stayed is not removed and re-added. This is the step etcd's Go resolver lacks (it stops updating for
good when its watch ends).

Values that do not parse are left out of the pool (a balancer cannot dial them) but remembered in
``invalid`` with the reason, for ``kvctl service list`` and the logs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from raftkv.client.types import Event, EventType, KeyValue
from raftkv.discovery import record


class ChangeKind(enum.Enum):
    ADDED = "added"
    UPDATED = "updated"  # same instance id, new address or metadata
    REMOVED = "removed"


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    instance: record.Instance
    revision: int


class ServiceView:
    """Instances of one service at ``revision``."""

    def __init__(self, service: str, namespace: str = record.DEFAULT_NAMESPACE) -> None:
        self.service = service
        self.prefix = record.service_prefix(service, namespace)
        self.instances: dict[str, record.Instance] = {}
        self.invalid: dict[str, str] = {}
        #: The revision the view reflects; 0 before the first listing.
        self.revision = 0

    def _parse(self, kv: KeyValue) -> record.Instance | None:
        key = kv.key.decode("utf-8", "replace")
        rest = key[len(self.prefix):]
        if not key.startswith(self.prefix) or not rest or "/" in rest:
            return None  # deeper keys are not instances of this service (e.g. a config subtree)
        try:
            instance = record.decode(kv.key, kv.value, lease=kv.lease, mod_revision=kv.mod_revision)
        except record.RecordError as exc:
            self.invalid[rest] = str(exc)
            return None
        self.invalid.pop(rest, None)
        return instance

    def reset(self, kvs: Iterable[KeyValue], revision: int) -> list[Change]:
        """Replace the view by a listing taken at ``revision``; returns the differences."""
        fresh: dict[str, record.Instance] = {}
        self.invalid.clear()
        for kv in kvs:
            instance = self._parse(kv)
            if instance is not None:
                fresh[instance.id] = instance
        changes = [Change(ChangeKind.REMOVED, old, revision)
                   for key, old in self.instances.items() if key not in fresh]
        for key, new in fresh.items():
            old = self.instances.get(key)
            if old is None:
                changes.append(Change(ChangeKind.ADDED, new, revision))
            elif not old.same_endpoint(new):
                changes.append(Change(ChangeKind.UPDATED, new, revision))
        self.instances, self.revision = fresh, revision
        return changes

    def apply(self, event: Event) -> Change | None:
        """Fold one watch event in; returns the change it makes, if any."""
        revision = event.kv.mod_revision
        self.revision = max(self.revision, revision)
        instance_id = event.kv.key.decode("utf-8", "replace")[len(self.prefix):]
        old = self.instances.get(instance_id)
        if event.type is EventType.DELETE:
            self.invalid.pop(instance_id, None)
            if old is None:
                return None
            del self.instances[instance_id]
            return Change(ChangeKind.REMOVED, old, revision)
        new = self._parse(event.kv)
        if new is None:  # now unparsable: it cannot be dialled any more
            if old is None:
                return None
            del self.instances[instance_id]
            return Change(ChangeKind.REMOVED, old, revision)
        self.instances[new.id] = new
        if old is None:
            return Change(ChangeKind.ADDED, new, revision)
        return Change(ChangeKind.UPDATED, new, revision) if not old.same_endpoint(new) else None

    def snapshot(self) -> Mapping[str, record.Instance]:
        return dict(self.instances)

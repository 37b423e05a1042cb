"""Jepsen-style operation histories, stored as JSON Lines.

Every client operation is logged twice: an ``invoke`` event just before the request is sent and exactly one
completion just after the answer (or the failure) arrives:

* ``ok``   -- it happened, with its result;
* ``fail`` -- it certainly did not happen (a CAS whose compare was false also lands here, carrying the value
  it saw, because the store *told* us nothing was written);
* ``info`` -- unknown: it may have happened at any time after its invocation, or never.  The process that
  saw ``info`` is retired and the worker continues under a fresh process id, so one process never has two
  overlapping operations (the checkers rely on that).

All timestamps come from one clock (``time.monotonic_ns``) in the harness process, taken before send and after
receive, so real-time order between operations in the history is real-time order on the servers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

INVOKE: Final = "invoke"
OK: Final = "ok"
FAIL: Final = "fail"
INFO: Final = "info"
TYPES: Final = frozenset({INVOKE, OK, FAIL, INFO})

#: Operations that may change the store (the checkers treat ``info`` versions of these as maybe-applied).
WRITE_FS: Final = frozenset({"write", "cas", "delete", "lease-put"})
NEMESIS: Final = "nemesis"

INFINITY: Final = 1 << 62
"""Return time given to operations whose completion is unknown: later than every real timestamp."""


@dataclass
class Event:
    """One line of a history file (field names follow Jepsen's op maps)."""

    process: int | str
    type: str
    f: str
    key: str | None = None
    value: Any = None
    time: int = 0
    revision: int | None = None
    mod_revision: int | None = None
    error: str | None = None
    member: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise without ``None`` fields so files stay small and diffable."""
        d = {k: v for k, v in asdict(self).items() if v is not None and v != {}}
        return json.dumps(d, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        assert d["type"] in TYPES, d
        return cls(**d)


@dataclass
class Op:
    """An invocation paired with its completion: the unit every checker works on."""

    index: int
    process: int | str
    f: str
    key: str | None
    value: Any
    type: str
    call: int
    ret: int
    revision: int | None = None
    mod_revision: int | None = None
    result: Any = None
    error: str | None = None
    member: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: For an ``info`` op, when the client gave up on it (its outcome stays unknown: ``ret`` is infinite).
    gave_up: int | None = None

    @property
    def is_write(self) -> bool:
        return self.f in WRITE_FS

    def brief(self) -> dict[str, Any]:
        """A compact description used in anomaly reports."""
        d: dict[str, Any] = {"index": self.index, "process": self.process, "type": self.type, "f": self.f}
        for name in ("key", "value", "result", "revision", "mod_revision", "error", "member"):
            v = getattr(self, name)
            if v is not None:
                d[name] = v
        if self.extra.get("observed"):
            d["observed"] = True  # a compare that was false: an answer, not a failure
        d["call"] = self.call
        d["ret"] = None if self.ret >= INFINITY else self.ret
        return d


class HistoryWriter:
    """Thread-safe append-only JSONL writer; events are flushed at once so a crash keeps the history."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    @staticmethod
    def now() -> int:
        """The one clock of the harness."""
        return time.monotonic_ns()

    def log(self, event: Event) -> Event:
        if not event.time:
            event.time = self.now()
        line = event.to_json()
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()
        return event

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def read_events(path: Path) -> list[Event]:
    """Load a history file; a truncated last line (harness killed mid-write) is ignored."""
    events: list[Event] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                events.append(Event.from_dict(json.loads(line)))
            except json.JSONDecodeError:
                break
    return events


def write_events(path: Path, events: Iterable[Event]) -> None:
    """Write a whole history (used by tests that build synthetic histories)."""
    with path.open("w", encoding="utf-8") as fh:
        for e in events:
            fh.write(e.to_json() + "\n")


def pair(events: Iterable[Event]) -> list[Op]:
    """Pair every invoke with its process's next completion.

    An invoke with no completion (harness stopped) becomes ``info`` with an infinite return time.  Events of
    the nemesis and of non-operation records (watch deliveries, final reads) are skipped here; checkers that
    need them read the raw events.
    """
    open_ops: dict[int | str, Op] = {}
    ops: list[Op] = []
    for e in events:
        if e.process == NEMESIS or e.extra.get("record"):
            continue
        if e.type == INVOKE:
            assert e.process not in open_ops, f"process {e.process} has two open operations"
            op = Op(len(ops), e.process, e.f, e.key, e.value, INFO, e.time, INFINITY, member=e.member,
                    extra=dict(e.extra))
            open_ops[e.process] = op
            ops.append(op)
            continue
        assert e.process in open_ops, f"completion without invoke: {e}"
        op = open_ops.pop(e.process)
        op.type = e.type
        op.ret = e.time if e.type != INFO else INFINITY
        op.gave_up = e.time if e.type == INFO else None
        op.revision = e.revision
        op.mod_revision = e.mod_revision
        op.result = e.value
        op.error = e.error
        op.member = e.member or op.member
        op.extra.update(e.extra)
    return ops


def records(events: Iterable[Event], f: str) -> Iterator[Event]:
    """Non-operation records of kind ``f`` (watch responses, final reads, hashes)."""
    return (e for e in events if e.extra.get("record") and e.f == f)

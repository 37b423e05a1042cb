"""The replicated application of the simulation: a tiny key -> value map with an exact snapshot format.

Keys and values are small integers so that commands are cheap to encode and every value is unique across
a run (a value id names exactly one client write). Each key remembers the log index of the write that set
it: the linearizability checks compare indices, which the state-machine-safety invariant ties to entries.

The state machine is *durable*: applying a batch models one storage transaction that also records the
applied index (as the LMDB applier does), so a crash never loses applied state and a restart passes
``applied`` to the core. Snapshots are its whole encoded state.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

from raftkv.core.types import ConfState

_PUT = struct.Struct(">HQ")


def encode_put(key: int, value: int) -> bytes:
    return _PUT.pack(key, value)


def decode_put(data: bytes) -> tuple[int, int]:
    key, value = _PUT.unpack(data)
    return key, value


@dataclass(slots=True)
class KVStateMachine:
    """Applied state of one node. ``kv[key] = (value id, index of the write that set it)``."""

    applied: int = 0
    conf_state: ConfState = field(default_factory=ConfState)
    kv: dict[int, tuple[int, int]] = field(default_factory=dict)

    def apply_put(self, index: int, data: bytes) -> None:
        assert index == self.applied + 1, f"apply gap: applied={self.applied} next={index}"
        if data:  # an empty NORMAL entry is a new leader's no-op
            key, value = decode_put(data)
            self.kv[key] = (value, index)
        self.applied = index

    def skip(self, index: int, conf_state: ConfState) -> None:
        """Record a conf-change entry as applied (its effect is the new membership)."""
        assert index == self.applied + 1, f"apply gap: applied={self.applied} next={index}"
        self.conf_state = conf_state
        self.applied = index

    def read(self, key: int) -> tuple[int, int]:
        return self.kv.get(key, (0, 0))

    def encode(self) -> bytes:
        return json.dumps(
            {
                "applied": self.applied,
                "voters": sorted(self.conf_state.voters),
                "learners": sorted(self.conf_state.learners),
                "kv": [[k, v, i] for k, (v, i) in sorted(self.kv.items())],
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> KVStateMachine:
        d = json.loads(data)
        cs = ConfState(frozenset(d["voters"]), frozenset(d["learners"]))
        return cls(d["applied"], cs, {k: (v, i) for k, v, i in d["kv"]})

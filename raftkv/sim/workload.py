"""Simulated clients: unique writes and ReadIndex reads, with the history the checks need.

Each client runs one operation at a time against a random live member, like a real client with a
connection that may point at a follower. A write proposes a value id used exactly once in the run; it is
*acknowledged* when the node it was sent to applies it (the moment a real server answers the client).
A read runs the ReadIndex protocol and is answered from the node's state machine once applied reaches the
read index. Operations that neither succeed nor fail in time are indeterminate and excluded from checks.

Checked here, as results arrive:
- a read sees every write acknowledged before the read began (its key's value was written at an index at
  least that of the latest such write), which makes reads linearizable with respect to acknowledged writes;
- at the end, acknowledged writes are not lost: every member has applied them and still reflects them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from raftkv.core.types import Entry, ProposalDropped
from raftkv.sim.clock import EventQueue
from raftkv.sim.invariants import InvariantViolation
from raftkv.sim.node import SimNode
from raftkv.sim.statemachine import decode_put, encode_put

OP_TIMEOUT = 300
THINK_TIME = 15


@dataclass(slots=True)
class _Op:
    client: int
    node: int
    life: int
    key: int
    value: int  # 0 for a read
    start: int
    required: int = 0  # reads: index of the latest write to key acknowledged before the read began
    done: bool = False


@dataclass(slots=True)
class WorkloadStats:
    writes_ok: int = 0
    reads_ok: int = 0
    failed: int = 0
    indeterminate: int = 0


class Workload:
    def __init__(
        self,
        queue: EventQueue,
        rng: random.Random,
        pick_node: Callable[[random.Random], SimNode | None],
        clients: int,
        keys: int,
        stale_reads: bool,
    ) -> None:
        self._queue = queue
        self._rng = rng
        self._pick = pick_node
        self._clients = clients
        self._keys = keys
        self._stale_reads = stale_reads
        self._next_value = 0
        self._writes: dict[bytes, _Op] = {}  # encoded command -> pending write
        self._reads: dict[tuple[int, bytes], _Op] = {}  # (node id, ctx) -> pending read
        #: key -> index of the latest acknowledged write to it
        self.acked: dict[int, int] = {}
        self.stats = WorkloadStats()
        self.running = True

    def start(self) -> None:
        for c in range(self._clients):
            self._queue.schedule(self._rng.randint(1, THINK_TIME), f"client {c} start", lambda c=c: self._issue(c))

    # -- issuing ----------------------------------------------------------------------------------------

    def _issue(self, client: int) -> None:
        if not self.running:
            return
        node = self._pick(self._rng)
        if node is None:
            self._next(client, THINK_TIME)
            return
        key = self._rng.randrange(self._keys)
        if self._rng.random() < 0.6:
            self._next_value += 1
            op = _Op(client, node.id, node.life, key, self._next_value, self._queue.now)
            data = encode_put(key, op.value)
            self._writes[data] = op
            self._call(node, op, lambda raw: raw.propose(data))
        else:
            op = _Op(client, node.id, node.life, key, 0, self._queue.now, required=self.acked.get(key, 0))
            ctx = f"c{client}v{self._next_value}t{self._queue.now}".encode()
            self._reads[(node.id, ctx)] = op
            if self._stale_reads:
                node.serve_stale_read(ctx)
            else:
                self._call(node, op, lambda raw: raw.read_index(ctx))
        if not op.done:
            self._queue.schedule(OP_TIMEOUT, f"client {client} timeout", lambda: self._timeout(op))

    def _call(self, node: SimNode, op: _Op, fn: Callable[..., None]) -> None:
        try:
            node.call(fn)
        except ProposalDropped:
            self._finish(op, "fail")

    def _timeout(self, op: _Op) -> None:
        if not op.done:
            self._finish(op, "info")

    def _finish(self, op: _Op, result: str) -> None:
        op.done = True
        if result == "fail":
            self.stats.failed += 1
        elif result == "info":
            self.stats.indeterminate += 1
        self._queue.note(f"client {op.client} {'put' if op.value else 'get'} k{op.key} on n{op.node}: {result}")
        self._next(op.client, self._rng.randint(1, THINK_TIME))

    def _next(self, client: int, delay: int) -> None:
        self._queue.schedule(delay, f"client {client} issue", lambda: self._issue(client))

    # -- results (called by the cluster's node hooks) -----------------------------------------------------

    def applied(self, node: SimNode, e: Entry) -> None:
        op = self._writes.get(e.data) if e.data else None
        if op is None or op.done or op.node != node.id or op.life != node.life:
            return
        del self._writes[e.data]
        self.stats.writes_ok += 1
        key, _ = decode_put(e.data)
        self.acked[key] = max(self.acked.get(key, 0), e.index)
        self._finish(op, f"ok@{e.index}")

    def read_served(self, node: SimNode, ctx: bytes) -> None:
        op = self._reads.pop((node.id, ctx), None)
        if op is None or op.done or op.life != node.life:
            return
        value, index = node.disk.sm.read(op.key)
        if index < op.required:
            raise InvariantViolation(
                f"stale read: client {op.client} read key {op.key} on n{node.id} (began at {op.start}) and got "
                f"the write at index {index}, but the write at index {op.required} was acknowledged before"
            )
        self.stats.reads_ok += 1
        self._finish(op, f"ok v{value}@{index}")

    def check_not_lost(self, nodes: list[SimNode]) -> None:
        """Every acknowledged write is reflected on every given (converged) node."""
        for n in nodes:
            for key, index in sorted(self.acked.items()):
                have = n.disk.sm.read(key)[1]
                if have < index:
                    raise InvariantViolation(
                        f"lost write: key {key} was acknowledged at index {index}; n{n.id} has index {have}"
                    )

    def probe(self) -> bytes:
        """A fresh command for the liveness check (a value id never used by the clients)."""
        self._next_value += 1
        return encode_put(self._keys, self._next_value)

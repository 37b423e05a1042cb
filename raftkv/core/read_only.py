"""ReadIndex bookkeeping on the leader (the "safe" read-only mode of Raft thesis §6.4).

A read request records the commit index at arrival and waits for a heartbeat round in which a quorum
acknowledges this leader; only then is the index safe to serve from. Requests are queued in arrival order
and each heartbeat carries the newest pending request's context, so a quorum of acks for a later request also
confirms every earlier one (leadership confirmed after they arrived).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftkv.core.types import Message


@dataclass
class ReadIndexStatus:
    request: Message  # the READ_INDEX message (sender NONE or self when local)
    index: int
    acks: dict[int, bool] = field(default_factory=dict)


class ReadOnly:
    def __init__(self) -> None:
        self._pending: dict[bytes, ReadIndexStatus] = {}
        self._queue: list[bytes] = []

    def add_request(self, index: int, request: Message) -> None:
        """Queue a read at ``index``; a duplicate context is ignored (its first instance will answer)."""
        ctx = request.context
        if ctx in self._pending:
            return
        self._pending[ctx] = ReadIndexStatus(request, index)
        self._queue.append(ctx)

    def recv_ack(self, node_id: int, ctx: bytes) -> dict[int, bool] | None:
        """Record that ``node_id`` acknowledged the heartbeat carrying ``ctx``; returns the acks so far."""
        status = self._pending.get(ctx)
        if status is None:
            return None
        status.acks[node_id] = True
        return status.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Dequeue and return every request up to and including the one with ``ctx``."""
        if ctx not in self._pending:
            return []
        position = self._queue.index(ctx)
        done = [self._pending.pop(c) for c in self._queue[: position + 1]]
        del self._queue[: position + 1]
        return done

    def last_pending_context(self) -> bytes:
        return self._queue[-1] if self._queue else b""

    def pending_count(self) -> int:
        return len(self._queue)

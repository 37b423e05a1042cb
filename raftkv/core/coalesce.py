"""Fold a Ready's messages to each peer into fewer, equivalent ones before they are sent.

Under load one turn of the leader produces several appends per follower: an empty one each time an append
response moves the commit index, then one carrying the turn's proposals. Each becomes a message to encode,
send, decode, step, persist-then-answer, and each answer comes back to be stepped in turn. Folding them
keeps the replication protocol exactly as it was while halving that traffic:

- Two appends to the same follower where the second starts right after the first ends (same term, and
  the second's ``index``/``log_term`` name the first's last entry) say the same as one append carrying
  both runs of entries with the later commit index. A follower handles the pair and the fold identically.
- A later successful append response to the same leader supersedes an earlier one: the leader's progress
  only moves forward (``match`` is a maximum and in-flight records are freed up to the acknowledged
  index), so dropping the earlier answer is the same as the network losing it — which Raft tolerates —
  and the later one leaves the leader in the state both would have.

Only messages with nothing else to the same peer queued between them, and from the same sender, are folded,
so each peer still sees its messages in the order the core produced them. Rejections are never folded: each
carries a hint.
"""

from __future__ import annotations

import dataclasses

from raftkv.core.types import Message, MessageType

MT = MessageType


def coalesce(messages: list[Message], max_entries: int, max_bytes: int) -> list[Message]:
    """``messages`` with foldable appends and append responses folded; never more entries or bytes per
    message than ``max_entries``/``max_bytes`` (the limits the core itself sends under)."""
    if len(messages) < 2:
        return messages
    out: list[Message] = []
    last_to: dict[int, int] = {}  # peer -> position in ``out`` of the last message queued for it
    for m in messages:
        at = last_to.get(m.to)
        if at is not None:
            folded = _fold(out[at], m, max_entries, max_bytes)
            if folded is not None:
                out[at] = folded
                continue
        last_to[m.to] = len(out)
        out.append(m)
    return out


def _fold(first: Message, second: Message, max_entries: int, max_bytes: int) -> Message | None:
    """One message saying what ``first`` then ``second`` say to the same peer, or None if there is none."""
    # Not every message of a Ready is the node's own: a follower passes a proposal or ReadIndex another node
    # sent it on to its leader as it came (``Raft._step_follower``). Only a node's own messages are folded.
    if first.sender != second.sender or first.type != second.type or first.term != second.term:
        return None
    if first.type == MT.APP:
        return _fold_appends(first, second, max_entries, max_bytes)
    if first.type == MT.APP_RESP and not first.reject and not second.reject and second.index >= first.index:
        return second
    return None


def _fold_appends(first: Message, second: Message, max_entries: int, max_bytes: int) -> Message | None:
    end_index = first.index + len(first.entries)
    end_term = first.entries[-1].term if first.entries else first.log_term
    if second.index != end_index or second.log_term != end_term:
        return None
    if first.entries and second.entries:
        if len(first.entries) + len(second.entries) > max_entries:
            return None
        if sum(e.size() for e in first.entries) + sum(e.size() for e in second.entries) > max_bytes:
            return None
    assert second.commit >= first.commit, f"commit went back between appends: {first.commit} > {second.commit}"
    return dataclasses.replace(first, entries=first.entries + second.entries, commit=second.commit)

"""Static configuration of one Raft node (re-exported by ``raftkv.core.rawnode``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Names accepted in ``Config.unsafe_bugs``. Each one deliberately breaks a rule (``gone_skips_pre_vote``: the
#: rule that a leader a quorum still hears keeps its office) so the simulator can prove its checkers catch it;
#: they must never be enabled outside the simulator.
KNOWN_BUGS = frozenset({"commit_prior_term", "double_vote", "gone_skips_pre_vote"})


@dataclass(frozen=True)
class Config:
    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    max_size_per_msg: int = 1 << 20
    max_entries_per_msg: int = 4096
    max_inflight_msgs: int = 256
    max_uncommitted_bytes: int = 64 << 20
    pre_vote: bool = True
    check_quorum: bool = True
    unsafe_bugs: frozenset[str] = frozenset()
    #: Refuse votes and pre-votes for an election timeout after boot, as if a leader had just been heard. A
    #: member that acknowledged a leader's heartbeat and then restarted would otherwise vote at once, and a
    #: leader holding a read lease (``raftkv/server/node/read_lease.py``) counts on it not to.
    refuse_votes_after_boot: bool = False
    #: When an acknowledgement advances the commit index, tell the followers with the next append or
    #: heartbeat rather than with an empty append of its own (``Leading.notify_commit``): under a steady
    #: stream of proposals the next append comes soon and carries it, and each empty append costs a message
    #: to and from every follower and a turn of its loop. The driver must then call
    #: ``RawNode.notify_commit`` a short time after ``RawNode.commit_notice_pending`` turns true, or
    #: followers learn the commit index only at the next heartbeat. False: etcd-io/raft's behaviour.
    defer_commit_notice: bool = False
    #: Bytes of APP payload in flight per follower before pausing (0: bounded by message count only).
    max_inflight_bytes: int = 0
    #: Bytes of committed entries handed out per Ready (at least one entry is always handed out).
    max_committed_size_per_ready: int = 16 << 20
    #: Receives one line per notable state transition ("became leader at term 3"); None discards them.
    logger: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        if self.id <= 0:
            raise ValueError("node id must be positive (0 means nobody)")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat_tick must be positive")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0 or self.max_entries_per_msg <= 0 or self.max_size_per_msg <= 0:
            raise ValueError("message and inflight bounds must be positive")
        if self.max_uncommitted_bytes <= 0:
            raise ValueError("max_uncommitted_bytes must be positive")
        unknown = self.unsafe_bugs - KNOWN_BUGS
        if unknown:
            raise ValueError(f"unknown planted bugs: {sorted(unknown)}")

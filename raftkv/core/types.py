"""Value types exchanged between the Raft core and the code that drives it.

These are the whole vocabulary of the sans-I/O core: the driver feeds it ``Message``s and ticks and gets
back ``Ready`` batches of entries to persist, messages to send and entries to apply. Keeping them as plain
immutable dataclasses (no protobuf, no I/O) lets the simulator, the golden tests, the LMDB storage and the
gRPC transport all share them; the transport alone translates them to and from the wire.

Persistence contract (what must be durable before what may happen) is documented in ``raftkv/core/README.md``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Protocol

#: The node id 0 means "nobody" (no leader, no vote). Real node ids are non-zero and never reused.
NONE = 0


class EntryType(enum.IntEnum):
    """What an entry's ``data`` holds: an opaque application command, or a membership change."""

    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One slot of the replicated log. An empty NORMAL entry is what a new leader appends to commit its term."""

    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Bytes this entry counts for when batching messages and bounding in-flight data."""
        return len(self.data) + 16


class ConfChangeType(enum.IntEnum):
    """One-at-a-time membership changes. ADD_VOTER on an existing learner promotes it."""

    ADD_VOTER = 0
    ADD_LEARNER = 1
    REMOVE_NODE = 2


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A single membership change, carried in a CONF_CHANGE entry.

    ``context`` is opaque to the core; the application stores member metadata there (name, peer URLs), so
    that every replica learns it from the log in the same order as the change itself.
    """

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    _HEADER = struct.Struct(">BQ")

    def encode(self) -> bytes:
        return self._HEADER.pack(int(self.type), self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        kind, node_id = cls._HEADER.unpack_from(data)
        return cls(ConfChangeType(kind), node_id, bytes(data[cls._HEADER.size :]))


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership in force: who votes and who only receives the log."""

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        assert not (self.voters & self.learners), f"a node cannot be voter and learner: {self}"

    def members(self) -> frozenset[int]:
        return self.voters | self.learners


@dataclass(frozen=True, slots=True)
class HardState:
    """The state Raft must find again after a crash: current term, vote in it, and the known commit index."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Describes a state-machine snapshot: the last log position it covers and the membership at that point.

    The core never holds snapshot bytes. A MsgSnap carries only this metadata; the driver streams the data
    beside the message (transport) and installs it when the core hands the metadata back in ``Ready.snapshot``.
    """

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


class MessageType(enum.IntEnum):
    """Every input to the core is a message; ticks and local requests included (as in etcd-io/raft).

    ``LOCAL`` types are produced by RawNode methods and are never sent over the network.
    """

    HUP = 0  # local: start an election (pre-vote first if enabled)
    BEAT = 1  # local: leader sends heartbeats
    PROPOSE = 2  # local, or forwarded from a follower to the leader
    APP = 3  # leader -> follower: append entries
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    PRE_VOTE = 7
    PRE_VOTE_RESP = 8
    SNAP = 9  # leader -> follower: install snapshot (metadata only, data travels beside it)
    HEARTBEAT = 10
    HEARTBEAT_RESP = 11
    TRANSFER_LEADER = 12  # local (or forwarded to the leader): hand leadership to `sender`, the transferee
    TIMEOUT_NOW = 13  # leader -> transferee: campaign now, skipping pre-vote
    READ_INDEX = 14  # local, or forwarded from a follower to the leader
    READ_INDEX_RESP = 15
    SNAP_STATUS = 16  # local: the driver reports whether a snapshot send finished
    UNREACHABLE = 17  # local: the driver reports a peer it could not reach
    CHECK_QUORUM = 18  # local: leader checks it heard from a quorum in the last election timeout
    PEER_GONE = 19  # local: the driver saw `sender`'s process end (a reconnect to its port was refused)
    NOTIFY_COMMIT = 20  # local: leader tells followers a commit index it has not sent them (defer_commit_notice)


LOCAL_MESSAGES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.SNAP_STATUS,
        MessageType.UNREACHABLE,
        MessageType.CHECK_QUORUM,
        MessageType.PEER_GONE,
        MessageType.NOTIFY_COMMIT,
    }
)


#: Requests a follower passes on to its leader as they came (``Raft._step_follower``), term 0 and ``sender``
#: kept: the member that asked (for a transfer, the transferee). A member that is no longer the leader a peer
#: took it for relays that peer's request the same way, so on the wire such a request's sender need not be
#: the member sending it. A leader that refuses one drops it.
FORWARDED_REQUESTS = frozenset({MessageType.PROPOSE, MessageType.READ_INDEX, MessageType.TRANSFER_LEADER})


@dataclass(frozen=True, slots=True)
class Message:
    """A Raft message. Fields not used by a type stay at their defaults.

    - APP: ``log_term``/``index`` locate the entry preceding ``entries``; ``commit`` is the leader's commit.
    - APP_RESP: ``index`` is the last index now matching (or the rejected index when ``reject``);
      ``reject_hint``/``log_term`` let the leader skip back a whole term at once.
    - VOTE/PRE_VOTE: ``log_term``/``index`` describe the candidate's last entry; ``context`` is
      ``b"transfer"`` when the election comes from a leader transfer (it may then disrupt a live leader).
    - HEARTBEAT/HEARTBEAT_RESP and READ_INDEX/READ_INDEX_RESP: ``context`` carries the read request id.
    - SNAP: ``snapshot`` holds the metadata of the snapshot to install.
    """

    type: MessageType
    to: int = NONE
    sender: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: SnapshotMeta | None = None
    context: bytes = b""


class Role(enum.IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the driver wants to observe (who leads, our role); never persisted."""

    leader: int = NONE
    role: Role = Role.FOLLOWER


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: once this node has applied ``index``, a read tagged ``request_ctx`` is linearizable."""

    index: int
    request_ctx: bytes


@dataclass(slots=True)
class Ready:
    """One batch of work for the driver, to be handled in this order:

    1. persist ``snapshot`` (if any), then ``entries`` (appending index i discards stored entries >= i),
       then ``hard_state`` — durably (fsync) when ``must_sync``;
    2. send ``messages`` (only after step 1 is durable: they may refer to those entries and that vote) —
       unless ``send_first``: then they may be sent before step 1, and its write run beside replication;
    3. apply ``committed_entries`` in order (calling ``RawNode.apply_conf_change`` for CONF_CHANGE ones)
       and serve ``read_states`` once their index is applied;
    4. call ``RawNode.advance(ready)``.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False
    #: A leader's Ready whose messages depend on nothing step 1 writes: no term or vote change, no snapshot.
    #: Its APPs may leave before its own entries are durable (Raft thesis §10.2.1): the leader counts itself
    #: towards commit only in ``advance``, once they are, and a follower still persists before it answers.
    send_first: bool = False


class RandomSource(Protocol):
    """Injected randomness (election-timeout jitter). ``random.Random`` satisfies it; the core never imports it."""

    def randrange(self, start: int, stop: int) -> int: ...


class DropReason(enum.Enum):
    """Why the core refused a proposal, read or conf change: what a driver decides on (retry, which error)."""

    NO_LEADER = "no leader"
    NOT_MEMBER = "not a member of the cluster"
    TRANSFERRING = "leadership transfer in progress"
    UNCOMMITTED_LIMIT = "too many uncommitted entries"
    CONF_CHANGE_REFUSED = "conf change refused"


class ProposalDropped(Exception):
    """A proposal (or read, or conf change) the core refused: ``reason`` for code, ``str(exc)`` for people."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(detail or reason.value)
        self.reason = reason


class StorageError(Exception):
    """Base for the errors a ``Storage`` raises when asked for entries it does not have."""


class CompactedError(StorageError):
    """The requested index is below the first index kept: it was compacted into a snapshot."""


class UnavailableError(StorageError):
    """The requested index is above the last index stored."""

"""Leadership audit: leaders that lost office while a quorum still heard them, and what failover cost.

Early failover (the transport's ``on_peer_gone``, the core's ``report_peer_gone``) trusts the transport's
word that the leader's process is gone. Raft's safety never depends on that word (the invariants check it
whatever the word), but availability does: a false word must not depose a leader that a quorum still
hears. So the audit follows every leader's *tenure* (one member, one term, one life) and, when a tenure ends
with the leader still running, asks whether it held a quorum all along: for the last ``window`` time units
nothing disturbed the network or the membership and nobody was asked to take over, and a majority of the
voters (the leader among them) ran that whole time, could reach the leader both ways and were not told
falsely that it is gone. Such an ending is an *extra* leader change. A schedule with ``stable_leader`` set
(a loss-free network) treats one as a violation; others only count them.

It also times each failover, from a leader's crash (announced to its peers or silent) or isolation: to the
election of the next leader, to that leader committing the first entry of its term (until then it can
serve neither a linearizable read nor a lease), and to the answers of the two questions the cluster asks
the new leader the moment it is elected (``on_elected``), as clients will: a linearizable read barrier
and a lease's time to live (which the leader answers only once caught up, after its own read barrier).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from raftkv.core.types import Role
from raftkv.sim.member import SimMember

#: What a failover is timed to (the fields of ``Failover``), in the order the soak prints them.
MILESTONES = ("elected", "committed", "read", "lease")


@dataclass(slots=True)
class Failover:
    """One leader fault and the times (in time units after it) at which service came back."""

    kind: str
    at: float
    term: int  # the struck leader's term; the next leader has a higher one
    leader: int = 0
    elected: float | None = None
    committed: float | None = None  # the new leader's first entry of its term
    read: float | None = None  # a read barrier asked of the new leader at its election returned
    lease: float | None = None  # then a lease's time to live, asked of it, was answered


@dataclass(slots=True)
class _Tenure:
    term: int
    life: object
    since: float
    committed: bool = False  # has it committed an entry of its own term yet


@dataclass(slots=True)
class AuditStats:
    extra: list[str] = field(default_factory=list)
    false_reports: int = 0  # false "leader gone" reports that reached a follower of a leader holding a quorum
    first_commits: list[float] = field(default_factory=list)  # units from election to first own-term commit
    failovers: list[Failover] = field(default_factory=list)


class LeadershipAudit:
    def __init__(
        self,
        window: float,
        violation: Callable[[str], None] | None,
        now: Callable[[], float],
        connected: Callable[[int, int], bool],
        on_elected: Callable[[SimMember, Failover], None],
    ) -> None:
        self._window = window
        self._violation = violation  # None: extra changes are only counted
        self._now = now
        self._connected = connected
        self._on_elected = on_elected
        self._quiet_since = 0.0
        self._started: dict[int, float] = {}  # member id -> start of its current life (absent while down)
        self._told: dict[int, float] = {}  # member id -> when it was last told falsely that its leader is gone
        self._tenure: dict[int, _Tenure] = {}  # leader id -> its current tenure
        self._pending: Failover | None = None
        self.stats = AuditStats()

    # -- what the cluster reports -----------------------------------------------------------------------
    def disturbed(self) -> None:
        """The network, the membership or a transfer may legitimately move leadership from now on."""
        self._quiet_since = self._now()

    def started(self, member: SimMember) -> None:
        self._started[member.id] = self._now()

    def crashed(self, member: SimMember) -> None:
        self._started.pop(member.id, None)
        self._tenure.pop(member.id, None)  # a crash ends a tenure, rightly

    def leader_struck(self, kind: str, leader: SimMember) -> None:
        """A fault hit the current leader: ``crash announced``, ``crash silent`` or ``isolated``."""
        assert leader.node is not None
        term = leader.node.loop.raw.raft.term
        self._pending = Failover(kind, self._now(), term)
        self.stats.failovers.append(self._pending)

    def false_report(self, observer: SimMember, leader: SimMember) -> None:
        """``observer`` is about to hear that ``leader`` is gone although it runs."""
        if leader.id in self._tenure and observer.id != leader.id and self._holds_quorum(leader):
            self.stats.false_reports += 1
        self._told[observer.id] = self._now()

    def reached(self, failover: Failover, milestone: str) -> None:
        """The new leader answered the question ``milestone`` ("read", "lease") of ``on_elected``."""
        if getattr(failover, milestone) is None:
            setattr(failover, milestone, self._now() - failover.at)

    def observe(self, member: SimMember) -> None:
        node = member.node
        if node is None:
            return
        raft = node.loop.raw.raft
        leading = raft.role == Role.LEADER
        held = self._tenure.get(member.id)
        if held is not None and (not leading or held.term != raft.term or held.life is not member.life):
            del self._tenure[member.id]
            self._ended(member, held.term)
            held = None
        if not leading:
            return
        if held is None:
            held = self._tenure[member.id] = _Tenure(raft.term, member.life, self._now())
            self._elected(member, raft.term)
        if not held.committed and raft.log.term_or_zero(raft.log.committed) == raft.term:
            held.committed = True
            self.stats.first_commits.append(self._now() - held.since)
            f = self._pending
            if f is not None and f.leader == member.id and f.committed is None:
                f.committed = self._now() - f.at

    # -- verdicts -------------------------------------------------------------------------------------------
    def _elected(self, member: SimMember, term: int) -> None:
        f = self._pending
        if f is not None and f.elected is None and term > f.term:
            f.elected = self._now() - f.at
            f.leader = member.id
            self._on_elected(member, f)

    def _ended(self, leader: SimMember, term: int) -> None:
        if not self._holds_quorum(leader):
            return
        what = f"{leader.name} lost office (term {term}) at t={self._now():.0f} while a quorum heard it"
        self.stats.extra.append(what)
        if self._violation is not None:
            self._violation(f"extra leader change: {what}")

    def _holds_quorum(self, leader: SimMember) -> bool:
        now = self._now()
        if now - self._quiet_since < self._window or leader.node is None:
            return False
        voters = leader.node.loop.raw.raft.conf.voters
        steady = [
            v
            for v in voters
            if now - self._started.get(v, now) >= self._window
            and (
                v == leader.id
                or (
                    self._connected(leader.id, v)
                    and self._connected(v, leader.id)
                    and now - self._told.get(v, -self._window) >= self._window
                )
            )
        ]
        return leader.id in steady and 2 * len(steady) > len(voters)

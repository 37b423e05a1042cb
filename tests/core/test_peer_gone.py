"""Properties of ``report_peer_gone`` (the golden scripts ``leader_gone*.txt`` show single interactions).

- A true report (the leader is dead) to enough followers elects a new leader within a few ticks, in any
  order of reports and deliveries — never an election timeout.
- A false report (the leader lives) changes nothing while the leader and the followers not told form a
  quorum: same leader, same term, however the reports and deliveries interleave.
- Whatever is reported to whom, with messages dropped and nodes cut off: at most one leader per term, and
  committed entries agree.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.core import failover
from raftkv.core.types import Role
from tests.core.interaction import Env

ELECTION_TICK = 10


def _cluster(n: int, leader: int) -> Env:
    env = Env()
    env.run("log-level none")
    env.run(f"add-nodes {n} voters=({','.join(str(i) for i in range(1, n + 1))}) election={ELECTION_TICK}")
    env.run(f"campaign {leader}")
    env.run("stabilize")
    assert env.nodes[leader].raw.raft.role == Role.LEADER
    return env


def _leaders(env: Env, among: list[int]) -> list[int]:
    return [i for i in among if env.nodes[i].raw.raft.role == Role.LEADER]


def _tick_all(env: Env, ids: list[int]) -> None:
    for i in ids:
        env.run(f"tick-heartbeat {i}")
    env.run("stabilize " + " ".join(map(str, ids)))


@st.composite
def _report_orders(draw: st.DrawFn) -> tuple[int, int, list[int], list[int]]:
    """(cluster size, leader, followers in the order they are told, node to deliver to after each report)."""
    n = draw(st.sampled_from([3, 5]))
    leader = draw(st.integers(1, n))
    followers = draw(st.permutations([i for i in range(1, n + 1) if i != leader]))
    deliveries = draw(st.lists(st.integers(1, n), min_size=len(followers), max_size=len(followers)))
    return n, leader, followers, deliveries


@settings(max_examples=150, deadline=None)
@given(_report_orders())
def test_a_dead_leader_is_replaced_within_a_few_ticks(case: tuple[int, int, list[int], list[int]]) -> None:
    n, leader, told, deliveries = case
    env = _cluster(n, leader)
    term = env.nodes[leader].raw.raft.term
    env.run(f"isolate {leader}")
    alive = [i for i in range(1, n + 1) if i != leader]
    for follower, deliver_to in zip(told, deliveries):
        env.run(f"report-peer-gone {follower} {leader}")
        # Interleave: some node's Ready and inbox are handled before the next follower hears.
        env.run(f"process-ready {follower}")
        if deliver_to in alive:
            env.run(f"deliver-msgs {deliver_to}")
    env.run("stabilize " + " ".join(map(str, alive)))
    # The latest a turn can come is the last rank's; one more tick covers a lost first pre-vote.
    bound = failover.STAGGER_TICKS * (len(alive) - 1) + 1
    assert bound < ELECTION_TICK
    for _ in range(bound):
        if _leaders(env, alive):
            break
        _tick_all(env, alive)
    (new_leader,) = _leaders(env, alive)
    assert env.nodes[new_leader].raw.raft.term == term + 1, "one election, no split vote"
    assert all(env.nodes[i].raw.raft.lead == new_leader for i in alive)


@st.composite
def _false_reports(draw: st.DrawFn) -> tuple[int, int, list[int], list[int]]:
    n = draw(st.sampled_from([3, 5]))
    leader = draw(st.integers(1, n))
    followers = [i for i in range(1, n + 1) if i != leader]
    quorum = n // 2 + 1
    # At most n - quorum followers are told: the leader and the others still form a quorum.
    told = draw(st.lists(st.sampled_from(followers), unique=True, min_size=1, max_size=n - quorum))
    order = draw(st.lists(st.integers(1, n), max_size=12))
    return n, leader, told, order


@settings(max_examples=150, deadline=None)
@given(_false_reports())
def test_a_false_report_changes_nothing_while_a_quorum_hears_the_leader(
    case: tuple[int, int, list[int], list[int]],
) -> None:
    n, leader, told, order = case
    env = _cluster(n, leader)
    term = env.nodes[leader].raw.raft.term
    everyone = list(range(1, n + 1))
    for follower in told:
        env.run(f"report-peer-gone {follower} {leader}")
    for node in order:  # arbitrary partial progress and ticks before things settle
        env.run(f"process-ready {node}")
        env.run(f"deliver-msgs {node}")
        env.run(f"tick-heartbeat {node}")
    for _ in range(3 * ELECTION_TICK):
        _tick_all(env, everyone)
        assert _leaders(env, everyone) == [leader]
        assert {env.nodes[i].raw.raft.term for i in everyone} == {term}
    assert all(env.nodes[i].raw.raft.lead == leader for i in everyone)


_STEP = st.one_of(
    st.tuples(st.just("tick"), st.integers(1, 3)),
    st.tuples(st.just("gone"), st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.just("ready"), st.integers(1, 3)),
    st.tuples(st.just("deliver"), st.integers(1, 3)),
    st.tuples(st.just("drop"), st.integers(1, 3)),
    st.tuples(st.just("isolate"), st.integers(1, 3)),
    st.tuples(st.just("heal")),
    st.tuples(st.just("propose"), st.integers(1, 3)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_STEP, max_size=120))
def test_reports_in_any_schedule_keep_elections_and_commits_safe(steps: list[tuple[object, ...]]) -> None:
    env = _cluster(3, 1)
    leaders_by_term: dict[int, int] = {1: 0}
    for n, step in enumerate(steps):
        kind, *args = step
        if kind == "tick":
            env.run(f"tick-heartbeat {args[0]}")
        elif kind == "gone" and args[0] != args[1]:
            env.run(f"report-peer-gone {args[0]} {args[1]}")
        elif kind == "ready":
            env.run(f"process-ready {args[0]}")
        elif kind == "deliver":
            env.run(f"deliver-msgs {args[0]}")
        elif kind == "drop":
            env.run(f"deliver-msgs drop=({args[0]})")
        elif kind == "isolate":
            env.run(f"isolate {args[0]}")
        elif kind == "heal":
            env.run("heal")
        elif kind == "propose":
            env.run(f"propose {args[0]} v{n}")
        for i, node in env.nodes.items():
            r = node.raw.raft
            if r.role == Role.LEADER:
                assert leaders_by_term.setdefault(r.term, i) == i, f"two leaders in term {r.term}"
    env.run("heal")
    env.run("stabilize")
    committed = [node.storage.entries(1, node.raw.raft.log.committed + 1) for node in env.nodes.values()]
    shortest = min(len(c) for c in committed)
    assert all(c[:shortest] == committed[0][:shortest] for c in committed), "committed logs diverge"

"""Cost of the Raft core alone: committed entries per second through a three-node cluster.

The network is "free": messages are handed to their destination immediately, disks sync instantly, and
the driver loop runs each node's Ready until nothing is left. What remains is the CPU time of the core
(and of ``MemoryStorage``). This is a benchmark, not a test: it uses the wall clock.
"""

from __future__ import annotations

import random
import time
from collections import deque

from raftkv.core.rawnode import Config, RawNode, bootstrap_entries
from raftkv.core.storage import MemoryStorage
from raftkv.core.types import ConfState, HardState, Message, Role


def _cluster(n: int) -> dict[int, tuple[RawNode, MemoryStorage]]:
    boot = bootstrap_entries([(i, b"") for i in range(1, n + 1)])
    out = {}
    for i in range(1, n + 1):
        st = MemoryStorage()
        st.append(boot)
        st.set_hard_state(HardState(term=1, commit=n))
        st.set_conf_state(ConfState(voters=frozenset(range(1, n + 1))))
        out[i] = (RawNode(Config(id=i, applied=n), st, random.Random(i)), st)
    return out


def _drain(nodes: dict[int, tuple[RawNode, MemoryStorage]], mailbox: deque[Message]) -> tuple[int, int]:
    """Process Readies and deliver messages until quiet; returns (readies handled, entries applied)."""
    readies = applied = 0
    while True:
        progressed = False
        for i in sorted(nodes):
            raw, st = nodes[i]
            while raw.has_ready():
                rd = raw.ready()
                st.append(rd.entries)
                if rd.hard_state is not None:
                    st.set_hard_state(rd.hard_state)
                mailbox.extend(rd.messages)
                applied += len(rd.committed_entries)
                raw.advance(rd)
                readies += 1
                progressed = True
        while mailbox:
            m = mailbox.popleft()
            nodes[m.to][0].step(m)
            progressed = True
        if not progressed:
            return readies, applied


def bench(entries: int = 20000, batch: int = 64, size: int = 100) -> dict[str, float]:
    nodes = _cluster(3)
    mailbox: deque[Message] = deque()
    nodes[1][0].campaign()
    _drain(nodes, mailbox)
    leader = nodes[1][0]
    assert leader.status().soft_state.role == Role.LEADER
    payload = b"x" * size
    readies = applied = 0
    start = time.perf_counter()
    for _ in range(entries // batch):
        leader.propose_batch([payload] * batch)
        r, a = _drain(nodes, mailbox)
        readies += r
        applied += a
    elapsed = time.perf_counter() - start
    return {
        "entries": entries,
        "seconds": elapsed,
        "entries_per_s": entries / elapsed,
        "readies_per_s": readies / elapsed,
        "applied_all_nodes": applied,
    }

"""A scripted environment for golden interaction tests of the Raft core (after etcd-io/raft's testdata).

A script is a sequence of blocks::

    # optional comment lines
    command arg key=value key=(1,2)
    ----
    expected output (never blank lines; "ok" when a command prints nothing)

``run_script`` executes the commands against in-memory nodes and returns the script with the actual outputs,
so the test compares texts and ``REWRITE=1`` rewrites the files. Nodes persist into ``MemoryStorage`` exactly as
the driver contract says (snapshot, entries, hard state, then send, apply, advance), so the outputs show the
real Ready sequence a driver would see. Randomness is a per-node seeded ``random.Random``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from raftkv.core.rawnode import Config, RawNode, bootstrap_entries
from raftkv.core.storage import MemoryStorage
from raftkv.core.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProposalDropped,
    Ready,
    Role,
    SnapshotMeta,
)

MT = MessageType


def fmt_ids(ids: frozenset[int] | set[int]) -> str:
    return "(" + ",".join(str(i) for i in sorted(ids)) + ")"


def fmt_data(data: bytes) -> str:
    return '"' + data.decode("utf-8", errors="backslashreplace") + '"'


def fmt_entry(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE:
        cc = ConfChange.decode(e.data)
        return f"{e.term}/{e.index} EntryConfChange {cc.type.name} {cc.node_id}"
    return f"{e.term}/{e.index} EntryNormal {fmt_data(e.data)}"


def fmt_snapshot(s: SnapshotMeta) -> str:
    cs = s.conf_state
    return f"{s.term}/{s.index} voters={fmt_ids(cs.voters)} learners={fmt_ids(cs.learners)}"


def fmt_msg(m: Message, origin: int) -> str:
    """One line per message, e.g. ``1->2 APP term=1 log=1/11 commit=11 entries=[1/12 EntryNormal "x"]``.

    ``origin`` is the node whose Ready carried the message; it differs from ``sender`` only for a forwarded
    TRANSFER_LEADER, whose ``sender`` names the transferee.
    """
    parts = [f"{origin}->{m.to} {m.type.name} term={m.term}"]
    if m.sender != origin:
        parts.append(f"transferee={m.sender}" if m.type == MT.TRANSFER_LEADER else f"sender={m.sender}")
    if m.type in (MT.APP, MT.VOTE, MT.PRE_VOTE):
        parts.append(f"log={m.log_term}/{m.index}")
    elif m.index or m.type in (MT.APP_RESP, MT.READ_INDEX_RESP):
        parts.append(f"index={m.index}")
    if m.type in (MT.APP, MT.HEARTBEAT):
        parts.append(f"commit={m.commit}")
    if m.reject:
        parts.append("rejected")
        if m.type == MT.APP_RESP:
            parts.append(f"hint={m.log_term}/{m.reject_hint}")
    if m.entries:
        parts.append("entries=[" + ", ".join(fmt_entry(e) for e in m.entries) + "]")
    if m.snapshot is not None:
        parts.append("snapshot=" + fmt_snapshot(m.snapshot))
    if m.context:
        parts.append("ctx=" + fmt_data(m.context))
    return " ".join(parts)


@dataclass
class Node:
    raw: RawNode
    storage: MemoryStorage
    applied_data: list[bytes] = field(default_factory=list)


_TOKEN = re.compile(r"(\S+?)=\(([^)]*)\)|(\S+?)=(\S+)|(\S+)")


def parse_args(text: str) -> tuple[list[str], dict[str, str]]:
    """Split ``campaign 1 voters=(1,2) prevote=true`` into positional and keyword arguments."""
    positional: list[str] = []
    keywords: dict[str, str] = {}
    for m in _TOKEN.finditer(text):
        if m.group(1):
            keywords[m.group(1)] = m.group(2)
        elif m.group(3):
            keywords[m.group(3)] = m.group(4)
        else:
            positional.append(m.group(5))
    return positional, keywords


def id_list(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


class Env:
    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}
        self.in_flight: list[tuple[int, Message]] = []  # (origin, message)
        self.isolated: set[int] = set()
        self.out: list[str] = []
        self._indent = ""
        self._quiet = False

    # -- output -----------------------------------------------------------------------------------------

    def emit(self, line: str) -> None:
        if not self._quiet:
            self.out.append(self._indent + line)

    def _logger(self, line: str) -> None:
        self.emit("INFO " + line)

    # -- commands ---------------------------------------------------------------------------------------

    def run(self, command: str) -> str:
        self.out = []
        name, _, rest = command.partition(" ")
        pos, kw = parse_args(rest)
        handler: Callable[[list[str], dict[str, str]], None] | None = getattr(
            self, "cmd_" + name.replace("-", "_"), None
        )
        if handler is None:
            raise ValueError(f"unknown command {name!r}")
        handler(pos, kw)
        return "\n".join(self.out) if self.out else "ok"

    def cmd_add_nodes(self, pos: list[str], kw: dict[str, str]) -> None:
        """add-nodes N [voters=(..)] [learners=(..)] [index=K] [prevote=bool] [checkquorum=bool] [max-inflight=N]
        [max-entries=N] [max-size=N] [max-uncommitted=N] [election=N] [heartbeat=N] [defer-commit-notice=bool]"""
        count = int(pos[0])
        voters = frozenset(id_list(kw.get("voters", "")))
        learners = frozenset(id_list(kw.get("learners", "")))
        first = max(self.nodes, default=0) + 1
        for node_id in range(first, first + count):
            storage = MemoryStorage()
            applied = 0
            if voters:
                cs = ConfState(voters, learners)
                if "index" in kw:
                    storage.apply_snapshot(SnapshotMeta(index=int(kw["index"]), term=1, conf_state=cs))
                    storage.set_hard_state(HardState(term=1, commit=int(kw["index"])))
                else:
                    assert not learners, "bootstrap entries add voters only; use index=K for learners"
                    entries = bootstrap_entries([(v, b"") for v in sorted(voters)])
                    storage.append(entries)
                    storage.set_hard_state(HardState(term=1, commit=len(entries)))
                    storage.set_conf_state(cs)
                applied = storage.hard_state.commit
            config = Config(
                id=node_id,
                applied=applied,
                pre_vote=kw.get("prevote", "true") == "true",
                check_quorum=kw.get("checkquorum", "true") == "true",
                election_tick=int(kw.get("election", 10)),
                heartbeat_tick=int(kw.get("heartbeat", 1)),
                max_inflight_msgs=int(kw.get("max-inflight", 256)),
                max_entries_per_msg=int(kw.get("max-entries", 4096)),
                max_size_per_msg=int(kw.get("max-size", 1 << 20)),
                max_uncommitted_bytes=int(kw.get("max-uncommitted", 64 << 20)),
                defer_commit_notice=kw.get("defer-commit-notice", "false") == "true",
                logger=self._logger,
            )
            self.nodes[node_id] = Node(RawNode(config, storage, random.Random(node_id)), storage)

    def cmd_log_level(self, pos: list[str], kw: dict[str, str]) -> None:
        """log-level none|info: ``none`` hides everything the following commands print (set-up steps)."""
        assert pos[0] in ("none", "info"), f"unknown log level {pos[0]!r}"
        self._quiet = pos[0] == "none"

    def cmd_campaign(self, pos: list[str], kw: dict[str, str]) -> None:
        self.nodes[int(pos[0])].raw.campaign()

    def _guard(self, action: Callable[[], None]) -> None:
        try:
            action()
        except ProposalDropped as exc:
            self.emit(f"dropped: {exc}")

    def cmd_propose(self, pos: list[str], kw: dict[str, str]) -> None:
        raw = self.nodes[int(pos[0])].raw
        self._guard(lambda: raw.propose(pos[1].encode()))

    def cmd_propose_conf_change(self, pos: list[str], kw: dict[str, str]) -> None:
        """propose-conf-change <node> add-voter|add-learner|remove <id>"""
        kinds = {"add-voter": ConfChangeType.ADD_VOTER, "add-learner": ConfChangeType.ADD_LEARNER,
                 "remove": ConfChangeType.REMOVE_NODE}
        raw = self.nodes[int(pos[0])].raw
        cc = ConfChange(kinds[pos[1]], int(pos[2]))
        self._guard(lambda: raw.propose_conf_change(cc))

    def cmd_read_index(self, pos: list[str], kw: dict[str, str]) -> None:
        raw = self.nodes[int(pos[0])].raw
        self._guard(lambda: raw.read_index(pos[1].encode()))

    def cmd_transfer_leader(self, pos: list[str], kw: dict[str, str]) -> None:
        """transfer-leader <node receiving the request> <transferee>"""
        self.nodes[int(pos[0])].raw.transfer_leader(int(pos[1]))

    def cmd_tick_election(self, pos: list[str], kw: dict[str, str]) -> None:
        """Tick until the node's election timer fires (leaders: one election timeout, i.e. a quorum check)."""
        raw = self.nodes[int(pos[0])].raw
        r = raw.raft
        ticks = r.cfg.election_tick if r.role == Role.LEADER else r.randomized_election_timeout - r.election_elapsed
        for _ in range(max(ticks, 1)):
            raw.tick()

    def cmd_tick_heartbeat(self, pos: list[str], kw: dict[str, str]) -> None:
        raw = self.nodes[int(pos[0])].raw
        for _ in range(raw.raft.cfg.heartbeat_tick):
            raw.tick()

    def cmd_isolate(self, pos: list[str], kw: dict[str, str]) -> None:
        """Cut a node off: messages from or to it are dropped when sent (and those in flight now)."""
        node_id = int(pos[0])
        self.isolated.add(node_id)
        self.in_flight = [(o, m) for o, m in self.in_flight if m.to != node_id and o != node_id]

    def cmd_heal(self, pos: list[str], kw: dict[str, str]) -> None:
        self.isolated.clear()

    def cmd_compact(self, pos: list[str], kw: dict[str, str]) -> None:
        node = self.nodes[int(pos[0])]
        node.storage.compact(int(pos[1]), node.raw.raft.conf)
        self._print_log(int(pos[0]))

    def cmd_report_snapshot(self, pos: list[str], kw: dict[str, str]) -> None:
        """report-snapshot <leader> <peer> ok|fail"""
        self.nodes[int(pos[0])].raw.report_snapshot(int(pos[1]), pos[2] == "ok")

    def cmd_report_unreachable(self, pos: list[str], kw: dict[str, str]) -> None:
        self.nodes[int(pos[0])].raw.report_unreachable(int(pos[1]))

    def cmd_report_peer_gone(self, pos: list[str], kw: dict[str, str]) -> None:
        """report-peer-gone <node> <peer>: the node's driver saw the peer's process end."""
        self.nodes[int(pos[0])].raw.report_peer_gone(int(pos[1]))

    def cmd_commit_notice_pending(self, pos: list[str], kw: dict[str, str]) -> None:
        """commit-notice-pending <node>: whether the leader owes a follower the commit index."""
        self.emit(str(self.nodes[int(pos[0])].raw.commit_notice_pending()).lower())

    def cmd_notify_commit(self, pos: list[str], kw: dict[str, str]) -> None:
        """notify-commit <node>: the driver's commit-notice timer fired."""
        self.nodes[int(pos[0])].raw.notify_commit()

    def cmd_raft_log(self, pos: list[str], kw: dict[str, str]) -> None:
        self._print_log(int(pos[0]))

    def _print_log(self, node_id: int) -> None:
        s = self.nodes[node_id].storage
        entries = s.entries(s.first_index(), s.last_index() + 1)
        if s.snapshot_meta().index:
            self.emit("snapshot " + fmt_snapshot(s.snapshot_meta()))
        if not entries and not s.snapshot_meta().index:
            self.emit("log is empty")
        for e in entries:
            self.emit(fmt_entry(e))

    def cmd_raft_state(self, pos: list[str], kw: dict[str, str]) -> None:
        for node_id, node in sorted(self.nodes.items()):
            st = node.raw.status()
            cs = st.conf_state
            kind = "voter" if node_id in cs.voters else "learner" if node_id in cs.learners else "non-member"
            iso = " (isolated)" if node_id in self.isolated else ""
            self.emit(
                f"{node_id}: {st.soft_state.role.name} ({kind}) term={st.hard_state.term} lead={st.soft_state.leader}"
                f" commit={st.hard_state.commit} applied={st.applied}{iso}"
            )

    def cmd_status(self, pos: list[str], kw: dict[str, str]) -> None:
        st = self.nodes[int(pos[0])].raw.status()
        for peer, pr in st.progress.items():
            extra = f" pending_snap={pr.pending_snapshot}" if pr.pending_snapshot else ""
            paused = " paused" if pr.paused else ""
            learner = " learner" if pr.is_learner else ""
            self.emit(
                f"{peer}: {pr.state.name} match={pr.match} next={pr.next} inflight={pr.inflight}{paused}{learner}{extra}"
            )
        if st.lead_transferee:
            self.emit(f"transferring to {st.lead_transferee}")

    def cmd_process_ready(self, pos: list[str], kw: dict[str, str]) -> None:
        for node_id in id_list(" ".join(pos)):
            self._process_ready(node_id)

    def cmd_deliver_msgs(self, pos: list[str], kw: dict[str, str]) -> None:
        """deliver-msgs <ids> delivers everything in flight to them; deliver-msgs drop=(<ids>) discards it."""
        for node_id in id_list(kw.get("drop", "")):
            for origin, m in self._take_for(node_id):
                self.emit("dropped: " + fmt_msg(m, origin))
        for node_id in id_list(" ".join(pos)):
            self._deliver(node_id)

    def cmd_stabilize(self, pos: list[str], kw: dict[str, str]) -> None:
        """Process Readies and deliver messages among ``ids`` (default: all) until nothing is left."""
        ids = id_list(" ".join(pos)) or sorted(self.nodes)
        while True:
            progressed = False
            for node_id in ids:
                if self.nodes[node_id].raw.has_ready():
                    self._process_ready(node_id)
                    progressed = True
            for node_id in ids:
                if any(m.to == node_id for _, m in self.in_flight):
                    self._deliver(node_id)
                    progressed = True
            if not progressed:
                return

    # -- mechanics --------------------------------------------------------------------------------------

    def _take_for(self, node_id: int) -> list[tuple[int, Message]]:
        mine = [(o, m) for o, m in self.in_flight if m.to == node_id]
        self.in_flight = [(o, m) for o, m in self.in_flight if m.to != node_id]
        return mine

    def _deliver(self, node_id: int) -> None:
        msgs = self._take_for(node_id)
        if not msgs:
            return
        self.emit(f"> {node_id} receiving messages")
        self._indent = "  "
        for origin, m in msgs:
            self.emit(fmt_msg(m, origin))
            self.nodes[node_id].raw.step(m)
        self._indent = ""

    def _process_ready(self, node_id: int) -> None:
        node = self.nodes[node_id]
        raw = node.raw
        if not raw.has_ready():
            return
        rd = raw.ready()
        self.emit(f"> {node_id} handling Ready")
        self._indent = "  "
        self._print_ready(node_id, rd)
        # The driver contract: persist snapshot, entries, hard state; then send; then apply; then advance.
        if rd.snapshot is not None:
            node.storage.apply_snapshot(rd.snapshot)
        node.storage.append(rd.entries)
        if rd.hard_state is not None:
            node.storage.set_hard_state(rd.hard_state)
        for m in rd.messages:
            if m.to not in self.isolated and node_id not in self.isolated:
                self.in_flight.append((node_id, m))
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                node.storage.set_conf_state(raw.apply_conf_change(ConfChange.decode(e.data)))
            elif e.data:
                node.applied_data.append(e.data)
        raw.advance(rd)
        self._indent = ""

    def _print_ready(self, node_id: int, rd: Ready) -> None:
        if rd.soft_state is not None:
            self.emit(f"soft_state lead={rd.soft_state.leader} role={rd.soft_state.role.name}")
        if rd.hard_state is not None:
            hs = rd.hard_state
            sync = " (must sync)" if rd.must_sync else ""
            self.emit(f"hard_state term={hs.term} vote={hs.vote} commit={hs.commit}{sync}")
        if rd.snapshot is not None:
            self.emit("snapshot " + fmt_snapshot(rd.snapshot))
        for e in rd.entries:
            self.emit("persist " + fmt_entry(e))
        for e in rd.committed_entries:
            self.emit("apply " + fmt_entry(e))
        for m in rd.messages:
            self.emit("send " + fmt_msg(m, node_id))
        for rs in rd.read_states:
            self.emit(f"read_state index={rs.index} ctx={fmt_data(rs.request_ctx)}")


def parse_script(text: str) -> list[tuple[list[str], str, str]]:
    """Blocks of (leading comment lines, command, expected output)."""
    blocks: list[tuple[list[str], str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        comments: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("#")):
            if lines[i].startswith("#"):
                comments.append(lines[i])
            i += 1
        if i >= len(lines):
            if comments:
                blocks.append((comments, "", ""))
            break
        command = lines[i]
        i += 1
        assert i < len(lines) and lines[i] == "----", f"expected ---- after {command!r}"
        i += 1
        output: list[str] = []
        while i < len(lines) and lines[i].strip():
            output.append(lines[i])
            i += 1
        blocks.append((comments, command, "\n".join(output)))
    return blocks


def run_script(text: str) -> str:
    """Run every command of ``text`` and return the script rewritten with the actual outputs."""
    env = Env()
    chunks: list[str] = []
    for comments, command, _ in parse_script(text):
        lines = list(comments)
        if command:
            lines += [command, "----", env.run(command)]
        chunks.append("\n".join(lines))
    return "\n\n".join(chunks) + "\n"

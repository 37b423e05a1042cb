"""Membership on a member: the member list, changes to it, and who the transport dials.

A change (add, remove, promote) is a Raft conf change: proposed through the loop, effective once applied
(the applier records the member, the core updates its configuration), and answered to the caller then. The
member records themselves (names, URLs) are replicated state; ``member update`` and a member announcing its
own name and client URLs (``publish_self``) are ordinary proposals.

A removed member is refused for good (``is_removed``, which the transport asks before it learns a sender
it does not know): the applier records its id in the same transaction as the configuration without it, so
the refusal outlives a restart of every other member, and a snapshot carries it to members that never
applied the removal. A removed member that comes back on its old data (it missed its removal) is told so by
every member it dials, and is never heard: as etcd refuses a member in its ``members_removed`` bucket.

A member that learns it was removed (it applied its removal, or a snapshot that holds it) says so and, as
etcd does (``stopWithDelay``), stops ``REMOVED_STOP_DELAY`` later through ``on_removed``: left running, it
would serve serializable reads of a state nobody updates any more. Its data dir is then refused at the next
start (``raftkv.server.data_dir``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from raftkv import errors
from raftkv.core.types import ConfChange, ConfChangeType
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.server.backend import ClientSession
from raftkv.server.config import ServerConfig, host_port, member_id_for
from raftkv.server.node.raft_loop import RaftLoop
from raftkv.server.node.world import Clock, Store
from raftkv.statemachine.applier import AppliedEntry

log = logging.getLogger("raftkv.node")
#: etcd's delay between applying its own removal and stopping: time for the answer to ``member remove``
#: and the commit to reach the others before this member goes quiet.
REMOVED_STOP_DELAY = 1.0


class Membership:
    def __init__(
        self,
        cfg: ServerConfig,
        store: Store[Any],
        member_id: int,
        loop: RaftLoop,
        clock: Clock,
        on_removed: Callable[[], None] | None = None,
    ) -> None:
        """``on_removed`` is called once, ``REMOVED_STOP_DELAY`` after this member learned it was removed
        (production stops the process; None keeps it running, as the simulator does)."""
        self._cfg = cfg
        self._store = store
        self._member_id = member_id
        self._loop = loop
        self._clock = clock
        self._peer_ids: set[int] = set()
        self._conf_waiters: dict[tuple[int, int], asyncio.Future[None]] = {}
        self._is_learner = False
        self._removed: frozenset[int] = frozenset()
        self._on_removed = on_removed
        self._told_removed = False
        self._refresh_conf()

    def is_learner(self) -> bool:
        return self._is_learner

    def is_removed(self, member_id: int) -> bool:
        """Whether ``member_id`` was removed from the cluster (and not added back): its peer traffic is refused."""
        return member_id in self._removed

    def members(self) -> list[rpc_pb2.Member]:
        learners = self._loop.raw.status().conf_state.learners
        out = []
        for member in self._store.members():
            m = rpc_pb2.Member()
            m.CopyFrom(member)
            m.isLearner = member.ID in learners
            out.append(m)
        return out

    # ------------------------------------------------------------------ changes (Backend)
    async def add(self, peer_urls: list[str], is_learner: bool, timeout: float) -> rpc_pb2.Member:
        existing = self._store.members()
        for member in existing:
            if set(member.peerURLs) & set(peer_urls):
                raise errors.PEER_URL_EXISTS.exception()
        member_id = member_id_for(self._cfg.cluster_token, peer_urls[0])
        if any(m.ID == member_id for m in existing):
            raise errors.MEMBER_EXISTS.exception()
        member = rpc_pb2.Member(ID=member_id, peerURLs=peer_urls, isLearner=is_learner)
        context = internal_pb2.MemberContext(member=member).SerializeToString()
        kind = ConfChangeType.ADD_LEARNER if is_learner else ConfChangeType.ADD_VOTER
        await self._change(ConfChange(kind, member_id, context), timeout)
        return member

    async def remove(self, member_id: int, timeout: float) -> None:
        if not any(m.ID == member_id for m in self._store.members()):
            raise errors.MEMBER_NOT_FOUND.exception()
        await self._change(ConfChange(ConfChangeType.REMOVE_NODE, member_id), timeout)

    async def update(self, member_id: int, peer_urls: list[str], timeout: float) -> None:
        """New peer URLs for a member. The applier makes etcd's checks again (the members may change
        meanwhile); checking here first answers the common mistakes without a trip through the log."""
        current = self._store.members()
        if not any(m.ID == member_id for m in current):
            raise errors.MEMBER_NOT_FOUND.exception()
        if any(set(m.peerURLs) & set(peer_urls) for m in current if m.ID != member_id):
            raise errors.PEER_URL_EXISTS.exception()
        update = rpc_pb2.MemberUpdateRequest(ID=member_id, peerURLs=peer_urls)
        await self._loop.propose(internal_pb2.InternalRequest(member_update=update), ClientSession(), timeout)

    async def promote(self, member_id: int, timeout: float) -> None:
        status = self._loop.raw.status()
        if member_id not in status.conf_state.learners:
            if member_id in status.conf_state.voters:
                raise errors.MEMBER_NOT_LEARNER.exception()
            raise errors.MEMBER_NOT_FOUND.exception()
        if self._loop.is_leader():
            progress = status.progress.get(member_id)
            if progress is None or progress.match < status.hard_state.commit * 9 // 10:
                raise errors.LEARNER_NOT_READY.exception()
        current = {m.ID: m for m in self._store.members()}[member_id]
        context = internal_pb2.MemberContext(member=current).SerializeToString()
        await self._change(ConfChange(ConfChangeType.ADD_VOTER, member_id, context), timeout)

    async def _change(self, cc: ConfChange, timeout: float) -> None:
        if not self._loop.has_leader():
            raise errors.NO_LEADER.exception()
        key = (cc.node_id, int(cc.type))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._conf_waiters[key] = future
        self._loop.propose_conf_change(cc, self._refused)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._conf_waiters.pop(key, None)
            raise errors.TIMEOUT.exception() from None

    def _refused(self, cc: ConfChange, error: errors.EtcdError) -> None:
        future = self._conf_waiters.pop((cc.node_id, int(cc.type)), None)
        if future is not None and not future.done():
            future.set_exception(error.exception())

    # ------------------------------------------------------------------ what the loop tells
    def conf_change_applied(self, cc: ConfChange) -> None:
        self._refresh_conf()
        self.refresh_peers()
        future = self._conf_waiters.pop((cc.node_id, int(cc.type)), None)
        if future is not None and not future.done():
            future.set_result(None)

    def snapshot_installed(self) -> None:
        self._refresh_conf()
        self.refresh_peers()

    def entry_applied(self, result: AppliedEntry) -> None:
        """A started member published its name (from now on its peer certificate must carry it), or a
        member's peer URLs changed (``member update``: dial it at its new address from now on)."""
        assert result.result is not None
        if result.result.WhichOneof("response") in ("publish_member", "member_update") and not result.result.error:
            self.refresh_peers()

    def _refresh_conf(self) -> None:
        """Cache what admission asks on every RPC and the transport on every stream from a stranger; the
        configuration and the removed members only change on apply or snapshot (both are read from the
        store then, which holds them since the start: nothing is remembered only in memory)."""
        self._is_learner = self._member_id in self._loop.raw.status().conf_state.learners
        self._removed = self._store.removed_members()
        if self._member_id in self._removed and not self._told_removed:
            self._told_removed = True
            stopping = f"; stopping in {REMOVED_STOP_DELAY:g}s" if self._on_removed is not None else ""
            log.warning("%s: this member was removed from the cluster (the member has been permanently removed "
                        "from the cluster)%s", self._cfg.name, stopping)
            if self._on_removed is not None:
                self._clock.call_later(REMOVED_STOP_DELAY, self._on_removed)

    def refresh_peers(self) -> None:
        """Point the transport at every other member (their first peer URL, or a dial override)."""
        transport = self._loop.transport
        if transport is None:
            return
        members = self._store.members()
        known = [(m.ID, m.name, m.peerURLs[0]) for m in members if m.peerURLs]
        if not any(m.ID == self._member_id for m in members):
            # A member that joined an existing cluster learns the membership by applying the log from the
            # start: until it has applied its own addition, its table lacks members the leader (or the
            # leader itself) may be among, yet it must answer them. --initial-cluster names the membership
            # at the time of `member add`: dial those too, meanwhile. From its own addition on, the table
            # is complete and every later change reaches it in order.
            token = self._cfg.cluster_token
            stored = {member_id for member_id, _, _ in known}
            known += [
                (member_id_for(token, url), name, url)
                for name, url in self._cfg.initial_cluster
                if member_id_for(token, url) not in stored
            ]
        wanted: dict[int, tuple[str, str]] = {}
        for member_id, name, url in known:
            if member_id != self._member_id and member_id not in self._removed:
                wanted[member_id] = (self._cfg.peer_dial_overrides.get(name) or host_port(url), name)
        # A removed member is dialled no more, also one the transport learned from its stream (not ours).
        for node_id in (self._peer_ids - wanted.keys()) | self._removed:
            transport.remove_peer(node_id)
        for node_id, (address, name) in wanted.items():
            transport.set_peer(node_id, address, name)  # the name its peer certificate must carry
        self._peer_ids = set(wanted)

    # ------------------------------------------------------------------ housekeeping
    async def publish_self(self) -> None:
        """Announce name and client URLs through the log once, so MemberList shows them everywhere."""
        member = rpc_pb2.Member(
            ID=self._member_id,
            name=self._cfg.name,
            peerURLs=list(self._cfg.advertise_peer_urls),
            clientURLs=list(self._cfg.advertise_client_urls),
        )
        while True:
            current = {m.ID: m for m in self._store.members()}.get(self._member_id)
            if current is not None and _published(current, member):
                return
            if self._loop.has_leader():
                try:
                    request = internal_pb2.InternalRequest(publish_member=member)
                    await self._loop.propose(request, ClientSession(), timeout=5)
                    return
                except errors.EtcdException:
                    pass
            await self._clock.sleep(self._cfg.election_ms / 1000 / 2)


def _published(current: rpc_pb2.Member, wanted: rpc_pb2.Member) -> bool:
    return current.name == wanted.name and list(current.clientURLs) == list(wanted.clientURLs)

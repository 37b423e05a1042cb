"""Leases on a member: the leader's expiry clock, keep-alives and time-to-live, and revoking what expired.

Which leases exist is replicated state (granted and revoked through the log); when one expires is decided
by the leader alone (``raftkv.server.lessor``), so a keep-alive or time-to-live query is answered from the
leader's clock, forwarded there when it reaches a follower, and only after a read barrier: the answer
is linearizable wherever the question was asked. The leader checks its clock every
``LEASE_CHECK_INTERVAL`` and proposes a revoke for each expired lease, at most etcd's rate. That revoke
is the decision of the leader of one term: if that member no longer leads in that term when the proposal
reaches its core, the revoke is dropped, never forwarded to the next leader, whose clock runs on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from raftkv import errors
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.server.backend import ClientSession
from raftkv.server.config import ServerConfig
from raftkv.server.lessor import Lessor, revoke_limit
from raftkv.server.node.raft_loop import RaftLoop
from raftkv.server.node.world import Clock, LeaseForwarder, Store
from raftkv.statemachine.applier import AppliedEntry

log = logging.getLogger("raftkv.node")

LEASE_CHECK_INTERVAL = 0.5  # seconds, as etcd's lessor
MAX_LEASE_REVOKES_PER_CHECK = revoke_limit(LEASE_CHECK_INTERVAL)
Spawn = Callable[[Coroutine[Any, Any, None], str], None]
T = TypeVar("T")
#: A forwarded lease question is asked again after this while the leader it went to is gone (etcd: 50 ms).
FORWARD_RETRY_PAUSE = 0.05
#: What a forwarded question answers when the member asked no longer leads, or never answered.
LEADER_WENT_AWAY = frozenset({errors.LEADER_CHANGED, errors.NO_LEADER, errors.NOT_LEADER})


class NodeLeases:
    def __init__(
        self,
        cfg: ServerConfig,
        store: Store[Any],
        clock: Clock,
        loop: RaftLoop,
        header: Callable[[], rpc_pb2.ResponseHeader],
        read_barrier: Callable[[float], Awaitable[None]],
        spawn: Spawn,
    ) -> None:
        self._cfg = cfg
        #: PLANTED BUG (simulator self-test only, ``--unsafe-planted-bug lease-query-before-apply``): answer
        #: lease questions from whatever this member has applied, as raftkv once did; the simulator's lease
        #: checker must catch it.
        self._planted_stale_leases = cfg.planted_bug == "lease-query-before-apply"
        #: PLANTED BUG (simulator self-test only, ``expiry-by-successor``): let a lease revoke this member
        #: decided as leader be forwarded to the next leader, as raftkv once did.
        self._planted_expiry_by_successor = cfg.planted_bug == "expiry-by-successor"
        self._store = store
        self._clock = clock
        self._loop = loop
        self._header = header
        self._read_barrier = read_barrier
        self._spawn = spawn
        self.lessor = Lessor()
        self.forwarder: LeaseForwarder | None = None

    # ------------------------------------------------------------------ queries (Backend)
    async def keep_alive(self, lease_id: int, timeout: float, *, require_leader: bool = False) -> int:
        """Renew on the leader's clock; a follower forwards the request there."""

        async def here(left: float) -> int:
            await self._caught_up(left)
            return self._answer("keep_alive", lease_id)

        async def there(leader: int, left: float) -> int:
            return await self._forwarder().keep_alive(leader, lease_id, left)

        return await self._at_the_leader(timeout, require_leader, here, there)

    async def time_to_live(
        self, lease_id: int, keys: bool, timeout: float, *, require_leader: bool = False
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        """The lease as the leader sees it; a follower forwards the whole question there, so its own state,
        which may not have applied the grant yet, never answers it."""
        response = rpc_pb2.LeaseTimeToLiveResponse(header=self._header(), ID=lease_id, TTL=-1)
        if not self._loop.is_leader() and self._planted_stale_leases and self._store.lease(lease_id) is None:
            return response  # PLANTED BUG: this member's own state, which may not have applied the grant

        async def here(left: float) -> rpc_pb2.LeaseTimeToLiveResponse:
            await self._caught_up(left)
            return self._time_to_live_here(response, lease_id, keys)

        async def there(leader: int, left: float) -> rpc_pb2.LeaseTimeToLiveResponse:
            return await self._forwarder().time_to_live(leader, lease_id, keys, left)

        return await self._at_the_leader(timeout, require_leader, here, there)

    def _time_to_live_here(
        self, response: rpc_pb2.LeaseTimeToLiveResponse, lease_id: int, keys: bool
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        found = self._store.lease(lease_id)
        if found is None:
            return response
        lease, attached = found
        response.grantedTTL = lease.granted_ttl
        if keys:
            response.keys.extend(attached)
        response.TTL = self._answer("time_to_live", lease_id)
        return response

    def lease_ids(self) -> list[int]:
        return [lease.id for lease in self._store.leases()]

    async def _caught_up(self, timeout: float) -> None:
        """Linearizability for lease answers: the leader answers only once it has applied everything
        committed before the question reached it, so a lease granted through any member, and acknowledged
        there, is known here (etcd's leader waits for its applied index in the same way). The barrier
        also confirms that this member still leads."""
        if not self._planted_stale_leases:
            await self._read_barrier(timeout)
        if not self._loop.is_leader():
            raise errors.LEADER_CHANGED.exception()

    async def _at_the_leader(
        self,
        timeout: float,
        require_leader: bool,
        here: Callable[[float], Awaitable[T]],
        there: Callable[[int, float], Awaitable[T]],
    ) -> T:
        """Answer ``here`` on the leader, else forward ``there`` to it, as etcd's LeaseRenew does: during an
        election wait for its outcome (``RaftLoop.leader_elected``; ``require_leader`` refuses at once
        instead), and while the leader asked (this member, or the one forwarded to) is gone or no longer
        leads, ask again ``FORWARD_RETRY_PAUSE`` later. So a keep-alive sent while the leader fails over is
        renewed by the next one, and a registration with a short TTL outlives the failover. Past the
        deadline the answer is etcd's "request timed out"."""
        deadline = self._clock.now() + timeout
        while True:
            left = max(0.0, deadline - self._clock.now())
            if not self._loop.has_leader():
                left = await self._loop.leader_elected(left, require_leader=require_leader)
            try:
                return await (here(left) if self._loop.is_leader() else there(self._leader(), left))
            except errors.EtcdException as exc:
                if exc.error not in LEADER_WENT_AWAY:
                    raise
            if self._clock.now() + FORWARD_RETRY_PAUSE >= deadline:
                raise errors.TIMEOUT.exception()
            await self._clock.sleep(FORWARD_RETRY_PAUSE)

    def _leader(self) -> int:
        leader = self._loop.soft.leader
        if leader == 0:
            raise errors.NO_LEADER.exception()
        return leader

    def _forwarder(self) -> LeaseForwarder:
        if self.forwarder is None:
            raise errors.NOT_CAPABLE.exception()
        return self.forwarder

    def _answer(self, what: str, lease_id: int) -> int:
        """On the leader, once caught up: ``keep_alive`` renews (the granted TTL, 0 if the lease is gone);
        ``time_to_live`` reads the remaining TTL in whole seconds, rounded down as etcd does (-1 if gone)."""
        assert self._loop.is_leader(), "lease clocks run on the leader only"
        now = self._clock.now()
        if self._store.lease(lease_id) is None:
            self.lessor.revoke(lease_id)
            return 0 if what == "keep_alive" else -1
        if what == "keep_alive":
            return self.lessor.renew(lease_id, now)
        remaining = self.lessor.remaining(lease_id, now)
        return -1 if remaining is None else max(0, int(remaining))

    # ------------------------------------------------------------------ what the loop tells
    def entry_applied(self, result: AppliedEntry) -> None:
        assert result.result is not None
        if result.result.WhichOneof("response") == "lease_grant" and not result.result.error:
            grant = result.result.lease_grant
            self.lessor.grant(grant.ID, grant.TTL, self._clock.now())

    def leadership_changed(self, is_leader: bool) -> None:
        if is_leader:
            extend = self._cfg.election_ms / 1000
            self._promote(extend)
            log.info("%s: became leader; leases extended by %.1fs", self._cfg.name, extend)
        else:
            self.lessor.demote()

    def snapshot_installed(self) -> None:
        if self._loop.is_leader():
            self._promote(self._cfg.election_ms / 1000)

    def _promote(self, extend: float) -> None:
        ttls = {lease.id: lease.granted_ttl for lease in self._store.leases()}
        self.lessor.promote(ttls, self._clock.now(), extend)

    # ------------------------------------------------------------------ expiry (leader side)
    async def expiry_loop(self) -> None:
        while True:
            await self._clock.sleep(LEASE_CHECK_INTERVAL)
            if not self._loop.is_leader():
                continue
            term = self._loop.term  # the term whose leader keeps the lessor's clocks
            assert term > 0, "a leader without a term"
            for lease_id in self.lessor.expired(self._clock.now(), MAX_LEASE_REVOKES_PER_CHECK):
                request = internal_pb2.InternalRequest(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lease_id))
                request.header.by_member = True  # not a client's request: no permission applies
                self._spawn(self._revoke_expired(request, lease_id, term), f"revoke-lease-{lease_id:x}")

    async def _revoke_expired(self, request: internal_pb2.InternalRequest, lease_id: int, term: int) -> None:
        """Only this leader's expiry decision: never carried out by a successor (``RaftLoop.propose``)."""
        try:
            await self._loop.propose(
                request,
                ClientSession(),
                timeout=self._cfg.election_ms / 1000 * 2,
                as_leader_of=0 if self._planted_expiry_by_successor else term,
            )
        except errors.EtcdException as exc:
            if exc.error == errors.LEASE_NOT_FOUND:
                self.lessor.revoke(lease_id)  # revoked meanwhile by a client
                return
            # The lessor offers the lease again after its retry interval.
            log.info("%s: revoking expired lease %x failed (%s); will retry", self._cfg.name, lease_id, exc)

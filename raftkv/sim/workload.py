"""Simulated clients, calling the production node's ``Backend`` as the API layer does.

Each client runs one operation at a time against a random running member (a connection that may point at
a follower), then thinks for a moment. Operations: put (sometimes attached to a lease), delete, a
compare-and-swap txn, linearizable and serializable gets, lease grant / keep-alive / time-to-live /
revoke, and long-running watches that move to another member when theirs goes away. Values are unique in a
run, so every value a read returns names exactly one write. Every answer is checked by ``History`` the
moment it arrives; an operation that neither succeeds nor fails cleanly in time is indeterminate and only
its observable effects are judged.

Each client is raftkv's own (``raftkv.client``): it requires a leader (``hasleader``), so a member that
knows none refuses at once and the client moves on, rather than holding the request until the election
ends as a member does for a client that does not say so (``require_leader``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from raftkv import errors
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.server.backend import ClientSession, RevisionEvents
from raftkv.server.node import Node
from raftkv.server.watch_hub import StreamClosed, WatchSpec
from raftkv.sim.history import History
from raftkv.sim.member import SimMember

OP_TIMEOUT = 3.0  # seconds a client waits for one answer
LEASE_TTLS = (2, 3, 5)


@dataclass(slots=True)
class WorkloadStats:
    ok: int = 0
    failed: int = 0
    indeterminate: int = 0
    watch_events: int = 0


class Workload:
    def __init__(
        self,
        rng: random.Random,
        history: History,
        members: Callable[[], list[SimMember]],
        note: Callable[[str], None],
        clients: int,
        keys: int,
        think: float,
    ) -> None:
        self._rng = rng
        self._history = history
        self._members = members
        self._note = note
        self._clients = clients
        self._keys = [b"k%d" % i for i in range(keys)]
        self._think = think
        self._next_value = 0
        self._gets = 0  # every other linearizable get asks as a read-only txn (no random draw: same schedules)
        self._leases: list[int] = []  # granted (acknowledged) and not yet revoked by a client
        self.stats = WorkloadStats()
        self.running = True

    def start(self, spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        for c in range(self._clients):
            spawn(self._client(c))
        spawn(self._watcher("w0", WatchSpec(key=b"k", range_end=b"l")))
        spawn(self._keeper())

    # --- the client loop ---------------------------------------------------------------------------------
    async def _client(self, client: int) -> None:
        while self.running:
            await asyncio.sleep(self._rng.uniform(0.01, self._think))
            member = self._pick()
            if member is None:
                continue
            op = self._rng.choices(_OPS, weights=_WEIGHTS)[0]
            await self._run(f"c{client}", member, op)

    def _pick(self) -> SimMember | None:
        live = [m for m in self._members() if m.node is not None]
        return self._rng.choice(live) if live else None

    async def _run(self, client: str, member: SimMember, op: str) -> None:
        node = member.node
        assert node is not None
        started = asyncio.get_running_loop().time()
        key = self._rng.choice(self._keys)
        try:
            outcome = await getattr(self, f"_op_{op}")(node, member, key, started)
            self.stats.ok += 1
        except errors.EtcdException as exc:
            outcome = f"error {exc.error.message}"
            definite = exc.error not in (errors.TIMEOUT, errors.LEADER_CHANGED, errors.STOPPED)
            if definite:
                self.stats.failed += 1
            else:
                self.stats.indeterminate += 1
        self._note(f"{client} {op} {key.decode()} on {member.name}: {outcome}")

    def _value(self) -> bytes:
        self._next_value += 1
        return b"v%d" % self._next_value

    # --- operations (each returns a short description of its outcome, for the trace) ------------------------
    async def _op_put(self, node: Node, member: SimMember, key: bytes, started: float) -> str:
        lease = self._rng.choice(self._leases) if self._leases and self._rng.random() < 0.3 else 0
        value = self._value()
        req = internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))
        result = await node.propose(req, ClientSession(), OP_TIMEOUT, require_leader=True)
        rev = result.put.header.revision
        self._history.check_write("put", member.name, key, value, rev)
        self._history.acknowledged(rev)
        return f"ok @{rev}"

    async def _op_delete(self, node: Node, member: SimMember, key: bytes, started: float) -> str:
        req = internal_pb2.InternalRequest(delete_range=rpc_pb2.DeleteRangeRequest(key=key))
        result = await node.propose(req, ClientSession(), OP_TIMEOUT, require_leader=True)
        rev = result.delete_range.header.revision
        if result.delete_range.deleted:
            self._history.check_write("delete", member.name, key, None, rev)
        elif self._history.value_at(key, rev)[1] is not None:
            self._history.violation(f"delete of {key!r} on {member.name} found nothing at revision {rev}")
        self._history.acknowledged(rev)
        return f"ok @{rev} deleted={result.delete_range.deleted}"

    async def _op_cas(self, node: Node, member: SimMember, key: bytes, started: float) -> str:
        """``if mod_revision(key) == (what a serializable read just saw) then put else get``."""
        floor = self._history.linear_floor
        seen = node.range(rpc_pb2.RangeRequest(key=key))
        expected = seen.kvs[0].mod_revision if seen.kvs else 0
        value = self._value()
        txn = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.MOD, mod_revision=expected)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
        )
        result = await node.propose(internal_pb2.InternalRequest(txn=txn), ClientSession(), OP_TIMEOUT,
                                    require_leader=True)
        rev = result.txn.header.revision
        self._history.check_cas(member.name, key, expected, result.txn.succeeded, rev)
        if result.txn.succeeded:
            self._history.check_write("txn put", member.name, key, value, rev)
        else:
            kvs = list(result.txn.responses[0].response_range.kvs)
            self._history.check_read("txn get", member.name, key, rev, kvs, floor)
        self._history.acknowledged(rev)
        return f"{'ok' if result.txn.succeeded else 'not swapped'} @{rev}"

    async def _op_get(self, node: Node, member: SimMember, key: bytes, started: float) -> str:
        """A linearizable read, as the client API serves a Range or, every other time, a read-only Txn."""
        floor = self._history.linear_floor
        self._gets += 1
        await node.read_barrier(OP_TIMEOUT, require_leader=True)
        if self._gets % 2:
            response = node.range(rpc_pb2.RangeRequest(key=key))
            what = "linearizable get"
        else:
            get = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))
            response = node.read_only_txn(rpc_pb2.TxnRequest(success=[get])).responses[0].response_range
            what = "linearizable read-only txn"
        rev = response.header.revision
        self._history.check_read(what, member.name, key, rev, list(response.kvs), floor)
        self._history.acknowledged(rev)
        return f"{_shown(response)} @{rev}"

    async def _op_get_serializable(self, node: Node, member: SimMember, key: bytes, started: float) -> str:
        response = node.range(rpc_pb2.RangeRequest(key=key, serializable=True))
        rev = response.header.revision
        self._history.check_read("serializable get", member.name, key, rev, list(response.kvs), None)
        return f"{_shown(response)} @{rev}"

    async def _op_lease_grant(self, node: Node, member: SimMember, key: bytes, started: float) -> str:
        ttl = self._rng.choice(LEASE_TTLS)
        req = internal_pb2.InternalRequest(lease_grant=rpc_pb2.LeaseGrantRequest(TTL=ttl))
        result = await node.propose(req, ClientSession(), OP_TIMEOUT, require_leader=True)
        lease_id = result.lease_grant.ID
        self._history.lease_granted(lease_id, result.lease_grant.TTL, started)
        self._leases.append(lease_id)
        return f"lease {lease_id:x} ttl {result.lease_grant.TTL}"

    async def _op_lease_keep_alive(self, node: Node, member: SimMember, key: bytes, started: float) -> str:
        if not self._leases:
            return "no lease"
        lease_id = self._rng.choice(self._leases)
        ttl = await node.lease_keep_alive(lease_id, OP_TIMEOUT, require_leader=True)
        self._history.check_lease_answer("keep-alive", member.name, lease_id, ttl > 0, started)
        if ttl > 0:
            self._history.lease_renewed(lease_id, started)
        return f"lease {lease_id:x} ttl {ttl}"

    async def _op_lease_ttl(self, node: Node, member: SimMember, key: bytes, started: float) -> str:
        if not self._leases:
            return "no lease"
        lease_id = self._rng.choice(self._leases)
        response = await node.lease_time_to_live(lease_id, False, OP_TIMEOUT, require_leader=True)
        self._history.check_lease_answer("time-to-live", member.name, lease_id, response.TTL >= 0, started)
        return f"lease {lease_id:x} ttl {response.TTL}"

    async def _op_lease_revoke(self, node: Node, member: SimMember, key: bytes, started: float) -> str:
        if not self._leases:
            return "no lease"
        lease_id = self._rng.choice(self._leases)
        self._leases.remove(lease_id)
        req = internal_pb2.InternalRequest(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lease_id))
        self._history.lease_revoke_asked(lease_id)
        result = await node.propose(req, ClientSession(), OP_TIMEOUT, require_leader=True)
        self._history.lease_revoked(lease_id)
        self._history.acknowledged(result.lease_revoke.header.revision)
        return f"lease {lease_id:x} revoked"

    # --- long-running clients ----------------------------------------------------------------------------
    async def _keeper(self) -> None:
        """Keeps the newest leases alive (the rest are left to expire), as a service registration would."""
        while self.running:
            await asyncio.sleep(0.5)
            member = self._pick()
            if member is None or member.node is None:
                continue
            for lease_id in self._leases[-2:]:
                started = asyncio.get_running_loop().time()
                try:
                    ttl = await member.node.lease_keep_alive(lease_id, 1.0, require_leader=True)
                except errors.EtcdException:
                    break
                if member.node is None:
                    break
                self._history.check_lease_answer("keep-alive", member.name, lease_id, ttl > 0, started)
                if ttl > 0:
                    self._history.lease_renewed(lease_id, started)
                elif lease_id in self._leases:
                    self._leases.remove(lease_id)

    async def _watcher(self, name: str, spec: WatchSpec) -> None:
        """Watch ``spec`` from revision 1, moving to another member whenever the current one goes away."""
        next_rev = 1
        while self.running:
            member = self._pick()
            if member is None or member.node is None:
                await asyncio.sleep(0.1)
                continue
            hub = member.watch_hub
            assert hub is not None
            stream = hub.open_stream()
            stream.create(WatchSpec(spec.key, spec.range_end, start_revision=next_rev))
            life = member.life
            try:
                while self.running and member.life is life:
                    try:
                        deliveries = await asyncio.wait_for(stream.next(), 0.5)
                    except TimeoutError:
                        continue
                    for d in deliveries:
                        if d.canceled:
                            raise StreamClosed(d.cancel_reason)
                        if d.events:
                            by_rev: dict[int, list[object]] = {}
                            for e in d.events:
                                by_rev.setdefault(e.kv.mod_revision, []).append(e)
                            batch = [RevisionEvents(r, tuple(es)) for r, es in sorted(by_rev.items())]  # type: ignore[arg-type]
                            next_rev = self._history.check_watch(f"{name} on {member.name}", spec, next_rev, batch)
                            self.stats.watch_events += len(d.events)
            except StreamClosed:
                pass
            finally:
                if member.life is life:
                    stream.close()


_OPS = ("put", "delete", "cas", "get", "get_serializable", "lease_grant", "lease_keep_alive", "lease_ttl",
        "lease_revoke")
_WEIGHTS = (30, 5, 10, 15, 10, 5, 8, 8, 3)


def _shown(response: rpc_pb2.RangeResponse) -> str:
    return response.kvs[0].value.decode() if response.kvs else "nothing"

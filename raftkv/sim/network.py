"""The simulated network: one fault model for every link, partitions, and the members' transports on it.

Every message gets an independent latency draw, so messages on one link overtake each other (reordering);
a small fraction are delayed much longer (stragglers that arrive after a new leader took over), dropped,
or delivered twice. Partitions are checked both when a message is sent and when it would arrive, so a
partition raised while a message is in flight also cuts it off -- as a real network would.

``SimTransport`` is what a running member gets as its ``Transport``: Raft messages become deliveries on
this network, a SNAP carries its snapshot's bytes (streamed from the sender's store into the receiver's
staging, as the gRPC transport does) and its outcome is reported back to the sender. When a connection to
a peer is reset it does what the gRPC transport does after a broken stream: reports the peer unreachable
and probes the peer's port (``probe``: a connect, one round trip); only a *refused* connect -- the peer's
process is not running -- is reported, through the node's ``on_peer_gone``. A partition makes the connect
time out, so it never is; a reset the network is told to misjudge (``connection_reset(misjudged=True)``:
a relay in front of a live peer, a listener that dropped the probe) is the false report. ``SimLeaseForwarder``
carries a follower's lease question to the leader and the answer back. Everything in flight lives in the
network, not in the sender: a message sent just before its sender crashed still arrives.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from raftkv import errors
from raftkv.core.types import Message, MessageType
from raftkv.proto import rpc_pb2

if TYPE_CHECKING:
    from raftkv.server.node import Node
    from raftkv.sim.member import SimMember

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """Fault rates applied to every link. Latencies are in simulation time units; probabilities per message."""

    min_latency: int = 1
    max_latency: int = 6
    drop: float = 0.0
    duplicate: float = 0.0
    straggler: float = 0.0  # probability of an extra long delay (reordering across elections)
    straggler_delay: int = 200


class Network:
    """Delivers between member ids on the loop, subject to faults and partitions."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rng: random.Random,
        faults: LinkFaults,
        unit: float,
        member: Callable[[int], SimMember | None],
    ) -> None:
        self._loop = loop
        self._rng = rng
        self.faults = faults
        self._unit = unit
        self.member = member
        #: Deliveries run outside every member's life: a packet on the wire survives its sender.
        self._wire = contextvars.copy_context()
        #: node id -> partition group; nodes absent from the map are in group 0.
        self._group: dict[int, int] = {}
        self._one_way: set[tuple[int, int]] = set()
        self.sent = 0
        self.delivered = 0
        self.gone_reports = 0  # on_peer_gone calls made by the members' transports, true or misjudged

    def blocked(self, src: int, dst: int) -> bool:
        return self._group.get(src, 0) != self._group.get(dst, 0) or (src, dst) in self._one_way

    def partition(self, side: frozenset[int]) -> None:
        """Split the cluster in two: ``side`` versus everybody else (symmetric)."""
        self._group = {n: 1 for n in sorted(side)}

    def block_one_way(self, src: int, dst: int) -> None:
        """Drop everything from ``src`` to ``dst`` while ``dst`` can still reach ``src``."""
        self._one_way.add((src, dst))

    def heal(self) -> None:
        self._group = {}
        self._one_way = set()

    def transmit(self, src: int, dst: int, arrive: Callable[[], None], lost: Callable[[], None] | None = None) -> bool:
        """Carry one packet: ``arrive`` runs at the destination's time of arrival, ``lost`` if it never
        arrives (the sender's connection breaks a little later). Returns False if it was blocked at once."""
        self.sent += 1
        f = self.faults
        if self.blocked(src, dst) or (f.drop and self._rng.random() < f.drop):
            if lost is not None:
                self._after(self._rng.randint(f.min_latency, f.max_latency), lost)
            return False
        copies = 2 if f.duplicate and self._rng.random() < f.duplicate else 1
        for _ in range(copies):
            delay = self._rng.randint(f.min_latency, f.max_latency)
            if f.straggler and self._rng.random() < f.straggler:
                delay += self._rng.randint(1, f.straggler_delay)
            self._after(delay, lambda: self._arrive(src, dst, arrive, lost))
        return True

    def _arrive(self, src: int, dst: int, arrive: Callable[[], None], lost: Callable[[], None] | None) -> None:
        if self.blocked(src, dst):
            if lost is not None:
                lost()
            return
        self.delivered += 1
        arrive()

    def probe(self, src: int, dst: int, answer: Callable[[bool], None]) -> None:
        """A TCP connect from ``src`` to ``dst``'s peer port: a round trip later, ``answer(refused)`` --
        refused when ``dst``'s process is not running (its kernel answers with a reset). Blocked either
        way, the connect times out and nothing is answered (a timeout proves nothing)."""

        def at_port() -> None:
            target = self.member(dst)
            refused = target is None or target.node is None
            self.transmit(dst, src, lambda: answer(refused))

        self.transmit(src, dst, at_port)

    def _after(self, units: int, action: Callable[[], None]) -> None:
        self._loop.call_later(units * self._unit, action, context=self._wire)

    def after(self, units: int, action: Callable[[], None]) -> None:
        """Run ``action`` ``units`` from now outside any member (e.g. a client's answer on the wire)."""
        self._after(units, action)


class SimTransport:
    """The ``Transport`` of one life of one member."""

    def __init__(
        self,
        network: Network,
        owner: SimMember,
        sending: Callable[[SimMember, Message], None],
        is_removed: Callable[[int], bool],
    ) -> None:
        self._net = network
        self._owner = owner
        self._life = owner.life
        self._sending = sending
        self._is_removed = is_removed  # the node's membership, as the gRPC transport's
        self._peers: set[int] = set()
        self._snapshots_in_flight: set[int] = set()

    def set_peer(self, node_id: int, address: str, name: str = "") -> None:
        assert node_id != self._owner.id, "a member does not send to itself"
        self._peers.add(node_id)

    def remove_peer(self, node_id: int) -> None:
        self._peers.discard(node_id)

    def hears(self, sender: int) -> bool:
        """A stream from ``sender`` reached this member: whether it is heard. As the gRPC transport
        (``PeerTransport._check_sender``): a member removed from the cluster never is; a member not yet
        known here (its addition not applied yet) is, and this member learns to answer it."""
        if self._is_removed(sender):
            return False
        if sender != self._owner.id:
            self._peers.add(sender)
        return True

    def send(self, messages: list[Message]) -> None:
        if self._owner.life is not self._life:
            return  # a dead process sends nothing
        for msg in messages:
            self._sending(self._owner, msg)
            if msg.to not in self._peers:
                continue  # as the gRPC transport: nobody to dial
            if msg.type == MessageType.SNAP:
                self._send_snapshot(msg)
                continue
            # On the link of the member sending it: a relayed request (FORWARDED_REQUESTS) names another.
            if not self._net.transmit(self._owner.id, msg.to, functools.partial(self._deliver, msg)):
                self._report(functools.partial(_tell_unreachable, to=msg.to))

    def knows(self, node_id: int) -> bool:
        return node_id in self._peers

    def connection_reset(self, peer: int, misjudged: bool = False) -> None:
        """The connection to ``peer`` was reset. As the gRPC transport after a broken stream: report ``peer``
        unreachable, probe its port, and report it gone if the connect is refused -- or, ``misjudged``, as
        if it had been although ``peer`` runs (the false report production's probe can make)."""
        if self._owner.life is not self._life or peer not in self._peers:
            return
        self._report(functools.partial(_tell_unreachable, to=peer))

        def answer(refused: bool) -> None:
            if refused or misjudged:
                self._report(functools.partial(self._tell_gone, peer))

        if misjudged:
            self._net.after(self._net.faults.min_latency, lambda: answer(True))
        else:
            self._net.probe(self._owner.id, peer, answer)

    def _tell_gone(self, peer: int, node: Node) -> None:
        if peer in self._peers:
            self._net.gone_reports += 1
            node.on_peer_gone(peer)

    def _deliver(self, msg: Message) -> None:
        target = self._net.member(msg.to)
        if target is not None and target.node is not None:
            assert target.transport is not None, "a running member has its transport"
            if target.transport.hears(self._owner.id):
                target.node.on_peer_messages([msg])

    def _send_snapshot(self, msg: Message) -> None:
        """Stream the snapshot's bytes with the SNAP message; the sender hears the outcome."""
        assert msg.snapshot is not None and self._owner.node is not None
        to = msg.to
        if to in self._snapshots_in_flight:
            self._owner.node.on_snapshot_status(to, False)  # one at a time per peer, as the gRPC transport
            return
        self._snapshots_in_flight.add(to)
        chunks = list(self._owner.node.staged_snapshots.open(msg.snapshot))

        def arrive() -> None:
            target = self._net.member(to)
            if target is None or target.node is None:
                finish(False)
                return
            assert target.transport is not None, "a running member has its transport"
            if not target.transport.hears(self._owner.id):  # refused at the first chunk, as the gRPC transport
                self._net.transmit(to, msg.sender, lambda: finish(False), lambda: finish(False))
                return
            writer = target.node.staged_snapshots.begin(msg.snapshot)  # type: ignore[arg-type]
            for chunk in chunks:
                writer.write(chunk)
            streamed = writer.commit()
            target.node.on_peer_messages([dataclasses.replace(msg, snapshot=streamed)])
            self._net.transmit(to, msg.sender, lambda: finish(True), lambda: finish(False))

        def finish(ok: bool) -> None:
            self._snapshots_in_flight.discard(to)
            self._report(lambda node: node.on_snapshot_status(to, ok))

        self._net.transmit(msg.sender, to, arrive, lambda: finish(False))

    def _report(self, tell: Callable[..., None]) -> None:
        """Tell the sending member something, if the life that sent is still running."""
        node = self._owner.node
        if node is not None and self._owner.life is self._life:
            tell(node)


class SimLeaseForwarder:
    """``LeaseForwarder`` over the simulated network: the leader answers with its own ``Backend`` methods, as
    the gRPC forwarder's call reaches the leader's Lease service."""

    def __init__(self, network: Network, owner: SimMember) -> None:
        self._net = network
        self._owner = owner

    async def keep_alive(self, leader_id: int, lease_id: int, timeout: float) -> int:
        return await self._ask(leader_id, lambda node: node.lease_keep_alive(lease_id, timeout), timeout)

    async def time_to_live(
        self, leader_id: int, lease_id: int, keys: bool, timeout: float
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        return await self._ask(leader_id, lambda node: node.lease_time_to_live(lease_id, keys, timeout), timeout)

    async def _ask(self, leader_id: int, question: Callable[[Node], Coroutine[Any, Any, T]], timeout: float) -> T:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()
        me = self._owner.id

        def reply(result: asyncio.Future[T]) -> None:
            if result.cancelled():
                return
            exc = result.exception()  # retrieved now: the answer may be lost on the way back

            def arrive() -> None:
                if answer.done():
                    return
                if exc is not None:
                    answer.set_exception(exc)
                else:
                    answer.set_result(result.result())

            self._net.transmit(leader_id, me, arrive)

        def refused() -> None:
            if not answer.done():
                answer.set_exception(errors.LEADER_CHANGED.exception())

        def ask() -> None:
            leader = self._net.member(leader_id)
            if leader is None:
                return  # nobody listening: the caller times out
            if leader.node is None:
                # A crashed process's port refuses the connection: the gRPC forwarder says "leader changed".
                self._net.transmit(leader_id, me, refused)
                return
            task = leader.spawn(question(leader.node))
            task.add_done_callback(reply, context=self._net._wire)

        self._net.transmit(me, leader_id, ask)
        try:
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise errors.TIMEOUT.exception() from None


def _tell_unreachable(node: Node, to: int) -> None:
    node.on_unreachable(to)

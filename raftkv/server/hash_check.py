"""The leader's periodic cross-member hash check (etcd's ``--experimental-corrupt-check-time``).

Checksums catch bytes that changed on disk; they cannot catch a member whose history is wrong but well
formed (a bug, a bad restore, damage from before checksums). Every ``interval`` the leader hashes its
history up to its current revision and asks each other member for ``HashKV`` at that same revision. Only
answers at the same compaction revision are comparable (a member that applied a later compaction has
another history by design), and a member that has not applied the revision yet is asked again next time.

Whom to blame: when a majority of the cluster agrees on a hash, each member that differs gets a CORRUPT
alarm. When no majority agrees (two members, two hashes), nobody can tell which is right, so every member
whose hash was compared gets one: none of them serves data until an operator has looked, which is what
etcd's cluster-wide CORRUPT stop achieves.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc

from raftkv import errors
from raftkv.proto import internal_pb2, rpc_pb2, rpc_pb2_grpc
from raftkv.server.integrity import corrupt_alarm
from raftkv.server.member_channels import MemberChannels

log = logging.getLogger("raftkv.integrity")

#: etcd 3.4 leaves the check off by default; raftkv runs it every 5 minutes (hashing reads all history).
DEFAULT_INTERVAL = 300.0
#: How long the leader waits for one member's hash.
ASK_TIMEOUT = 30.0


class HashCheck:
    def __init__(
        self,
        member_id: int,
        name: str,
        interval: float,
        channels: MemberChannels,
        *,
        is_leader: Callable[[], bool],
        revision: Callable[[], int],
        local_hash: Callable[[int], Awaitable[rpc_pb2.HashKVResponse]],
        members: Callable[[], list[rpc_pb2.Member]],
        alarms: Callable[[], list[rpc_pb2.AlarmMember]],
        propose: Callable[[internal_pb2.InternalRequest], Awaitable[object]],
    ) -> None:
        self._member_id = member_id
        self._name = name
        self.interval = interval
        self._channels = channels
        self._is_leader = is_leader
        self._revision = revision
        self._local_hash = local_hash
        self._members = members
        self._alarms = alarms
        self._propose = propose

    async def run(self) -> None:
        if self.interval <= 0:
            return
        while True:
            await asyncio.sleep(self.interval)
            if self._is_leader():
                try:
                    await self.check()
                except errors.EtcdException as exc:
                    log.info("%s: hash check skipped: %s", self._name, exc)

    async def check(self) -> list[int]:
        """One round; returns the members given a CORRUPT alarm."""
        revision = self._revision()
        mine = await self._local_hash(revision)
        members = self._members()
        answers = {self._member_id: mine}
        for member in members:
            if member.ID != self._member_id and member.clientURLs:
                answer = await self._ask(member.clientURLs[0], revision)
                if answer is not None and answer.compact_revision == mine.compact_revision:
                    answers[member.ID] = answer
        blamed = blame({member_id: answer.hash for member_id, answer in answers.items()}, len(members))
        raised = {a.memberID for a in self._alarms() if a.alarm == rpc_pb2.CORRUPT}
        for member_id in blamed:
            if member_id in raised:
                continue
            log.error("%s: member %x's history hash at revision %d differs (%s); raising the CORRUPT alarm",
                      self._name, member_id, revision,
                      ", ".join(f"{m:x}={a.hash:08x}" for m, a in sorted(answers.items())))
            await self._propose(corrupt_alarm(member_id))
        return blamed

    async def _ask(self, client_url: str, revision: int) -> rpc_pb2.HashKVResponse | None:
        stub = rpc_pb2_grpc.MaintenanceStub(self._channels.to(client_url))
        try:
            return await stub.HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=ASK_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.debug("%s: no hash from %s at revision %d: %s", self._name, client_url, revision, exc.details())
            return None


def blame(hashes: dict[int, int], cluster_size: int) -> list[int]:
    """The members to alarm, given each answering member's hash (see the module's docstring)."""
    if len(set(hashes.values())) <= 1:
        return []
    common, agreeing = Counter(hashes.values()).most_common(1)[0]
    if agreeing > cluster_size // 2:
        return sorted(m for m, h in hashes.items() if h != common)
    return sorted(hashes)

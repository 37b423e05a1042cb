"""Maintenance on a member: status, alarms and the space quota, leader transfer, defragmentation, hashes
and whole-database snapshots for backup."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

from raftkv import ETCD_VERSION, errors
from raftkv.proto import rpc_pb2
from raftkv.server.config import ServerConfig
from raftkv.server.integrity import Integrity
from raftkv.server.node.raft_loop import RaftLoop
from raftkv.server.node.world import Clock, Store

log = logging.getLogger("raftkv.node")

SNAPSHOT_READ_BYTES = 1 << 20
#: HashKV's ``compact_revision`` before any compaction, as etcd answers it.
NEVER_COMPACTED = -1


class Maintenance:
    def __init__(
        self,
        cfg: ServerConfig,
        store: Store[Any],
        member_id: int,
        loop: RaftLoop,
        clock: Clock,
        header: Callable[[], rpc_pb2.ResponseHeader],
        is_learner: Callable[[], bool],
        integrity: Integrity,
    ) -> None:
        self._cfg = cfg
        self._store = store
        self._member_id = member_id
        self._loop = loop
        self._clock = clock
        self._header = header
        self._is_learner = is_learner
        self._integrity = integrity

    def status(self) -> rpc_pb2.StatusResponse:
        status = self._loop.raw.status()
        return rpc_pb2.StatusResponse(
            header=self._header(),
            version=ETCD_VERSION,
            dbSize=self._store.db_size(),
            dbSizeInUse=self._store.db_size_in_use(),
            leader=self._loop.soft.leader,
            raftIndex=self._store.log.last_index(),
            raftTerm=status.hard_state.term,
            raftAppliedIndex=self._loop.applied,
            errors=[f"memberID:{a.memberID} alarm:{rpc_pb2.AlarmType.Name(a.alarm)} " for a in self.alarms()],
            isLearner=self._is_learner(),
        )

    def alarms(self) -> list[rpc_pb2.AlarmMember]:
        """The replicated alarms, plus this member's CORRUPT alarm while it is not applied yet."""
        return self._integrity.with_own_alarm(self._store.alarms())

    async def move_leader(self, target_id: int, timeout: float) -> None:
        if not self._loop.is_leader():
            raise errors.NOT_LEADER.exception()
        if target_id not in self._loop.raw.status().conf_state.voters or target_id == self._member_id:
            raise errors.BAD_LEADER_TRANSFEREE.exception()
        self._loop.transfer_leader(target_id)
        deadline = self._clock.now() + timeout
        while self._loop.soft.leader != target_id:
            if self._clock.now() >= deadline:
                raise errors.TIMEOUT.exception()
            await self._clock.sleep(self._cfg.heartbeat_ms / 1000)

    async def defragment(self) -> None:
        await asyncio.wrap_future(self._store.defragment())

    async def hash_kv(self, revision: int) -> rpc_pb2.HashKVResponse:
        """Hashing reads the whole history: off the event loop, so a large store costs no heartbeats."""
        hash_value, compact, _ = await asyncio.to_thread(self._store.hash_kv, revision)
        # etcd's compactMainRev is -1 until the first compaction; etcdctl prints it (``-w json``).
        return rpc_pb2.HashKVResponse(header=self._header(), hash=hash_value & 0xFFFFFFFF,
                                      compact_revision=compact or NEVER_COMPACTED)

    async def snapshot_chunks(self) -> AsyncIterator[bytes]:
        """The key-value state as etcd's backend database, so that ``etcdctl snapshot status`` and
        ``restore`` read what ``snapshot save`` wrote; built from one read view into a temporary file
        (its meta pages are written last), then read out."""
        with tempfile.TemporaryFile() as spool:
            await asyncio.to_thread(self._store.write_etcd_snapshot, spool)
            spool.seek(0)
            while chunk := await asyncio.to_thread(spool.read, SNAPSHOT_READ_BYTES):
                yield chunk

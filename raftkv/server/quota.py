"""The backend quota, applied as etcd applies ``--quota-backend-bytes``.

A write that could add data is refused before it is proposed once the store's size plus the write's cost
would pass the quota (etcd's ``quotaKVServer``), and the NOSPACE alarm is raised through the log, so that
every member's applier refuses such writes alike (sizes differ per replica; the alarm does not). Like
etcd, only ``alarm disarm`` clears the alarm; until the store is below the quota again it is raised anew.

What counts is what etcd counts (``NodeStore.quota_usage``): the revision history, leases, members,
alarms and the exactly-once table -- not the Raft log, which etcd keeps in its WAL outside the quota.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from raftkv import errors
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.statemachine.applier import ADDS_DATA

log = logging.getLogger("raftkv.quota")

#: How often the member checks its size against the quota while no write asks (seconds).
CHECK_INTERVAL = 1.0
#: etcd's per-request overhead in its cost estimate (``kvOverhead``).
REQUEST_OVERHEAD_BYTES = 256

Propose = Callable[[internal_pb2.InternalRequest], Awaitable[object]]


class Measured(Protocol):
    def quota_usage(self) -> int: ...


class Quota:
    """One member's quota: ``admit`` before proposing, ``applied`` after each apply, ``run`` as a task."""

    def __init__(self, store: Measured, quota_bytes: int, member_id: int, name: str) -> None:
        self._store = store
        self.quota_bytes = quota_bytes
        self._member_id = member_id
        self._name = name
        self._usage: int | None = None  # None: stale since the last apply
        self._alarm_wanted = asyncio.Event()

    def usage(self) -> int:
        """Bytes the quota counts, read again after each apply (once, however many writes ask)."""
        if self._usage is None:
            self._usage = self._store.quota_usage()
        return self._usage

    def applied(self) -> None:
        self._usage = None

    def admit(self, request: internal_pb2.InternalRequest) -> None:
        """Raise NO_SPACE for a write that could add data and would not fit; raise the alarm for it."""
        if request.WhichOneof("request") not in ADDS_DATA:
            return
        if self.usage() + request.ByteSize() + REQUEST_OVERHEAD_BYTES > self.quota_bytes:
            self._alarm_wanted.set()
            raise errors.NO_SPACE.exception()

    def over(self) -> bool:
        return self.usage() > self.quota_bytes

    async def run(
        self, propose: Propose, has_leader: Callable[[], bool], alarms: Callable[[], list[rpc_pb2.AlarmMember]]
    ) -> None:
        """Raise this member's NOSPACE alarm whenever a write was refused or the store is over the quota."""
        while True:
            try:
                await asyncio.wait_for(self._alarm_wanted.wait(), CHECK_INTERVAL)
            except TimeoutError:
                pass
            wanted = self._alarm_wanted.is_set()
            self._alarm_wanted.clear()
            if not (wanted or self.over()) or not has_leader():
                continue
            if any(a.memberID == self._member_id and a.alarm == rpc_pb2.NOSPACE for a in alarms()):
                continue
            log.warning("%s: database size %d reached the quota of %d bytes; raising the NOSPACE alarm",
                        self._name, self.usage(), self.quota_bytes)
            alarm = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=self._member_id,
                                         alarm=rpc_pb2.NOSPACE)
            try:
                await propose(internal_pb2.InternalRequest(alarm=alarm))
            except errors.EtcdException as exc:
                log.info("%s: raising the NOSPACE alarm failed (%s); will retry", self._name, exc)
                self._alarm_wanted.set()
                await asyncio.sleep(CHECK_INTERVAL)

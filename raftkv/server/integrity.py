"""Whether this member may serve its data, and what it does once it may not.

A member stops serving data (every client request but ``Status`` and ``Alarm`` answers etcd's
``etcdserver: corrupt cluster``) when either

- it found damaged data itself: a record that failed its checksum on a read (``found``); or
- a CORRUPT alarm names it: raised by itself, or by the leader's cross-member hash check
  (``raftkv.server.hash_check``) because its history disagrees with the majority's.

The alarm goes through the log, as etcd's does, so every member and every ``alarm list`` shows it. Unlike
etcd 3.4, which makes the whole cluster refuse writes while any CORRUPT alarm is raised, only the member
it names stops serving: the damage is known to be that member's, and the others hold a quorum's agreement.
A member whose damage is in what Raft itself needs (the log, or state an apply reads) cannot go on at all:
it enters quarantine (``raftkv.server.quarantine``). An operator clears the state by replacing the member
(remove it, empty its data dir, add it back) and then ``alarm disarm``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from raftkv import errors
from raftkv.proto import internal_pb2, rpc_pb2

log = logging.getLogger("raftkv.integrity")

#: How often raising this member's CORRUPT alarm is retried while it fails (no leader, say).
RETRY_SECONDS = 1.0

#: The file in a data dir that keeps a member in quarantine (``raftkv.server.quarantine``), holding why.
QUARANTINE_MARKER = "quarantine"
#: Who the other members are and where their clients reach them, kept beside the database: a member whose
#: database is too damaged to read still knows whom to hand its CORRUPT alarm.
MEMBERS_FILE = "members.json"

Propose = Callable[[internal_pb2.InternalRequest], Awaitable[object]]


def quarantine_reason(data_dir: Path) -> str | None:
    """Why the data dir is quarantined, or None."""
    try:
        return (data_dir / QUARANTINE_MARKER).read_text().strip() or "quarantined"
    except FileNotFoundError:
        return None


def remember_members(data_dir: Path, members: list[rpc_pb2.Member]) -> None:
    """Keep the member list (ids, names, client URLs) in ``MEMBERS_FILE``, replaced atomically."""
    text = json.dumps([{"id": m.ID, "name": m.name, "client_urls": list(m.clientURLs)} for m in members])
    path = data_dir / MEMBERS_FILE
    try:
        if path.read_text() == text:
            return
    except FileNotFoundError:
        pass
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def remembered_members(data_dir: Path) -> list[rpc_pb2.Member]:
    try:
        listed = json.loads((data_dir / MEMBERS_FILE).read_text())
        return [rpc_pb2.Member(ID=m["id"], name=m["name"], clientURLs=m["client_urls"]) for m in listed]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def mark_quarantined(data_dir: Path, reason: str) -> None:
    """Record the quarantine durably (the file, then its directory), before the member restarts into it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / QUARANTINE_MARKER, "w") as fh:
        fh.write(reason + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DataDirNotes:
    """Production's ``raftkv.server.node.world.Notes``: files in the member's data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def remember_members(self, members: list[rpc_pb2.Member]) -> None:
        remember_members(self.data_dir, members)

    def mark_quarantined(self, reason: str) -> None:
        mark_quarantined(self.data_dir, reason)


def corrupt_alarm(member_id: int) -> internal_pb2.InternalRequest:
    return internal_pb2.InternalRequest(alarm=rpc_pb2.AlarmRequest(
        action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=member_id, alarm=rpc_pb2.CORRUPT))


class Integrity:
    """One member's integrity state. ``found`` and ``alarms_changed`` are called on the loop."""

    def __init__(self, member_id: int, name: str) -> None:
        self._member_id = member_id
        self._name = name
        #: What this member found damaged itself (first finding), or None.
        self.damage: str | None = None
        self._alarmed = False
        self._raise = asyncio.Event()

    def refusing(self) -> bool:
        return self.damage is not None or self._alarmed

    def found(self, exc: Exception) -> None:
        """A read met damaged data: refuse from now on, and raise the CORRUPT alarm for this member."""
        if self.damage is None:
            self.damage = str(exc)
            log.error("%s: %s; this member no longer serves data and raises the CORRUPT alarm "
                      "(replace it: remove it, empty its data dir, add it back)", self._name, exc)
            self._raise.set()

    def alarms_changed(self, alarms: list[rpc_pb2.AlarmMember]) -> None:
        alarmed = any(a.memberID == self._member_id and a.alarm == rpc_pb2.CORRUPT for a in alarms)
        if alarmed and not self._alarmed:
            log.error("%s: a CORRUPT alarm names this member; it no longer serves data", self._name)
        self._alarmed = alarmed

    def with_own_alarm(self, alarms: list[rpc_pb2.AlarmMember]) -> list[rpc_pb2.AlarmMember]:
        """``alarms`` plus this member's CORRUPT alarm if it found damage not yet in the replicated list."""
        if self.damage is not None and not any(
            a.memberID == self._member_id and a.alarm == rpc_pb2.CORRUPT for a in alarms
        ):
            return [*alarms, rpc_pb2.AlarmMember(memberID=self._member_id, alarm=rpc_pb2.CORRUPT)]
        return alarms

    async def run(self, propose: Propose) -> None:
        """Raise this member's CORRUPT alarm through the log once it found damage, until it is applied."""
        while True:
            await self._raise.wait()
            if self._alarmed:
                self._raise.clear()
                continue
            try:
                await propose(corrupt_alarm(self._member_id))
                self._raise.clear()
            except errors.EtcdException as exc:
                log.info("%s: raising the CORRUPT alarm failed (%s); will retry", self._name, exc)
                await asyncio.sleep(RETRY_SECONDS)

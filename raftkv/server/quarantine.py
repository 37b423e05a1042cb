"""Quarantine: how a member runs once its data cannot be trusted even by Raft.

Entered when the data dir fails its checks at start, or when a write or an apply the Raft loop depends on
meets damaged data (the loop cannot go on: the disk no longer holds what the core was told). The member
then records why in ``<data-dir>/quarantine`` (so every later start stays in quarantine until an operator
acts), restarts itself into this mode, and from then on

- takes no part in Raft (its peer port is closed; the others see it down),
- answers every client request but ``Status`` and ``Alarm`` with etcd's ``etcdserver: corrupt cluster``,
  and reports its CORRUPT alarm in both,
- has a healthy member raise that alarm through the log (``Maintenance/Alarm`` on another member's client
  URL, the way lease questions are forwarded), so ``alarm list`` anywhere shows it.

To recover, replace the member: ``member remove`` it, empty its data dir, ``member add`` it back and start
it (it catches up from a snapshot), then ``alarm disarm``. Deleting the marker file restarts it as before:
only for an operator who knows the finding was wrong.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import grpc
import lmdb

from raftkv import ETCD_VERSION, errors
from raftkv.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.server.backend import RevisionEvents
from raftkv.server.config import ServerConfig
from raftkv.server.integrity import quarantine_reason, remembered_members
from raftkv.server.member_channels import MemberChannels
from raftkv.server.node.world import exit_process
from raftkv.storage.env import SUB_DBS
from raftkv.storage.integrity import check_structure
from raftkv.storage.sealed import CorruptionError, SealedTxn

log = logging.getLogger("raftkv.quarantine")

#: How often a quarantined member retries handing its CORRUPT alarm to a healthy one.
FORWARD_RETRY_SECONDS = 2.0


def fatal_hook(data_dir: Path) -> Callable[[str], NoReturn]:
    """Production's ``Fatal`` for a node: restart into quarantine if the loop marked the data dir, else exit."""

    def fatal(reason: str) -> NoReturn:
        if quarantine_reason(data_dir) is not None:
            log.critical("%s; restarting this member in quarantine", reason)
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
        exit_process(reason)

    return fatal


def known_members(cfg: ServerConfig) -> list[rpc_pb2.Member]:
    """The member list as the damaged database still holds it, if its file and those records are sound;
    else as the node last wrote it beside the database."""
    return _stored_members(cfg.data_dir / "db") or remembered_members(cfg.data_dir)


def _stored_members(db_dir: Path) -> list[rpc_pb2.Member]:
    try:
        check_structure(db_dir)
        env = lmdb.open(str(db_dir), readonly=True, lock=False, max_dbs=len(SUB_DBS) + 2)
    except (CorruptionError, lmdb.Error):
        return []
    try:
        with env.begin() as raw:
            handle = env.open_db(b"members", txn=raw, create=False)
            txn = SealedTxn(raw, {handle: "members"})
            return [rpc_pb2.Member.FromString(value) for _, value in txn.cursor(db=handle)]
    except (CorruptionError, lmdb.Error, ValueError):
        return []
    finally:
        env.close()


class QuarantinedBackend:
    """The node as the services see it in quarantine: it serves Status and Alarm and refuses the rest
    (admission refuses before any other method could be called)."""

    def __init__(self, cfg: ServerConfig, reason: str) -> None:
        self.member_id = cfg.member_id
        self.cluster_id = cfg.cluster_id
        self.max_request_bytes = cfg.max_request_bytes
        self.max_txn_ops = 128
        self.reason = reason

    def refusing(self) -> bool:
        return True

    def found_corruption(self, exc: Exception) -> None:
        """Already quarantined."""

    def header(self) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(cluster_id=self.cluster_id, member_id=self.member_id)

    def alarms(self) -> list[rpc_pb2.AlarmMember]:
        return [rpc_pb2.AlarmMember(memberID=self.member_id, alarm=rpc_pb2.CORRUPT)]

    def status(self) -> rpc_pb2.StatusResponse:
        return rpc_pb2.StatusResponse(
            header=self.header(), version=ETCD_VERSION,
            errors=[f"memberID:{self.member_id} alarm:CORRUPT ", f"quarantined: {self.reason}"],
        )

    async def read_barrier(self, timeout: float) -> None:
        """Alarm lists are answered from what this member knows: it cannot ask the cluster."""

    def has_leader(self) -> bool:
        return False

    def is_leader(self) -> bool:
        return False

    def is_learner(self) -> bool:
        return False

    def current_revision(self) -> int:
        return 0

    def subscribe_applied(self, callback: Callable[[RevisionEvents], None]) -> Callable[[], None]:
        return lambda: None

    def __getattr__(self, name: str) -> Any:
        raise errors.CORRUPT.exception()


async def forward_alarm(cfg: ServerConfig, channels: MemberChannels) -> None:
    """Have another member raise this member's CORRUPT alarm through the log; retry until one does."""
    request = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=cfg.member_id,
                                   alarm=rpc_pb2.CORRUPT)
    while True:
        others = [m for m in known_members(cfg) if m.ID != cfg.member_id and m.clientURLs]
        if not others:
            log.error("%s: no other member's client URL is readable in the data dir; raise the alarm by hand: "
                      "etcdctl alarm ... (member %x)", cfg.name, cfg.member_id)
            return
        for member in others:
            try:
                await rpc_pb2_grpc.MaintenanceStub(channels.to(member.clientURLs[0])).Alarm(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                log.info("%s: %s did not take the CORRUPT alarm: %s", cfg.name, member.name, exc.details())
                continue
            log.warning("%s: %s raised this member's CORRUPT alarm", cfg.name, member.name)
            return
        await asyncio.sleep(FORWARD_RETRY_SECONDS)


#: Builds the client API server over a quarantined member's backend. The process's composition root
#: (``raftkv.main``) hands it in: the server layer does not import the API layer.
ClientServerFactory = Callable[["QuarantinedBackend"], grpc.aio.Server]


async def serve(cfg: ServerConfig, reason: str, stop: asyncio.Event, client_server: ClientServerFactory) -> int:
    """Run in quarantine until ``stop`` is set."""
    log.error("%s: quarantined: %s. This member takes no part in the cluster and serves no data. Replace it: "
              "member remove %x, empty %s, member add, start it; then alarm disarm", cfg.name, reason,
              cfg.member_id, cfg.data_dir)
    server = client_server(QuarantinedBackend(cfg, reason))
    await server.start()
    channels = MemberChannels(cfg.client_tls)
    forwarding = asyncio.create_task(forward_alarm(cfg, channels))
    await stop.wait()
    forwarding.cancel()
    await server.stop(grace=1.0)
    await channels.close()
    return 0

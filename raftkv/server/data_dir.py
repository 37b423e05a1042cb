"""A member's data directory: opened only if it is this member's, set up when it is new.

Everything a member derives from its flags for its store lives here, so that the process, the simulator
(which runs the same start-up on its simulated disk) and offline tools agree: the state machine's settings,
the founding membership, and the identity check before any write.
"""

from __future__ import annotations

import logging

from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.security.tls import ConfigError
from raftkv.server.config import ServerConfig, member_id_for
from raftkv.server.lessor import min_lease_ttl
from raftkv.statemachine.applier import ApplyConfig
from raftkv.statemachine.node_store import NodeStore
from raftkv.storage.raft_log import IdentityMismatch

log = logging.getLogger("raftkv")


def initial_members(cfg: ServerConfig) -> list[tuple[int, bytes]]:
    """(member id, ConfChange context) of every founding member, in --initial-cluster order."""
    out = []
    for name, url in cfg.initial_cluster:
        member = rpc_pb2.Member(ID=member_id_for(cfg.cluster_token, url), name=name, peerURLs=[url])
        out.append((member.ID, internal_pb2.MemberContext(member=member).SerializeToString()))
    return out


def apply_config(cfg: ServerConfig) -> ApplyConfig:
    """The replicated state machine's settings; every member must derive the same from the same flags."""
    return ApplyConfig(min_lease_ttl=min_lease_ttl(cfg.election_ms))


def open_store(cfg: ServerConfig) -> tuple[NodeStore, int]:
    """Open the data dir, checking it belongs to this cluster and member; bootstrap a brand-new cluster.
    Returns the store and this member's id."""
    store = NodeStore(
        cfg.data_dir,
        apply_config=apply_config(cfg),
        snapshot_catchup_entries=cfg.snapshot_catchup_entries,
        sync=cfg.planted_bug != "skip-fsync",
    )
    try:
        member_id = prepare_store(cfg, store)
    except BaseException:
        store.close()
        raise
    return store, member_id


def prepare_store(cfg: ServerConfig, store: NodeStore) -> int:
    """A store this member may run on: its own (identity checked before any write), or set up afresh as
    a founder of a new cluster (``--initial-cluster-state new``) or a member joining one (``existing``).
    Returns this member's id."""
    if store.is_initialized():
        return recorded_member_id(store, cfg)
    if cfg.initial_cluster_state == "new":
        store.bootstrap(cfg.cluster_id, cfg.member_id, initial_members(cfg))
    else:
        store.join(cfg.cluster_id, cfg.member_id)
    return cfg.member_id


def recorded_member_id(store: NodeStore, cfg: ServerConfig) -> int:
    """The id a data dir was created for, which the member keeps for good, as etcd keeps the id in its WAL.

    A member's id derives from the peer URL it first advertised, so after ``member update`` gave it another
    one the flags no longer name it. The data dir is still this member's if its member list names the
    recorded member ``--name`` (published once it first started), or gives it the URL advertised now: so a
    member restarts on its new URL whether or not it applied the update before it stopped (it learns the
    update as it catches up). Any other data dir is refused, so a member never starts on another's.
    A data dir whose member applied its own removal is refused too: the cluster will not hear it again, and
    a member added back at the same URL (the same id) must start from an empty data dir, as in etcd."""
    identity = store.log.identity()
    assert identity is not None, "recorded_member_id needs an initialized data dir"
    recorded = identity[1]
    record = next((m for m in store.members() if m.ID == recorded), None)
    advertised = cfg.advertise_peer_urls[0]
    ours = record is not None and (record.name == cfg.name or advertised in record.peerURLs)
    try:
        store.check_identity(cfg.cluster_id, recorded if ours else cfg.member_id)
    except IdentityMismatch as exc:
        raise ConfigError(f"--data-dir {cfg.data_dir} belongs to another cluster or member: {exc}") from None
    if recorded in store.removed_members():
        raise ConfigError(
            f"member {cfg.name} ({recorded:x}) was removed from the cluster (the member has been permanently "
            f"removed from the cluster): remove --data-dir {cfg.data_dir} before adding it back with member add"
        )
    if record is not None and advertised not in record.peerURLs:
        log.warning("member %x advertises %s, but its member list still gives it %s: it learns a member update "
                    "as it catches up (without one, the others go on dialling the old URL)", recorded, advertised,
                    ",".join(record.peerURLs))
    elif recorded != cfg.member_id:
        log.info("member %x now advertises %s, as member update recorded", recorded, advertised)
    return recorded

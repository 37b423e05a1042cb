"""What the etcd-compatible gRPC services need from the node they run on.

The server layer owns this seam (the node implements it; the API layer above calls it), so that imports
point one way: ``raftkv.api`` uses ``raftkv.server``, never the reverse. The services in ``raftkv.api``
translate etcd's wire protocol (validation, limits, error texts, streaming) and nothing else; every decision
about consensus, durability and leadership stays in the node driver
(``raftkv.server.node.Node``), which implements this protocol. Keeping the seam explicit lets each side be
read — and changed — without the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from raftkv.proto import internal_pb2, kv_pb2, rpc_pb2
from raftkv.statemachine.auth_store import AuthState
from raftkv.statemachine.mvcc import HistoryPage


@dataclass(frozen=True, slots=True)
class ClientSession:
    """Exactly-once identity of a write, from gRPC metadata ``raftkv-client-id`` / ``raftkv-seq`` (0 = none)."""

    client_id: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class RevisionEvents:
    """All events of one applied revision, in the order the request produced them (never split)."""

    revision: int
    events: tuple[kv_pb2.Event, ...]


class Backend(Protocol):
    """The node as the API layer sees it. All methods are called on the node's asyncio loop."""

    member_id: int
    cluster_id: int
    max_request_bytes: int
    max_txn_ops: int

    def header(self) -> rpc_pb2.ResponseHeader:
        """A header with this member's ids, current raft term and the current applied revision."""
        ...

    # --- consensus -------------------------------------------------------------------------------------
    async def propose(
        self, request: internal_pb2.InternalRequest, session: ClientSession, timeout: float
    ) -> internal_pb2.ApplyResult:
        """Replicate ``request`` (the node fills in ``header.id``), wait until applied, return its result.

        Raises ``raftkv.errors.EtcdException`` (no leader, timed out, leader changed, space exceeded, ...).
        Followers forward to the leader inside Raft; callers never see a redirect. During an election the
        request waits for a leader within ``timeout`` (a call with ``hasleader: true`` was refused before).
        """
        ...

    async def read_barrier(self, timeout: float) -> None:
        """Linearizable-read barrier (ReadIndex, batched): returns once this node has applied everything
        committed before the call. Raises EtcdException (no leader / timed out). Waits for a leader as
        ``propose`` does."""
        ...

    def has_leader(self) -> bool: ...

    def refusing(self) -> bool:
        """Whether this member may not serve its data (damage found, or a CORRUPT alarm names it)."""
        ...

    def found_corruption(self, exc: Exception) -> None:
        """A call met damaged data (``raftkv.storage.sealed.CorruptionError``): stop serving, raise the alarm."""
        ...

    def is_leader(self) -> bool: ...

    def is_learner(self) -> bool: ...

    # --- local reads (serializable, or after read_barrier) -------------------------------------------------
    def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """Serve a RangeRequest from the local state machine (raises EtcdException for compacted/future revision).
        The header holds the revision of the view read; its ids and term are the API's to fill (``with_header``)."""
        ...

    def read_only_txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """Serve a transaction ``statemachine.requests.is_read_only`` accepts from the local state machine, in
        one read view (raises EtcdException as ``range`` does)."""
        ...

    def current_revision(self) -> int: ...

    def compact_revision(self) -> int: ...

    def history_page(
        self, start_revision: int, key: bytes, range_end: bytes, *, prev_kv: bool, max_bytes: int
    ) -> HistoryPage:
        """One bounded step of the MVCC history from ``start_revision`` (events matching the range, whole
        revisions, scanning about ``max_bytes``); the page says where the next step starts.

        Raises EtcdException(COMPACTED) if start_revision < compact_revision."""
        ...

    def subscribe_applied(self, callback: Callable[[RevisionEvents], None]) -> Callable[[], None]:
        """Call ``callback`` for every newly applied revision that produced events, in revision order, on the
        loop, right after apply. Returns an unsubscribe function."""
        ...

    # --- authentication ---------------------------------------------------------------------------------
    def auth_state(self) -> AuthState:
        """Users, roles and permissions as of the last apply on this member."""
        ...

    async def token_user(self, token: str, timeout: float) -> str | None:
        """The user a simple token stands for on this member (its TTL refreshed), waiting up to ``timeout``
        for a token issued by an entry this member has not applied yet; None if it is not valid."""
        ...

    # --- leases ---------------------------------------------------------------------------------------------
    async def lease_keep_alive(self, lease_id: int, timeout: float) -> int:
        """Renew on the leader (forwarded when called on a follower); returns the TTL, 0 if the lease is gone."""
        ...

    async def lease_time_to_live(
        self, lease_id: int, keys: bool, timeout: float
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        """Remaining TTL as the leader sees it (forwarded when called on a follower); TTL -1 if not found."""
        ...

    def lease_ids(self) -> list[int]: ...

    # --- membership and maintenance -----------------------------------------------------------------------
    def members(self) -> list[rpc_pb2.Member]: ...

    async def member_add(self, peer_urls: list[str], is_learner: bool, timeout: float) -> rpc_pb2.Member: ...

    async def member_remove(self, member_id: int, timeout: float) -> None: ...

    async def member_update(self, member_id: int, peer_urls: list[str], timeout: float) -> None: ...

    async def member_promote(self, member_id: int, timeout: float) -> None: ...

    def status(self) -> rpc_pb2.StatusResponse: ...

    def alarms(self) -> list[rpc_pb2.AlarmMember]: ...

    async def move_leader(self, target_id: int, timeout: float) -> None: ...

    async def defragment(self) -> None: ...

    async def hash_kv(self, revision: int) -> rpc_pb2.HashKVResponse:
        """etcd's HashKV at ``revision`` (0 = current); raises EtcdException for compacted/future revisions."""
        ...

    def snapshot_chunks(self) -> AsyncIterator[bytes]:
        """The whole state-machine database as a stream of chunks, from one consistent read view."""
        ...

"""What a client is told when the Raft core refuses its proposal, read or membership change."""

from __future__ import annotations

from raftkv import errors
from raftkv.core.types import DropReason, ProposalDropped

_UNKNOWN = errors.NO_LEADER.code.__class__.UNKNOWN

_BY_REASON = {
    DropReason.NO_LEADER: errors.NO_LEADER,
    DropReason.TRANSFERRING: errors.LEADER_CHANGED,
    DropReason.UNCOMMITTED_LIMIT: errors.TOO_MANY_REQUESTS,
}


def dropped_error(exc: ProposalDropped) -> errors.EtcdError:
    """The etcd error for a refusal; reasons etcd has no error for keep the core's words."""
    known = _BY_REASON.get(exc.reason)
    return known if known is not None else errors.EtcdError(_UNKNOWN, f"etcdserver: {exc}")


def result_error(message: str) -> errors.EtcdError:
    """The etcd error an ``ApplyResult.error`` text stands for (unknown texts keep their words)."""
    return errors.from_message(message) or errors.EtcdError(_UNKNOWN, message)

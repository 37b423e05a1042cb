"""What a client is told when the Raft core refuses its proposal, read or membership change."""

from __future__ import annotations

from raftkv import errors

_UNKNOWN = errors.NO_LEADER.code.__class__.UNKNOWN


def dropped_error(reason: str) -> errors.EtcdError:
    """The etcd error for a ``ProposalDropped`` reason."""
    if "no leader" in reason:
        return errors.NO_LEADER
    if "transfer" in reason:
        return errors.LEADER_CHANGED
    if "uncommitted" in reason:
        return errors.TOO_MANY_REQUESTS
    return errors.EtcdError(_UNKNOWN, f"etcdserver: {reason}")


def result_error(message: str) -> errors.EtcdError:
    """The etcd error an ``ApplyResult.error`` text stands for (unknown texts keep their words)."""
    return errors.from_message(message) or errors.EtcdError(_UNKNOWN, message)

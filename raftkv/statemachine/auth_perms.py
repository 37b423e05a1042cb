"""Key-range permissions as etcd 3.4 evaluates them (``auth/range_perm_cache.go``): pure functions of the
roles' permissions, no storage.

A user's rights are the union of its roles' permissions, one set of intervals for READ and one for WRITE
(READWRITE adds to both). A permission's ``range_end`` follows etcd's encoding: empty means the single key,
``"\\0"`` means every key from ``key`` on, anything else the half-open range ``[key, range_end)``.

A request for one key is allowed when some interval holds the key. A request for a range is allowed only
when the intervals that overlap it cover it whole, without a gap: etcd's ``IntervalTree.Contains``. Touching
intervals (one ends where the next begins) count as contiguous, as in etcd.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from raftkv.proto import auth_pb2

#: An interval [begin, end); end None is +infinity (etcd's affine "empty" end).
Interval = tuple[bytes, bytes | None]

READ = auth_pb2.Permission.READ
WRITE = auth_pb2.Permission.WRITE
READWRITE = auth_pb2.Permission.READWRITE


def _lt(a: bytes | None, b: bytes | None) -> bool:
    """a < b where None is +infinity."""
    if a is None:
        return False
    return b is None or a < b


def permission_interval(key: bytes, range_end: bytes) -> Interval:
    """The interval a granted permission stands for."""
    if not range_end:
        return key, key + b"\0"  # etcd's affine point: exactly the one key
    return key, None if range_end == b"\0" else range_end


@dataclass(frozen=True, slots=True)
class UnifiedPermissions:
    """The union of one user's permissions; intervals sorted by their beginning."""

    read: tuple[Interval, ...]
    write: tuple[Interval, ...]

    @classmethod
    def of(cls, permissions: Iterable[auth_pb2.Permission]) -> UnifiedPermissions:
        read: list[Interval] = []
        write: list[Interval] = []
        for perm in permissions:
            interval = permission_interval(perm.key, perm.range_end)
            if perm.permType in (READ, READWRITE):
                read.append(interval)
            if perm.permType in (WRITE, READWRITE):
                write.append(interval)
        order = lambda iv: (iv[0], iv[1] is None, iv[1] or b"")  # noqa: E731 - a sort key, named for reading
        return cls(tuple(sorted(read, key=order)), tuple(sorted(write, key=order)))

    def allows(self, perm_type: int, key: bytes, range_end: bytes = b"") -> bool:
        """Whether a request of ``perm_type`` (READ or WRITE) on ``key`` / ``range_end`` is covered."""
        intervals = self.read if perm_type == READ else self.write
        if not range_end:
            return any(begin <= key and _lt(key, end) for begin, end in intervals)
        return _covers(intervals, key, None if range_end == b"\0" else range_end)


def _covers(intervals: tuple[Interval, ...], begin: bytes, end: bytes | None) -> bool:
    """etcd's ``Contains``: the intervals overlapping [begin, end) are contiguous and span it."""
    min_begin: bytes | None = None
    max_end: bytes | None = b""
    for ivl_begin, ivl_end in intervals:
        if not (_lt(ivl_begin, end) and _lt(begin, ivl_end)):
            continue  # no overlap with the request
        if min_begin is None:
            min_begin, max_end = ivl_begin, ivl_end
            continue
        if _lt(max_end, ivl_begin):
            return False  # a gap
        if _lt(max_end, ivl_end):
            max_end = ivl_end
    return min_begin is not None and min_begin <= begin and not _lt(max_end, end)

"""The shape rules of every request that can enter the Raft log: one owner for each rule.

A rule here is a pure function of the request (no state, no configuration), so it answers the same on
every member for the same bytes. The API layer calls these checks before proposing, so a malformed request
is refused with etcd's error and never reaches the log; the applier calls them again on every entry it
decodes, so an entry that did get in (an older member, a forged append, a bug) becomes the same error
result on every member instead of an exception inside the state machine. Checks that depend on state
(a lease exists, a revision is compacted) belong to the request's apply, in ``requests`` and ``leases``.

Every field of every request in the log, and its rule (etcd's text where etcd has one):

==================  =====================  ==============================================================
request             field                  rule
==================  =====================  ==============================================================
Put                 key                    given (KEY_NOT_PROVIDED); at most MAX_KEY_BYTES
                                           (REQUEST_TOO_LARGE: LMDB's key limit, which etcd lacks)
                    value / lease          none set together with ``ignore_value`` / ``ignore_lease``
                                           (VALUE_PROVIDED / LEASE_PROVIDED); any lease id, the lease
                                           must exist (state)
Range (in a txn)    key, range_end         as Put's key; range_end at most MAX_KEY_BYTES
                    sort_order/target      one of the enum's values (INVALID_SORT_OPTION, etcd 3.5's)
                    revision, limit, ...   any int64 (<= 0 means "current" / "no limit", as in etcd)
DeleteRange         key, range_end         as Range's
Txn                 compare[].key          given, at most MAX_KEY_BYTES (range_end likewise)
                    compare[].target       one of the enum's values (INVALID_COMPARE)
                    compare[].result       one of the enum's values (INVALID_COMPARE)
                    success/failure[]      each op set (KEY_NOT_FOUND, as etcd) and valid as above;
                                           etcd's op budget (TOO_MANY_OPS); nesting at most
                                           MAX_TXN_DEPTH (TXN_TOO_DEEP); no key written twice in a
                                           branch (DUPLICATE_KEY)
Compaction          revision               any (state: COMPACTED / FUTURE_REV)
LeaseGrant          TTL                    at most MAX_LEASE_TTL (LEASE_TTL_TOO_LARGE); small ones are
                                           raised to the minimum when applied
                    ID                     any int64; 0 lets the state machine choose
LeaseRevoke         ID                     any int64 (state: LEASE_NOT_FOUND)
Alarm               action, alarm          one of the enums' values (INVALID_ALARM); memberID any
LeaseCheckpoint,    all                    any (proposed by members themselves)
publish_member
==================  =====================  ==============================================================

Why nesting has a bound of its own: the log stores a request as one protobuf message, and protobuf's
decoder refuses messages nested deeper than 100 levels; each nested txn costs two. etcd's op budget alone
allows 128 levels, so without this bound the API would accept a txn that no member could decode again.
MAX_TXN_DEPTH keeps requests (and their responses, which nest alike) far below that limit.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.message import Message

from raftkv import errors
from raftkv.proto import internal_pb2, rpc_pb2

#: LMDB keys are at most 511 bytes and ``lease_keys`` prefixes user keys with an 8-byte lease id.
MAX_KEY_BYTES = 503
#: etcd's ``--max-txn-ops`` default: the widest level of a txn, and the budget its nested txns share.
MAX_TXN_OPS = 128
#: How deeply txns may nest (a txn without nested txns has depth 1); see the module docstring.
MAX_TXN_DEPTH = 16
#: etcd's largest lease TTL in seconds (``lease.MaxLeaseTTL``).
MAX_LEASE_TTL = 9_000_000_000

_SORT_ORDERS = frozenset(rpc_pb2.RangeRequest.SortOrder.values())
_SORT_TARGETS = frozenset(rpc_pb2.RangeRequest.SortTarget.values())
_COMPARE_TARGETS = frozenset(rpc_pb2.Compare.CompareTarget.values())
_COMPARE_RESULTS = frozenset(rpc_pb2.Compare.CompareResult.values())
_ALARM_ACTIONS = frozenset(rpc_pb2.AlarmRequest.AlarmAction.values())
_ALARM_TYPES = frozenset(rpc_pb2.AlarmType.values())


def check_request(request: internal_pb2.InternalRequest) -> None:
    """Every shape rule for the request an entry carries; raises ``EtcdException``."""
    kind = request.WhichOneof("request")
    if kind is None:
        raise errors.MALFORMED_REQUEST.exception()
    body = getattr(request, kind)
    if kind == "txn":
        check_txn(body)
    elif (check := _CHECKS.get(type(body))) is not None:
        check(body)
    # compaction, lease_revoke, lease_checkpoint, publish_member: every value of every field is valid.


def check_key(key: bytes, range_end: bytes = b"") -> None:
    """Keys must be given, and fit LMDB's key size (a limit etcd does not have: refused as too large)."""
    if not key:
        raise errors.KEY_NOT_PROVIDED.exception()
    if len(key) > MAX_KEY_BYTES or len(range_end) > MAX_KEY_BYTES:
        raise errors.REQUEST_TOO_LARGE.exception()


def check_range(request: rpc_pb2.RangeRequest) -> None:
    """etcd 3.5's ``checkRangeRequest``: a key, and sort options it knows (3.4 crashed on unknown ones)."""
    check_key(request.key, request.range_end)
    if request.sort_order not in _SORT_ORDERS or request.sort_target not in _SORT_TARGETS:
        raise errors.INVALID_SORT_OPTION.exception()


def check_put(request: rpc_pb2.PutRequest) -> None:
    """etcd's ``checkPutRequest``, plus the key size."""
    check_key(request.key)
    if request.ignore_value and request.value:
        raise errors.VALUE_PROVIDED.exception()
    if request.ignore_lease and request.lease:
        raise errors.LEASE_PROVIDED.exception()


def check_delete_range(request: rpc_pb2.DeleteRangeRequest) -> None:
    check_key(request.key, request.range_end)


def check_lease_grant(request: rpc_pb2.LeaseGrantRequest) -> None:
    """etcd clamps small TTLs up to its minimum but refuses ones above ``MAX_LEASE_TTL``."""
    if request.TTL > MAX_LEASE_TTL:
        raise errors.LEASE_TTL_TOO_LARGE.exception()


def check_alarm(request: rpc_pb2.AlarmRequest) -> None:
    """Known actions and alarm types only (etcd 3.4 stops a member on an unknown action)."""
    if request.action not in _ALARM_ACTIONS or request.alarm not in _ALARM_TYPES:
        raise errors.INVALID_ALARM.exception()


def check_txn(request: rpc_pb2.TxnRequest, max_ops: int = MAX_TXN_OPS) -> None:
    """The one txn rule: etcd's ``checkTxnRequest`` (with each field's rule and the depth bound), then
    etcd's ``checkIntervals`` on both branches.

    Keys written twice are looked for only after the shape check passed, so the op budget and depth bound
    the work; the search itself is O(n log n) (as etcd's interval tree), not quadratic."""
    _check_txn_shape(request, max_ops, 1)
    _check_intervals(request.success)
    _check_intervals(request.failure)


def _check_txn_shape(request: rpc_pb2.TxnRequest, max_ops: int, depth: int) -> None:
    """The widest of compare/success/failure bounds the op count at each level, and a nested
    transaction gets what is left of the budget (etcd's rule)."""
    if depth > MAX_TXN_DEPTH:
        raise errors.TXN_TOO_DEEP.exception()
    ops = max(len(request.compare), len(request.success), len(request.failure))
    if ops > max_ops:
        raise errors.TOO_MANY_OPS.exception()
    for compare in request.compare:
        check_key(compare.key, compare.range_end)
        if compare.target not in _COMPARE_TARGETS or compare.result not in _COMPARE_RESULTS:
            raise errors.INVALID_COMPARE.exception()
    for op in (*request.success, *request.failure):
        _check_request_op(op, max_ops - ops, depth)


def _check_request_op(op: rpc_pb2.RequestOp, max_ops: int, depth: int) -> None:
    kind = op.WhichOneof("request")
    if kind is None:
        # An empty RequestOp: etcd answers with its "key not found" error.
        raise errors.KEY_NOT_FOUND.exception()
    if kind == "request_txn":
        _check_txn_shape(op.request_txn, max_ops, depth + 1)
    else:
        _CHECKS[type(getattr(op, kind))](getattr(op, kind))


#: The rule of each request that is checked alone, by message type (as a log entry or as a txn's op).
_CHECKS: dict[type[Message], Callable[[Any], None]] = {
    rpc_pb2.RangeRequest: check_range,
    rpc_pb2.PutRequest: check_put,
    rpc_pb2.DeleteRangeRequest: check_delete_range,
    rpc_pb2.LeaseGrantRequest: check_lease_grant,
    rpc_pb2.AlarmRequest: check_alarm,
}


#: Greater than every key ``check_key`` lets through: the end of an interval open to the right.
_INFINITY = b"\xff" * (MAX_KEY_BYTES + 1)


class _DeletedKeys:
    """The union of a branch's delete ranges, as sorted disjoint half-open intervals [start, end)."""

    def __init__(self) -> None:
        self.starts: list[bytes] = []
        self.ends: list[bytes] = []

    def add(self, key: bytes, range_end: bytes) -> None:
        """etcd's (key, range_end): empty end = the key alone; ``\\0`` = every key >= key."""
        end = key + b"\0" if not range_end else _INFINITY if range_end == b"\0" else range_end
        if end <= key:
            return  # an empty range deletes nothing
        first = bisect.bisect_left(self.ends, key)  # the first interval that ends at or after ``key``
        last = bisect.bisect_right(self.starts, end)  # past the last one starting at or before ``end``
        if first < last:
            key, end = min(key, self.starts[first]), max(end, self.ends[last - 1])
        self.starts[first:last] = [key]
        self.ends[first:last] = [end]

    def extend(self, other: _DeletedKeys) -> None:
        for start, end in zip(other.starts, other.ends):
            self.add(start, b"\0" if end == _INFINITY else end)

    def __contains__(self, key: bytes) -> bool:
        at = bisect.bisect_right(self.starts, key) - 1
        return at >= 0 and key < self.ends[at]


def _check_intervals(ops: Sequence[rpc_pb2.RequestOp]) -> tuple[set[bytes], _DeletedKeys]:
    """etcd's ``checkIntervals``: DUPLICATE_KEY if a branch puts a key twice, or puts a key inside a range
    it deletes (nested transactions included; their then/else may share a key). Returns the branch's
    puts and deletes, nested ones merged."""
    dels = _DeletedKeys()
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            dels.add(op.request_delete_range.key, op.request_delete_range.range_end)
    puts: set[bytes] = set()

    def add_put(key: bytes, exempt: set[bytes]) -> None:
        if (key in puts and key not in exempt) or key in dels:
            raise errors.DUPLICATE_KEY.exception()
        puts.add(key)

    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = _check_intervals(op.request_txn.success)
        puts_else, dels_else = _check_intervals(op.request_txn.failure)
        for k in puts_then:
            add_put(k, set())
        for k in puts_else:
            add_put(k, puts_then)  # then/else are mutually exclusive: the same key in both is fine
        dels.extend(dels_then)
        dels.extend(dels_else)
    for op in ops:
        if op.WhichOneof("request") == "request_put":
            add_put(op.request_put.key, set())
    return puts, dels

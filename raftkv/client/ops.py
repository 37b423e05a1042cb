"""Request builders and the transaction DSL, shared by both clients and by kvctl.

    txn().if_(value("k") == "v").then(put("k", "w")).else_(get("k"))

``value/version/create_revision/mod_revision/lease`` name a compare target; comparing one with ``==``,
``!=``, ``<`` or ``>`` yields a ``Compare``. ``get/put/delete`` build the operations of either branch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Self

from raftkv.client.types import Key, to_bytes
from raftkv.keys import prefix_end as prefix_end
from raftkv.proto import rpc_pb2

SORT_ORDERS = {"none": 0, "ascend": 1, "descend": 2}
SORT_TARGETS = {"key": 0, "version": 1, "create": 2, "mod": 3, "value": 4}


def key_range(key: Key, range_end: Key | None = None, *, prefix: bool = False,
              from_key: bool = False) -> tuple[bytes, bytes]:
    """(key, range_end) on the wire for a single key, an explicit range, a prefix or ``key..end``."""
    k = to_bytes(key)
    if sum((range_end is not None, prefix, from_key)) > 1:
        raise ValueError("give at most one of range_end, prefix, from_key")
    if prefix:
        return (k or b"\0"), prefix_end(k)
    if from_key:
        return (k or b"\0"), b"\0"
    return k, (to_bytes(range_end) if range_end is not None else b"")


def range_request(key: Key, range_end: Key | None = None, *, prefix: bool = False, from_key: bool = False,
                  revision: int = 0, serializable: bool = False, keys_only: bool = False,
                  count_only: bool = False, limit: int = 0, sort_order: str = "none",
                  sort_target: str = "key") -> rpc_pb2.RangeRequest:
    k, end = key_range(key, range_end, prefix=prefix, from_key=from_key)
    try:
        order, target = SORT_ORDERS[sort_order.lower()], SORT_TARGETS[sort_target.lower()]
    except KeyError as exc:
        raise ValueError(f"bad sort option {exc.args[0]!r}") from None
    return rpc_pb2.RangeRequest(
        key=k, range_end=end, revision=revision, serializable=serializable, keys_only=keys_only,
        count_only=count_only, limit=limit, sort_order=order, sort_target=target,  # type: ignore[arg-type]
    )


def put_request(key: Key, value: Key, *, lease: int = 0, prev_kv: bool = False) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=to_bytes(key), value=to_bytes(value), lease=lease, prev_kv=prev_kv)


def delete_request(key: Key, range_end: Key | None = None, *, prefix: bool = False, from_key: bool = False,
                   prev_kv: bool = False) -> rpc_pb2.DeleteRangeRequest:
    k, end = key_range(key, range_end, prefix=prefix, from_key=from_key)
    return rpc_pb2.DeleteRangeRequest(key=k, range_end=end, prev_kv=prev_kv)


# ----------------------------------------------------------------------------- transaction operations

@dataclass(frozen=True)
class Op:
    """One operation of a transaction branch."""

    request: rpc_pb2.RequestOp

    @property
    def is_read(self) -> bool:
        return bool(self.request.WhichOneof("request") == "request_range")


def get(key: Key, range_end: Key | None = None, **options: object) -> Op:
    """A read inside a txn; ``options`` as for ``range_request`` (prefix, limit, keys_only, ...)."""
    return Op(rpc_pb2.RequestOp(request_range=range_request(key, range_end, **options)))  # type: ignore[arg-type]


def put(key: Key, value: Key, *, lease: int = 0, prev_kv: bool = False) -> Op:
    return Op(rpc_pb2.RequestOp(request_put=put_request(key, value, lease=lease, prev_kv=prev_kv)))


def delete(key: Key, range_end: Key | None = None, *, prefix: bool = False, prev_kv: bool = False) -> Op:
    return Op(rpc_pb2.RequestOp(request_delete_range=delete_request(key, range_end, prefix=prefix,
                                                                    prev_kv=prev_kv)))


# ----------------------------------------------------------------------------- comparisons

@dataclass(frozen=True)
class Compare:
    compare: rpc_pb2.Compare


class _Target:
    """A compare target: the value, version, revisions or lease of a key (or of a whole ``range_end``).

    Comparison operators build ``Compare`` values instead of booleans, which is why instances are
    unhashable."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, target: int, field: str, key: Key, range_end: Key | None, convert: type) -> None:
        self._target, self._field, self._convert = target, field, convert
        self._key, self._range_end = to_bytes(key), to_bytes(range_end) if range_end is not None else b""

    def _make(self, result: int, operand: object) -> Compare:
        value = to_bytes(operand) if self._convert is bytes else int(operand)  # type: ignore[arg-type,call-overload]
        fields: dict[str, object] = {self._field: value}
        compare = rpc_pb2.Compare(result=result, target=self._target, key=self._key,  # type: ignore[arg-type]
                                  range_end=self._range_end, **fields)  # type: ignore[arg-type]
        return Compare(compare)

    def __eq__(self, other: object) -> Compare:  # type: ignore[override]
        return self._make(rpc_pb2.Compare.EQUAL, other)

    def __ne__(self, other: object) -> Compare:  # type: ignore[override]
        return self._make(rpc_pb2.Compare.NOT_EQUAL, other)

    def __gt__(self, other: object) -> Compare:
        return self._make(rpc_pb2.Compare.GREATER, other)

    def __lt__(self, other: object) -> Compare:
        return self._make(rpc_pb2.Compare.LESS, other)


def value(key: Key, range_end: Key | None = None) -> _Target:
    return _Target(rpc_pb2.Compare.VALUE, "value", key, range_end, bytes)


def version(key: Key, range_end: Key | None = None) -> _Target:
    """A key's version: 0 if it does not exist, so ``version(k) == 0`` means "absent"."""
    return _Target(rpc_pb2.Compare.VERSION, "version", key, range_end, int)


def create_revision(key: Key, range_end: Key | None = None) -> _Target:
    return _Target(rpc_pb2.Compare.CREATE, "create_revision", key, range_end, int)


def mod_revision(key: Key, range_end: Key | None = None) -> _Target:
    return _Target(rpc_pb2.Compare.MOD, "mod_revision", key, range_end, int)


def lease(key: Key, range_end: Key | None = None) -> _Target:
    return _Target(rpc_pb2.Compare.LEASE, "lease", key, range_end, int)


class TxnBuilder:
    """Accumulates compares and branches; ``request()`` gives the TxnRequest.

    Clients hand out a subclass whose ``commit()`` sends it."""

    def __init__(self) -> None:
        self._compares: list[Compare] = []
        self._success: list[Op] = []
        self._failure: list[Op] = []

    def if_(self, *compares: Compare) -> Self:
        self._compares.extend(compares)
        return self

    def then(self, *ops: Op) -> Self:
        self._success.extend(ops)
        return self

    def else_(self, *ops: Op) -> Self:
        self._failure.extend(ops)
        return self

    @property
    def is_read_only(self) -> bool:
        return all(op.is_read for op in (*self._success, *self._failure))

    def request(self) -> rpc_pb2.TxnRequest:
        return txn_request(self._compares, self._success, self._failure)


def txn_request(compares: Iterable[Compare], success: Iterable[Op], failure: Iterable[Op]) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(
        compare=[c.compare for c in compares],
        success=[op.request for op in success],
        failure=[op.request for op in failure],
    )

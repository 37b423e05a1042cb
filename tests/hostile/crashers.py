"""The requests that took raftkv down, one per crasher class, with raftkv's answer and etcd 3.4's.

Before the apply was total and the boundary checked every field, each of these passed the API, was
committed, and raised inside the applier on every member (``KeyError``, ``AssertionError``,
``struct.error``, LMDB's key-size error, protobuf's depth limit), again on every restart. etcd's answers
are what it does with the same bytes: where it answers normally raftkv refuses on purpose (an unknown
comparison that etcd counts as true would turn a compare-and-swap into an unconditional write), and where
etcd stops the member that served the call, raftkv refuses too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from raftkv import errors
from raftkv.proto import rpc_pb2, rpc_pb2_grpc

from .strategies import nested_txn

#: etcd answered normally (the reply is not compared: ids and revisions differ).
OK = "ok"
#: etcd's member that served the call exited (it restarts cleanly).
CRASH = "crash"

Answer = str | tuple[grpc.StatusCode, str]
_STUBS: dict[str, Callable[[grpc.Channel], Any]] = {
    "KV": rpc_pb2_grpc.KVStub, "Lease": rpc_pb2_grpc.LeaseStub, "Maintenance": rpc_pb2_grpc.MaintenanceStub,
}


@dataclass(frozen=True)
class Step:
    service: str
    method: str
    request: Message

    def call(self, channel: grpc.Channel, timeout: float = 10.0) -> Answer:
        try:
            getattr(_STUBS[self.service](channel), self.method)(self.request, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()  # type: ignore[attr-defined]
        return OK


@dataclass(frozen=True)
class Crasher:
    name: str
    steps: tuple[Step, ...]  # the answer compared is the last step's
    raftkv: Answer
    etcd: Answer


def _err(error: errors.EtcdError) -> tuple[grpc.StatusCode, str]:
    return error.code, error.message


def _txn(**fields: Any) -> Step:
    return Step("KV", "Txn", rpc_pb2.TxnRequest(**fields))


_PUT = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"/crasher/written", value=b"v"))
_BAD_SORT = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"/crasher/", sort_target=99))
_ACTIVATE = rpc_pb2.AlarmRequest.ACTIVATE

CRASHERS = [
    # protobuf's depth limit when the log entry was decoded; etcd (no limit) answers.
    Crasher("txn-nested-40-deep", (Step("KV", "Txn", nested_txn(40)),), _err(errors.TXN_TOO_DEEP), OK),
    # KeyError on the unknown target; etcd compares it as equal to zero.
    Crasher("compare-target-out-of-range", (_txn(compare=[rpc_pb2.Compare(key=b"/crasher/k", target=99)], success=[_PUT]),),
            _err(errors.INVALID_COMPARE), OK),
    # AssertionError on the unknown result; etcd counts it as true.
    Crasher("compare-result-out-of-range", (_txn(compare=[rpc_pb2.Compare(key=b"/crasher/k", result=-3)], success=[_PUT]),),
            _err(errors.INVALID_COMPARE), OK),
    # KeyError on the unknown sort target inside a txn (raftkv logs every txn). etcd serves this read-only
    # txn on the member alone and crashes it; with a write in it, etcd would crash every member.
    Crasher("txn-range-sort-target-out-of-range", (_txn(success=[_BAD_SORT]),), _err(errors.INVALID_SORT_OPTION), CRASH),
    # A plain Range with it: raftkv answered UNKNOWN with a Python traceback's text; etcd crashes.
    Crasher("range-sort-order-out-of-range", (Step("KV", "Range", rpc_pb2.RangeRequest(key=b"/crasher/", sort_target=7)),),
            _err(errors.INVALID_SORT_OPTION), CRASH),
    # struct.error packing a negative lease id into the lease's key index; etcd takes negative ids.
    Crasher("negative-lease-id", (
        Step("Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(ID=-7, TTL=60)),
        Step("KV", "Put", rpc_pb2.PutRequest(key=b"/crasher/leased", value=b"v", lease=-7)),
        Step("Lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=-7)),
    ), OK, OK),
    # struct.error packing a negative alarm type; etcd stores the bogus alarm.
    Crasher("alarm-type-out-of-range", (Step("Maintenance", "Alarm", rpc_pb2.AlarmRequest(action=_ACTIVATE, memberID=1, alarm=-1)),),
            _err(errors.INVALID_ALARM), OK),
    # Not a raftkv crasher (it listed alarms), but etcd's: an unknown alarm action.
    Crasher("alarm-action-out-of-range", (Step("Maintenance", "Alarm", rpc_pb2.AlarmRequest(action=99)),),
            _err(errors.INVALID_ALARM), CRASH),
    # LMDB's BadValsizeError looking up a compare key longer than LMDB keys may be; etcd answers.
    Crasher("compare-key-too-long", (_txn(compare=[rpc_pb2.Compare(key=b"k" * 600)], success=[_PUT]),),
            _err(errors.REQUEST_TOO_LARGE), OK),
]

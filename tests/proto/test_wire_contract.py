"""Spot checks of the wire contract against etcd v3.4 (numbers from the research notes, not from our .proto).

Field names may differ from etcd's without harm; numbers, types, packages and method paths may not.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from raftkv.core import types
from raftkv.proto import internal_pb2, kv_pb2, raft_pb2, rpc_pb2, v3election_pb2, v3lock_pb2


@pytest.mark.parametrize(
    ("message", "field", "number"),
    [
        (rpc_pb2.Compare.DESCRIPTOR, "range_end", 64),
        (rpc_pb2.Compare.DESCRIPTOR, "lease", 8),
        (rpc_pb2.WatchResponse.DESCRIPTOR, "events", 11),
        (rpc_pb2.WatchResponse.DESCRIPTOR, "fragment", 7),
        (rpc_pb2.WatchCreateRequest.DESCRIPTOR, "watch_id", 7),
        (rpc_pb2.WatchRequest.DESCRIPTOR, "progress_request", 3),
        (rpc_pb2.RangeRequest.DESCRIPTOR, "max_create_revision", 13),
        (rpc_pb2.RangeResponse.DESCRIPTOR, "count", 4),
        (rpc_pb2.PutRequest.DESCRIPTOR, "ignore_lease", 6),
        (rpc_pb2.RequestOp.DESCRIPTOR, "request_txn", 4),
        (rpc_pb2.LeaseTimeToLiveResponse.DESCRIPTOR, "grantedTTL", 4),
        (rpc_pb2.Member.DESCRIPTOR, "isLearner", 5),
        (rpc_pb2.StatusResponse.DESCRIPTOR, "isLearner", 10),
        (rpc_pb2.StatusResponse.DESCRIPTOR, "raftAppliedIndex", 7),
        (rpc_pb2.HashKVResponse.DESCRIPTOR, "compact_revision", 3),
        (rpc_pb2.SnapshotResponse.DESCRIPTOR, "blob", 3),
        (rpc_pb2.ResponseHeader.DESCRIPTOR, "raft_term", 4),
        (kv_pb2.KeyValue.DESCRIPTOR, "lease", 6),
        (kv_pb2.Event.DESCRIPTOR, "prev_kv", 3),
    ],
)
def test_field_numbers(message: Descriptor, field: str, number: int) -> None:
    assert message.fields_by_name[field].number == number


def test_signedness_where_clients_care() -> None:
    """Revisions and lease ids are signed, member ids unsigned: a mismatch changes the varint encoding."""
    assert rpc_pb2.ResponseHeader.DESCRIPTOR.fields_by_name["revision"].type == FieldDescriptor.TYPE_INT64
    assert rpc_pb2.ResponseHeader.DESCRIPTOR.fields_by_name["member_id"].type == FieldDescriptor.TYPE_UINT64
    assert rpc_pb2.LeaseGrantRequest.DESCRIPTOR.fields_by_name["ID"].type == FieldDescriptor.TYPE_INT64
    assert rpc_pb2.HashKVResponse.DESCRIPTOR.fields_by_name["hash"].type == FieldDescriptor.TYPE_UINT32


@pytest.mark.parametrize(
    ("service", "method", "client_streaming", "server_streaming"),
    [
        ("KV", "Range", False, False),
        ("KV", "Compact", False, False),
        ("Watch", "Watch", True, True),
        ("Lease", "LeaseKeepAlive", True, True),
        ("Lease", "LeaseLeases", False, False),
        ("Cluster", "MemberPromote", False, False),
        ("Maintenance", "Snapshot", False, True),
        ("Maintenance", "MoveLeader", False, False),
        ("Auth", "Authenticate", False, False),
        ("Auth", "RoleRevokePermission", False, False),
    ],
)
def test_method_paths(service: str, method: str, client_streaming: bool, server_streaming: bool) -> None:
    descriptor = rpc_pb2.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    assert f"/{descriptor.containing_service.full_name}/{descriptor.name}" == f"/etcdserverpb.{service}/{method}"
    assert (descriptor.client_streaming, descriptor.server_streaming) == (client_streaming, server_streaming)


def test_packages() -> None:
    assert rpc_pb2.DESCRIPTOR.package == "etcdserverpb"
    assert kv_pb2.DESCRIPTOR.package == "mvccpb"
    assert internal_pb2.DESCRIPTOR.package == "raftkvpb"


@pytest.mark.parametrize(
    ("module", "path", "server_streaming"),
    [
        (v3lock_pb2, "/v3lockpb.Lock/Lock", False),
        (v3lock_pb2, "/v3lockpb.Lock/Unlock", False),
        (v3election_pb2, "/v3electionpb.Election/Campaign", False),
        (v3election_pb2, "/v3electionpb.Election/Proclaim", False),
        (v3election_pb2, "/v3electionpb.Election/Leader", False),
        (v3election_pb2, "/v3electionpb.Election/Observe", True),
        (v3election_pb2, "/v3electionpb.Election/Resign", False),
    ],
)
def test_lock_and_election_paths(module: Any, path: str, server_streaming: bool) -> None:
    _, service, method = path.split("/")
    descriptor = module.DESCRIPTOR.services_by_name[service.split(".")[1]].methods_by_name[method]
    assert f"/{descriptor.containing_service.full_name}/{descriptor.name}" == path
    assert (descriptor.client_streaming, descriptor.server_streaming) == (False, server_streaming)


def test_lock_and_election_field_numbers() -> None:
    assert v3lock_pb2.LockRequest.DESCRIPTOR.fields_by_name["lease"].number == 2
    leader_key = v3election_pb2.LeaderKey.DESCRIPTOR.fields_by_name
    assert [leader_key[f].number for f in ("name", "key", "rev", "lease")] == [1, 2, 3, 4]
    assert v3election_pb2.CampaignRequest.DESCRIPTOR.fields_by_name["value"].number == 3
    assert v3election_pb2.ProclaimRequest.DESCRIPTOR.fields_by_name["value"].number == 2


def test_raft_message_type_numbers_mirror_the_core() -> None:
    wire = {v.number: v.name for v in raft_pb2.MessageType.DESCRIPTOR.values}
    core = {int(t): f"MSG_{t.name}" for t in types.MessageType}
    assert wire == core


def test_apply_result_answers_every_request_kind() -> None:
    """ApplyResult's arms carry the numbers of the InternalRequest arms they answer."""
    requests = {f.name: f.number for f in internal_pb2.InternalRequest.DESCRIPTOR.oneofs_by_name["request"].fields}
    results = {f.name: f.number for f in internal_pb2.ApplyResult.DESCRIPTOR.oneofs_by_name["response"].fields}
    assert requests == results

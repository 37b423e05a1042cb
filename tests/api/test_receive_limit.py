"""A request past the client port's receive limit (``--max-request-bytes`` + 512 KiB: 2 MiB by default),
sent as raw gRPC by a client without a send limit of its own (Python's and Node's etcd clients are such):
etcd refuses it with RESOURCE_EXHAUSTED ``grpc: received message larger than max (N vs. M)``, on unary and
streaming calls alike, the health service's included; raftkv must answer the same code and text, and
carry on. etcdctl itself refuses to send more than 2 MiB, in its own words, whichever server it talks to.
The JSON gateway's side is in ``test_gateway_same_as_etcd.test_large_bodies``."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raftkv.api.receive_limit import ReceiveLimit
from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.server.config import DEFAULT_MAX_REQUEST_BYTES

from .conftest import refusal
from .etcdctl import Etcdctl

#: etcd's limit at default settings (and raftkv's: one rule, ``ReceiveLimit``).
LIMIT = 2 * 1024 * 1024
TOO_LARGE = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")


def larger_than_max(size: int) -> tuple[grpc.StatusCode, str]:
    return grpc.StatusCode.RESOURCE_EXHAUSTED, f"grpc: received message larger than max ({size} vs. {LIMIT})"


def put_of_size(key: bytes, size: int) -> rpc_pb2.PutRequest:
    """A PutRequest whose encoding is exactly ``size`` bytes."""
    request = rpc_pb2.PutRequest(key=key)
    length = size
    for _ in range(4):  # the value's length prefix may change width as the value shrinks
        request.value = b"x" * length
        length += size - request.ByteSize()
    assert request.ByteSize() == size
    return request


@pytest.fixture
def channel(cluster: LocalCluster) -> Iterator[grpc.Channel]:
    """A channel to the first member with no send limit, as a client library without one opens."""
    url = cluster.endpoints[0]
    config = cluster.client_config([url])
    with grpc.secure_channel(url.removeprefix("https://"), config.credentials,
                             options=[("grpc.max_send_message_length", -1)]) as opened:
        yield opened


def test_the_limit_is_etcds() -> None:
    assert ReceiveLimit.for_requests(DEFAULT_MAX_REQUEST_BYTES).limit == LIMIT


def test_put_past_the_limit(channel: grpc.Channel, cluster: LocalCluster, prefix: str) -> None:
    """Up to the limit the server's own size check answers; one byte past it, and up to 8 MiB (the most
    raftkv reads to answer so), gRPC's text with the message's size; the member keeps every write."""
    kv = rpc_pb2_grpc.KVStub(channel)
    key = f"{prefix}big".encode()
    kv.Put(rpc_pb2.PutRequest(key=f"{prefix}kept".encode(), value=b"v"), timeout=10)
    answers = [refusal(lambda s=size: kv.Put(put_of_size(key, s), timeout=30)) for size in (LIMIT, LIMIT + 1, 4 * LIMIT)]
    assert answers == [TOO_LARGE, larger_than_max(LIMIT + 1), larger_than_max(4 * LIMIT)]
    # Past what raftkv reads, the code is still etcd's (the text is grpc core's, naming what it read).
    code, _text = refusal(lambda: kv.Put(put_of_size(key, 4 * LIMIT + 1), timeout=30)) or (None, "")
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert kv.Range(rpc_pb2.RangeRequest(key=key), timeout=10).count == 0
    assert kv.Range(rpc_pb2.RangeRequest(key=f"{prefix}kept".encode()), timeout=10).kvs[0].value == b"v"
    assert all(cluster.is_running(name) for name in cluster.names)


def test_streams_and_health_past_the_limit(channel: grpc.Channel, prefix: str) -> None:
    """A watch stream's oversized message ends the stream with the same status (after the first watch was
    created), and so does the health service's."""
    big = f"{prefix}{'x' * (3 * 1024 * 1024)}".encode()
    small = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=prefix.encode()))
    oversized = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=big))
    created = []

    def watch() -> None:
        for answer in rpc_pb2_grpc.WatchStub(channel).Watch(iter([small, oversized]), timeout=20):
            created.append(answer.created)

    assert refusal(watch) == larger_than_max(oversized.ByteSize())
    assert created == [True]
    check = health_pb2.HealthCheckRequest(service=big.decode())
    assert refusal(lambda: health_pb2_grpc.HealthStub(channel).Check(check, timeout=20)) == larger_than_max(
        check.ByteSize())
    assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status == (
        health_pb2.HealthCheckResponse.SERVING)


def test_etcdctl_refuses_to_send_past_its_limit(etcdctl: Etcdctl, prefix: str) -> None:
    """etcdctl's own gRPC send limit is 2 MiB: the same words from the client, whichever server."""
    value = b"x" * (LIMIT + 100_000)
    size = rpc_pb2.PutRequest(key=f"{prefix}big".encode(), value=value).ByteSize()
    result = etcdctl("put", f"{prefix}big", stdin=value)
    assert (result.returncode, result.error) == (
        1, f"rpc error: code = ResourceExhausted desc = trying to send message larger than max ({size} vs. {LIMIT})")

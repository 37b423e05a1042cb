"""Request rules etcdctl cannot express (nested transactions, empty ops, flags), sent as raw gRPC to both
implementations: each request must be accepted or refused exactly as etcd does, with etcd's status."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2, rpc_pb2_grpc

from .conftest import follower, leader, refusal
from .etcdctl import Etcdctl, poll

TxnBuilder = Callable[[bytes], rpc_pb2.TxnRequest]
DUPLICATE = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
TOO_MANY = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
NO_KEY = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")


def put(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"v"))


def delete(key: bytes, range_end: bytes = b"") -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end))


def get(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))


def txn(success: Sequence[rpc_pb2.RequestOp], failure: Sequence[rpc_pb2.RequestOp] = ()) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=success, failure=failure))


def ops(p: bytes, count: int) -> list[rpc_pb2.RequestOp]:
    return [put(p + b"%d" % i) for i in range(count)]


#: (id, request builder given a fresh key prefix, expected refusal or None for accepted)
CASES: list[tuple[str, TxnBuilder, tuple[grpc.StatusCode, str] | None]] = [
    ("put-twice", lambda p: rpc_pb2.TxnRequest(success=[put(p + b"a"), put(p + b"a")]), DUPLICATE),
    ("put-and-delete", lambda p: rpc_pb2.TxnRequest(success=[put(p + b"a"), delete(p + b"a")]), DUPLICATE),
    ("put-in-deleted-range", lambda p: rpc_pb2.TxnRequest(success=[delete(p + b"a", p + b"c"), put(p + b"b")]), DUPLICATE),
    ("put-after-deleted-range", lambda p: rpc_pb2.TxnRequest(success=[delete(p + b"a", p + b"c"), put(p + b"c")]), None),
    ("delete-twice", lambda p: rpc_pb2.TxnRequest(success=[delete(p + b"a"), delete(p + b"a")]), None),
    ("get-and-put", lambda p: rpc_pb2.TxnRequest(success=[get(p + b"a"), put(p + b"a")]), None),
    ("same-key-both-branches", lambda p: rpc_pb2.TxnRequest(success=[put(p + b"a")], failure=[put(p + b"a")]), None),
    ("nested-then-else-same-key", lambda p: rpc_pb2.TxnRequest(success=[txn([put(p + b"a")], [put(p + b"a")])]), None),
    ("nested-and-outer-put", lambda p: rpc_pb2.TxnRequest(success=[txn([put(p + b"a")]), put(p + b"a")]), DUPLICATE),
    ("nested-delete-outer-put", lambda p: rpc_pb2.TxnRequest(success=[txn([delete(p + b"a")]), put(p + b"a")]), DUPLICATE),
    ("outer-delete-nested-put", lambda p: rpc_pb2.TxnRequest(success=[delete(p, p + b"\xff"), txn([put(p + b"a")])]), DUPLICATE),
    ("two-nested-same-key", lambda p: rpc_pb2.TxnRequest(success=[txn([put(p + b"a")]), txn([], [put(p + b"a")])]), DUPLICATE),
    ("128-ops", lambda p: rpc_pb2.TxnRequest(success=ops(p, 128)), None),
    ("129-ops", lambda p: rpc_pb2.TxnRequest(success=ops(p, 129)), TOO_MANY),
    ("129-compares", lambda p: rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=p)] * 129), TOO_MANY),
    ("nested-within-budget", lambda p: rpc_pb2.TxnRequest(success=[*ops(p, 99), txn(ops(p + b"n", 28))]), None),
    ("nested-over-budget", lambda p: rpc_pb2.TxnRequest(success=[*ops(p, 99), txn(ops(p + b"n", 29))]), TOO_MANY),
    ("empty-compare-key", lambda p: rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"")]), NO_KEY),
    ("empty-put-key", lambda p: rpc_pb2.TxnRequest(success=[put(b"")]), NO_KEY),
    ("empty-op", lambda p: rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp()]), (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key not found")),
]


@pytest.fixture
def channel(cluster: LocalCluster) -> Iterator[grpc.Channel]:
    url = cluster.endpoints[0]
    with cluster.client_config([url]).channel(url) as opened:
        yield opened


@pytest.mark.parametrize(("build", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_txn_rules(channel: grpc.Channel, build: TxnBuilder, expected: object, request: pytest.FixtureRequest) -> None:
    kv = rpc_pb2_grpc.KVStub(channel)
    assert refusal(lambda: kv.Txn(build(f"/{request.node.name}/".encode()), timeout=10)) == expected


def test_put_flags(channel: grpc.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(channel)
    value = rpc_pb2.PutRequest(key=b"/flags", value=b"v", ignore_value=True)
    assert refusal(lambda: kv.Put(value, timeout=5)) == (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: value is provided")
    lease = rpc_pb2.PutRequest(key=b"/flags", lease=1, ignore_lease=True)
    assert refusal(lambda: kv.Put(lease, timeout=5)) == (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: lease is provided")


def test_every_response_has_a_header(channel: grpc.Channel) -> None:
    """(etcd 3.4 leaves the Alarm response without one; raftkv gives it one too, so it is not checked.)"""
    kv, maintenance = rpc_pb2_grpc.KVStub(channel), rpc_pb2_grpc.MaintenanceStub(channel)
    answers = [
        kv.Put(rpc_pb2.PutRequest(key=b"/header", value=b"v"), timeout=5),
        kv.Range(rpc_pb2.RangeRequest(key=b"/header"), timeout=5),
        kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"/absent"), timeout=5),
        kv.Txn(rpc_pb2.TxnRequest(), timeout=5),
        maintenance.Status(rpc_pb2.StatusRequest(), timeout=5),
        maintenance.HashKV(rpc_pb2.HashKVRequest(), timeout=5),
        rpc_pb2_grpc.ClusterStub(channel).MemberList(rpc_pb2.MemberListRequest(), timeout=5),
    ]
    for answer in answers:
        assert answer.header.cluster_id and answer.header.member_id and answer.header.raft_term, answer
    revisions = [answer.header.revision for answer in answers[:5]]
    assert all(revisions) and revisions == sorted(revisions)


def test_move_leader_only_on_the_leader(cluster: LocalCluster) -> None:
    boss = leader(cluster)
    follower = next(name for name in cluster.names if name != boss)
    url = cluster.client_url(follower)
    with cluster.client_config([url]).channel(url) as channel:
        maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
        request = rpc_pb2.MoveLeaderRequest(targetID=cluster.member_id(follower) or 0)
        assert refusal(lambda: maintenance.MoveLeader(request, timeout=5)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "etcdserver: not leader",
        )


def test_health_service(channel: grpc.Channel) -> None:
    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_user_flag_without_auth(etcdctl: Etcdctl, prefix: str) -> None:
    """With authentication off, etcd answers Authenticate "not enabled" and etcdctl carries on."""
    etcdctl("put", f"{prefix}k", "v").ok()
    assert etcdctl("--user=root:secret", "get", f"{prefix}k").ok().stdout == f"{prefix}k\nv\n"


def test_txn_inner_response_headers(channel: grpc.Channel, cluster: LocalCluster, request: pytest.FixtureRequest) -> None:
    """etcd gives each response inside a transaction the revision it saw: a read before the first write
    sees the old revision, everything from the first write on sees the transaction's new revision."""
    p = f"/{request.node.name}/".encode()
    kv = rpc_pb2_grpc.KVStub(channel)
    kv.Put(rpc_pb2.PutRequest(key=p + b"a", value=b"1"), timeout=5)
    answer = kv.Txn(rpc_pb2.TxnRequest(success=[get(p + b"a"), put(p + b"b"), get(p + b"a"), delete(p + b"none")]), timeout=5)
    new = answer.header.revision
    inner = [getattr(r, r.WhichOneof("response")).header.revision for r in answer.responses]
    assert inner == [new - 1, new, new, new]


NO_LEADER = (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")


class CutOff:
    """A follower whose peers are paused, reached through ``kv``, once it says it knows no leader (a call with
    ``hasleader: true`` is refused). ``resume`` lets the peers run again (also on leaving, whatever happened)
    and waits until the cluster is ready."""

    def __init__(self, cluster: LocalCluster, probe_key: bytes) -> None:
        self.cluster, self.probe_key = cluster, probe_key
        survivor = follower(cluster)
        self.others = [name for name in cluster.names if name != survivor]
        url = cluster.client_url(survivor)
        self.channel = cluster.client_config([url]).channel(url)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.paused = False

    def __enter__(self) -> CutOff:
        for name in self.others:
            self.cluster.pause_member(name)
        self.paused = True
        poll(lambda: self.no_leader() or None, 20, "the survivor to notice it has no leader")
        return self

    def no_leader(self) -> bool:
        read = rpc_pb2.RangeRequest(key=self.probe_key, serializable=True)
        return refusal(lambda: self.kv.Range(read, metadata=(("hasleader", "true"),), timeout=2)) == NO_LEADER

    def resume(self) -> None:
        if self.paused:
            for name in self.others:
                self.cluster.resume_member(name)
            self.paused = False
            self.cluster.wait_ready(timeout=30)

    def __exit__(self, *exc: object) -> None:
        try:
            self.resume()
        finally:
            self.channel.close()


def test_hasleader_fails_fast_without_quorum(cluster: LocalCluster) -> None:
    """A call carrying ``hasleader: true`` (etcdctl's watch does) is refused with "no leader" while the
    member is cut off; the member keeps serving and rejoins once its peers are back."""
    with CutOff(cluster, b"/hasleader") as cut:
        read = rpc_pb2.RangeRequest(key=b"/hasleader", serializable=True)
        assert refusal(lambda: cut.kv.Range(read, timeout=2)) is None  # without the flag: served locally
        cut.resume()
        cut.kv.Put(rpc_pb2.PutRequest(key=b"/hasleader", value=b"back"), timeout=10)


def test_a_write_sent_while_the_member_knows_no_leader_waits_for_one(cluster: LocalCluster) -> None:
    """Without ``hasleader``, a put that reaches a member with no leader waits for the election's outcome
    and is served once a leader is elected: etcd's raft node takes no proposal while it knows no leader, so
    the request waits within its deadline. etcdctl and etcd's clients do not retry "no leader" for a write,
    so answering it at once would fail a put sent during any election. On raftkv a linearizable read waits
    the same way (etcd 3.4's read instead times out after its request timeout: 3.5 retries the ReadIndex)."""
    with CutOff(cluster, b"/waits") as cut:
        put = cut.kv.Put.future(rpc_pb2.PutRequest(key=b"/waits", value=b"served"), timeout=30)
        linearizable = rpc_pb2.RangeRequest(key=b"/waits")
        read = cut.kv.Range.future(linearizable, timeout=30) if cluster.kind == "raftkv" else None
        # Sent while the member still knows no leader (asked after the requests, on the same connection).
        assert cut.no_leader(), "a leader was elected before the requests could wait for one"
        assert not put.done() or put.exception() is None, f"refused at once: {put.exception()}"
        cut.resume()  # a leader is elected: the requests are served
        assert put.result().header.revision > 0
        if read is not None:
            got = read.result()  # linearizable: the put, if ordered before the read, or nothing yet
            assert all(kv.value == b"served" for kv in got.kvs)


def test_a_lease_renewed_while_the_member_knows_no_leader_waits_for_one(cluster: LocalCluster) -> None:
    """A keep-alive or a TimeToLive that reaches a follower with no leader waits for the election's outcome,
    as etcd's LeaseRenew and LeaseTimeToLive wait for a leader: a keep-alive sent in the election's window
    renews the registration instead of failing and letting a short lease run out."""
    url = cluster.client_url(leader(cluster))
    with cluster.client_config([url]).channel(url) as channel:
        granted = rpc_pb2_grpc.LeaseStub(channel).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=10).ID
    with CutOff(cluster, b"/lease-waits") as cut, ThreadPoolExecutor(1) as pool:
        stub = rpc_pb2_grpc.LeaseStub(cut.channel)
        renewals = stub.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=granted)]), timeout=30)
        renewed = pool.submit(next, renewals)
        remaining = stub.LeaseTimeToLive.future(rpc_pb2.LeaseTimeToLiveRequest(ID=granted), timeout=30)
        assert cut.no_leader(), "a leader was elected before the requests could wait for one"
        for waiting in (renewed, remaining):
            assert not waiting.done() or waiting.exception() is None, f"refused at once: {waiting.exception()}"
        cut.resume()
        assert renewed.result(timeout=30).TTL == 60
        assert 0 < remaining.result().TTL <= 60
        renewals.cancel()


UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED
#: etcd's (grpc-go's) answers for methods nobody serves; grpc.aio's own is "Method not found!" for all.
UNKNOWN_METHODS = [
    ("/etcdserverpb.KV/Nope", (UNIMPLEMENTED, "unknown method Nope for service etcdserverpb.KV")),
    ("/etcdserverpb.Nope/Range", (UNIMPLEMENTED, "unknown service etcdserverpb.Nope")),
    ("/v3lockpb.Lock/Nope", (UNIMPLEMENTED, "unknown method Nope for service v3lockpb.Lock")),
    ("/grpc.health.v1.Health/Nope", (UNIMPLEMENTED, "unknown method Nope for service grpc.health.v1.Health")),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
     (UNIMPLEMENTED, "unknown service grpc.reflection.v1alpha.ServerReflection")),
    ("/nothing", (grpc.StatusCode.RESOURCE_EXHAUSTED, 'malformed method name: "/nothing"')),
]


@pytest.mark.parametrize(("method", "expected"), UNKNOWN_METHODS, ids=[m for m, _ in UNKNOWN_METHODS])
def test_unknown_methods(channel: grpc.Channel, method: str, expected: tuple[grpc.StatusCode, str]) -> None:
    """The same answer to a unary and to a streaming call, before anything reads the request."""
    unary = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
    assert refusal(lambda: unary(b"\xff", timeout=10)) == expected
    streaming = channel.stream_stream(method, request_serializer=bytes, response_deserializer=bytes)
    assert refusal(lambda: list(streaming(iter([b"\xff"]), timeout=10))) == expected


#: Bytes no request decodes from (a field's tag cut short).
UNDECODABLE = b"\xff"
#: grpc-go's texts (etcd's) for a request that does not decode, by the kind of call: a unary call's, and any
#: streaming call's, even one whose request is a single message (each followed by the decoder's own words,
#: Go's there and Python's here); gRPC Python's own answer is UNKNOWN for all.
UNARY_UNDECODABLE = "grpc: error unmarshalling request: "
STREAM_UNDECODABLE = "grpc: failed to unmarshal the received message "
UNDECODABLE_CALLS = [
    ("/etcdserverpb.KV/Range", "unary_unary", UNARY_UNDECODABLE),
    ("/grpc.health.v1.Health/Check", "unary_unary", UNARY_UNDECODABLE),
    ("/grpc.health.v1.Health/Watch", "unary_stream", STREAM_UNDECODABLE),
    ("/etcdserverpb.Maintenance/Snapshot", "unary_stream", STREAM_UNDECODABLE),
    ("/etcdserverpb.Lease/LeaseKeepAlive", "stream_stream", STREAM_UNDECODABLE),
]


@pytest.mark.parametrize(("method", "kind", "text"), UNDECODABLE_CALLS, ids=[m for m, _, _ in UNDECODABLE_CALLS])
def test_undecodable_requests(channel: grpc.Channel, method: str, kind: str, text: str) -> None:
    """INTERNAL with grpc-go's text on every service, the health service's included, and at once (a health
    watch or a keep-alive stream does not wait for its deadline); the member goes on answering."""
    call = getattr(channel, kind)(method, request_serializer=bytes, response_deserializer=bytes)

    def send() -> None:
        answer = call(iter([UNDECODABLE]) if kind.startswith("stream") else UNDECODABLE, timeout=10)
        if kind.endswith("_stream"):
            list(answer)

    code, details = refusal(send) or (None, "")
    assert (code, details[:len(text)]) == (grpc.StatusCode.INTERNAL, text), details
    assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status == (
        health_pb2.HealthCheckResponse.SERVING)

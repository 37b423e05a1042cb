"""The same etcdctl session against a fresh etcd cluster and a fresh raftkv cluster must print the same
thing: revisions, versions, counts, transaction results and error texts included. Only member ids,
URLs, timings and the raft term are masked."""

from __future__ import annotations

import json
import ssl
import urllib.request
from typing import Any

from raftkv import ETCD_VERSION
from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2, rpc_pb2_grpc

from .etcdctl import Etcdctl, assert_same, normalise

Step = tuple[tuple[str, ...], str | None]

SESSION: list[Step] = [
    (("endpoint", "hashkv", "-w", "json"), None),  # never compacted: compact_revision -1
    (("put", "/a", "1"), None),
    (("put", "/a", "2"), None),
    (("put", "/b", "3"), None),
    (("get", "/a", "-w", "json"), None),
    (("get", "/a", "--rev=2"), None),
    (("get", "/", "--prefix", "-w", "json"), None),
    (("get", "/", "--prefix", "--limit=1", "--keys-only"), None),
    (("get", "/", "--prefix", "--rev=3", "-w", "json"), None),
    (("get", "/", "--from-key", "--order=DESCEND", "--sort-by=MODIFY"), None),
    (("put", "/a", "4", "--prev-kv"), None),
    (("put", "/a", "4", "--prev-kv", "-w", "json"), None),
    (("txn", "-w", "json"), 'value("/a") = "4"\n\nput /c 5\nget /b\n\ndel /b\n\n'),
    (("txn",), 'mod("/a") > "1000"\n\nput /c 6\n\nget /c\ndel /b\n\n'),
    # Read-only transactions, which both serve from a read view: compares and gets alone, none at all.
    (("txn", "-w", "json"), 'value("/a") = "4"\n\nget /a\nget / --prefix --keys-only\n\nget /c\n\n'),
    (("txn", "-w", "json"), 'mod("/a") > "1000"\n\nget /a\n\nget /a --rev=2 --consistency=s\nget /nothing\n\n'),
    (("txn", "-w", "json"), 'version("/c") = "2"\n\n\n\n'),
    (("txn", "-w", "json"), '\n\n\n'),
    (("del", "/c", "--prev-kv"), None),
    (("del", "/", "--prefix", "-w", "json"), None),
    (("del", "/nothing"), None),
    (("put", "/z", "after-delete"), None),
    (("get", "/z", "-w", "json"), None),
    (("compaction", "4"), None),
    (("endpoint", "hashkv", "-w", "json"), None),
    (("get", "/a", "--rev=3"), None),
    (("get", "/a", "--rev=4", "-w", "json"), None),
    (("get", "/a", "--rev=99"), None),
    (("txn",), '\nget /a --rev=3\n\n\n'),  # compacted, as a read-only transaction
    (("txn",), '\nget /a --rev=99\n\n\n'),  # a future revision
    (("put", "", "empty"), None),
    (("txn",), "\n" + "".join(f"put /t{i} v\n" for i in range(129)) + "\n\n"),
    (("txn",), "\nput /d 1\nput /d 2\n\n\n"),
    (("alarm", "list"), None),
    (("member", "list"), None),
    (("endpoint", "health"), None),
]


#: JSON fields that depend on the cluster's identity, its ports or its election history.
_MASKED = ("cluster_id", "member_id", "raft_term", "Endpoint")
#: Left out: HashKV's hash, which raftkv computes over the same history in its own way (not etcd's number;
#: an empty store's is 0, which etcdctl leaves out).
_DROPPED = ("hash",)


def _mask_headers(value: Any, nested: bool = False) -> Any:
    """JSON output: keep revisions, mask what depends on the cluster's identity or election history.
    Headers of the responses inside a transaction are compared by test_grpc_rules instead."""
    if isinstance(value, dict):
        return {
            key: "<masked>" if key in _MASKED else _mask_headers(item, nested or key == "responses")
            for key, item in value.items()
            if not (nested and key == "header") and key not in _DROPPED
        }
    if isinstance(value, list):
        return [_mask_headers(item, nested) for item in value]
    return value


def transcript(etcdctl: Etcdctl) -> list[tuple[str, int, str, str]]:
    lines = []
    for args, stdin in SESSION:
        result = etcdctl(*args, stdin=stdin)
        out = result.stdout
        if "json" in args and result.returncode == 0:
            out = json.dumps(_mask_headers(json.loads(out)), sort_keys=True)
        elif args[0] in ("member", "endpoint"):
            out = "\n".join(sorted(normalise(out + result.stderr).splitlines()))
        error = result.error if result.returncode else ""
        lines.append((" ".join(args), result.returncode, out, error))
    return lines


def test_same_session_same_output(fresh_clusters: dict[str, LocalCluster]) -> None:
    assert_same(transcript(Etcdctl(fresh_clusters["etcd"])), transcript(Etcdctl(fresh_clusters["raftkv"])))


LEASE_TRIES = 500


def test_lease_granted_anywhere_is_known_everywhere_at_once(cluster: LocalCluster) -> None:
    """Linearizable leases: a lease granted through one member is known to every other member as soon as
    the grant is acknowledged. Each try grants on one member, then keeps the lease alive once on the next
    and asks its time-to-live on the third (leader or not), with no pause in between."""
    names = cluster.names
    config = cluster.client_config()
    channels = [config.channel(cluster.client_url(name)) for name in names]
    try:
        stubs = [rpc_pb2_grpc.LeaseStub(channel) for channel in channels]
        misses = []
        for attempt in range(LEASE_TRIES):
            granter, keeper, asker = (stubs[(attempt + i) % len(stubs)] for i in range(3))
            lease = granter.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=10).ID
            (kept,) = keeper.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease)]), timeout=10)
            alive = asker.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease), timeout=10)
            if kept.TTL != 30 or not 0 < alive.TTL <= 30 or alive.grantedTTL != 30:
                misses.append((attempt, lease, kept.TTL, alive.TTL, alive.grantedTTL))
            granter.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease), timeout=10)
        assert not misses, f"{len(misses)} of {LEASE_TRIES} tries missed the lease: {misses[:5]}"
    finally:
        for channel in channels:
            channel.close()


HEADER_CALLS: list[tuple[str, str, Any]] = [
    ("Maintenance", "Alarm", rpc_pb2.AlarmRequest()),
    ("Maintenance", "Defragment", rpc_pb2.DefragmentRequest()),
    ("Maintenance", "Status", rpc_pb2.StatusRequest()),
    ("Maintenance", "HashKV", rpc_pb2.HashKVRequest()),
    ("Cluster", "MemberList", rpc_pb2.MemberListRequest()),
    ("Lease", "LeaseLeases", rpc_pb2.LeaseLeasesRequest()),
    ("KV", "Range", rpc_pb2.RangeRequest(key=b"/header-probe")),
]


def header_shapes(cluster: LocalCluster) -> list[tuple[str, bool, bool, bool, bool, bool]]:
    """Which header fields each answer fills: etcd leaves some headers out and some revisions zero."""
    url = cluster.endpoints[0]
    shapes = []
    with cluster.client_config([url]).channel(url) as channel:
        for service, method, request in HEADER_CALLS:
            answer = getattr(getattr(rpc_pb2_grpc, f"{service}Stub")(channel), method)(request, timeout=10)
            header = answer.header
            shapes.append((method, answer.HasField("header"), bool(header.cluster_id), bool(header.member_id),
                           header.revision > 0, bool(header.raft_term)))
    return shapes


def test_same_headers(fresh_clusters: dict[str, LocalCluster]) -> None:
    assert header_shapes(fresh_clusters["raftkv"]) == header_shapes(fresh_clusters["etcd"])


def reported_versions(cluster: LocalCluster) -> set[tuple[str, str]]:
    """Every place a client reads the server's version: Maintenance.Status on each member (etcdctl
    endpoint status prints it) and ``GET /version`` on each client port."""
    certs = cluster.certs_dir
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.load_cert_chain(str(certs / "client.crt"), str(certs / "client.key"))
    seen = set()
    for url in cluster.endpoints:
        with cluster.client_config([url]).channel(url) as channel:
            status = rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest(), timeout=10)
        seen.add(("Status", status.version))
        with urllib.request.urlopen(f"{url}/version", context=context, timeout=10) as answer:
            seen.add(("/version", answer.read().decode()))
    return seen


def test_same_version(fresh_clusters: dict[str, LocalCluster]) -> None:
    """raftkv claims the release of etcd it is checked against (``raftkv.ETCD_VERSION``), everywhere etcd
    reports its own; a different etcd here means the claim must be checked against it and changed."""
    expected = {("Status", ETCD_VERSION), ("/version", f'{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"3.4.0"}}')}
    assert reported_versions(fresh_clusters["etcd"]) == expected
    assert reported_versions(fresh_clusters["raftkv"]) == expected


def read_only_txn_answers(cluster: LocalCluster) -> list[rpc_pb2.TxnResponse]:
    """Read-only transactions over gRPC (etcd serves them from a read view, not the log), every header kept
    but the member's ids and term: the inner responses' headers carry revisions clients compare."""
    rng = rpc_pb2.RangeRequest
    cmp = rpc_pb2.Compare

    def get(key: bytes, **kw: object) -> rpc_pb2.RequestOp:
        return rpc_pb2.RequestOp(request_range=rng(key=key, **kw))  # type: ignore[arg-type]

    url = cluster.endpoints[0]
    answers = []
    with cluster.client_config([url]).channel(url) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        for key, value in ((b"/ro/a", b"1"), (b"/ro/b", b"2"), (b"/ro/a", b"3")):
            kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10)
        for request in (
            rpc_pb2.TxnRequest(compare=[cmp(key=b"/ro/a", target=cmp.VALUE, result=cmp.EQUAL, value=b"3")],
                               success=[get(b"/ro/", range_end=b"/ro0"), get(b"/ro/b", serializable=True)]),
            rpc_pb2.TxnRequest(compare=[cmp(key=b"/ro/", range_end=b"/ro0", target=cmp.VERSION, result=cmp.GREATER,
                                            version=1)],
                               success=[get(b"/ro/a")],
                               failure=[get(b"/ro/", range_end=b"/ro0", count_only=True), get(b"/ro/none")]),
            rpc_pb2.TxnRequest(compare=[cmp(key=b"/ro/b", target=cmp.MOD, result=cmp.LESS, mod_revision=1)]),
            rpc_pb2.TxnRequest(),
        ):
            answer = kv.Txn(request, timeout=10)
            answer.header.cluster_id = answer.header.member_id = answer.header.raft_term = 0
            answers.append(answer)
    return answers


def test_same_read_only_txn_answers(fresh_clusters: dict[str, LocalCluster]) -> None:
    assert read_only_txn_answers(fresh_clusters["raftkv"]) == read_only_txn_answers(fresh_clusters["etcd"])

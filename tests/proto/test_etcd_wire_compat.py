"""Our etcdserverpb schemas and error texts against a real etcd 3.4 server (skipped when etcd is absent).

The field-number checks in test_wire_contract.py compare against notes; this compares against the real
thing: requests built with our generated code must mean the same to etcd, and etcd's answers (including
its error statuses) must decode into the fields and errors we expect.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import grpc
import pytest

from raftkv import errors
from raftkv.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc

pytestmark = [
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd (Debian etcd-server) is not installed"),
    pytest.mark.timeout(60),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    client, peer = _free_port(), _free_port()
    data = tmp_path_factory.mktemp("etcd")
    log = (data / "etcd.log").open("wb")
    client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    flags = {
        "--name": "e1",
        "--data-dir": str(data / "data"),
        "--listen-client-urls": client_url,
        "--advertise-client-urls": client_url,
        "--listen-peer-urls": peer_url,
        "--initial-advertise-peer-urls": peer_url,
        "--initial-cluster": f"e1={peer_url}",
        "--heartbeat-interval": "10",
        "--election-timeout": "100",
    }
    command = ["etcd", *(part for item in flags.items() for part in item)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    target = f"127.0.0.1:{client}"
    try:
        deadline = time.monotonic() + 20
        with grpc.insecure_channel(target) as channel:
            stub = rpc_pb2_grpc.MaintenanceStub(channel)
            while True:
                assert process.poll() is None, f"etcd exited: {(data / 'etcd.log').read_text()[-2000:]}"
                try:
                    if stub.Status(rpc_pb2.StatusRequest(), timeout=1).leader:
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "etcd did not elect itself within 20 s"
                time.sleep(0.05)
        yield target
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _error(call: object) -> errors.EtcdError | None:
    with pytest.raises(grpc.RpcError) as raised:
        call()  # type: ignore[operator]
    return errors.from_rpc_error(raised.value)  # type: ignore[arg-type]


def test_kv_txn_lease_and_errors(etcd: str) -> None:
    with grpc.insecure_channel(etcd) as channel:
        kv, lease = rpc_pb2_grpc.KVStub(channel), rpc_pb2_grpc.LeaseStub(channel)
        first = kv.Put(rpc_pb2.PutRequest(key=b"/a/1", value=b"v1"))
        second = kv.Put(rpc_pb2.PutRequest(key=b"/a/1", value=b"v2", prev_kv=True))
        assert second.prev_kv == kv_pb2.KeyValue(
            key=b"/a/1", value=b"v1", create_revision=first.header.revision, mod_revision=first.header.revision, version=1
        )
        kv.Put(rpc_pb2.PutRequest(key=b"/a/2", value=b"w"))
        counted = kv.Range(rpc_pb2.RangeRequest(key=b"/a/", range_end=b"/a0", count_only=True))
        assert counted.count == 2 and not counted.kvs

        granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60))
        kv.Put(rpc_pb2.PutRequest(key=b"/l", value=b"x", lease=granted.ID))
        ttl = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID, keys=True))
        assert ttl.grantedTTL == 60 and list(ttl.keys) == [b"/l"]
        assert [s.ID for s in lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest()).leases] == [granted.ID]

        # Compare.range_end (field 64) and the LEASE target (field 8): both compares must hold.
        txn = kv.Txn(
            rpc_pb2.TxnRequest(
                compare=[
                    rpc_pb2.Compare(key=b"/a/", range_end=b"/a0", target=rpc_pb2.Compare.VERSION,
                                    result=rpc_pb2.Compare.GREATER, version=0),
                    rpc_pb2.Compare(key=b"/l", target=rpc_pb2.Compare.LEASE, result=rpc_pb2.Compare.EQUAL, lease=granted.ID),
                ],
                success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"/a/2"))],
            )
        )
        assert txn.succeeded and txn.responses[0].response_range.kvs[0].value == b"w"

        assert _error(lambda: kv.Put(rpc_pb2.PutRequest(key=b""))) is errors.KEY_NOT_PROVIDED
        too_many = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k%d" % i)) for i in range(129)])
        assert _error(lambda: kv.Txn(too_many)) is errors.TOO_MANY_OPS
        duplicate = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"d"))] * 2)
        assert _error(lambda: kv.Txn(duplicate)) is errors.DUPLICATE_KEY
        assert _error(lambda: lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=12345))) is errors.LEASE_NOT_FOUND
        future = second.header.revision + 1000
        assert _error(lambda: kv.Range(rpc_pb2.RangeRequest(key=b"/a/1", revision=future))) is errors.FUTURE_REV
        kv.Compact(rpc_pb2.CompactionRequest(revision=second.header.revision, physical=True))
        assert _error(lambda: kv.Range(rpc_pb2.RangeRequest(key=b"/a/1", revision=first.header.revision))) is errors.COMPACTED


def test_maintenance_and_cluster_fields(etcd: str) -> None:
    with grpc.insecure_channel(etcd) as channel:
        status = rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest())
        assert status.version.startswith("3.4") and status.raftAppliedIndex > 0 and status.dbSizeInUse > 0
        assert not status.isLearner and status.leader == status.header.member_id
        hashed = rpc_pb2_grpc.MaintenanceStub(channel).HashKV(rpc_pb2.HashKVRequest())
        assert hashed.hash != 0
        members = rpc_pb2_grpc.ClusterStub(channel).MemberList(rpc_pb2.MemberListRequest()).members
        assert [(m.name, m.isLearner) for m in members] == [("e1", False)]


def test_watch_with_client_id_and_progress(etcd: str) -> None:
    async def scenario() -> None:
        async with grpc.aio.insecure_channel(etcd) as channel:
            kv, watch = rpc_pb2_grpc.KVStub(channel), rpc_pb2_grpc.WatchStub(channel)
            requests: asyncio.Queue[rpc_pb2.WatchRequest] = asyncio.Queue()

            async def outgoing():  # type: ignore[no-untyped-def]
                while True:
                    yield await requests.get()

            stream = watch.Watch(outgoing())
            await requests.put(
                rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"/w", watch_id=7, prev_kv=True))
            )
            created = await stream.read()
            assert created.created and created.watch_id == 7
            await kv.Put(rpc_pb2.PutRequest(key=b"/w", value=b"1"))
            event = await stream.read()
            assert event.watch_id == 7 and event.events[0].type == kv_pb2.Event.PUT and event.events[0].kv.value == b"1"
            await requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
            progress = await stream.read()
            assert progress.watch_id == -1 and not progress.events
            assert progress.header.revision == event.header.revision
            stream.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 20))

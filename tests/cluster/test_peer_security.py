"""The peer port accepts only members, each with its own peer certificate, and survives garbage.

The attack these tests repeat: with nothing but the client certificate ``kvctl cluster up`` hands out, a
forged Raft append used to write a key on two of three members and crash the leader."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import grpc

from raftkv.core.types import Entry, Message, MessageType
from raftkv.localcluster import LocalCluster
from raftkv.proto import internal_pb2, raft_pb2, raft_pb2_grpc, rpc_pb2
from raftkv.security.certs import PEER_DIR, init_cluster_certs
from raftkv.security.tls import channel_credentials
from raftkv.transport.codec import message_to_pb
from tests.cluster.conftest import Members, wait_for


def _peer_addr(cluster: LocalCluster, name: str) -> str:
    return cluster.peer_url(name).removeprefix("https://")


def test_plaintext_and_foreign_ca_are_refused_on_the_peer_port(
    cluster: LocalCluster, members: Members, tmp_path: Path
) -> None:
    target = _peer_addr(cluster, "n1")
    batch = raft_pb2.MessageBatch(cluster_id=1, to=1)

    with grpc.insecure_channel(target) as plain:
        try:
            raft_pb2_grpc.RaftPeerStub(plain).Stream(iter([batch]), timeout=3)
            raise AssertionError("a plaintext peer connection was accepted")
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    intruder = init_cluster_certs(tmp_path / "foreign", ["intruder"]).peers["intruder"]
    # The intruder trusts the cluster's CA for the server side, so only its own certificate is at fault.
    # (raw grpc credentials: raftkv's own loader refuses such a mismatched set up front).
    trusting = grpc.ssl_channel_credentials(
        root_certificates=(cluster.certs_dir / PEER_DIR / "ca.crt").read_bytes(),
        private_key=intruder.key.read_bytes(),
        certificate_chain=intruder.cert.read_bytes(),
    )
    for credentials in (channel_credentials(intruder), trusting):
        with grpc.secure_channel(target, credentials) as channel:
            try:
                raft_pb2_grpc.RaftPeerStub(channel).Stream(iter([batch]), timeout=3)
                raise AssertionError("a peer with a foreign certificate was accepted")
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    members.kv("n1").Put(rpc_pb2.PutRequest(key=b"still", value=b"up"), timeout=5)


def test_garbage_on_the_peer_and_client_ports_leaves_members_serving(
    cluster: LocalCluster, members: Members
) -> None:
    for url in (cluster.peer_url("n2"), cluster.client_url("n2")):
        host, port = url.removeprefix("https://").rsplit(":", 1)
        for payload in (b"\x00" * 64, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 40):
            with socket.create_connection((host, int(port)), timeout=3) as sock:
                sock.sendall(payload)
                sock.settimeout(2)
                try:
                    sock.recv(1024)
                except (TimeoutError, ConnectionError):
                    pass
    assert cluster.is_running("n2")
    members.kv("n2").Put(rpc_pb2.PutRequest(key=b"after-garbage", value=b"ok"), timeout=5)
    wait_for(lambda: members.revision("n2") >= members.revision("n1"), 10, "n2 to keep replicating")


def _forged_append(cluster: LocalCluster, members: Members, target: str, key: bytes) -> raft_pb2.MessageBatch:
    """What the leader would send ``target`` to commit a put of ``key``, had the leader written it."""
    leader = cluster.wait_ready()
    status = members.maintenance(leader).Status(rpc_pb2.StatusRequest(), timeout=5)
    leader_id, target_id = cluster.member_id(leader), cluster.member_id(target)
    assert leader_id is not None and target_id is not None
    put = internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, value=b"forged"))
    index = status.raftIndex
    entry = Entry(status.raftTerm, index + 1, data=put.SerializeToString())
    message = Message(MessageType.APP, to=target_id, sender=leader_id, term=status.raftTerm,
                      log_term=status.raftTerm, index=index, entries=(entry,), commit=index + 1)
    return raft_pb2.MessageBatch(cluster_id=status.header.cluster_id, sender=leader_id, to=target_id,
                                 messages=[message_to_pb(message)])


def _send(target: str, credentials: grpc.ChannelCredentials, batch: raft_pb2.MessageBatch) -> grpc.StatusCode:
    with grpc.secure_channel(target, credentials) as channel:
        try:
            raft_pb2_grpc.RaftPeerStub(channel).Stream(iter([batch]), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_a_forged_append_with_the_client_certificate_is_refused(cluster: LocalCluster, members: Members) -> None:
    certs = cluster.certs_dir
    target = next(n for n in cluster.names if n != cluster.wait_ready())
    batch = _forged_append(cluster, members, target, b"/forged/client-cert")
    for ca in (certs / "ca.crt", certs / PEER_DIR / "ca.crt"):  # trusting either CA for the server side
        credentials = grpc.ssl_channel_credentials(
            ca.read_bytes(), (certs / "client.key").read_bytes(), (certs / "client.crt").read_bytes()
        )
        assert _send(_peer_addr(cluster, target), credentials, batch) == grpc.StatusCode.UNAVAILABLE
    _assert_not_written_and_serving(cluster, members, b"/forged/client-cert")


def test_one_members_peer_certificate_cannot_speak_for_the_leader(cluster: LocalCluster, members: Members) -> None:
    leader = cluster.wait_ready()
    target, impostor = [n for n in cluster.names if n != leader]
    batch = _forged_append(cluster, members, target, b"/forged/peer-cert")
    certs = cluster.certs_dir / PEER_DIR
    credentials = grpc.ssl_channel_credentials(
        (certs / "ca.crt").read_bytes(), (certs / f"{impostor}.key").read_bytes(), (certs / f"{impostor}.crt").read_bytes()
    )
    assert _send(_peer_addr(cluster, target), credentials, batch) == grpc.StatusCode.PERMISSION_DENIED
    assert f"a certificate issued to {impostor} cannot speak for member" in cluster.log_path(target).read_text()
    _assert_not_written_and_serving(cluster, members, b"/forged/peer-cert")


def _assert_not_written_and_serving(cluster: LocalCluster, members: Members, key: bytes) -> None:
    """Peer traffic with the members' own peer certificates goes on: every member takes part in a write."""
    assert cluster.running() == cluster.names
    members.kv(cluster.wait_ready()).Put(rpc_pb2.PutRequest(key=b"/after-forgery", value=b"ok"), timeout=10)
    for name in cluster.names:
        wait_for(lambda n=name: not members.missing(n, b"/after-forgery", [b"/after-forgery"]), 10, f"{name} to replicate")
        got = members.kv(name).Range(rpc_pb2.RangeRequest(key=key, serializable=True), timeout=5)
        assert not got.kvs, f"{name} holds the forged key"
    assert cluster.running() == cluster.names  # a forged append that got in makes the leader exit on the reply


def test_a_cluster_of_the_older_certificate_layout_migrates_on_restart(cluster: LocalCluster, members: Members) -> None:
    """Its directory had one CA for everything: restarted, the members get peer certificates of their own
    and keep their data."""
    members.kv(cluster.wait_ready()).Put(rpc_pb2.PutRequest(key=b"/before-migration", value=b"kept"), timeout=10)
    cluster.stop()
    members.close()
    shutil.rmtree(cluster.certs_dir / PEER_DIR)
    cluster.start()
    cluster.wait_ready(timeout=30, all_members=True)
    assert (cluster.certs_dir / PEER_DIR / "ca.crt").exists()
    for name in cluster.names:
        wait_for(lambda n=name: not members.missing(n, b"/before-migration", [b"/before-migration"]), 10, f"{name}'s data")
    _assert_not_written_and_serving(cluster, members, b"/forged/none")

"""The peer port accepts only members certified by the cluster's CA, and survives garbage."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc

from raftkv.localcluster import LocalCluster
from raftkv.proto import raft_pb2, raft_pb2_grpc, rpc_pb2
from raftkv.security.certs import init_cluster_certs
from raftkv.security.tls import channel_credentials
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

    intruder = init_cluster_certs(tmp_path / "foreign", ["intruder"]).nodes["intruder"]
    # The intruder trusts the cluster's CA for the server side, so only its own certificate is at fault.
    # (raw grpc credentials: raftkv's own loader refuses such a mismatched set up front).
    trusting = grpc.ssl_channel_credentials(
        root_certificates=(cluster.certs_dir / "ca.crt").read_bytes(),
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

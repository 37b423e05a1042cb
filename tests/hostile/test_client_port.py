"""Strangers on the client port of a live member, side by side with etcd 3.4 on the same certificates.

A client without a certificate, with one from another CA, with a member's *peer* certificate (the peer CA
signs no client), speaking plaintext HTTP/2, or sending garbage and half-finished TLS handshakes that it
holds open: each is refused at the handshake as etcd refuses it, while a legitimate client's writes go on
being acknowledged on that member, and afterwards every member serves every acknowledged write.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from raftkv.localcluster import LocalCluster
from raftkv.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.security.certs import PEER_DIR, init_cluster_certs
from tests.api.conftest import KINDS, start_cluster
from tests.api.etcdctl import ETCDCTL, Etcdctl

from .test_crashers import assert_every_member_serves

pytestmark = pytest.mark.slow

#: What etcdctl prints when the handshake is refused (its dial gives up, the same for both).
ETCDCTL_REFUSED = "context deadline exceeded"


@pytest.fixture(scope="module", params=KINDS)
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with start_cluster(request.param, tmp_path_factory.mktemp(f"client-port-{request.param}")) as running:
        yield running


def _strangers(cluster: LocalCluster, tmp_path: Path) -> dict[str, grpc.ChannelCredentials | None]:
    certs = cluster.certs_dir
    ca = (certs / "ca.crt").read_bytes()
    foreign = init_cluster_certs(tmp_path / "foreign", ["n1"])
    return {
        "no client certificate": grpc.ssl_channel_credentials(root_certificates=ca),
        "another CA's client certificate": grpc.ssl_channel_credentials(
            ca, foreign.client.key.read_bytes(), foreign.client.cert.read_bytes()),
        "a member's peer certificate": grpc.ssl_channel_credentials(
            ca, (certs / PEER_DIR / "n2.key").read_bytes(), (certs / PEER_DIR / "n2.crt").read_bytes()),
        "plaintext HTTP/2": None,
    }


def _call(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = grpc.insecure_channel(target) if credentials is None else grpc.secure_channel(target, credentials)
    with channel:
        try:
            rpc_pb2_grpc.KVStub(channel).Put(rpc_pb2.PutRequest(key=b"/stranger", value=b"x"), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_a_client_without_the_clusters_client_certificate_is_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    target = cluster.client_url("n1").removeprefix("https://")
    answers = {who: _call(target, creds) for who, creds in _strangers(cluster, tmp_path).items()}
    print(f"\n{cluster.kind}: " + ", ".join(f"{who}: {code.name}" for who, code in answers.items()))
    assert answers == {who: grpc.StatusCode.UNAVAILABLE for who in answers}
    # etcdctl with the CA but no certificate of its own: the same one-line error from both implementations.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env.update({"ETCDCTL_API": "3", "ETCDCTL_CACERT": str(cluster.certs_dir / "ca.crt"),
                "ETCDCTL_ENDPOINTS": cluster.client_url("n1")})
    refused = subprocess.run([ETCDCTL, "--dial-timeout=2s", "--command-timeout=4s", "put", "/stranger", "x"],
                             capture_output=True, text=True, env=env, timeout=30)
    assert refused.returncode != 0 and refused.stderr.strip().endswith(f"Error: {ETCDCTL_REFUSED}"), refused
    assert_every_member_serves(cluster, "strangers")
    assert not Etcdctl(cluster)("get", "/stranger", member="n1").ok().stdout, "a refused client wrote"


def _hold_open(host: str, port: int, payload: bytes, held: list[socket.socket]) -> None:
    sock = socket.create_connection((host, port), timeout=5)
    sock.sendall(payload)
    held.append(sock)


# A TLS 1.2 ClientHello record header that announces 512 bytes and delivers 4 of them.
_HALF_HELLO = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC])


def test_garbage_and_held_open_handshakes_do_not_stop_a_legitimate_client(cluster: LocalCluster) -> None:
    host, port = cluster.client_url("n1").removeprefix("https://").rsplit(":", 1)
    held: list[socket.socket] = []
    try:
        for payload in (_HALF_HELLO, b"\x00" * 64, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", bytes(range(256)) * 16):
            for _ in range(16):
                _hold_open(host, int(port), payload, held)
        url = cluster.client_url("n1")
        errors: list[BaseException] = []

        def more_strangers() -> None:
            try:
                for _ in range(4):
                    _hold_open(host, int(port), _HALF_HELLO, held)
            except OSError as exc:  # the port refusing a connection would be a failure: say it
                errors.append(exc)

        flood = threading.Thread(target=more_strangers)
        flood.start()
        with cluster.client_config([url]).channel(url) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            for i in range(20):
                kv.Put(rpc_pb2.PutRequest(key=b"/beside-strangers/%02d" % i, value=b"ok"), timeout=10)
            got = kv.Range(rpc_pb2.RangeRequest(key=b"/beside-strangers/", range_end=b"/beside-strangers0",
                                                count_only=True), timeout=10)
        flood.join()
        assert not errors, errors
        assert got.count == 20
    finally:
        for sock in held:
            sock.close()
    assert cluster.is_running("n1")
    assert_every_member_serves(cluster, "garbage")

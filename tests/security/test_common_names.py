"""The one reader of a certificate's common names (raftkv.security.common_names): from a certificate, from
the files raftkv checks at start, and from the auth context a real gRPC mutual-TLS call carries, all
agreeing on the same certificate."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from raftkv.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.security.certs import init_cluster_certs, issue_client, load_issued, write_issued
from raftkv.security.common_names import auth_common_names, certificate_common_names, first_common_name
from raftkv.security.grpc_options import channel_options, server_options
from raftkv.security.tls import (
    ConfigError,
    TLSFiles,
    channel_credentials,
    check_peer_name,
    common_name,
    server_credentials,
)


def _self_signed(*names: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "raftkv"),
                         *(x509.NameAttribute(NameOID.COMMON_NAME, name) for name in names)])
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))


def test_names_of_a_certificate() -> None:
    assert certificate_common_names(_self_signed("n1")) == ["n1"] and first_common_name(_self_signed("n1")) == "n1"
    assert certificate_common_names(_self_signed("a", "b")) == ["a", "b"]
    assert first_common_name(_self_signed("a", "b")) == "a"  # the one gRPC reports
    assert certificate_common_names(_self_signed()) == [] and first_common_name(_self_signed()) == ""


def test_names_of_an_auth_context() -> None:
    assert auth_common_names({"transport_security_type": [b"ssl"], "x509_common_name": [b"alice"]}) == ["alice"]
    assert auth_common_names({"transport_security_type": [b"ssl"]}) == []
    assert auth_common_names({"x509_common_name": [b"bad \xff"]}) == ["bad \ufffd"]  # replaced, not raised


def test_peer_file_must_name_the_member(tmp_path: Path) -> None:
    certs = init_cluster_certs(tmp_path, ["n1", "n2"])
    peer = certs.peers["n1"]
    assert common_name(peer.cert) == "n1"
    check_peer_name(peer, "n1")
    with pytest.raises(ConfigError, match="is issued to n1, not to this member \\('n2'\\)"):
        check_peer_name(peer, "n2")
    both = tmp_path / "both.crt"
    both.write_bytes(_self_signed("n1", "n2").public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigError, match="is issued to n1, n2, not"):
        check_peer_name(TLSFiles(peer.ca, both, peer.key), "n1")


async def _names_seen(server_files: TLSFiles, client: grpc.ChannelCredentials) -> list[str]:
    seen: list[str] = []

    class KV(rpc_pb2_grpc.KVServicer):
        async def Range(self, request: rpc_pb2.RangeRequest, context: grpc.aio.ServicerContext  # noqa: N802
                        ) -> rpc_pb2.RangeResponse:
            seen.extend(auth_common_names(context.auth_context()))
            return rpc_pb2.RangeResponse()

    server = grpc.aio.server(options=server_options())
    rpc_pb2_grpc.add_KVServicer_to_server(KV(), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(server_files))
    await server.start()
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", client, options=channel_options()) as channel:
            await rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(), timeout=10)
    finally:
        await server.stop(None)
    return seen


def test_grpc_reports_the_name_the_certificate_carries(tmp_path: Path) -> None:
    certs = init_cluster_certs(tmp_path, ["n1"])
    alice = issue_client(load_issued(certs.ca, tmp_path / "ca.key"), "alice")
    write_issued(alice, tmp_path / "alice.crt", tmp_path / "alice.key")
    files = TLSFiles(certs.ca, tmp_path / "alice.crt", tmp_path / "alice.key")
    seen = asyncio.run(_names_seen(certs.nodes["n1"], channel_credentials(files)))
    assert seen == certificate_common_names(alice.cert) == [common_name(files.cert)] == ["alice"]

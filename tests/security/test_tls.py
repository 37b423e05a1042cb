"""raftkv.security.tls and grpc_options: one-line errors for bad files, and real mutual TLS handshakes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from raftkv.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.security.certs import ClusterCerts, init_cluster_certs
from raftkv.security.grpc_options import channel_options, server_options
from raftkv.security.tls import ConfigError, TLSFiles, channel_credentials, load_tls, server_credentials


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> ClusterCerts:
    return init_cluster_certs(tmp_path_factory.mktemp("certs"), ["n1", "n2"])


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> ClusterCerts:
    return init_cluster_certs(tmp_path_factory.mktemp("foreign"), ["n1"])


def test_missing_file_names_the_path(cluster: ClusterCerts, tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    with pytest.raises(ConfigError) as raised:
        load_tls(TLSFiles(ca=cluster.ca, cert=missing, key=cluster.nodes["n1"].key))
    assert raised.value.path == missing
    assert str(missing) in str(raised.value) and "\n" not in str(raised.value)


def test_not_pem(cluster: ClusterCerts, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    with pytest.raises(ConfigError, match="CA file .*junk.pem"):
        load_tls(TLSFiles(ca=junk, cert=cluster.nodes["n1"].cert, key=cluster.nodes["n1"].key))
    with pytest.raises(ConfigError, match="key .*junk.pem"):
        load_tls(TLSFiles(ca=cluster.ca, cert=cluster.nodes["n1"].cert, key=junk))


def test_key_not_matching_certificate(cluster: ClusterCerts) -> None:
    with pytest.raises(ConfigError, match="does not match") as raised:
        load_tls(TLSFiles(ca=cluster.ca, cert=cluster.nodes["n1"].cert, key=cluster.nodes["n2"].key))
    assert raised.value.path == cluster.nodes["n2"].key


def test_certificate_from_another_ca(cluster: ClusterCerts, foreign: ClusterCerts) -> None:
    with pytest.raises(ConfigError, match="not signed by a CA"):
        load_tls(TLSFiles(ca=cluster.ca, cert=foreign.nodes["n1"].cert, key=foreign.nodes["n1"].key))


async def _serve_and_call(server_files: TLSFiles, client: grpc.ChannelCredentials | None, target_host: str) -> bool:
    """Start a KV server with mTLS and make one call; True if the call got through the handshake."""

    class KV(rpc_pb2_grpc.KVServicer):
        async def Range(self, request: rpc_pb2.RangeRequest, context: grpc.aio.ServicerContext) -> rpc_pb2.RangeResponse:  # type: ignore[type-arg]
            return rpc_pb2.RangeResponse(count=7)

    server = grpc.aio.server(options=server_options())
    rpc_pb2_grpc.add_KVServicer_to_server(KV(), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(server_files))
    await server.start()
    try:
        target = f"{target_host}:{port}"
        channel = (
            grpc.aio.secure_channel(target, client, options=channel_options())
            if client is not None
            else grpc.aio.insecure_channel(target)
        )
        async with channel:
            try:
                response = await rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(), timeout=5)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                return False
            return response.count == 7
    finally:
        await server.stop(None)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_mutual_tls_handshake(cluster: ClusterCerts, host: str) -> None:
    assert asyncio.run(_serve_and_call(cluster.nodes["n1"], channel_credentials(cluster.client), host))
    assert asyncio.run(_serve_and_call(cluster.nodes["n1"], channel_credentials(cluster.nodes["n2"]), host))


def test_refuses_other_ca_no_cert_and_plaintext(cluster: ClusterCerts, foreign: ClusterCerts) -> None:
    # A client certificate from another CA, presented to a server that trusts only ours.
    stranger = grpc.ssl_channel_credentials(
        root_certificates=cluster.ca.read_bytes(),
        private_key=foreign.nodes["n1"].key.read_bytes(),
        certificate_chain=foreign.nodes["n1"].cert.read_bytes(),
    )
    assert not asyncio.run(_serve_and_call(cluster.nodes["n1"], stranger, "127.0.0.1"))
    # TLS without a client certificate.
    anonymous = grpc.ssl_channel_credentials(root_certificates=cluster.ca.read_bytes())
    assert not asyncio.run(_serve_and_call(cluster.nodes["n1"], anonymous, "127.0.0.1"))
    # Plaintext HTTP/2.
    assert not asyncio.run(_serve_and_call(cluster.nodes["n1"], None, "127.0.0.1"))


def test_port_clash_is_an_error() -> None:
    """With so_reuseport off, a second server on a taken port fails instead of sharing the traffic."""

    async def scenario() -> None:
        first = grpc.aio.server(options=server_options())
        port = first.add_insecure_port("127.0.0.1:0")
        await first.start()
        try:
            second = grpc.aio.server(options=server_options())
            with pytest.raises(RuntimeError):
                second.add_insecure_port(f"127.0.0.1:{port}")
        finally:
            await first.stop(None)

    asyncio.run(scenario())

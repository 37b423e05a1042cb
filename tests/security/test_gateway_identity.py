"""What the client port's HTTP side reports of a caller after the TLS handshake, in-process over real TLS:
the auth context the gateway's calls carry (grpcio's shape), read from one parse of the peer certificate.
The names are the ones the ``ssl`` module's ``getpeercert()`` gives for the same connection, and the CN is
the first one, as gRPC reports it (``raftkv.security.common_names``)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftkv.api.gateway.http import _Identity
from raftkv.security.certs import Issued, init_cluster_certs, issue_client, load_issued, write_issued
from raftkv.security.tls import ReloadingSSLContext, TLSFiles

SANS: list[x509.GeneralName] = [
    x509.DNSName("client.example"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("fd00::1:0:ab")), x509.UniformResourceIdentifier("spiffe://raftkv/client"),
    x509.RFC822Name("ops@example.com"),
]


def _client(ca: Issued, names: list[str], sans: list[x509.GeneralName]) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name) for name in names]))
               .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.SubjectAlternativeName(sans), critical=False))
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _seen(tmp_path: Path, client: Issued) -> tuple[dict[str, list[bytes]], Any]:
    """The gateway's identity of a caller presenting ``client``, and the ssl module's reading of the same
    connection's peer certificate."""
    write_issued(client, tmp_path / "client.crt", tmp_path / "client.key")
    server_tls = ReloadingSSLContext(TLSFiles(tmp_path / "ca.crt", tmp_path / "n1.crt", tmp_path / "n1.key"))()
    client_tls = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    client_tls.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
    client_tls.check_hostname = False

    async def scenario() -> tuple[dict[str, list[bytes]], Any]:
        seen: asyncio.Future[tuple[dict[str, list[bytes]], Any]] = asyncio.get_running_loop().create_future()

        async def handshaken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.set_result((_Identity.of(writer).auth, writer.get_extra_info("ssl_object").getpeercert()))
            writer.close()

        server = await asyncio.start_server(handshaken, "127.0.0.1", 0, ssl=server_tls)
        try:
            _reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.sockets[0].getsockname()[1], ssl=client_tls)
            result = await asyncio.wait_for(seen, 10)
            writer.close()
            return result
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(scenario())


def test_names_are_read_once_and_reported_as_before(tmp_path: Path) -> None:
    init_cluster_certs(tmp_path, ["n1"])
    client = _client(load_issued(tmp_path / "ca.crt", tmp_path / "ca.key"), ["first", "second"], SANS)
    auth, by_ssl = _seen(tmp_path, client)
    assert auth == {
        "transport_security_type": [b"ssl"],
        "x509_subject_alternative_name": [value.encode() for _kind, value in by_ssl["subjectAltName"]],
        "x509_common_name": [b"first"],
        "x509_pem_cert": [client.cert.public_bytes(serialization.Encoding.PEM)],
    }
    assert auth["x509_subject_alternative_name"] == [
        b"client.example", b"127.0.0.1", b"FD00:0:0:0:0:1:0:AB", b"spiffe://raftkv/client", b"ops@example.com"]


def test_a_certificate_without_names(tmp_path: Path) -> None:
    """raftkv's own client certificates carry no SANs; one without a CN reports none either."""
    init_cluster_certs(tmp_path, ["n1"])
    ca = load_issued(tmp_path / "ca.crt", tmp_path / "ca.key")
    auth, _ = _seen(tmp_path, issue_client(ca, "alice"))
    assert sorted(auth) == ["transport_security_type", "x509_common_name", "x509_pem_cert"]
    assert auth["x509_common_name"] == [b"alice"]
    auth, _ = _seen(tmp_path, _client(ca, [], [x509.DNSName("nameless.example")]))
    assert sorted(auth) == ["transport_security_type", "x509_pem_cert", "x509_subject_alternative_name"]

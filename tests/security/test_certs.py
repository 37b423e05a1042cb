"""raftkv.security.certs: what init_cluster_certs writes, and that it keeps what exists."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from raftkv.security.certs import init_cluster_certs


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_files_modes_and_extensions(tmp_path: Path) -> None:
    certs = init_cluster_certs(tmp_path, ["n1", "n2"], extra_ips=["10.1.2.3"], extra_dns=["kv.example"])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ca.crt", "ca.key", "client.crt", "client.key", "n1.crt", "n1.key", "n2.crt", "n2.key"]
    for key in tmp_path.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key

    node = _cert(certs.nodes["n1"].cert)
    sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "n1", "kv.example"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.1.2.3")
    }
    usages = set(node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}

    client = _cert(certs.client.cert)
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert client.subject.rfc4514_string() == "CN=root"
    ca = _cert(certs.ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    node.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)


def test_idempotent_and_adds_only_missing(tmp_path: Path) -> None:
    init_cluster_certs(tmp_path, ["n1", "n2"])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    certs = init_cluster_certs(tmp_path, ["n1", "n2", "n3"])
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"n3.crt", "n3.key"}
    _cert(certs.nodes["n3"].cert).verify_directly_issued_by(_cert(certs.ca))

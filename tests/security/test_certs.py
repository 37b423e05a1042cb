"""raftkv.security.certs: what init_cluster_certs writes, that peer and client certificates are apart, and
that it keeps what exists."""

from __future__ import annotations

import ipaddress
import shutil
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from raftkv.security.certs import init_cluster_certs


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_files_modes_and_extensions(tmp_path: Path) -> None:
    certs = init_cluster_certs(tmp_path, ["n1", "n2"], extra_ips=["10.1.2.3"], extra_dns=["kv.example"])
    names = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert names == [
        "ca.crt", "ca.key", "client.crt", "client.key", "n1.crt", "n1.key", "n2.crt", "n2.key",
        "peer", "peer/ca.crt", "peer/ca.key", "peer/n1.crt", "peer/n1.key", "peer/n2.crt", "peer/n2.key",
    ]
    for key in tmp_path.rglob("*.key"):
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


def test_peer_and_client_certificates_cannot_stand_in_for_each_other(tmp_path: Path) -> None:
    """Each port trusts one CA, and each CA signs certificates for one port only."""
    certs = init_cluster_certs(tmp_path, ["n1"])
    client_ca, peer_ca = _cert(certs.ca), _cert(certs.peer_ca)
    assert client_ca.public_key() != peer_ca.public_key()
    peer = _cert(certs.peers["n1"].cert)
    assert peer.subject.rfc4514_string() == "CN=n1"
    peer.verify_directly_issued_by(peer_ca)
    for other in (certs.client.cert, certs.nodes["n1"].cert):
        with pytest.raises(ValueError):
            _cert(other).verify_directly_issued_by(peer_ca)
    with pytest.raises(ValueError):
        peer.verify_directly_issued_by(client_ca)


def test_a_directory_of_the_older_layout_gains_peer_certificates_and_keeps_the_rest(tmp_path: Path) -> None:
    init_cluster_certs(tmp_path, ["n1", "n2"])
    shutil.rmtree(tmp_path / "peer")  # what an older kvctl made: one CA for everything
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    certs = init_cluster_certs(tmp_path, ["n1", "n2"])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    for name in ("n1", "n2"):
        _cert(certs.peers[name].cert).verify_directly_issued_by(_cert(certs.peer_ca))


def test_idempotent_and_adds_only_missing(tmp_path: Path) -> None:
    init_cluster_certs(tmp_path, ["n1", "n2"])
    before = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*.*")}
    certs = init_cluster_certs(tmp_path, ["n1", "n2", "n3"])
    after = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*.*")}
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"n3.crt", "n3.key", "peer/n3.crt", "peer/n3.key"}
    _cert(certs.nodes["n3"].cert).verify_directly_issued_by(_cert(certs.ca))

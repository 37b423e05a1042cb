"""Certificate files that change under a running member, without one: ``kvctl certs rotate``'s steps
(raftkv.security.rotation), the revocation list (raftkv.security.revocation) and the TLS material a
listener reloads (raftkv.security.tls). The cluster-level proof is tests/cluster/test_cert_lifecycle.py;
these are the rules each piece owns, cheaply."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from raftkv.security import rotation
from raftkv.security.certs import PEER_DIR, create_ca, init_cluster_certs, issue_client, load_issued
from raftkv.security.revocation import RevocationList
from raftkv.security.tls import ConfigError, ReloadingSSLContext, TLSFiles, WatchedTLS

from .crls import signed_crl


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _bundle(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _touch_later(*paths: Path) -> None:
    """Move the files' mtime on (a rewrite within one clock tick must still count as a change)."""
    for path in paths:
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_renewal_keeps_names_usages_and_sans(tmp_path: Path) -> None:
    init_cluster_certs(tmp_path, ["n1"], extra_ips=["10.1.2.3"], extra_dns=["kv.example"])
    before = {p: _cert(p) for p in [*tmp_path.glob("*.crt"), *(tmp_path / PEER_DIR).glob("*.crt")]}
    changes = rotation.renew_leaves(tmp_path)
    assert sorted(c.path.name for c in changes) == ["client.crt", "n1.crt", "n1.crt"]
    for path, old in before.items():
        new = _cert(path)
        if path.name == "ca.crt":
            assert new == old
            continue
        assert new.serial_number != old.serial_number and new.public_key() != old.public_key()
        assert new.subject == old.subject and new.issuer == old.issuer
        for extension in (x509.ExtendedKeyUsage, x509.SubjectAlternativeName):
            try:
                assert new.extensions.get_extension_for_class(extension).value == \
                    old.extensions.get_extension_for_class(extension).value
            except x509.ExtensionNotFound:
                assert extension is x509.SubjectAlternativeName  # client certificates carry no SANs
        load_issued(path, path.with_suffix(".key"))  # the new key matches the new certificate


def test_a_ca_changes_in_three_steps(tmp_path: Path) -> None:
    init_cluster_certs(tmp_path, ["n1"])
    old_ca = _cert(tmp_path / "ca.crt")
    rotation.add_cas(tmp_path)
    bundle = _bundle(tmp_path / "ca.crt")
    assert len(bundle) == 2 and bundle[1] == old_ca  # both trusted; the new one signs from now on
    assert _cert(tmp_path / "n1.crt").issuer == old_ca.subject  # nothing renewed yet

    rotation.renew_leaves(tmp_path)
    assert _cert(tmp_path / "n1.crt").issuer == bundle[0].subject
    assert _cert(tmp_path / PEER_DIR / "n1.crt").issuer == _bundle(tmp_path / PEER_DIR / "ca.crt")[0].subject

    rotation.drop_old_cas(tmp_path)
    assert _bundle(tmp_path / "ca.crt") == [bundle[0]]
    assert rotation.drop_old_cas(tmp_path) == []  # nothing left to drop


def test_rotate_without_a_directory_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kvctl certs init"):
        rotation.renew_leaves(tmp_path)


def _auth(cert: x509.Certificate) -> dict[str, list[bytes]]:
    return {"x509_pem_cert": [cert.public_bytes(serialization.Encoding.PEM)]}


def test_revocation_list_reloads_and_keeps_the_last_good_one(tmp_path: Path) -> None:
    init_cluster_certs(tmp_path, ["n1"])
    ca = load_issued(tmp_path / "ca.crt", tmp_path / "ca.key")
    mallory, alice = issue_client(ca, "mallory").cert, issue_client(ca, "alice").cert
    crl_path = tmp_path / "client.crl"
    crl_path.write_bytes(signed_crl(ca, []))
    crl = RevocationList(crl_path, tmp_path / "ca.crt")
    assert crl.refusal(_auth(mallory)) is None and crl.refusal({}) is None

    crl_path.write_bytes(signed_crl(ca, [mallory], der=True))  # DER is read as well as PEM
    _touch_later(crl_path)
    refusal = crl.refusal(_auth(mallory))
    assert refusal is not None and f"{mallory.serial_number:x}" in refusal and "revoked" in refusal
    assert crl.refusal(_auth(alice)) is None

    crl_path.write_bytes(b"half a CRL")  # a CRL being replaced: the last good list stays in force
    _touch_later(crl_path)
    assert crl.refusal(_auth(mallory)) is not None


def test_a_crl_not_signed_by_the_ports_ca_is_refused(tmp_path: Path) -> None:
    init_cluster_certs(tmp_path, ["n1"])
    stranger = create_ca("stranger")
    (tmp_path / "client.crl").write_bytes(signed_crl(stranger, []))
    with pytest.raises(ConfigError, match="not signed by a trusted CA"):
        RevocationList(tmp_path / "client.crl", tmp_path / "ca.crt")
    (tmp_path / "peer.crl").write_bytes(signed_crl(load_issued(tmp_path / PEER_DIR / "ca.crt",
                                                          tmp_path / PEER_DIR / "ca.key"), []))
    with pytest.raises(ConfigError, match="not signed by a trusted CA"):  # the peer CA is not the client's
        RevocationList(tmp_path / "peer.crl", tmp_path / "ca.crt")


def test_reloaded_tls_follows_the_files_and_ignores_a_half_written_pair(tmp_path: Path) -> None:
    init_cluster_certs(tmp_path, ["n1"])
    files = TLSFiles(tmp_path / "ca.crt", tmp_path / "n1.crt", tmp_path / "n1.key")
    watched, http = WatchedTLS(files), ReloadingSSLContext(files)
    first_context = http()
    assert not watched.refresh() and http() is first_context  # unchanged files: the same material

    old_cert = files.cert.read_bytes()
    rotation.renew_leaves(tmp_path)
    renewed_key = files.key.read_bytes()
    files.cert.write_bytes(old_cert)  # the new key beside the old certificate: half way through a rotation
    _touch_later(files.cert, files.key)
    assert not watched.refresh() and http() is first_context  # refused, the previous pair stays

    rotation.renew_leaves(tmp_path)
    _touch_later(files.cert, files.key)
    assert watched.refresh() and watched.value.key != renewed_key
    assert http() is not first_context

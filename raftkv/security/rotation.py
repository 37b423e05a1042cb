"""Renewing a certificate directory in place (``kvctl certs rotate``), for members that reload their files.

Members re-read their key, certificate and CA bundle before each new connection (``security.tls``), so
the files can be replaced under a running cluster. Three steps change a CA without losing a call, the
usual CA rollover, each a separate run so that clients can pick up the bundle in between:

1. ``add_cas``: a new CA per folder (client, and ``peer/``) joins the bundle, in front; its key becomes
   ``ca.key``. Every member now trusts both, old certificates still work.
2. ``renew_leaves``: every leaf certificate signed by a CA of the bundle is issued anew (new key, same
   name, usages and SANs) by the CA of ``ca.key``. Also the whole job of a plain renewal.
3. ``drop_old_cas``: the bundle keeps only the CA of ``ca.key``; certificates of the old CA are refused
   from then on (on new connections).

Each file is replaced atomically, key before certificate; a member that reads between the two sees a
pair that does not match, keeps its previous one and loads the new pair on its next handshake.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from raftkv.security.certs import PEER_DIR, Issued, create_ca, load_issued, reissue, write_issued, write_private
from raftkv.security.common_names import first_common_name
from raftkv.security.tls import ConfigError


@dataclass(frozen=True, slots=True)
class Change:
    """One file written: ``what`` says how (for kvctl to print)."""

    path: Path
    what: str


def _folders(directory: Path) -> list[Path]:
    folders = [directory, directory / PEER_DIR]
    missing = [f / "ca.crt" for f in folders if not (f / "ca.crt").exists()]
    if missing:
        raise ConfigError(f"no CA at {', '.join(map(str, missing))}: run `kvctl certs init` first")
    return folders


def _bundle(folder: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((folder / "ca.crt").read_bytes())


def _write_bundle(folder: Path, cas: list[x509.Certificate]) -> None:
    pem = b"".join(ca.public_bytes(serialization.Encoding.PEM) for ca in cas)
    write_private(folder / "ca.crt", pem, 0o644)


def _signing_ca(folder: Path) -> Issued:
    """The CA of ``ca.key`` (the first of the bundle, as ``add_cas`` leaves it)."""
    return load_issued(folder / "ca.crt", folder / "ca.key")


def add_cas(directory: Path) -> list[Change]:
    changes = []
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    for folder in _folders(directory):
        old = _bundle(folder)
        base = first_common_name(old[0]).split(" (")[0] or "raftkv CA"
        new = create_ca(f"{base} ({stamp})")
        key_pem = new.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_private(folder / "ca.key", key_pem, 0o600)
        _write_bundle(folder, [new.cert, *old])
        changes.append(Change(folder / "ca.crt", f"new CA {new.cert.subject.rfc4514_string()} added "
                                                 f"(the bundle holds {len(old) + 1})"))
    return changes


def renew_leaves(directory: Path) -> list[Change]:
    changes = []
    for folder in _folders(directory):
        ca = _signing_ca(folder)
        trusted = {c.subject for c in _bundle(folder)}
        for cert_path in sorted(folder.glob("*.crt")):
            key_path = cert_path.with_suffix(".key")
            if cert_path.name == "ca.crt" or not key_path.exists():
                continue
            old = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if old.issuer not in trusted:
                continue  # not this directory's (a stranger's certificate kept for tests)
            renewed = reissue(ca, old)
            write_issued(renewed, cert_path, key_path)
            changes.append(Change(cert_path, f"renewed (serial {renewed.cert.serial_number:x})"))
    return changes


def drop_old_cas(directory: Path) -> list[Change]:
    changes = []
    for folder in _folders(directory):
        ca = _signing_ca(folder)
        bundle = _bundle(folder)
        if len(bundle) > 1:
            _write_bundle(folder, [ca.cert])
            changes.append(Change(folder / "ca.crt", f"{len(bundle) - 1} older CA(s) dropped"))
    return changes

"""Loading TLS files and turning them into gRPC credentials, with errors an operator can act on.

gRPC's own failures for bad TLS material are late and vague (a handshake that never completes, a log line
from the C core). Checking the files up front turns each mistake into one ``ConfigError`` line naming the
file: missing or unreadable, not PEM, key not matching the certificate, certificate not signed by the CA,
certificate expired.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PrivateKeyTypes


class ConfigError(Exception):
    """Unusable TLS material; ``str()`` is one line naming the file, and ``path`` is that file."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """Paths of the trusted CA bundle, this party's certificate chain and its private key."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class TLSMaterial:
    """The validated PEM bytes of a ``TLSFiles``, as gRPC wants them."""

    ca: bytes
    cert: bytes
    key: bytes


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}", path) from exc


def _public_bytes(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_tls(files: TLSFiles) -> TLSMaterial:
    """Read and cross-check the three files; raise ``ConfigError`` naming the first bad one."""
    ca_pem, cert_pem, key_pem = _read(files.ca, "CA file"), _read(files.cert, "certificate"), _read(files.key, "key")
    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
    except ValueError as exc:
        raise ConfigError(f"CA file {files.ca} holds no PEM certificate: {exc}", files.ca) from exc
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise ConfigError(f"certificate {files.cert} holds no PEM certificate: {exc}", files.cert) from exc
    try:
        key: PrivateKeyTypes = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"key {files.key} is not an unencrypted PEM private key: {exc}", files.key) from exc

    leaf = chain[0]
    if _public_bytes(key.public_key()) != _public_bytes(leaf.public_key()):  # type: ignore[arg-type]
        raise ConfigError(f"key {files.key} does not match certificate {files.cert}", files.key)
    now = datetime.datetime.now(datetime.timezone.utc)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise ConfigError(
            f"certificate {files.cert} is not valid now (valid {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} "
            f"to {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)",
            files.cert,
        )
    # The issuer of the last certificate of the chain must be one of the trusted CAs.
    top = chain[-1]
    if not any(_issued_by(top, ca) for ca in cas):
        raise ConfigError(f"certificate {files.cert} is not signed by a CA in {files.ca}", files.cert)
    return TLSMaterial(ca=ca_pem, cert=cert_pem, key=key_pem)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def server_credentials(files: TLSFiles) -> grpc.ServerCredentials:
    """Server side of mutual TLS: clients must present a certificate signed by the CA."""
    material = load_tls(files)
    return grpc.ssl_server_credentials(
        [(material.key, material.cert)], root_certificates=material.ca, require_client_auth=True
    )


def channel_credentials(files: TLSFiles) -> grpc.ChannelCredentials:
    """Client side of mutual TLS: verify the server against the CA and present our certificate."""
    material = load_tls(files)
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca, private_key=material.key, certificate_chain=material.cert
    )

"""Loading TLS files and turning them into gRPC credentials, with errors an operator can act on.

gRPC's own failures for bad TLS material are late and vague (a handshake that never completes, a log line
from the C core). Checking the files up front turns each mistake into one ``ConfigError`` line naming the
file: missing or unreadable, not PEM, key not matching the certificate, certificate not signed by the CA,
certificate expired.
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PrivateKeyTypes

from raftkv.security.common_names import certificate_common_names, first_common_name
from raftkv.security.config_error import ConfigError as ConfigError  # re-exported: callers import it from here
from raftkv.security.reload import Reloaded

T = TypeVar("T")


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
    now = datetime.datetime.now(datetime.UTC)
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


def check_separate_cas(client: TLSFiles, peer: TLSFiles) -> None:
    """Refuse a peer port that trusts the client CA: any client certificate could then speak Raft as a
    member (forge appends, votes). The message says how to migrate a directory of the older layout."""
    client_cas = _ca_der(client.ca)
    if any(der in client_cas for der in _ca_der(peer.ca)):
        raise ConfigError(
            f"--peer-trusted-ca-file {peer.ca} trusts a CA that --trusted-ca-file {client.ca} also trusts, so "
            "any client certificate could act as a member on the peer port. Peers need a CA of their own: "
            "`kvctl certs init --dir DIR` adds one (DIR/peer/ca.crt and DIR/peer/<name>.crt) to a directory "
            "made by an older kvctl; then start every member with --peer-trusted-ca-file DIR/peer/ca.crt "
            "--peer-cert-file DIR/peer/<name>.crt --peer-key-file DIR/peer/<name>.key",
            peer.ca,
        )


def _leaf(path: Path) -> x509.Certificate:
    """The first certificate in ``path``: the one that names its holder."""
    try:
        return x509.load_pem_x509_certificates(_read(path, "certificate"))[0]
    except ValueError as exc:
        raise ConfigError(f"certificate {path} holds no PEM certificate: {exc}", path) from exc


def common_name(path: Path) -> str:
    """The CommonName of the first certificate in ``path`` ("" if it has none)."""
    return first_common_name(_leaf(path))


def check_peer_name(peer: TLSFiles, name: str) -> None:
    """The peer certificate must name this member (CN = ``--name``): members match every sender's
    certificate to the name the sender has in the membership."""
    names = certificate_common_names(_leaf(peer.cert))
    if names != [name]:
        raise ConfigError(
            f"--peer-cert-file {peer.cert} is issued to {', '.join(names) or 'no common name'}, not "
            f"to this member ({name!r}): peers accept Raft traffic from a member only with a certificate whose "
            "common name is the member's name (`kvctl certs init` issues them so)",
            peer.cert,
        )


def _ca_der(path: Path) -> set[bytes]:
    try:
        certificates = x509.load_pem_x509_certificates(_read(path, "CA file"))
        return {c.public_bytes(serialization.Encoding.DER) for c in certificates}
    except ValueError as exc:
        raise ConfigError(f"CA file {path} holds no PEM certificate: {exc}", path) from exc


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class WatchedTLS(Reloaded[TLSMaterial]):
    """The newest valid ``TLSMaterial`` of some files, loaded again when they change (the rule of
    ``raftkv.security.reload``)."""

    def __init__(self, files: TLSFiles) -> None:
        super().__init__((files.ca, files.cert, files.key), lambda: load_tls(files), "TLS files",
                         lambda _: f"TLS certificate {files.cert} and CA bundle {files.ca}")


class FollowingTLS(Generic[T]):
    """What ``build`` makes of the newest valid material of some files, made again only when the material
    changes: the one shape of every TLS party that follows its files (server credentials, channel
    credentials, the HTTP side's ``SSLContext``)."""

    def __init__(self, files: TLSFiles, build: Callable[[TLSMaterial], T]) -> None:
        self._watched = WatchedTLS(files)
        self._build = build
        self.built = build(self._watched.value)

    def changed(self) -> bool:
        """Check the files (three ``stat`` calls while unchanged); True if ``built`` is new."""
        if not self._watched.refresh():
            return False
        self.built = self._build(self._watched.value)
        return True

    def __call__(self) -> T:
        """``built`` after a check: the same object while the material is unchanged."""
        self.changed()
        return self.built


def _server_configuration(material: TLSMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(material.key, material.cert)], root_certificates=material.ca)


def server_credentials(files: TLSFiles) -> grpc.ServerCredentials:
    """Server side of mutual TLS: clients must present a certificate signed by a CA of the bundle.

    The key, certificate and CA bundle are re-read when their files change, before the handshake of each
    new connection (grpcio's dynamic server credentials), so an operator rotates them without a restart;
    connections already open keep what they negotiated. Raises ``ConfigError`` if the files are unusable
    now; later, files that do not validate (say, half-way through being replaced) are ignored with a
    warning and the previous material stays in use."""
    following = FollowingTLS(files, _server_configuration)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each new connection's handshake: None keeps the current configuration."""
        return following.built if following.changed() else None

    return grpc.dynamic_ssl_server_credentials(following.built, fetch, require_client_authentication=True)


def channel_credentials(files: TLSFiles) -> grpc.ChannelCredentials:
    """Client side of mutual TLS: verify the server against the CA and present our certificate."""
    return _channel_credentials(load_tls(files))


def _channel_credentials(material: TLSMaterial) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca, private_key=material.key, certificate_chain=material.cert
    )


class ReloadingChannelCredentials(FollowingTLS[grpc.ChannelCredentials]):
    """Client side of mutual TLS for a member's own outgoing connections (to peers, to the leader's client
    port), following its files as the server side does.

    grpcio's channel credentials are fixed when made, so calling this returns the credentials of the
    newest valid files, the same object while they are unchanged: a caller that gets a different one
    dials anew with it (an existing connection keeps what it negotiated). Without this a member whose
    peers moved to a certificate of a new CA could not reach them again once its connection dropped."""

    def __init__(self, files: TLSFiles) -> None:
        super().__init__(files, _channel_credentials)


def _ssl_context(material: TLSMaterial, alpn: tuple[str, ...]) -> ssl.SSLContext:
    """A context of exactly ``material`` (validated bytes, not the files again: they may be changing).
    ``load_cert_chain`` reads only files, so the key and certificate go through an in-memory one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    fd = os.memfd_create("raftkv-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, material.key + b"\n" + material.cert)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    context.load_verify_locations(cadata=material.ca.decode("ascii"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(list(alpn))
    return context


class ReloadingSSLContext(FollowingTLS[ssl.SSLContext]):
    """Server side of mutual TLS for what Python terminates itself (the client port's HTTP), held to the
    rules ``server_credentials`` gives grpcio (TLS 1.2 or later, a client certificate signed by the CA) and
    following its files as ``server_credentials`` does: calling it before a connection's handshake gives
    the context of the newest valid files (the same object while
    they are unchanged). Connections already open keep what they negotiated."""

    def __init__(self, files: TLSFiles, alpn: tuple[str, ...] = ("http/1.1",)) -> None:
        super().__init__(files, lambda material: _ssl_context(material, alpn))

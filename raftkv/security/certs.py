"""Certificates for a raftkv cluster: two CAs, two certificates per member, one client certificate.

Mutual TLS is on by default on every link, so a cluster cannot start without certificates; this module
makes them for development, tests and small deployments (operators with their own PKI bring their own
files). Peers and clients get CAs of their own, as etcd recommends (``--peer-trusted-ca-file``): the
peer port trusts only the peer CA, so a client certificate cannot speak Raft, and the client port trusts
only the client CA, so a peer certificate cannot stand in for a client. Layout::

    ca.crt ca.key                 client CA
    <name>.crt <name>.key         a member's certificate for its client port (server, and client of other
                                  members' client ports, where it forwards lease keep-alives)
    client.crt client.key         the client certificate
    peer/ca.crt peer/ca.key       peer CA
    peer/<name>.crt peer/<name>.key   a member's peer certificate (server and client); its CN is the
                                  member's name, which the peer port matches against the sender

Directories made before peers had a CA of their own lack ``peer/``: running ``init_cluster_certs``
(``kvctl certs init``) on them again adds it and changes nothing else. SANs cover every way a member is
dialled in practice: gRPC matches an IP target only against IP SANs and never falls back to the CN
(research notes §5.2).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftkv.security.common_names import first_common_name
from raftkv.security.tls import ConfigError, TLSFiles

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CA_DAYS = 3650
LEAF_DAYS = 825
#: Backdating absorbs clock skew between the machine that issues and the ones that verify.
BACKDATE = datetime.timedelta(hours=1)
DEFAULT_IPS: tuple[IPAddress, ...] = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
CLIENT_NAME = "client"
#: The subdirectory of a certificate directory that holds the peer CA and the peer certificates.
PEER_DIR = "peer"


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class ClusterCerts:
    """Where ``init_cluster_certs`` put everything: ``nodes`` for the client port, ``peers`` for the peer port."""

    ca: Path
    nodes: dict[str, TLSFiles]
    client: TLSFiles
    peer_ca: Path
    peers: dict[str, TLSFiles]


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - BACKDATE).not_valid_after(now + datetime.timedelta(days=days))


def create_ca(common_name: str = "raftkv CA", days: int = CA_DAYS) -> Issued:
    """A self-signed CA that can sign leaf certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        _validity(x509.CertificateBuilder(), days)
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return Issued(builder.sign(key, hashes.SHA256()), key)


def _issue(
    ca: Issued,
    common_name: str,
    usages: Sequence[x509.ObjectIdentifier],
    sans: Sequence[x509.GeneralName],
    days: int,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _validity(x509.CertificateBuilder(), days)
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def issue_node(
    ca: Issued,
    name: str,
    extra_ips: Iterable[str] = (),
    extra_dns: Iterable[str] = (),
    days: int = LEAF_DAYS,
) -> Issued:
    """A node certificate, valid as server and as client, for ``localhost``, ``name``, loopback and extras."""
    dns = list(dict.fromkeys(["localhost", name, *extra_dns]))
    ips = list(dict.fromkeys([*DEFAULT_IPS, *(ipaddress.ip_address(ip) for ip in extra_ips)]))
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ip) for ip in ips]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return _issue(ca, name, usages, sans, days)


def issue_client(ca: Issued, common_name: str = "root", days: int = LEAF_DAYS) -> Issued:
    """A client-only certificate; the CN is the identity a server may map to a user."""
    return _issue(ca, common_name, [ExtendedKeyUsageOID.CLIENT_AUTH], [], days)


def write_private(path: Path, data: bytes, mode: int) -> None:
    """Write atomically: a crash leaves either no file or a whole one, never a truncated key."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_issued(issued: Issued, cert_path: Path, key_path: Path) -> None:
    """Key first (mode 0600), then certificate: a present certificate implies a present key."""
    key_pem = issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(key_path, key_pem, 0o600)
    write_private(cert_path, issued.cert.public_bytes(serialization.Encoding.PEM), 0o644)


def load_issued(cert_path: Path, key_path: Path) -> Issued:
    """Read back a certificate and its EC key (as written by ``write_issued``)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load {cert_path} / {key_path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_path}: expected an EC private key, found {type(key).__name__}")
    return Issued(cert, key)


def init_cluster_certs(
    directory: str | os.PathLike[str],
    node_names: Iterable[str],
    extra_ips: Iterable[str] = (),
    extra_dns: Iterable[str] = (),
) -> ClusterCerts:
    """Make the CAs and certificates of the module docstring's layout in ``directory``.

    Idempotent: existing files are kept and only missing ones are created (signed by the existing CAs), so
    calling it again after adding a member issues just that member's certificates, and calling it on a
    directory of an older layout adds the peer CA and peer certificates.
    """
    root = Path(directory)
    names = list(dict.fromkeys(node_names))
    assert CLIENT_NAME not in names and "ca" not in names, f"node names clash with fixed file names: {names}"
    extra_ips, extra_dns = tuple(extra_ips), tuple(extra_dns)

    def ensure(folder: Path, name: str, issue: Callable[[Issued], Issued], ca: Issued) -> TLSFiles:
        files = TLSFiles(ca=folder / "ca.crt", cert=folder / f"{name}.crt", key=folder / f"{name}.key")
        if not files.cert.exists():
            write_issued(issue(ca), files.cert, files.key)
        return files

    def member(name: str) -> Callable[[Issued], Issued]:
        return lambda ca: issue_node(ca, name, extra_ips, extra_dns)

    client_ca = _ensure_ca(root, "raftkv client CA")
    nodes = {name: ensure(root, name, member(name), client_ca) for name in names}
    client = ensure(root, CLIENT_NAME, issue_client, client_ca)
    peer_root = root / PEER_DIR
    peer_ca = _ensure_ca(peer_root, "raftkv peer CA")
    peers = {name: ensure(peer_root, name, member(name), peer_ca) for name in names}
    return ClusterCerts(ca=root / "ca.crt", nodes=nodes, client=client, peer_ca=peer_root / "ca.crt", peers=peers)


def _ensure_ca(folder: Path, common_name: str) -> Issued:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "ca.crt", folder / "ca.key"
    if cert.exists():
        return load_issued(cert, key)
    ca = create_ca(common_name)
    write_issued(ca, cert, key)
    return ca


def reissue(ca: Issued, old: x509.Certificate, days: int = LEAF_DAYS) -> Issued:
    """A new key and certificate with ``old``'s common name, usages and SANs, signed by ``ca``: the renewal
    of a leaf without knowing how it was first made (extra IPs and names survive)."""
    try:
        usages = list(old.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    try:
        sans = list(old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    return _issue(ca, first_common_name(old), usages, sans, days)

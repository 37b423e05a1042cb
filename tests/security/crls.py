"""Certificate revocation lists signed by a test CA, for the tests of ``--client-crl-file`` / ``--peer-crl-file``."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from raftkv.security.certs import Issued


def signed_crl(ca: Issued, revoked: list[x509.Certificate], der: bool = False) -> bytes:
    """A CRL of ``ca`` listing ``revoked``, valid for a day, in PEM (or DER)."""
    now = datetime.datetime.now(datetime.UTC)
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
    builder = builder.last_update(now).next_update(now + datetime.timedelta(days=1))
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(now).build())
    crl = builder.sign(ca.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


def write_crl(path: Path, ca: Issued, revoked: list[x509.Certificate]) -> None:
    """Replace ``path`` atomically, as an operator's tooling would (a member may read it at any time)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(signed_crl(ca, revoked))
    tmp.replace(path)

"""The common names (CN) a certificate is issued to, read one way everywhere.

A CN is an identity in two places: a member's peer certificate must name the member (the peer port checks
every sender), and with auth on a client certificate's CN is the etcd user. Both the certificates raftkv
reads itself (its own files, renewals, the HTTP side's handshakes) and the auth contexts gRPC hands a call
go through here, so that "which name does this certificate carry" has one answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cryptography import x509

#: Where gRPC's auth context (``ServicerContext.auth_context()``) holds the verified peer certificate's CN.
AUTH_COMMON_NAME = "x509_common_name"


def certificate_common_names(cert: x509.Certificate) -> list[str]:
    """The CommonName values of ``cert``'s subject, in order (usually one; none is possible)."""
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)]


def first_common_name(cert: x509.Certificate) -> str:
    """The CN that names ``cert``'s holder, as gRPC reports it (the first): "" if it has none."""
    names = certificate_common_names(cert)
    return names[0] if names else ""


def auth_common_names(auth: Mapping[str, Iterable[bytes]]) -> list[str]:
    """The CNs of the verified peer certificate in a gRPC auth context (or one in its shape); none on a
    connection without a client certificate. Bytes that are not UTF-8 are replaced, never raised on."""
    return [name.decode(errors="replace") for name in auth.get(AUTH_COMMON_NAME, ())]

"""Certificate revocation lists (``--client-crl-file``, ``--peer-crl-file``), enforced on every listener.

grpcio for Python exposes no CRL hook in the TLS handshake (the C core's ``CrlProvider`` is not
reachable from Python), so the check sits at the first point Python sees a connection: before any handler
of any call runs, a guard (``raftkv.grpc_guard``) reads the peer's verified certificate
(``auth_context()["x509_pem_cert"]``) and refuses the call if the CRL lists its serial number. The verdict
is cached per certificate, so a connection costs one lookup per call. The CRL file is re-read when it
changes (an operator revokes without a restart); a CRL that does not parse, or is not signed by a trusted
CA, is refused at start-up and ignored with a warning later (the previous list stays in force).

etcd checks its CRL in the listener, per accepted connection; the client sees the same effect (no call on
that connection succeeds), only as a gRPC status instead of a failed handshake. The client port's HTTP side
(``raftkv.api.gateway.http``) does see its connections, so it asks once per connection, as etcd does, and
its calls into the gRPC handlers skip the guard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import grpc
from cryptography import x509

from raftkv.grpc_guard import Context, Guard
from raftkv.security.reload import Reloaded
from raftkv.security.tls import ConfigError, TLSFiles

#: The status a call with a revoked certificate gets; the text names the serial.
REVOKED_CODE = grpc.StatusCode.UNAUTHENTICATED
_CACHE_LIMIT = 4096


def _load_crl(path: Path, cas: list[x509.Certificate]) -> x509.CertificateRevocationList:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read CRL file {path}: {exc.strerror}", path) from exc
    try:
        crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise ConfigError(f"CRL file {path} is not a PEM or DER certificate revocation list: {exc}", path) from exc
    if cas and not any(_signed_by(crl, ca) for ca in cas):
        raise ConfigError(f"CRL file {path} is not signed by a trusted CA", path)
    return crl


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


class RevocationList:
    """The serial numbers a CRL file revokes, reloaded when the file changes (``raftkv.security.reload``
    decides when, and keeps the last good list while a new one does not validate)."""

    def __init__(self, path: str | Path, ca_file: str | Path | None = None) -> None:
        self.path = Path(path)
        self._ca_file = Path(ca_file) if ca_file else None
        self._revoked = Reloaded((self.path,), lambda: self._serials(self._load()), "revocation list",
                                 lambda revoked: f"CRL {self.path}: {len(revoked)} revoked certificates")
        self._verdicts: dict[bytes, int | None] = {}  # certificate -> its serial if revoked, else None

    def _load(self) -> x509.CertificateRevocationList:
        """The CRL, checked against the CA bundle as it is now (a rotated CA signs later CRLs)."""
        cas = []
        if self._ca_file is not None:
            try:
                cas = x509.load_pem_x509_certificates(self._ca_file.read_bytes())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read CA file {self._ca_file} to check CRL {self.path}: {exc}",
                                  self._ca_file) from exc
        return _load_crl(self.path, cas)

    @staticmethod
    def _serials(crl: x509.CertificateRevocationList) -> frozenset[int]:
        return frozenset(entry.serial_number for entry in crl)

    def revoked_serial(self, pem: bytes) -> int | None:
        """The serial of ``pem`` if the CRL revokes it, else None."""
        if self._revoked.refresh():
            self._verdicts = {}  # those were cached for the previous list
        # The cache before the list: a verdict drawn from a list that a reload replaces meanwhile goes
        # into the cache that reload drops, never into the new one.
        verdicts = self._verdicts
        try:
            return verdicts[pem]
        except KeyError:
            serial = x509.load_pem_x509_certificate(pem).serial_number
            verdict = serial if serial in self._revoked.value else None
            if len(verdicts) >= _CACHE_LIMIT:
                verdicts.clear()
            verdicts[pem] = verdict
            return verdict

    def refusal(self, auth: dict[str, list[bytes]]) -> str | None:
        """Why a caller with this auth context (grpcio's shape: ``x509_pem_cert`` holds the verified peer
        certificate) is refused, or None if it is not revoked. The one place every listener asks."""
        pems = auth.get("x509_pem_cert")
        serial = self.revoked_serial(pems[0]) if pems else None
        return None if serial is None else f"raftkv: certificate serial {serial:x} is revoked ({self.path})"


class Revoked(Exception):
    """A call whose peer certificate the CRL revokes; ``str()`` names the serial and the CRL."""


class RevocationGuard(Guard):
    """Refuses every call whose peer certificate the CRL revokes, before the handler runs (any service:
    etcd's, health, Raft)."""

    refusals = (Revoked,)

    def __init__(self, crl: RevocationList) -> None:
        self._crl = crl

    def before(self, request: Any, context: Context, streaming_request: bool) -> Any:
        refusal = self._crl.refusal(context.auth_context())
        if refusal is not None:
            raise Revoked(refusal)
        return request

    async def refuse(self, context: Context, error: BaseException) -> NoReturn:
        await context.abort(REVOKED_CODE, str(error))
        raise AssertionError("ServicerContext.abort returned")


def revocation_list(crl_file: Path | None, tls: TLSFiles | None) -> RevocationList | None:
    """The list of ``--client-crl-file`` / ``--peer-crl-file`` (None without one). The CRL must be signed
    by a CA of that listener's bundle. Raises ``ConfigError`` for an unusable CRL."""
    if crl_file is None or tls is None:
        return None
    return RevocationList(crl_file, tls.ca)


def revocation_guards(crl: RevocationList | None) -> list[Guard]:
    """What a gRPC listener runs first for ``crl`` (nothing without one)."""
    return [] if crl is None else [RevocationGuard(crl)]

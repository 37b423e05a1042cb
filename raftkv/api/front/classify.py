"""Which server a new client connection is for, decided from its first bytes alone (sans-I/O).

The bytes are peeked, not consumed, so whoever gets the connection sees it from its first byte.

With TLS the decision rests on the ClientHello's ALPN list, read without terminating TLS:

- gRPC clients offer ``h2`` and never ``http/1.1`` (grpc-go, which etcdctl and every Go client use, offers
  exactly ``h2``; grpcio offers ``h2``; gRPC requires ALPN ``h2``), so an ALPN list without
  ``http/1.1`` is gRPC;
- curl, browsers, Go's and Python's HTTP clients offer ``http/1.1`` (curl: ``h2,http/1.1``) or no ALPN
  at all; those connections are HTTP and are served HTTP/1.1 (the TLS terminator selects ``http/1.1``).

A client that offers only ``h2`` for JSON (HTTP/2 forced, with TLS) therefore reaches grpcio and fails;
etcd would have served it. Nothing else is known to do that.

Without TLS: the HTTP/2 connection preface is gRPC (as etcd's ``cmux.HTTP2()`` matcher decides); a valid
HTTP/1.x request line is HTTP (``cmux.HTTP1()``); anything else is refused.

Bytes that do not open a TLS handshake on a TLS port (a plain-HTTP request among them) are refused without
an answer, as etcd refuses them: its TLS listener fails the handshake before any HTTP server sees them.
"""

from __future__ import annotations

import enum
import re

#: What a plaintext HTTP/2 client (gRPC with ``--insecure-plaintext``) sends first (RFC 9113 §3.4).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: cmux reads at most this much of a connection looking for an HTTP/1 request line.
MAX_REQUEST_LINE = 4096
#: A ClientHello larger than this is refused (real ones are under 2 KiB, post-quantum key shares included).
MAX_CLIENT_HELLO = 32 * 1024
#: How many bytes a caller should peek to be able to decide every case.
PEEK_BYTES = MAX_CLIENT_HELLO + 5 * 8


_TLS_HANDSHAKE = 0x16
_CLIENT_HELLO = 1
_ALPN_EXTENSION = 16
#: ``METHOD SP request-target SP HTTP/1.x`` — what ``http.ParseHTTPVersion`` accepts as version 1.
_REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^ \r\n]+ HTTP/1\.[0-9]\r?\n")


class Route(enum.Enum):
    GRPC = "grpc"
    HTTP = "http"
    REFUSE = "refuse"


class Malformed(Exception):
    """The bytes cannot open a connection of the expected kind."""


def classify(data: bytes, tls: bool) -> Route | None:
    """The route for a connection whose first bytes are ``data``; None while more bytes are needed.

    Callers give up (and close) once the peer stops sending before a decision, after their own deadline.
    """
    return _classify_tls(data) if tls else _classify_plain(data)


def _classify_plain(data: bytes) -> Route | None:
    if data.startswith(H2_PREFACE):
        return Route.GRPC
    if H2_PREFACE.startswith(data):
        return None
    line_end = data.find(b"\n", 0, MAX_REQUEST_LINE)
    if line_end < 0:
        return None if len(data) < MAX_REQUEST_LINE and _may_become_request_line(data) else Route.REFUSE
    return Route.HTTP if _REQUEST_LINE.fullmatch(data, 0, line_end + 1) else Route.REFUSE


def _may_become_request_line(data: bytes) -> bool:
    """Whether more bytes could still make ``data`` (no newline yet) a valid HTTP/1 request line."""
    method, space, rest = data.partition(b" ")
    if not _TOKEN.fullmatch(method):
        return False
    target, space, version = rest.partition(b" ") if space else (b"", b"", b"")
    return not space or (b"\r" not in target and bool(_VERSION_PREFIX.fullmatch(version)))


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION_PREFIX = re.compile(rb"(H(T(T(P(/(1(\.([0-9]\r?)?)?)?)?)?)?)?)?")


def _classify_tls(data: bytes) -> Route | None:
    if len(data) < 5:
        return None if not data or data[0] == _TLS_HANDSHAKE else Route.REFUSE
    try:
        hello = _client_hello(data)
    except Malformed:
        return Route.REFUSE
    if hello is None:
        return None
    try:
        protocols = alpn_protocols(hello)
    except Malformed:
        return Route.REFUSE
    if protocols is None or b"http/1.1" in protocols:
        return Route.HTTP
    return Route.GRPC


def _client_hello(data: bytes) -> bytes | None:
    """The ClientHello body (after its 4-byte handshake header), reassembled from as many TLS records as
    it spans; None if more bytes are needed. Raises ``Malformed`` for anything else."""
    fragments = bytearray()
    offset = 0
    while True:
        if len(data) < offset + 5:
            return None
        kind, major, length = data[offset], data[offset + 1], int.from_bytes(data[offset + 3 : offset + 5], "big")
        if kind != _TLS_HANDSHAKE or major != 3 or not 0 < length <= 2**14:
            raise Malformed("not a TLS handshake record")
        fragments += data[offset + 5 : offset + 5 + length]
        if len(fragments) >= 4:
            if fragments[0] != _CLIENT_HELLO:
                raise Malformed("the first handshake message is not a ClientHello")
            needed = int.from_bytes(fragments[1:4], "big")
            if needed > MAX_CLIENT_HELLO:
                raise Malformed("ClientHello too large")
            if len(fragments) >= 4 + needed:
                return bytes(fragments[4 : 4 + needed])
        if len(data) < offset + 5 + length:
            return None
        offset += 5 + length


def alpn_protocols(hello: bytes) -> list[bytes] | None:
    """The protocols a ClientHello body offers by ALPN (RFC 7301), or None if it has no ALPN extension."""
    reader = _Reader(hello)
    reader.take(2 + 32)  # legacy_version, random
    reader.vector(1)  # legacy_session_id
    reader.vector(2)  # cipher_suites
    reader.vector(1)  # legacy_compression_methods
    if reader.done():
        return None  # TLS 1.2 allows a ClientHello without extensions
    extensions = _Reader(reader.vector(2))
    while not extensions.done():
        kind = int.from_bytes(extensions.take(2), "big")
        body = extensions.vector(2)
        if kind == _ALPN_EXTENSION:
            names = _Reader(_Reader(body).vector(2))
            protocols = []
            while not names.done():
                protocols.append(names.vector(1))
            return protocols
    return None


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, count: int) -> bytes:
        if self._at + count > len(self._data):
            raise Malformed("truncated ClientHello")
        chunk = self._data[self._at : self._at + count]
        self._at += count
        return chunk

    def vector(self, length_bytes: int) -> bytes:
        return self.take(int.from_bytes(self.take(length_bytes), "big"))

    def done(self) -> bool:
        return self._at >= len(self._data)

"""The HTTP/1.1 side of the client port: etcd's JSON gateway and ``/health``, ``/version``, ``/metrics``.

One connection is served by :meth:`Gateway.serve` with an ``h11`` state machine (keep-alive and
pipelining included). A gateway request is answered the way etcd 3.4's grpc-gateway answers it:

- unary methods: the body's first JSON value is the request (an empty body is an empty request; what
  follows the first value is ignored); the answer is the response as JSON, or etcd's error object
  ``{"error": text, "message": text, "code": n}`` with grpc-gateway's HTTP status for the gRPC code;
- streaming methods (``/v3/watch``, ``/v3/lease/keepalive``, snapshot, election observe): every JSON value
  of the body, as it arrives, is one request; the answer is chunked, one ``{"result": ...}`` line per
  message, headers sent with the first (so a failure before it still gets its own status); a failure
  later ends the stream with ``{"error": {"grpc_code": ..., "http_code": ..., "message": ...,
  "http_status": ...}}``. The call ends when the client goes away.

Limits: request headers ``MAX_HEADER_BYTES`` within ``HEADER_TIMEOUT``; a unary body up to twice the gRPC
side's read ceiling (``receive_limit``; base64 and JSON take room) arriving with no pause over
``BODY_TIMEOUT``; one value of a streaming body up to the same size; an idle keep-alive connection is
closed after ``IDLE_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import h11
from cryptography import x509
from google.protobuf.message import Message

from raftkv import ETCD_CLUSTER_VERSION, ETCD_VERSION
from raftkv.api.gateway import routes
from raftkv.api.gateway.calls import (
    HTTP_STATUS,
    CallError,
    GatewayContext,
    MethodTable,
    call_streaming,
    call_unary,
    metadata_from_headers,
    request_class,
)
from raftkv.api.gateway.gojson import GoJSONError, NeedMore, next_value, quote
from raftkv.api.gateway.jsonpb import decode, encode
from raftkv.api.receive_limit import ReceiveLimit
from raftkv.security.common_names import AUTH_COMMON_NAME, auth_common_names, certificate_common_names
from raftkv.security.revocation import REVOKED_CODE, RevocationList

log = logging.getLogger("raftkv.gateway")

MAX_HEADER_BYTES = 16 * 1024
HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0
IDLE_TIMEOUT = 120.0
READ_BYTES = 64 * 1024
#: A unary body larger than this is decoded on a worker thread. The member's Raft loop shares the event loop
#: with the gateway, and decoding an 8 MiB value takes ~0.1 s of Python: on the loop thread that stalls
#: heartbeats (a leader stalled past the election timeout is deposed); on a worker the loop thread gets the
#: GIL back every switch interval. Below this the hand-off costs more than the decode.
OFF_LOOP_BODY_BYTES = 256 * 1024
#: After refusing a body too large to read, keep reading (and dropping) what the client still sends, up to
#: this long and this much, before closing: a socket closed with unread bytes is reset, and a client that
#: sends its whole body before it reads (Python's http.client) would lose the answer.
LINGER_SECONDS = 5.0
LINGER_BYTES = 64 * 1024 * 1024

#: etcd's answer (HTTP 400, plain text) to a /v3/ request with auth on from a certificate that has a CN.
CN_REFUSED = "CommonName of client sending a request against gateway will be ignored and not used as expected\n"

_JSON = [("Content-Type", "application/json")]
_GRPC_METADATA = [("Grpc-Metadata-Content-Type", "application/grpc")]
_TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class PlainEndpoints:
    """What ``/health``, ``/version`` and ``/metrics`` answer from (the process entry point supplies them)."""

    healthy: Callable[[], Awaitable[bool]]
    metrics: Callable[[], str]


class _ClientGone(Exception):
    """The client closed the connection (or broke the protocol) mid-request."""


class _BodyTooLarge(Exception):
    """The request body passed the gateway's limit; ``prefix`` is what was read of it."""

    def __init__(self, prefix: bytes) -> None:
        super().__init__("request body too large")
        self.prefix = prefix


class _Connection:
    """An h11 connection over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        #: The rest of the current request's body will not be read: answer, then close.
        self.abandoned = False

    async def next_event(self, timeout: float) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self.h11.they_are_waiting_for_100_continue:
                await self.send(h11.InformationalResponse(status_code=100, headers=[]))
            async with asyncio.timeout(timeout):  # cheaper than wait_for: no task per read
                data = await self.reader.read(READ_BYTES)
            self.h11.receive_data(data)

    async def send(self, *events: Any) -> None:
        """One write for all of ``events``: one TLS record and one system call, not one per event."""
        data = b"".join(self.h11.send(event) or b"" for event in events)
        if data:
            self.writer.write(data)
        await self.writer.drain()


class Gateway:
    """Serves HTTP connections handed over by the client port."""

    def __init__(self, methods: MethodTable, plain: PlainEndpoints, limit: ReceiveLimit,
                 revoked: RevocationList | None = None, auth_enabled: Callable[[], bool] = lambda: False,
                 member_identity: dict[str, list[bytes]] | None = None) -> None:
        """``revoked``: the client port's CRL (a connection whose certificate it lists as the connection
        opens gets only the refusal; one opened before stays served, as etcd's).
        ``member_identity``: the auth context the gateway's calls carry. etcd's gateway is a gRPC client of
        its own member with the member's certificate, so a token-less call there is the member's CN (no
        user, usually: permission denied), never the caller's; None (plaintext) keeps the caller's."""
        self._methods = methods
        self._revoked = revoked
        self._auth_enabled = auth_enabled
        self._member_identity = member_identity
        self._plain = plain
        self._limit = limit
        #: Bodies are read up to twice the gRPC side's ceiling (base64 and JSON take room).
        self._max_body = 2 * limit.ceiling + 64 * 1024

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(reader, writer)
        identity = _Identity.of(writer)
        # etcd refuses a revoked certificate at the handshake, so nothing on the connection is served. The
        # certificate is the connection's, so is the verdict: the first request gets the gRPC port's
        # refusal (as JSON), then the connection closes.
        refusal = None if self._revoked is None else self._revoked.refusal(identity.auth)
        timeout = HEADER_TIMEOUT
        try:
            while True:
                event = await conn.next_event(IDLE_TIMEOUT if timeout is None else timeout)
                if isinstance(event, h11.Request) and refusal is not None:
                    conn.abandoned = True
                    await self._error(conn, CallError(REVOKED_CODE, refusal))
                elif isinstance(event, h11.Request):
                    await self._request(conn, event, identity)
                elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return
                if conn.h11.our_state is h11.MUST_CLOSE or conn.h11.their_state is h11.MUST_CLOSE:
                    return
                if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
                    conn.h11.start_next_cycle()
                    timeout = IDLE_TIMEOUT
        except h11.RemoteProtocolError as exc:
            with contextlib.suppress(Exception):
                if conn.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    conn.abandoned = True
                    await self._text(conn, exc.error_status_hint, f"{exc.error_status_hint} Bad Request\n")
        except (TimeoutError, ConnectionError, _ClientGone, ssl.SSLError, h11.LocalProtocolError):
            pass
        except Exception as exc:  # a defect here must cost one request, never the member or a traceback
            log.exception("gateway request failed")
            with contextlib.suppress(Exception):
                if conn.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    conn.abandoned = True
                    await self._error(conn, CallError(grpc.StatusCode.INTERNAL, f"gateway: {type(exc).__name__}"))

    # ------------------------------------------------------------------ routing
    async def _request(self, conn: _Connection, request: h11.Request, identity: _Identity) -> None:
        path = request.target.decode("latin-1").partition("?")[0]
        if path.startswith("/v3/") and auth_common_names(identity.auth) and self._auth_enabled():
            # etcd 3.4's gateway calls its own gRPC server with the member's certificate, so a caller's CN
            # cannot be its identity there: with auth on, etcd refuses such a caller's every /v3/ request
            # (its accessController) rather than let a token-less request pass as someone else.
            await self._text(conn, 400, CN_REFUSED)
            return
        method = request.method.decode("latin-1")
        plain = {"/health": self._health, "/version": self._version, "/metrics": self._metrics}.get(path)
        if plain is not None:
            if method != "GET":
                await self._text(conn, 405, "Method Not Allowed\n", [("Allow", "GET")])
                return
            await plain(conn)
            return
        grpc_method = routes.method_for(path)
        if grpc_method is None:
            if routes.is_gateway_path(path):
                await self._text(conn, 404, "Not Found\n")
            else:
                await self._text(conn, 404, "404 page not found\n")
            return
        if method != "POST":
            await self._text(conn, 405, "Method Not Allowed\n")
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]
        host = next((v for k, v in headers if k.lower() == "host"), "")
        auth = identity.auth if self._member_identity is None else self._member_identity
        context = GatewayContext(metadata_from_headers(headers, host, identity.ip), auth, identity.peer,
                                 _grpc_timeout(headers))
        handler = self._methods.resolve(grpc_method, context.invocation_metadata())
        request_type = request_class(grpc_method)
        if handler is None or request_type is None:
            await self._error(conn, CallError(grpc.StatusCode.UNIMPLEMENTED, "Method not found!"))
            return
        if handler.stream_stream is not None or handler.stream_unary is not None:
            await self._bidi(conn, handler, request_type, context)
            return
        try:
            body = await self._read_body(conn)
        except _BodyTooLarge as exc:
            conn.abandoned = True
            await self._error(conn, self._too_large(exc.prefix))
            return
        try:
            if len(body) > OFF_LOOP_BODY_BYTES:
                message = await asyncio.to_thread(self._parse, request_type, body)
            else:
                message = self._parse(request_type, body)
        except CallError as exc:
            await self._error(conn, exc)
            return
        if handler.unary_stream is not None:
            await self._stream_out(conn, call_streaming(handler, message, context))
            return
        try:
            if grpc_method in routes.WAITING_METHODS:
                response = await _unless_client_leaves(conn, call_unary(handler, message, context))
            else:
                response = await call_unary(handler, message, context)
        except CallError as exc:
            await self._error(conn, exc)
            return
        await self._respond(conn, 200, _JSON + _GRPC_METADATA, encode(response).encode())

    def _parse(self, request_type: type[Message], body: bytes) -> Message:
        message = request_type()
        try:
            span = next_value(body, 0, final=True)
            if span is not None:
                decode(message, body[span[0]:span[1]])
        except GoJSONError as exc:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        self._check_size(message.ByteSize())
        return message

    def _check_size(self, size: int) -> None:
        """grpc-go's refusal of an oversized message, which etcd's gateway passes on."""
        refusal = self._limit.refusal(size)
        if refusal is not None:
            raise CallError(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)

    def _too_large(self, prefix: bytes) -> CallError:
        """The answer to a body past the limit: etcd decodes as it reads, so garbage early in the body gets
        its syntax error; anything else is refused for its size (etcd would read on without a bound)."""
        try:
            next_value(prefix, 0, final=False)
        except GoJSONError as exc:
            return CallError(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NeedMore:
            pass
        return CallError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"grpc: received message larger than max (request body over {self._max_body} bytes)")

    # ------------------------------------------------------------------ bodies
    async def _read_body(self, conn: _Connection) -> bytes:
        """The whole request body; raises ``_BodyTooLarge`` once it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await conn.next_event(BODY_TIMEOUT)
            if isinstance(event, h11.Data):
                size += len(event.data)
                chunks.append(event.data)
                if size > self._max_body:
                    raise _BodyTooLarge(b"".join(chunks))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise _ClientGone()

    async def _drain_body(self, conn: _Connection) -> bool:
        """Read and drop a request body nobody wants, so the connection can serve the next request. False
        (and the connection marked abandoned) if the body is too large to be worth reading."""
        size = 0
        while conn.h11.their_state is h11.SEND_BODY and not conn.abandoned:
            event = await conn.next_event(BODY_TIMEOUT)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._max_body:
                    conn.abandoned = True
            elif not isinstance(event, h11.EndOfMessage):
                raise _ClientGone()
        return not conn.abandoned

    async def _bidi(self, conn: _Connection, handler: grpc.RpcMethodHandler, request_type: type[Message],
                    context: GatewayContext) -> None:
        """A streaming-request call: the body's JSON values are its requests, decoded as they arrive. A
        first request that does not decode fails the call (as UNKNOWN, grpc-gateway's choice); a later one
        only ends the sending side."""
        values = _BodyValues(conn, self._max_body)
        first: Message | None = None
        try:
            raw = await values.next_value()
            if raw is not None:
                first = request_type()
                decode(first, raw)
        except GoJSONError as exc:
            await self._error(conn, CallError(grpc.StatusCode.UNKNOWN, str(exc)))
            return

        async def requests() -> AsyncIterator[Message]:
            message = first
            while message is not None:
                yield message
                try:
                    raw = await values.next_value()
                    if raw is None:
                        return
                    message = request_type()
                    decode(message, raw)
                    self._check_size(message.ByteSize())
                except (GoJSONError, CallError, _ClientGone):
                    return

        await self._stream_out(conn, call_streaming(handler, requests(), context), values)

    async def _stream_out(self, conn: _Connection, messages: AsyncIterator[Message],
                          values: _BodyValues | None = None) -> None:
        """Send a streaming call's messages as they come; end it when the client goes away."""
        watcher = asyncio.ensure_future(_client_gone(conn, values))
        started = False
        try:
            async for message in _until(messages, watcher):
                if not started:
                    await conn.send(h11.Response(status_code=200, headers=_JSON + _GRPC_METADATA))
                    started = True
                await conn.send(h11.Data(data=b'{"result":' + encode(message).encode() + b"}\n"))
        except CallError as exc:
            status = HTTP_STATUS.get(exc.code, 500)
            body = (f'{{"error":{{"grpc_code":{exc.code.value[0]},"http_code":{status},"message":'
                    f'{quote(exc.message)},"http_status":{quote(http.HTTPStatus(status).phrase)}}}}}')
            if not started:
                await conn.send(h11.Response(status_code=status, headers=_JSON))
                started = True
            await conn.send(h11.Data(data=body.encode()))
        finally:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await messages.aclose()  # type: ignore[attr-defined]
        if watcher.done() and not watcher.cancelled():
            raise _ClientGone()
        if not started:
            await conn.send(h11.Response(status_code=200, headers=_JSON))
        await conn.send(h11.EndOfMessage())
        if conn.h11.their_state is h11.SEND_BODY and not await self._drain_body(conn):
            raise _ClientGone()

    # ------------------------------------------------------------------ plain endpoints
    async def _health(self, conn: _Connection) -> None:
        ok = await self._plain.healthy()
        await self._text(conn, 200 if ok else 503, '{"health":"%s"}' % ("true" if ok else "false"))

    async def _version(self, conn: _Connection) -> None:
        body = f'{{"etcdserver":{quote(ETCD_VERSION)},"etcdcluster":{quote(ETCD_CLUSTER_VERSION)}}}'
        await self._respond(conn, 200, _JSON, body.encode())

    async def _metrics(self, conn: _Connection) -> None:
        await self._respond(conn, 200, [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                            self._plain.metrics().encode())

    # ------------------------------------------------------------------ answers
    async def _error(self, conn: _Connection, error: CallError) -> None:
        body = f'{{"error":{quote(error.message)},"message":{quote(error.message)},"code":{error.code.value[0]}}}'
        await self._respond(conn, HTTP_STATUS.get(error.code, 500), _JSON, body.encode())

    async def _text(
        self, conn: _Connection, status: int, text: str, extra: list[tuple[str, str]] | None = None
    ) -> None:
        headers = [("Content-Type", _TEXT), ("X-Content-Type-Options", "nosniff"), *(extra or [])]
        await self._respond(conn, status, headers, text.encode())

    async def _respond(self, conn: _Connection, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """One complete answer. The request's body is read to its end first so that the connection can
        serve the next request; a body too large for that gets the answer and then the connection closes."""
        if conn.h11.their_state is h11.SEND_BODY:
            await self._drain_body(conn)
        close = [("Connection", "close")] if conn.abandoned else []
        response = h11.Response(status_code=status, headers=[*headers, *close, ("Content-Length", str(len(body)))])
        await conn.send(response, h11.Data(data=body), h11.EndOfMessage())
        if conn.abandoned:
            await _linger(conn)


_INCOMPLETE = (-1, -1)


class _BodyValues:
    """A request body read as a stream of JSON values (Go's ``json.Decoder`` over ``r.Body``)."""

    def __init__(self, conn: _Connection, max_value: int) -> None:
        self._conn = conn
        self._buffer = b""
        self._max = max_value
        self.ended = asyncio.Event()  # the body is complete
        self.gone = asyncio.Event()  # the client went away before it was

    async def next_value(self) -> bytes | None:
        """The next value's bytes; None when the body has ended. Raises ``GoJSONError``, ``_ClientGone``."""
        while True:
            ended = self.ended.is_set()
            try:
                span = next_value(self._buffer, 0, final=ended)
            except NeedMore:
                span = _INCOMPLETE
            if span is None and ended:
                return None
            if span is not None and span is not _INCOMPLETE:
                value = self._buffer[span[0] : span[1]]
                self._buffer = self._buffer[span[1] :]
                return value
            if len(self._buffer) > self._max:
                raise GoJSONError("request too large")
            try:
                event = await self._conn.next_event(IDLE_TIMEOUT)
            except (TimeoutError, ConnectionError, h11.RemoteProtocolError):
                event = None
            if isinstance(event, h11.Data):
                self._buffer += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.ended.set()
            else:
                self.gone.set()
                raise _ClientGone()


async def _linger(conn: _Connection) -> None:
    """Drop what the client still sends (within ``LINGER_SECONDS`` and ``LINGER_BYTES``) until it closes."""
    deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
    dropped = 0
    with contextlib.suppress(Exception):
        while (left := deadline - asyncio.get_running_loop().time()) > 0 and dropped < LINGER_BYTES:
            data = await asyncio.wait_for(conn.reader.read(READ_BYTES), left)
            if not data:
                return
            dropped += len(data)


async def _client_gone(conn: _Connection, values: _BodyValues | None) -> None:
    """Returns when the client closes the connection while a response streams."""
    if values is not None:
        ended = asyncio.ensure_future(values.ended.wait())
        gone = asyncio.ensure_future(values.gone.wait())
        try:
            await asyncio.wait({ended, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            gone.cancel()
        if values.gone.is_set():
            return
    while True:
        data = await conn.reader.read(READ_BYTES)
        if not data:
            return
        conn.h11.receive_data(data)  # a pipelined next request: kept for after this one


async def _unless_client_leaves(conn: _Connection, call: Awaitable[Message]) -> Message:
    """``call``'s answer; the call is cancelled if the client closes the connection first (as a gRPC call
    is when its client goes), so that a lock nobody waits for any more is not taken."""
    task = asyncio.ensure_future(call)
    watcher = asyncio.ensure_future(_client_gone(conn, None))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise _ClientGone()
    return task.result()


async def _until(messages: AsyncIterator[Message], stop: asyncio.Future[None]) -> AsyncIterator[Message]:
    """``messages`` until ``stop`` completes (the client left)."""
    iterator = messages.__aiter__()
    while True:
        step = asyncio.ensure_future(iterator.__anext__())
        done, _ = await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
        if step not in done:
            step.cancel()
            with contextlib.suppress(BaseException):
                await step
            return
        try:
            yield step.result()
        except StopAsyncIteration:
            return


def _grpc_timeout(headers: list[tuple[str, str]]) -> float | None:
    """grpc-gateway honours a ``Grpc-Timeout`` header (``10S``, ``500m``, ...) as the call's deadline."""
    value = next((v for k, v in headers if k.lower() == "grpc-timeout"), None)
    if not value or len(value) < 2 or not value[:-1].isdigit():
        return None
    unit = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}.get(value[-1])
    return None if unit is None else int(value[:-1]) * unit


@dataclass(frozen=True)
class _Identity:
    """The caller as the TLS handshake verified it, in grpcio's auth-context shape, and its address."""

    auth: dict[str, list[bytes]]
    peer: str
    ip: str

    @classmethod
    def of(cls, writer: asyncio.StreamWriter) -> _Identity:
        address = writer.get_extra_info("peername") or ("", 0)
        host, port = address[0], address[1]
        peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        tls: ssl.SSLObject | None = writer.get_extra_info("ssl_object")
        if tls is None:
            return cls({}, peer, host)
        auth = {"transport_security_type": [b"ssl"]}
        der = tls.getpeercert(binary_form=True)
        if der:
            certificate = x509.load_der_x509_certificate(der)
            auth["x509_subject_alternative_name"] = [name.encode() for name in _alternative_names(certificate)]
            names = certificate_common_names(certificate)[:1]  # gRPC reports the first
            auth[AUTH_COMMON_NAME] = [name.encode() for name in names]
            auth["x509_pem_cert"] = [ssl.DER_cert_to_PEM_cert(der).encode()]
        return cls({k: v for k, v in auth.items() if v}, peer, host)


def _alternative_names(certificate: x509.Certificate) -> list[str]:
    """The certificate's DNS, IP address, URI and email SANs, in its order, written as the ``ssl`` module's
    ``getpeercert()`` writes them (an IPv6 address as eight groups of upper-case hex without zero padding,
    where gRPC's own auth context compresses it: ``fd00::1``; nothing in raftkv reads SANs from a call).
    The kinds are the ones gRPC's auth context holds: other kinds of name are left out."""
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = []
    for san in sans:
        if isinstance(san, (x509.DNSName, x509.UniformResourceIdentifier, x509.RFC822Name)):
            names.append(san.value)
        elif isinstance(san, x509.IPAddress) and isinstance(san.value, ipaddress.IPv4Address):
            names.append(str(san.value))
        elif isinstance(san, x509.IPAddress) and isinstance(san.value, ipaddress.IPv6Address):
            names.append(":".join(f"{int(group, 16):X}" for group in san.value.exploded.split(":")))
    return names

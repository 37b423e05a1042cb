"""Calling the client server's own methods from the gateway: the same handlers, the same guards.

etcd's gateway is a gRPC client of its own server. raftkv's calls the servicers in-process instead, through
the exact handler objects and guards grpcio runs (``MethodTable`` is handed them as the server is built),
so admission, validation and error texts cannot differ between gRPC and JSON. A
:class:`GatewayContext` stands in for grpcio's servicer context: the HTTP request's headers become metadata
as grpc-gateway maps them (``Authorization`` to ``authorization``, ``Grpc-Metadata-X`` to ``x``, the
standard headers to ``grpcgateway-*``), and the auth context is what the HTTP side hands over (the member's
own certificate, as etcd's gateway presents it to its gRPC server: ``http.Gateway``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

log = logging.getLogger("raftkv.gateway")

#: The HTTP headers grpc-gateway v1 forwards as ``grpcgateway-<name>`` metadata (``isPermanentHTTPHeader``).
PERMANENT_HEADERS = frozenset(
    h.lower() for h in (
        "Accept", "Accept-Charset", "Accept-Language", "Accept-Ranges", "Authorization", "Cache-Control",
        "Content-Type", "Cookie", "Date", "Expect", "From", "Host", "If-Match", "If-Modified-Since",
        "If-None-Match", "If-Schedule-Tag-Match", "If-Unmodified-Since", "Max-Forwards", "Origin", "Pragma",
        "Referer", "User-Agent", "Via", "Warning",
    )
)
METADATA_HEADER_PREFIX = "grpc-metadata-"

#: grpc-gateway v1's ``HTTPStatusFromCode``: the HTTP status etcd's gateway answers each gRPC code with.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 408,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


class CallError(Exception):
    """A call ended with a non-OK status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _Details:
    """``grpc.HandlerCallDetails`` as generic handlers read it."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class MethodTable:
    """The handlers a server serves, behind the guards the gateway's calls go through, to call methods
    directly; ``serve`` hands them over as the server is built."""

    def __init__(self) -> None:
        self._handlers: grpc.GenericRpcHandler | None = None

    def serve(self, handlers: grpc.GenericRpcHandler) -> None:
        self._handlers = handlers

    def resolve(self, method: str, metadata: tuple[tuple[str, str], ...]) -> grpc.RpcMethodHandler | None:
        """The handler grpcio would run for ``method``, guards applied (None before ``serve``, or if no
        service has the method and no guard answers for it)."""
        return None if self._handlers is None else self._handlers.service(_Details(method, metadata))


@functools.cache
def request_class(method: str) -> type[Message] | None:
    """The request message class of ``/package.Service/Method`` (None if no such method is known)."""
    service, _, name = method.strip("/").partition("/")
    try:
        found = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    except KeyError:
        return None
    if found is None:
        return None
    return message_factory.GetMessageClass(found.input_type)


def metadata_from_headers(headers: Sequence[tuple[str, str]], host: str, peer_ip: str) -> tuple[tuple[str, str], ...]:
    """grpc-gateway v1's ``AnnotateContext``: which request headers become which metadata."""
    pairs: list[tuple[str, str]] = []
    for name, value in headers:
        key = name.lower()
        if key == "authorization":
            pairs.append(("authorization", value))
        if key in PERMANENT_HEADERS:
            pairs.append(("grpcgateway-" + key, value))
        elif key.startswith(METADATA_HEADER_PREFIX):
            pairs.append((key[len(METADATA_HEADER_PREFIX):], value))
    if host:
        pairs.append(("x-forwarded-host", host))
    if peer_ip:
        pairs.append(("x-forwarded-for", peer_ip))
    return tuple(pairs)


class GatewayContext:
    """What servicers use of ``grpc.aio.ServicerContext``, for a call that arrived as JSON."""

    def __init__(self, metadata: tuple[tuple[str, str], ...], auth: dict[str, list[bytes]], peer: str,
                 timeout: float | None = None) -> None:
        self._metadata = metadata
        self._auth = auth
        self._peer = peer
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self.written: asyncio.Queue[Any] = asyncio.Queue()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        raise CallError(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    async def write(self, message: Any) -> None:
        await self.written.put(message)

    def status_set(self) -> CallError | None:
        """The status a handler set with ``set_code`` (None if none, or OK)."""
        if self._code is not None and self._code != grpc.StatusCode.OK:
            return CallError(self._code, self._details)
        return None

    def raise_if_status_set(self) -> None:
        """A handler may end a call by setting a code instead of raising."""
        error = self.status_set()
        if error is not None:
            raise error


def _unexpected(exc: BaseException, context: GatewayContext) -> CallError:
    """What grpc.aio answers for an exception a servicer did not turn into a status: the code the servicer
    set before raising, if it set one (generated stubs do: UNIMPLEMENTED), else UNKNOWN."""
    error = context.status_set()
    if error is not None:
        return error
    log.exception("gateway call failed", exc_info=exc)
    return CallError(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}")


async def call_unary(handler: grpc.RpcMethodHandler, request: Any, context: GatewayContext) -> Message:
    """A unary-response call; raises ``CallError``."""
    try:
        if handler.unary_unary is not None:
            response = await handler.unary_unary(request, context)
        else:
            response = await handler.stream_unary(request, context)
    except CallError:
        raise
    except Exception as exc:
        raise _unexpected(exc, context) from exc
    context.raise_if_status_set()
    return response


async def call_streaming(
    handler: grpc.RpcMethodHandler, request: Any, context: GatewayContext
) -> AsyncIterator[Message]:
    """A streaming-response call's messages; raises ``CallError`` where the stream fails. ``request`` is a
    message for a unary-request method, an async iterator of them for a streaming-request one."""
    behavior = handler.unary_stream if handler.unary_stream is not None else handler.stream_stream
    try:
        if inspect.isasyncgenfunction(behavior) or not inspect.iscoroutinefunction(behavior):
            produced = behavior(request, context)
            if inspect.isawaitable(produced):  # a handler written with context.write
                async for message in _written(produced, context):
                    yield message
            else:
                async for message in produced:
                    yield message
        else:
            async for message in _written(behavior(request, context), context):
                yield message
    except CallError:
        raise
    except Exception as exc:
        raise _unexpected(exc, context) from exc
    context.raise_if_status_set()


async def _written(call: Awaitable[Any], context: GatewayContext) -> AsyncIterator[Any]:
    """The messages a ``context.write`` style handler writes, until it returns."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            getter = asyncio.ensure_future(context.written.get())
            done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield getter.result()
                continue
            getter.cancel()
            while not context.written.empty():
                yield context.written.get_nowait()
            task.result()
            return
    finally:
        task.cancel()

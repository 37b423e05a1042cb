"""How the client port reads a request message: how large it may be, and how it refuses one too large or
one that does not decode, in etcd's words. The size rule has one owner for gRPC and the JSON gateway alike.

etcd's gRPC server (grpc-go) takes messages up to ``--max-request-bytes`` plus 512 KiB (room for framing,
so that a request just past the request limit reaches etcd's own check and gets ``etcdserver: request is
too large``), and refuses a larger one, from its length prefix, with RESOURCE_EXHAUSTED ``grpc: received
message larger than max (N vs. M)``; etcd's gateway passes that answer on, and clients print it. A message
that does not decode ends the call with INTERNAL and grpc-go's unmarshalling text, at once.

grpc core refuses in words of its own (``SERVER: Received message larger than max ...``) and gives
Python no say in them; gRPC Python answers a message that does not decode with UNKNOWN "Unexpected
<class ...>". So core's limit is set higher, to ``ceiling``, and :class:`RequestReader` refuses every
message between the limit and the ceiling in grpc-go's words, by its length alone, before anything decodes
it, and a message that does not decode in grpc-go's words too, on every method (the health service's as
well: grpc-go reads every service's requests alike). The price, and why the ceiling is a small multiple
rather than unlimited: a member reads an oversized message up to the ceiling before refusing it, where
etcd stops at the length prefix. Past the ceiling core's own answer remains (the same code,
RESOURCE_EXHAUSTED, its text naming the ceiling).

A deserializer cannot end a call with a status of its own choosing, so the method's deserializer hands
over an :class:`_Unreadable` holding the refusal instead of a message, and the call raises it where the
handler would take that message: at the start of a unary call, at that message of a stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from raftkv.grpc_guard import Context, Guard

#: etcd's gRPC server accepts requests this much larger than ``--max-request-bytes``.
SLACK_BYTES = 512 * 1024
#: How many times the limit a member reads to refuse a message with etcd's text (8 MiB by default).
CEILING_FACTOR = 4


@dataclass(frozen=True)
class ReceiveLimit:
    """The largest request message the client port accepts (``limit``) and reads (``ceiling``)."""

    limit: int

    @classmethod
    def for_requests(cls, max_request_bytes: int) -> ReceiveLimit:
        """etcd's rule: the request limit plus ``SLACK_BYTES``."""
        return cls(max_request_bytes + SLACK_BYTES)

    @property
    def ceiling(self) -> int:
        return CEILING_FACTOR * self.limit

    def refusal(self, size: int) -> str | None:
        """grpc-go's text for a message of ``size`` bytes past the limit (None if it is within it)."""
        if size <= self.limit:
            return None
        return f"grpc: received message larger than max ({size} vs. {self.limit})"


class UnreadableMessage(Exception):
    """A request message the call refuses to read: it ends with ``code`` and this text."""

    code = grpc.StatusCode.UNKNOWN


class OversizedMessage(UnreadableMessage):
    """A request message past the limit: RESOURCE_EXHAUSTED."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class MalformedMessage(UnreadableMessage):
    """A request body that is not the method's message: INTERNAL, with the texts of grpc-go."""

    code = grpc.StatusCode.INTERNAL


class _Unreadable:
    """What a method's deserializer hands over instead of a message it refuses (never a decoded one)."""

    __slots__ = ("error",)

    def __init__(self, error: UnreadableMessage) -> None:
        self.error = error


def _reading(deserializer: Callable[[bytes], Any], limit: ReceiveLimit, unary: bool) -> Callable[[bytes], Any]:
    """``deserializer`` behind the size check, with bytes that do not decode turned into grpc-go's refusal.
    Its texts differ by the kind of call, not of request: grpc-go decodes the request of a ``unary`` call
    itself, and every message of a streaming call, even one that streams only its responses, as the
    handler receives it."""
    undecodable = "grpc: error unmarshalling request: " if unary else "grpc: failed to unmarshal the received message "

    def deserialize(data: bytes) -> Any:
        refusal = limit.refusal(len(data))
        if refusal is not None:
            return _Unreadable(OversizedMessage(refusal))
        try:
            return deserializer(data)
        except DecodeError as exc:  # nesting past protobuf's limit included
            return _Unreadable(MalformedMessage(undecodable + str(exc)))

    return deserialize


class RequestReader(Guard):
    """Refuses a request message past ``limit`` and one that does not decode, on every method, the way
    grpc-go does. It comes before the guards that look at requests
    (``metadata.Admission``), so that they never see a refused message."""

    refusals = (UnreadableMessage,)

    def __init__(self, limit: ReceiveLimit) -> None:
        self._limit = limit

    def prepare(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.request_deserializer is None:
            return handler
        unary = not (handler.request_streaming or handler.response_streaming)
        deserializer = _reading(handler.request_deserializer, self._limit, unary)
        return handler._replace(request_deserializer=deserializer)

    def before(self, request: Any, context: Context, streaming_request: bool) -> Any:
        if streaming_request:
            return _readable(request)
        if isinstance(request, _Unreadable):
            raise request.error
        return request

    async def refuse(self, context: Context, error: BaseException) -> NoReturn:
        assert isinstance(error, UnreadableMessage), error
        await context.abort(error.code, str(error))
        raise AssertionError("ServicerContext.abort returned")


async def _readable(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream that ends the call at its first message refused."""
    async for request in requests:
        if isinstance(request, _Unreadable):
            raise request.error
        yield request

"""How large a request the client port reads, and how it refuses a larger one: one owner for gRPC and the
JSON gateway alike.

etcd's gRPC server (grpc-go) takes messages up to ``--max-request-bytes`` plus 512 KiB (room for framing,
so that a request just past the request limit reaches etcd's own check and gets ``etcdserver: request is
too large``), and refuses a larger one, from its length prefix, with RESOURCE_EXHAUSTED ``grpc: received
message larger than max (N vs. M)``; etcd's gateway passes that answer on, and clients print it.

grpc core refuses in words of its own (``SERVER: Received message larger than max ...``) and gives
Python no say in them. So core's limit is set higher, to ``ceiling``, and :class:`ReceiveLimitInterceptor`
refuses every message between the limit and the ceiling in grpc-go's words, on every method (the health
service's too, as etcd's), by its length alone, before anything decodes it. The price, and why the ceiling is a
small multiple rather than unlimited: a member reads an oversized message up to the ceiling before
refusing it, where etcd stops at the length prefix. Past the ceiling core's own answer remains (the same
code, RESOURCE_EXHAUSTED, its text naming the ceiling).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from raftkv.grpc_guard import Context, GuardingInterceptor

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


class OversizedMessage(Exception):
    """A request message past the limit: the call ends with RESOURCE_EXHAUSTED and this text."""


class _Oversized:
    """What a method's deserializer hands over instead of a message past the limit (never decoded)."""

    __slots__ = ("refusal",)

    def __init__(self, refusal: str) -> None:
        self.refusal = refusal


class ReceiveLimitInterceptor(GuardingInterceptor):
    """Refuses a request message past ``limit`` the way grpc-go does. It must come before the interceptors
    that decode requests (``metadata.AdmissionInterceptor``), so that its check runs first."""

    refusals = (OversizedMessage,)

    def __init__(self, limit: ReceiveLimit) -> None:
        super().__init__()
        self._limit = limit

    def prepare(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.request_deserializer is None:
            return handler
        return handler._replace(request_deserializer=self._measured(handler.request_deserializer))

    def _measured(self, deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        limit = self._limit

        def deserialize(data: bytes) -> Any:
            refusal = limit.refusal(len(data))
            return deserializer(data) if refusal is None else _Oversized(refusal)

        return deserialize

    def before(self, request: Any, context: Context, streaming_request: bool) -> Any:
        if streaming_request:
            return _within_limit(request)
        if isinstance(request, _Oversized):
            raise OversizedMessage(request.refusal)
        return request

    async def refuse(self, context: Context, error: BaseException) -> NoReturn:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        raise AssertionError("ServicerContext.abort returned")


async def _within_limit(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream that ends the call at its first message past the limit."""
    async for request in requests:
        if isinstance(request, _Oversized):
            raise OversizedMessage(request.refusal)
        yield request

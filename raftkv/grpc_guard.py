"""Running a check before every call's handler on a grpc.aio server, whatever the handler's kind.

grpc.aio gives an interceptor the method name only (``intercept_service``), not the call's context, so a
check that needs the peer's certificate, the call's metadata or its request must wrap the handler's
behaviour. The four kinds of handler (unary or streaming request and response) and the two styles of a
response-streaming one (async generator, or coroutine writing with ``context.write``; grpc.aio picks the
calling convention by inspection) make that wrapping fiddly; it is written once here. Two servers use
it: the client port (``raftkv.api.receive_limit.RequestReader``, ``raftkv.api.metadata.AdmissionInterceptor``)
and, on both ports, certificate revocation (``raftkv.security.revocation``).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeAlias

import grpc
import grpc.aio

#: A servicer's call context (grpc ships no type information, so this is ``Any`` to the type checker).
Context: TypeAlias = Any
_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class GuardingInterceptor(grpc.aio.ServerInterceptor):
    """Calls ``before`` ahead of the handler of every method ``guards`` selects; an exception of a type in
    ``refusals`` (raised by ``before`` or by the handler) ends the call through ``refuse``.

    The guarded handler is built once per method (and again only if the service hands out another one),
    so a call costs a dictionary lookup and one extra frame."""

    #: Exceptions that end a call with a status of their own instead of grpc's "Unexpected error".
    refusals: tuple[type[BaseException], ...] = ()

    def __init__(self) -> None:
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def guards(self, method: str) -> bool:
        """Whether calls of ``method`` (``/package.Service/Method``) are checked."""
        return True

    def prepare(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """The handler of ``method`` to wrap (e.g. with another request deserializer); as is by default."""
        return handler

    def before(self, request: Any, context: Context, streaming_request: bool) -> Any:
        """Check the call; return the request the handler gets (for a streaming request, its iterator)."""
        return request

    async def refuse(self, context: Context, error: BaseException) -> NoReturn:
        """End the call for ``error`` (one of ``refusals``); must abort."""
        raise error

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not self.guards(method):
            return handler
        cached = self._guarded.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._guarded[method] = (handler, self._guard(handler, method))
        return cached[1]

    def _guard(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        handler = self.prepare(handler, method)
        streaming_request: bool = handler.request_streaming
        for kind in _KINDS:
            behavior = getattr(handler, kind)
            if behavior is not None:
                return handler._replace(**{kind: self._wrap(behavior, streaming_request)})
        return handler

    def _wrap(self, behavior: Callable[..., Any], streaming_request: bool) -> Callable[..., Any]:
        before, refusals, refuse = self.before, self.refusals, self.refuse
        if inspect.isasyncgenfunction(behavior):

            async def guarded_gen(request: Any, context: Context) -> AsyncIterator[Any]:
                try:
                    request = before(request, context, streaming_request)
                    async for response in behavior(request, context):
                        yield response
                except refusals as exc:
                    await refuse(context, exc)

            return guarded_gen

        async def guarded(request: Any, context: Context) -> Any:
            try:
                request = before(request, context, streaming_request)
                return await behavior(request, context)
            except refusals as exc:
                await refuse(context, exc)

        return guarded

"""Running checks before every call's handler on a grpc.aio server, whatever the handler's kind, at the
cost of one coroutine frame per call.

A check that needs the peer's certificate, the call's metadata or its request must wrap the handler's
behaviour: grpc.aio gives it nothing else. Such checks were once grpc.aio interceptors, and an interceptor
costs every call of its server one more coroutine (``intercept_service`` awaiting the rest of the chain)
and its own wrapping frame around the handler: ``python -m raftkv.bench.grpc_server_kinds`` measured a
server with three interceptors that do nothing at 254 µs of CPU per call against 195 µs without them, and
the client port ran four. So the checks are :class:`Guard` layers applied when a method is first looked
up (:class:`GuardedHandlers`, the one generic handler a server is given): each method's handler is
resolved and wrapped once, and a call runs every guard's ``before`` in one frame.

The layers keep the order and meaning an interceptor chain had (outermost first): a guard sees only the
handler the layers inside it produced, and a :class:`Fallback` answers methods nothing inside it serves.
The four kinds of handler (unary or streaming request and response) and the two styles of a
response-streaming one (async generator, or coroutine writing with ``context.write``; grpc.aio picks the
calling convention by inspection) make the wrapping fiddly; it is written once here. Both servers use it:
the client port (``raftkv.api.receive_limit.RequestReader``, ``raftkv.api.metadata.Admission``,
``raftkv.api.grpc_server.UnknownMethods``) and, on both ports, certificate revocation
(``raftkv.security.revocation``).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn, TypeAlias

import grpc

#: A servicer's call context (grpc ships no type information, so this is ``Any`` to the type checker).
Context: TypeAlias = Any
_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class Guard:
    """Calls ``before`` ahead of the handler of every method ``guards`` selects; an exception of a type in
    ``refusals`` (raised by ``before`` or by the handler) ends the call through ``refuse``."""

    #: Exceptions that end a call with a status of their own instead of grpc's "Unexpected error".
    refusals: tuple[type[BaseException], ...] = ()

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


class Fallback:
    """A layer that serves the methods no layer inside it has a handler for (an interceptor that acted only
    where its continuation found nothing)."""

    def handler(self, method: str) -> grpc.RpcMethodHandler:
        raise NotImplementedError


Layer: TypeAlias = Guard | Fallback


class GuardedHandlers(grpc.GenericRpcHandler):
    """``handlers`` (generic handlers, looked up in order) behind ``layers``, outermost first.

    A method's guarded handler is built at its first call and kept; a method only a ``Fallback`` serves
    (a name a client made up) is built per call and never kept, so made-up names cannot grow the table."""

    def __init__(self, handlers: Sequence[grpc.GenericRpcHandler], layers: Sequence[Layer]) -> None:
        self._handlers = list(handlers)
        self._layers = list(layers)
        self._resolved: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        found = self._resolved.get(method)
        if found is not None:
            return found
        return self._resolve(handler_call_details)

    def _resolve(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = details.method
        handler = next((h for g in self._handlers if (h := g.service(details)) is not None), None)
        served = handler is not None
        wrapping: list[Guard] = []  # innermost first, as the layers are applied
        for layer in reversed(self._layers):
            if isinstance(layer, Fallback):
                if handler is None:
                    handler = layer.handler(method)
            elif handler is not None and layer.guards(method):
                handler = layer.prepare(handler, method)
                wrapping.append(layer)
        if handler is None:
            return None
        if wrapping:
            handler = _guarded(handler, wrapping[::-1])
        if served:
            self._resolved[method] = handler
        return handler


def _guarded(handler: grpc.RpcMethodHandler, guards: list[Guard]) -> grpc.RpcMethodHandler:
    """``handler`` with ``guards`` (outermost first) run in one frame, as if each wrapped the next."""
    streaming_request: bool = handler.request_streaming
    for kind in _KINDS:
        behavior = getattr(handler, kind)
        if behavior is not None:
            return handler._replace(**{kind: _wrap(behavior, guards, streaming_request)})
    return handler


def _wrap(behavior: Callable[..., Any], guards: list[Guard], streaming_request: bool) -> Callable[..., Any]:
    befores = [guard.before for guard in guards]
    refusals = tuple(kind for guard in guards for kind in guard.refusals)

    async def refuse(context: Context, exc: BaseException, entered: int) -> NoReturn:
        # Nested, the innermost guard whose ``before`` had been called and that refuses this kind would
        # have caught it.
        for guard in reversed(guards[:entered]):
            if isinstance(exc, guard.refusals):
                await guard.refuse(context, exc)
        raise exc

    if inspect.isasyncgenfunction(behavior):

        async def guarded_gen(request: Any, context: Context) -> AsyncIterator[Any]:
            entered = 0
            try:
                for before in befores:
                    entered += 1
                    request = before(request, context, streaming_request)
                async for response in behavior(request, context):
                    yield response
            except refusals as exc:
                await refuse(context, exc, entered)

        return guarded_gen

    async def guarded(request: Any, context: Context) -> Any:
        entered = 0
        try:
            for before in befores:
                entered += 1
                request = before(request, context, streaming_request)
            return await behavior(request, context)
        except refusals as exc:
            await refuse(context, exc, entered)

    return guarded

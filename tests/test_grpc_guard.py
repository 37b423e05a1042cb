"""``raftkv.grpc_guard``: guards applied at lookup keep the meaning an interceptor chain had.

Driven through a real grpc.aio server on loopback (plaintext: the guards do not care), so the handlers are
resolved and called exactly as grpcio resolves and calls them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any, NoReturn

import grpc
import grpc.aio
import pytest

from raftkv.grpc_guard import Context, Fallback, Guard, GuardedHandlers, Layer


class Refused(Exception):
    pass


class OtherRefused(Exception):
    pass


class Recording(Guard):
    """Notes its ``before`` and ``prepare`` calls in ``log``; refuses with its name as the status text."""

    def __init__(self, name: str, log: list[str], refusals: tuple[type[BaseException], ...] = (),
                 raises: BaseException | None = None, only: str = "") -> None:
        self.name, self.log, self.refusals, self.raises, self.only = name, log, refusals, raises, only

    def guards(self, method: str) -> bool:
        return method.endswith(self.only)

    def prepare(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        self.log.append(f"prepare {self.name}")
        return handler

    def before(self, request: Any, context: Context, streaming_request: bool) -> Any:
        self.log.append(f"before {self.name}")
        if self.raises is not None:
            raise self.raises
        return request

    async def refuse(self, context: Context, error: BaseException) -> NoReturn:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{self.name}: {error}")
        raise AssertionError("abort returned")


class Unknown(Fallback):
    def handler(self, method: str) -> grpc.RpcMethodHandler:
        async def refuse(request: Any, context: Context) -> None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"no {method}")

        return grpc.unary_unary_rpc_method_handler(refuse)


def _service(fail_with: BaseException | None = None) -> grpc.GenericRpcHandler:
    async def echo(request: bytes, context: Context) -> bytes:
        if fail_with is not None:
            raise fail_with
        return request

    async def count(request: bytes, context: Context) -> AsyncIterator[bytes]:
        for i in range(3):
            yield b"%d" % i
        if fail_with is not None:
            raise fail_with

    return grpc.method_handlers_generic_handler("t.T", {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Count": grpc.unary_stream_rpc_method_handler(count),
    })


async def _serve(handlers: GuardedHandlers) -> tuple[grpc.aio.Server, grpc.aio.Channel]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([handlers])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


def _run(layers: list[Layer], fail_with: BaseException | None = None,
         call: str = "/t.T/Echo") -> tuple[grpc.StatusCode, str, list[bytes]]:
    """Call ``call`` once through ``layers``; its status code, details and responses."""

    async def go() -> tuple[grpc.StatusCode, str, list[bytes]]:
        server, channel = await _serve(GuardedHandlers([_service(fail_with)], layers))
        try:
            if call.endswith("Count"):
                stream = channel.unary_stream(call)(b"x")
                got: list[bytes] = []
                try:
                    async for response in stream:
                        got.append(response)
                except grpc.aio.AioRpcError as exc:
                    return exc.code(), exc.details() or "", got
                return grpc.StatusCode.OK, "", got
            try:
                return grpc.StatusCode.OK, "", [await channel.unary_unary(call)(b"x")]
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or "", []
        finally:
            await channel.close()
            await server.stop(0)

    return asyncio.run(go())


@pytest.fixture
def log() -> Iterator[list[str]]:
    yield []


def test_guards_run_outermost_first_and_prepare_innermost_first(log: list[str]) -> None:
    assert _run([Recording("outer", log), Recording("inner", log)]) == (grpc.StatusCode.OK, "", [b"x"])
    assert log == ["prepare inner", "prepare outer", "before outer", "before inner"]


def test_a_handlers_refusal_goes_to_the_innermost_guard_that_refuses_it(log: list[str]) -> None:
    layers: list[Layer] = [Recording("outer", log, (Refused,)), Recording("middle", log, (Refused,)),
                           Recording("inner", log, (OtherRefused,))]
    code, details, _ = _run(layers, fail_with=Refused("no"))
    assert (code, details) == (grpc.StatusCode.FAILED_PRECONDITION, "middle: no")


def test_a_guard_inside_the_one_that_refused_never_sees_the_refusal(log: list[str]) -> None:
    layers: list[Layer] = [Recording("outer", log, (Refused,)),
                           Recording("refuser", log, raises=Refused("stop")),
                           Recording("inner", log, (Refused,))]
    code, details, _ = _run(layers)
    assert (code, details) == (grpc.StatusCode.FAILED_PRECONDITION, "outer: stop")
    assert "before inner" not in log


def test_an_exception_no_guard_refuses_is_grpcs_unknown(log: list[str]) -> None:
    code, _, _ = _run([Recording("only", log, (Refused,))], fail_with=OtherRefused("x"))
    assert code == grpc.StatusCode.UNKNOWN


def test_streaming_responses_are_guarded_too(log: list[str]) -> None:
    code, details, got = _run([Recording("g", log, (Refused,))], fail_with=Refused("late"), call="/t.T/Count")
    assert (code, details, got) == (grpc.StatusCode.FAILED_PRECONDITION, "g: late", [b"0", b"1", b"2"])
    assert log == ["prepare g", "before g"]


def test_a_guard_that_does_not_guard_a_method_leaves_it_alone(log: list[str]) -> None:
    assert _run([Recording("echo only", log, only="Echo")], call="/t.T/Count")[0] == grpc.StatusCode.OK
    assert log == []


def test_a_fallback_serves_what_nothing_inside_it_does_and_only_outer_guards_wrap_it(log: list[str]) -> None:
    layers: list[Layer] = [Recording("outer", log), Unknown(), Recording("inner", log)]
    code, details, _ = _run(layers, call="/t.T/Nope")
    assert (code, details) == (grpc.StatusCode.UNIMPLEMENTED, "no /t.T/Nope")
    assert log == ["prepare outer", "before outer"]


def test_known_methods_resolve_once_and_made_up_ones_are_never_kept() -> None:
    handlers = GuardedHandlers([_service()], [Unknown(), Guard()])

    class Details(grpc.HandlerCallDetails):
        def __init__(self, method: str) -> None:
            self.method, self.invocation_metadata = method, ()

    first = handlers.service(Details("/t.T/Echo"))
    assert first is not None and handlers.service(Details("/t.T/Echo")) is first
    for i in range(100):
        assert handlers.service(Details(f"/made/up{i}")) is not None
    assert list(handlers._resolved) == ["/t.T/Echo"]

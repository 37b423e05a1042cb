"""raftkv.errors: exact etcd texts and the text -> error lookup clients rely on."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from raftkv import errors
from raftkv.proto import rpc_pb2, rpc_pb2_grpc


def test_texts_and_codes_from_the_contract() -> None:
    assert errors.KEY_NOT_PROVIDED == errors.EtcdError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
    assert errors.COMPACTED.code == grpc.StatusCode.OUT_OF_RANGE
    assert errors.COMPACTED.message == "etcdserver: mvcc: required revision has been compacted"
    assert errors.FUTURE_REV.message == "etcdserver: mvcc: required revision is a future revision"
    assert errors.LEASE_NOT_FOUND == errors.EtcdError(grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
    assert errors.NO_LEADER == errors.EtcdError(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
    assert errors.NOT_LEADER.code == grpc.StatusCode.FAILED_PRECONDITION
    assert errors.NO_SPACE.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_every_message_is_unique_and_found() -> None:
    constants = [v for v in vars(errors).values() if isinstance(v, errors.EtcdError)]
    assert len(constants) == len(errors.BY_MESSAGE)
    for error in constants:
        # Only plain errors (code UNKNOWN, as etcd's) lack the prefix: the Lock and Election services', and
        # the auth package's, which etcd's maintenance service passes through untranslated.
        assert error.message.startswith("etcdserver: ") or error.code == grpc.StatusCode.UNKNOWN
        assert errors.from_message(error.message) is error
    assert errors.from_message("etcdserver: something else") is None


def test_exception_carries_the_error() -> None:
    with pytest.raises(errors.EtcdException, match="too many operations") as raised:
        raise errors.TOO_MANY_OPS.exception()
    assert raised.value.error is errors.TOO_MANY_OPS


class _AbortingKV(rpc_pb2_grpc.KVServicer):
    async def Range(self, request: rpc_pb2.RangeRequest, context: grpc.aio.ServicerContext) -> rpc_pb2.RangeResponse:  # type: ignore[type-arg]
        await errors.FUTURE_REV.abort(context)


def test_round_trip_through_real_grpc() -> None:
    """A server abort reaches a client as a status that maps back to the same constant."""

    async def scenario() -> errors.EtcdError | None:
        server = grpc.aio.server()
        rpc_pb2_grpc.add_KVServicer_to_server(_AbortingKV(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"k"), timeout=10)
                return errors.from_rpc_error(raised.value)
        finally:
            await server.stop(None)

    assert asyncio.run(scenario()) is errors.FUTURE_REV

"""Watch protocol details a client library depends on, over raw gRPC, compared with etcd's own answers:
ids per stream, created before events, filters, prev_kv, cancel, progress requests, compacted starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio

from raftkv.localcluster import LocalCluster
from raftkv.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc

from .conftest import leader

NOPUT = rpc_pb2.WatchCreateRequest.FilterType.NOPUT
PUT, DELETE = kv_pb2.Event.EventType.PUT, kv_pb2.Event.EventType.DELETE


class Session:
    """One Watch stream: requests are queued; replies are read with a deadline."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._requests: asyncio.Queue[rpc_pb2.WatchRequest] = asyncio.Queue()
        self.call = rpc_pb2_grpc.WatchStub(channel).Watch(self._iterate())

    async def _iterate(self) -> AsyncIterator[rpc_pb2.WatchRequest]:
        while True:
            yield await self._requests.get()

    def send(self, **request: object) -> None:
        self._requests.put_nowait(rpc_pb2.WatchRequest(**request))  # type: ignore[arg-type]

    async def create(self, **create: object) -> rpc_pb2.WatchResponse:
        self.send(create_request=rpc_pb2.WatchCreateRequest(**create))  # type: ignore[arg-type]
        reply = await self.reply()
        assert reply.created, reply
        return reply

    async def reply(self) -> rpc_pb2.WatchResponse:
        response = await asyncio.wait_for(self.call.read(), timeout=10)
        assert response is not grpc.aio.EOF, "the server ended the watch stream"
        assert response.HasField("header") and response.header.cluster_id, response
        return response


def run(cluster: LocalCluster, scenario: object) -> None:
    async def main() -> None:
        channel = cluster.client_config().aio_channel(cluster.client_url(leader(cluster)))
        async with channel:
            await scenario(channel, rpc_pb2_grpc.KVStub(channel))  # type: ignore[operator]

    asyncio.run(main())


def test_ids_filters_prev_kv_and_cancel(cluster: LocalCluster, prefix: str) -> None:
    key = prefix.encode() + b"k"

    async def scenario(channel: grpc.aio.Channel, kv: rpc_pb2_grpc.KVStub) -> None:
        session = Session(channel)
        plain = await session.create(key=key)
        deletes = await session.create(key=key, filters=[NOPUT], prev_kv=True)
        chosen = await session.create(key=key, watch_id=100)
        assert (plain.watch_id, deletes.watch_id, chosen.watch_id) == (0, 1, 100)
        assert plain.header.revision > 0

        put = await kv.Put(rpc_pb2.PutRequest(key=key, value=b"1"))
        await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=key))
        got: dict[int, list[tuple[int, int, bytes]]] = {0: [], 1: [], 100: []}
        while sum(map(len, got.values())) < 5:
            reply = await session.reply()
            got[reply.watch_id] += [(e.type, e.kv.mod_revision, e.prev_kv.value) for e in reply.events]
        rev = put.header.revision
        assert got[0] == got[100] == [(PUT, rev, b""), (DELETE, rev + 1, b"")]
        assert got[1] == [(DELETE, rev + 1, b"1")]

        session.send(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=0))
        canceled = await session.reply()
        assert (canceled.watch_id, canceled.canceled) == (0, True)
        session.call.cancel()

    run(cluster, scenario)


def test_progress_request_reports_the_current_revision(cluster: LocalCluster, prefix: str) -> None:
    key = prefix.encode() + b"k"

    async def scenario(channel: grpc.aio.Channel, kv: rpc_pb2_grpc.KVStub) -> None:
        session = Session(channel)
        await session.create(key=key)
        put = await kv.Put(rpc_pb2.PutRequest(key=prefix.encode() + b"other", value=b"x"))
        session.send(progress_request=rpc_pb2.WatchProgressRequest())
        progress = await session.reply()
        assert (progress.watch_id, progress.created, progress.canceled, len(progress.events)) == (-1, False, False, 0)
        assert progress.header.revision >= put.header.revision
        session.call.cancel()

    run(cluster, scenario)


def test_compacted_start_revision_cancels_the_watch(cluster: LocalCluster, prefix: str) -> None:
    key = prefix.encode() + b"k"

    async def scenario(channel: grpc.aio.Channel, kv: rpc_pb2_grpc.KVStub) -> None:
        first = await kv.Put(rpc_pb2.PutRequest(key=key, value=b"1"))
        second = await kv.Put(rpc_pb2.PutRequest(key=key, value=b"2"))
        await kv.Compact(rpc_pb2.CompactionRequest(revision=second.header.revision))
        session = Session(channel)
        await session.create(key=key, start_revision=first.header.revision)
        canceled = await session.reply()
        assert canceled.canceled and canceled.compact_revision == second.header.revision
        assert canceled.cancel_reason == ""  # etcd says it with compact_revision alone
        assert canceled.header.member_id and not canceled.header.revision  # and no revision in its header
        # Watching from the compaction point itself is still allowed.
        await session.create(key=key, start_revision=second.header.revision + 1)
        session.call.cancel()

    run(cluster, scenario)


def test_garbage_on_a_watch_stream_fails_the_call_at_once(cluster: LocalCluster) -> None:
    """A request that does not decode ends the call with etcd's INTERNAL unmarshal error right away, not at
    the call's deadline; the member keeps serving watches."""

    async def scenario(channel: grpc.aio.Channel, kv: rpc_pb2_grpc.KVStub) -> None:
        async def garbage() -> AsyncIterator[bytes]:
            yield b"\xff\xff\xff\xff\x0f"
            await asyncio.sleep(60)

        raw = channel.stream_stream("/etcdserverpb.Watch/Watch")
        call = raw(garbage(), timeout=30)
        started = asyncio.get_running_loop().time()
        code = details = None
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
        assert code == grpc.StatusCode.INTERNAL, (code, details)
        assert details.startswith("grpc: failed to unmarshal the received message"), details
        assert asyncio.get_running_loop().time() - started < 5
        session = Session(channel)
        await session.create(key=b"after-garbage")

    run(cluster, scenario)

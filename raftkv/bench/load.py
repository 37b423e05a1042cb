"""The asyncio load generator: N concurrent workers (closed loop) or a fixed request rate (open loop).

Workers share a few channels (HTTP/2 multiplexes the calls), the way a client pool does. A fixed-rate run
measures each request from the moment it was *due*, not from when it was sent, so a stalled server shows
up in the percentiles instead of silently lowering the offered load (coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
import grpc.aio

from raftkv.client.config import ClientConfig
from raftkv.proto import rpc_pb2, rpc_pb2_grpc

KEY_SPACE = 10_000
VALUE_BYTES = 256
READ_KEY = b"bench/read"
Call = Callable[[rpc_pb2_grpc.KVStub, int], Awaitable[object]]


@dataclass(frozen=True)
class Workload:
    """``op`` is put, get-l (linearizable) or get-s (serializable); ``rate`` None means as fast as possible."""

    name: str
    op: str
    concurrency: int
    rate: float | None = None


STANDARD = (
    Workload("put c=1", "put", 1),
    Workload("put c=64", "put", 64),
    Workload("get-l c=64", "get-l", 64),
    Workload("get-s c=64", "get-s", 64),
    Workload("put 500/s", "put", 64, rate=500.0),
    # Below raftkv's saturation on the reference machine: its CPU per put is the steadiest figure to compare.
    Workload("put 1000/s", "put", 64, rate=1000.0),
)


@dataclass
class Tally:
    ok: int = 0
    errors: int = 0
    first_error: str = ""

    def record_error(self, exc: grpc.aio.AioRpcError) -> None:
        self.errors += 1
        self.first_error = self.first_error or f"{exc.code().name}: {exc.details()}"


Metadata = tuple[tuple[str, str], ...]


def operation(op: str, metadata: Metadata = ()) -> Call:
    """``metadata`` goes with every call (an auth token)."""
    value = os.urandom(VALUE_BYTES)
    md = metadata or None
    if op == "put":
        return lambda stub, n: stub.Put(rpc_pb2.PutRequest(key=b"bench/%05d" % (n % KEY_SPACE), value=value),
                                        metadata=md)
    if op in ("get-l", "get-s"):
        request = rpc_pb2.RangeRequest(key=READ_KEY, serializable=op == "get-s")
        return lambda stub, n: stub.Range(request, metadata=md)
    raise ValueError(f"unknown operation {op!r}")


class LoadGenerator:
    """Channels to ``endpoints`` opened once and reused by every workload of a run."""

    def __init__(self, config: ClientConfig, endpoints: Sequence[str], channels: int, metadata: Metadata = ()) -> None:
        assert channels >= 1 and endpoints
        self._metadata = metadata
        self._channels = [config.aio_channel(endpoints[i % len(endpoints)]) for i in range(channels)]
        self._stubs = [rpc_pb2_grpc.KVStub(channel) for channel in self._channels]

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels))

    async def prepare(self) -> None:
        """Write the key the read workloads read, and wait until every channel is connected."""
        md = self._metadata or None
        await self._stubs[0].Put(rpc_pb2.PutRequest(key=READ_KEY, value=os.urandom(VALUE_BYTES)), timeout=10,
                                 metadata=md)
        await asyncio.gather(*(stub.Range(rpc_pb2.RangeRequest(key=READ_KEY), timeout=10, metadata=md)
                               for stub in self._stubs))

    async def run(self, workload: Workload, duration: float) -> tuple[Tally, list[float], float]:
        """Run for ``duration`` seconds; returns the tally, every successful latency and the elapsed time."""
        call = operation(workload.op, self._metadata)
        tally, latencies = Tally(), []
        counter = itertools.count()
        start = time.perf_counter()
        deadline = start + duration

        async def once(stub: rpc_pb2_grpc.KVStub, due: float) -> None:
            try:
                await call(stub, next(counter))
            except grpc.aio.AioRpcError as exc:
                tally.record_error(exc)
                return
            tally.ok += 1
            latencies.append(time.perf_counter() - due)

        if workload.rate is None:
            async def worker(stub: rpc_pb2_grpc.KVStub) -> None:
                while (now := time.perf_counter()) < deadline:
                    await once(stub, now)

            await asyncio.gather(*(worker(self._stubs[i % len(self._stubs)]) for i in range(workload.concurrency)))
        else:
            interval, pending = 1 / workload.rate, set()
            for i in itertools.count():
                due = start + i * interval
                if due >= deadline:
                    break
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                task = asyncio.ensure_future(once(self._stubs[i % len(self._stubs)], due))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)
        return tally, latencies, time.perf_counter() - start

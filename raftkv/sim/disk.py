"""A member's simulated disk: the production store over an in-memory environment that forgets on a crash.

The store itself is the production ``NodeStore`` (Raft log, applier, MVCC, leases, snapshots); only what
lies beneath it is simulated:

- ``MemoryEnv`` (``memdb.py``) instead of LMDB: as LMDB opened ``metasync=False``, a commit is durable once
  flushed or once the next commit is made, and a crash keeps only what is durable -- so an unflushed
  commit (an apply) is undone by a crash that comes before the next commit. With ``sync=False`` (the
  planted "skip the fsync" bug) commits reach only the page cache, which the operating system writes back
  every ``WRITEBACK_INTERVAL``; a crash loses the rest.
- ``SimWriter`` instead of the writer thread: the same contract (jobs in submission order, the ones queued
  together share one transaction, a future resolved once durable), on the simulator's loop, each group
  taking a drawn fsync latency. A crash drops every queued or running job: its writes never happened.

``durable_log()`` reads the durable state back through the production log code, for the invariants.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

from raftkv.sim.memdb import MemoryEnv, MemoryTxn, State, sealed
from raftkv.statemachine.applier import ApplyConfig
from raftkv.statemachine.node_store import NodeStore
from raftkv.storage.env import Env, Writer, WriteTxn, count_fsyncs
from raftkv.storage.raft_log import LmdbRaftStorage
from raftkv.storage.sealed import SealedTxn

T = TypeVar("T")
#: A queued writer job: its function, whether it runs in a transaction, whether it is durable, its future.
_Job = tuple[Callable[..., Any], bool, bool, concurrent.futures.Future[Any]]
WRITEBACK_INTERVAL = 3.0  # seconds of virtual time between the page cache's write-backs (sync=False only)


class SimWriter:
    """``raftkv.storage.env.Writer`` on the simulator's loop (see the module docstring)."""

    def __init__(self, env: MemoryEnv, latency: Callable[[], float], on_commit: Callable[[], None]) -> None:
        self._env = env
        self._latency = latency
        self._on_commit = on_commit
        self._queue: deque[_Job] = deque()
        self._busy_since: float | None = None
        self._kicked = False
        self.crashed = False
        self.commits = 0
        self.flushes = 0
        self.busy_seconds = 0.0

    @property
    def fsyncs(self) -> int:
        return count_fsyncs(self.commits, self.flushes, sync=self._env.sync)

    def submit(self, fn: Callable[[WriteTxn], T], *, durable: bool = True) -> concurrent.futures.Future[T]:
        return self._enqueue(fn, True, durable)

    def submit_outside_txn(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        return self._enqueue(fn, False, True)

    def call(self, fn: Callable[[WriteTxn], T]) -> T:
        """At once and durably: only for setting up a data dir before its member runs."""
        assert not self._queue and self._busy_since is None, "call() while jobs are queued"
        return self._run_group([(fn, True, True, concurrent.futures.Future())])[0]

    def busy_for(self) -> float:
        since = self._busy_since
        return 0.0 if since is None else asyncio.get_running_loop().time() - since

    def close(self) -> None:
        self.crashed = True

    def _enqueue(self, fn: Callable[..., T], in_txn: bool, durable: bool) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self.crashed:
            return future  # a dead process submits nothing; the future never resolves
        self._queue.append((fn, in_txn, durable, future))
        if not self._kicked and self._busy_since is None:
            # Start on the next loop iteration, so that jobs submitted together share a transaction.
            self._kicked = True
            asyncio.get_running_loop().call_soon(self._start_group)
        return future

    def _start_group(self) -> None:
        self._kicked = False
        if self.crashed or not self._queue or self._busy_since is not None:
            return
        group = [self._queue.popleft()]
        while group[0][1] and self._queue and self._queue[0][1]:
            group.append(self._queue.popleft())
        loop = asyncio.get_running_loop()
        self._busy_since = loop.time()
        loop.call_later(self._latency(), self._finish_group, group)

    def _finish_group(self, group: list[_Job]) -> None:
        if self.crashed:
            return  # the member crashed before this fsync completed: the writes never reached the disk
        assert self._busy_since is not None
        now = asyncio.get_running_loop().time()
        self.busy_seconds += now - self._busy_since
        self._busy_since = None
        try:
            results = self._run_group(group)
        except BaseException:  # noqa: BLE001 - as the production writer: rerun each alone, failures to their submitter
            for job in group:
                try:
                    job[3].set_result(self._run_group([job])[0])
                except BaseException as exc:  # noqa: BLE001
                    job[3].set_exception(exc)
        else:
            for (_, _, _, future), result in zip(group, results):
                future.set_result(result)
        self._start_group()

    def _run_group(self, group: list[_Job]) -> list[Any]:
        if not group[0][1]:
            return [group[0][0]()]
        txn = self._env.begin_write()
        wtxn = WriteTxn(cast(Env, self._env), sealed(txn))
        results = [fn(wtxn) for fn, _, _, _ in group]
        self._env.commit(txn)
        self.commits += 1
        if any(durable for _, _, durable, _ in group):
            # The disk as it is between the commit and its flush (the commit before it is durable now, this
            # one not yet) is what a power loss at that moment leaves: the invariants judge it too.
            self._on_commit()
            self._env.flush()
            self.flushes += 1
        for hook in wtxn._hooks:
            hook()
        self._on_commit()
        return results


class _DurableView:
    """The durable state as an environment the production log code can read."""

    def __init__(self, state: State) -> None:
        self._state = state

    def db(self, name: str) -> str:
        return name

    @contextlib.contextmanager
    def read(self) -> Iterator[SealedTxn]:
        yield sealed(MemoryTxn(self._state, write=False))


class SimDisk:
    """One member's disk, which outlives the member's crashes."""

    def __init__(self, rng: random.Random, max_fsync_latency: float, on_commit: Callable[[SimDisk], None]) -> None:
        self.env = MemoryEnv()
        self._rng = rng
        self._max_latency = max_fsync_latency
        self._on_commit = on_commit
        self._writer: SimWriter | None = None
        self._durable_log: tuple[State, LmdbRaftStorage] | None = None
        self._stall: float | None = None

    def open_store(self, apply_config: ApplyConfig, snapshot_catchup_entries: int) -> NodeStore:
        """The store a (re)started member opens: production ``NodeStore`` over this disk."""
        self._writer = SimWriter(self.env, self._draw_latency, lambda: self._on_commit(self))
        return NodeStore(
            None,
            apply_config=apply_config,
            snapshot_catchup_entries=snapshot_catchup_entries,
            env=cast(Env, self.env),
            writer=cast(Writer, self._writer),
        )

    def stall_next_write(self, seconds: float) -> None:
        """The next write takes ``seconds`` to become durable: a disk that hangs (an overloaded or paused
        machine), while its member's network and timers go on."""
        self._stall = seconds

    def _draw_latency(self) -> float:
        if self._stall is not None:
            stall, self._stall = self._stall, None
            return stall
        return self._rng.uniform(0, self._max_latency) if self._max_latency else 0.0

    def crash(self) -> None:
        """Power loss: queued writes are dropped and whatever was not durable is forgotten."""
        if self._writer is not None:
            self._writer.crashed = True
            self._writer = None
        self.env.crash()

    def skip_fsync(self) -> None:
        """PLANTED BUG ("skip the fsync before acknowledging"): commits reach only the page cache."""
        self.env.sync = False

    def write_back(self) -> None:
        """The operating system flushed its page cache (periodic; matters only without fsync)."""
        if not self.env.sync:
            self.env.write_back()

    def durable_log(self) -> LmdbRaftStorage:
        """The Raft log and hard state as they would be found after a crash now."""
        state = self.env.durable
        cached = self._durable_log
        if cached is None or cached[0] is not state:
            cached = self._durable_log = (state, LmdbRaftStorage(cast(Env, _DurableView(state))))
        return cached[1]

    @property
    def durable_state(self) -> State:
        return self.env.durable

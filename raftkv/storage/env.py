"""One LMDB environment per node, and the single thread that writes to it.

Why one environment: the Raft log, the hard state, the applied index and the whole state machine live in
named sub-databases of the same environment, so that one LMDB commit persists all of them together. A
crash can then never leave "applied index says 42, but the key-value data is at 41".

Why one writer thread: LMDB has a single global write lock and py-lmdb write transactions are bound to the
thread that began them. Funnelling every write through :class:`Writer` makes that a structural fact rather
than a convention, and lets the asyncio driver await writes with ``asyncio.wrap_future``.

Why a reader/writer gate: growing the memory map (``set_mapsize``) remaps the file, which is only safe when
no transaction is open anywhere in the process. Readers therefore hold the gate shared for the lifetime of
their read transaction (:meth:`Env.read`), and a resize takes it exclusively, between two write txns.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import lmdb

from raftkv.storage.sealed import SealedTxn

T = TypeVar("T")

#: Every named sub-database of a node, in one place, so the on-disk layout is visible at a glance
#: (documented in ``raftkv/storage/README.md``). ``dupsort`` ones keep many sorted values per key.
SUB_DBS: dict[str, bool] = {
    "log": False,  # raft log: index -> entry
    "meta": False,  # raft and node metadata: hard state, snapshot meta, applied index, identity
    "kv": False,  # MVCC current state: user key -> latest live KeyValue
    "keyrev": True,  # MVCC key index: user key -> (revision, sub, tombstone) generations
    "history": False,  # MVCC revisions: (revision, sub) -> event
    "leases": False,  # lease id -> granted / remaining TTL
    "lease_keys": False,  # lease id + key -> b""
    "members": False,  # member id -> Member
    "members_removed": False,  # member id -> b"": removed members, whose peer traffic is refused for good
    "dedup": False,  # client id + seq -> stored response
    "alarms": False,  # member id + alarm type -> b""
    "auth": False,  # users, roles, the auth flag and revision (raftkv/statemachine/auth_store.py)
}

DEFAULT_MAP_SIZE = 256 << 20
DEFAULT_MAX_MAP_SIZE = 64 << 30


#: A write failure with less free space than this on the data dir's filesystem is "no space left on device".
FULL_DISK_MARGIN_BYTES = 4 << 20


class StorageFull(Exception):
    """The disk (or the configured maximum map size) has no room for a write. Nothing was committed."""


class FlushFailed(Exception):
    """A commit went through but the fsync that was to make it durable failed. The commit cannot be taken
    back nor run again (its jobs are not idempotent), and whether it reached the disk is unknown: the
    member must stop, as after any failed fsync."""


def disk_is_full(path: Path) -> bool:
    """Whether the filesystem holding ``path`` has (almost) no space left for an unprivileged writer."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < FULL_DISK_MARGIN_BYTES


def _no_space(path: Path) -> str:
    return f"no space left on device: cannot write {path / 'data.mdb'}"


class _Gate:
    """A shared/exclusive lock: many readers, or one resizer. Resizers have priority so growth is not starved.

    Every read of the member takes the shared side, so it is two plain-lock sections with no wake-up unless
    a resizer waits; the exclusive side (a map resize, a reopen) is rare and may be slow."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._readers = 0
        self._exclusive = False
        self._waiting_exclusive = 0

    def enter_shared(self) -> None:
        with self._lock:
            while self._exclusive or self._waiting_exclusive:
                self._cond.wait()
            self._readers += 1

    def leave_shared(self) -> None:
        with self._lock:
            self._readers -= 1
            if self._waiting_exclusive and not self._readers:
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting_exclusive += 1
            while self._exclusive or self._readers:
                self._cond.wait()
            self._waiting_exclusive -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class ReadTxn:
    """``Env.read``'s context manager: the gate's shared side and an LMDB read transaction for the block.
    A class rather than a generator, as it runs for every read the member serves."""

    __slots__ = ("_env", "_raw")

    def __init__(self, env: Env) -> None:
        self._env = env

    def __enter__(self) -> SealedTxn:
        env = self._env
        env.gate.enter_shared()
        try:
            self._raw = env.lmdb.begin(write=False)
        except BaseException:
            env.gate.leave_shared()
            raise
        return SealedTxn(self._raw, env.names)

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._raw.abort()
        finally:
            self._env.gate.leave_shared()


class Env:
    """An open LMDB environment with the node's named sub-databases.

    Opened ``sync=True, metasync=False`` (LMDB's ``MDB_NOMETASYNC``): a commit fsyncs the pages it wrote and
    then writes its meta page without syncing it, so a power loss can undo the last commit -- never tear
    one, never undo an earlier one (the next commit's fsync flushes that meta page, and a commit never
    reuses a page of the two trees before it). A commit that anything depends on being durable is followed
    by :meth:`flush`, which fsyncs that meta page too; ``Writer`` does this for every job submitted
    ``durable`` (the crash argument is in ``raftkv/storage/README.md``). ``sync=False`` exists only for the
    fault-injection harness's planted "skip-fsync" bug, to prove its checkers notice.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        sync: bool = True,
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.max_map_size = max_map_size
        self.sync = sync
        self.gate = _Gate()
        self._open(map_size)

    def _open(self, map_size: int) -> None:
        self.lmdb = lmdb.open(
            str(self.path),
            map_size=map_size,
            max_dbs=len(SUB_DBS) + 2,
            sync=self.sync,
            metasync=False,
            writemap=False,
            max_spare_txns=0,
            readahead=False,
        )
        # A map smaller than the file (reopened with a smaller hint) is silently raised by LMDB; track the real one.
        self.map_size = self.lmdb.info()["map_size"]
        self.dbs = {name: self.lmdb.open_db(name.encode(), dupsort=dup) for name, dup in SUB_DBS.items()}
        self.names = {handle: name for name, handle in self.dbs.items()}

    def db(self, name: str) -> Any:
        return self.dbs[name]

    def flush(self) -> None:
        """Make the last commit durable: fsync its meta page (``mdb_env_sync(force)``). Only the writer
        thread calls it, right after a commit."""
        if self.sync:
            self.lmdb.sync(True)

    def read(self) -> ReadTxn:
        """A read transaction usable from any thread (``with env.read() as txn``); it sees one consistent
        committed state, and every record it returns has passed its checksum."""
        return ReadTxn(self)

    def grow(self) -> None:
        """Double the map. Only called by the writer thread between two write transactions."""
        new_size = min(self.map_size * 2, self.max_map_size)
        if new_size <= self.map_size:
            raise StorageFull(f"LMDB map is at its maximum size ({self.max_map_size} bytes)")
        with self.gate.exclusive():
            self.lmdb.set_mapsize(new_size)
        self.map_size = new_size

    def file_size(self) -> int:
        """Bytes the data file occupies (what etcd reports as dbSize)."""
        return (self.path / "data.mdb").stat().st_size

    def pages_in_use(self, txn: SealedTxn, names: Iterable[str], *, with_overhead: bool = True) -> int:
        """Bytes of the pages holding the named sub-databases, in ``txn``'s view; ``with_overhead`` adds the
        two meta pages and the main database (which names the sub-databases). Free pages are not counted."""
        pages = 0
        for name in names:
            st = txn.stat(self.dbs[name])
            pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        if with_overhead:
            st = txn.stat()
            pages += 2 + st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        return pages * self.lmdb.stat()["psize"]

    def reopen_exclusive(self, swap: Callable[[], None]) -> None:
        """Close the environment, run ``swap`` (which may replace files), and open it again; readers wait."""
        with self.gate.exclusive():
            map_size = self.map_size
            self.lmdb.close()
            try:
                swap()
            finally:
                self._open(map_size)

    def begin_child(self, parent: SealedTxn) -> contextlib.AbstractContextManager[SealedTxn]:
        """A nested write transaction of ``parent``: commits into it if the block ends normally, else aborts."""
        return _Child(self.lmdb.begin(write=True, parent=parent.raw), self.names)

    def compact_file(self) -> None:
        """Rewrite the data file compactly. Crash-safe: a compacted copy is written and fsynced beside the
        live file and atomically renamed over it; a crash before the rename leaves the old file intact.
        Runs between write transactions (on the writer thread); readers keep going during the copy."""
        staging = Path(tempfile.mkdtemp(prefix="defrag-", dir=self.path.parent))
        try:
            self.lmdb.copy(str(staging), compact=True)
            copied = staging / "data.mdb"
            with open(copied, "rb+") as fh:
                os.fsync(fh.fileno())

            def swap() -> None:
                os.replace(copied, self.path / "data.mdb")
                _fsync_dir(self.path)

            self.reopen_exclusive(swap)
        finally:
            for leftover in staging.iterdir():
                leftover.unlink()
            staging.rmdir()

    def close(self) -> None:
        with self.gate.exclusive():
            self.lmdb.close()


class _Child:
    """``Env.begin_child`` as a class, not a generator: one is opened per applied request (see ``_Nested``)."""

    __slots__ = ("_raw", "_names")

    def __init__(self, raw: lmdb.Transaction, names: dict[Any, str]) -> None:
        self._raw = raw
        self._names = names

    def __enter__(self) -> SealedTxn:
        return SealedTxn(self._raw, self._names)

    def __exit__(self, exc_type: object, *_: object) -> Literal[False]:
        if exc_type is None:
            self._raw.commit()
        else:
            self._raw.abort()
        return False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class WriteTxn:
    """A write transaction handed to writer jobs: the LMDB txn plus hooks that run only once it is committed
    (and, for a durable job, flushed).

    In-memory caches (e.g. the raft log's first/last index) must be updated through ``on_commit`` so a job
    that is retried after a map resize, or that fails, never leaves them ahead of the disk.
    """

    env: Env
    txn: SealedTxn
    _hooks: list[Callable[[], None]] = field(default_factory=list)

    def on_commit(self, hook: Callable[[], None]) -> None:
        self._hooks.append(hook)

    def db(self, name: str) -> Any:
        return self.env.db(name)

    def nested(self) -> contextlib.AbstractContextManager[WriteTxn]:
        """A child transaction (LMDB's nested write transaction): its writes and hooks join this one if the
        block ends normally and vanish if it raises. This transaction must not be used meanwhile."""
        return _Nested(self)


class _Nested:
    """``WriteTxn.nested``, spelled as a class: every applied request opens one, and a generator-based
    context manager costs a few per cent of a small put's apply."""

    __slots__ = ("_parent", "_scope", "_hooks")

    def __init__(self, parent: WriteTxn) -> None:
        self._parent = parent
        self._hooks: list[Callable[[], None]] = []

    def __enter__(self) -> WriteTxn:
        self._scope = self._parent.env.begin_child(self._parent.txn)
        return WriteTxn(self._parent.env, self._scope.__enter__(), self._hooks)

    def __exit__(self, *exc: Any) -> bool:
        suppressed = bool(self._scope.__exit__(*exc))
        if exc[0] is None:
            self._parent._hooks.extend(self._hooks)
        return suppressed


_STOP = object()


@dataclass(frozen=True)
class _Job:
    fn: Callable[..., Any]
    in_txn: bool  # False: runs between transactions (see ``Writer.submit_outside_txn``)
    durable: bool = True  # its commit is flushed (``Env.flush``) before its future resolves


def count_fsyncs(commits: int, flushes: int, *, sync: bool) -> int:
    """A writer's synchronous disk flushes: one per commit (the pages it wrote) and one more per durable
    commit (``Env.flush``, its meta page); none when the environment does not sync. The one rule, for the
    writer thread and the simulator's writer alike (``raftkv_fsyncs_total`` reports it)."""
    return commits + flushes if sync else 0


class Writer:
    """The one thread that owns every LMDB write transaction of an environment.

    Jobs run in submission order. Transaction jobs that are queued together share one transaction (group
    commit): one fsync makes all of them durable, and each still sees the writes of the jobs before it.
    A group with any ``durable`` job is flushed after its commit, before any of its futures resolves; a
    group of jobs that are not (applies, which the log replays) is not, and resolves at once.
    """

    def __init__(self, env: Env, name: str = "raftkv-lmdb-writer") -> None:
        self.env = env
        #: Write transactions committed so far (only this thread writes the counters). Each commit fsyncs
        #: the pages it wrote (one fdatasync when the env syncs) ...
        self.commits = 0
        #: ... and each durable one fsyncs its meta page too (``Env.flush``, a second fdatasync).
        self.flushes = 0
        #: Set once a flush fails; the member is stopping, and nothing written after it is durable.
        self._flush_failed: FlushFailed | None = None
        #: Seconds spent running jobs (building transactions and committing them), also only written here:
        #: its rate is how busy the disk path is (1.0 = saturated).
        self.busy_seconds = 0.0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._busy_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def fsyncs(self) -> int:
        """Synchronous disk flushes so far (``count_fsyncs``)."""
        return count_fsyncs(self.commits, self.flushes, sync=self.env.sync)

    def submit(self, fn: Callable[[WriteTxn], T], *, durable: bool = True) -> concurrent.futures.Future[T]:
        """Run ``fn`` in a write transaction on the writer thread; the future resolves after the commit,
        and, when ``durable``, after the commit is flushed: only then does it survive a power loss. Pass
        ``durable=False`` only for a job whose writes may be lost in a power loss while what the node did
        after it stays right (an apply: the log, durable before it, holds what it applied).

        ``fn`` may be run more than once (a full map aborts the txn, grows the map and retries; a failure of
        a job sharing its transaction reruns each alone), so it must only have effects through the
        transaction and ``WriteTxn.on_commit``.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((_Job(fn, in_txn=True, durable=durable), future))
        return future

    def submit_outside_txn(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` on the writer thread between transactions (maintenance that reopens the environment)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((_Job(fn, in_txn=False), future))
        return future

    def call(self, fn: Callable[[WriteTxn], T]) -> T:
        """Synchronous convenience for code not running on an event loop (a durable job)."""
        return self.submit(fn).result()

    def busy_for(self) -> float:
        """Seconds the job now running has taken so far (0 when idle). Lets the driver notice a long apply
        and hold back work that would queue behind it."""
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def _run(self) -> None:
        pending: Any = None
        while True:
            item = pending if pending is not None else self._queue.get()
            pending = None
            if item is _STOP:
                return
            group = [item]
            while item[0].in_txn:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP or not item[0].in_txn:
                    pending = item
                    break
                group.append(item)
            live = [(job, future) for job, future in group if future.set_running_or_notify_cancel()]
            self._busy_since = started = time.monotonic()
            try:
                self._run_group(live)
            finally:
                self._busy_since = None
                self.busy_seconds += time.monotonic() - started

    def _run_group(self, group: list[tuple[_Job, concurrent.futures.Future[Any]]]) -> None:
        if self._flush_failed is not None:  # after a failed fsync no later fsync can be trusted (see below)
            for _, future in group:
                future.set_exception(self._flush_failed)
            return
        if len(group) > 1:
            try:
                results = self._execute([job.fn for job, _ in group], any(job.durable for job, _ in group))
            except FlushFailed as exc:  # committed: running the jobs again would apply them twice
                for _, future in group:
                    future.set_exception(exc)
                return
            except BaseException:  # noqa: BLE001 - rerun each alone below, so the failure reaches its submitter
                pass
            else:
                for (_, future), result in zip(group, results):
                    future.set_result(result)
                return
        for job, future in group:
            if self._flush_failed is not None:
                future.set_exception(self._flush_failed)
                continue
            try:
                future.set_result(self._execute([job.fn], job.durable)[0] if job.in_txn else job.fn())
            except BaseException as exc:  # noqa: BLE001 - delivered to the submitter, the thread keeps serving
                future.set_exception(exc)

    def _execute(self, fns: list[Callable[[WriteTxn], Any]], durable: bool) -> list[Any]:
        while True:
            wtxn: WriteTxn | None = None
            try:
                with self.env.lmdb.begin(write=True) as txn:
                    wtxn = WriteTxn(self.env, SealedTxn(txn, self.env.names))
                    results = [fn(wtxn) for fn in fns]
                self.commits += 1
                if durable:
                    try:
                        self.env.flush()
                    except lmdb.Error as exc:
                        # Linux may drop the pages a failed fsync could not write and report the next
                        # fsync as a success: every job from here on fails with this one.
                        self._flush_failed = FlushFailed(f"fsync of {self.env.path / 'data.mdb'} failed: {exc}")
                        raise self._flush_failed from exc
                    self.flushes += 1
                for hook in wtxn._hooks:
                    hook()
                return results
            except lmdb.MapFullError:
                self.env.grow()  # raises StorageFull when the map may not grow any more
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise StorageFull(_no_space(self.env.path)) from exc
                raise
            except lmdb.Error as exc:
                # LMDB reports a short write -- what a full disk causes -- as EIO ("short write, filesystem
                # full?" in mdb.c): tell the two apart by the space left.
                if isinstance(exc, lmdb.DiskError) or disk_is_full(self.env.path):
                    raise StorageFull(_no_space(self.env.path)) from exc
                raise

    def close(self) -> None:
        """Finish queued jobs, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join()

"""The LMDB raft log against the Storage protocol, and the writer thread's guarantees."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from raftkv.core.types import CompactedError, ConfState, Entry, HardState, SnapshotMeta, UnavailableError
from raftkv.storage.env import Env, FlushFailed, StorageFull, Writer, WriteTxn
from raftkv.storage.raft_log import IdentityMismatch, LmdbRaftStorage


@pytest.fixture
def log(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = Env(tmp_path / "db")
    writer = Writer(env)
    yield LmdbRaftStorage(env), writer
    writer.close()
    env.close()


def ents(lo: int, hi: int, term: int = 1, size: int = 10) -> list[Entry]:
    return [Entry(term, i, data=bytes([i % 256]) * size) for i in range(lo, hi)]


def test_append_overwrites_the_conflicting_tail(log) -> None:  # type: ignore[no-untyped-def]
    storage, writer = log
    writer.call(lambda w: storage.append(w, ents(1, 6)))
    assert (storage.first_index(), storage.last_index()) == (1, 5)
    writer.call(lambda w: storage.append(w, ents(3, 4, term=2)))
    assert storage.last_index() == 3
    assert [e.term for e in storage.entries(1, 4)] == [1, 1, 2]
    with pytest.raises(UnavailableError):
        storage.entries(1, 5)
    assert storage.term(3) == 2


def test_entries_respect_max_bytes_but_return_at_least_one(log) -> None:  # type: ignore[no-untyped-def]
    storage, writer = log
    writer.call(lambda w: storage.append(w, ents(1, 11, size=100)))
    assert len(storage.entries(1, 11, max_bytes=250)) == 2
    assert len(storage.entries(1, 11, max_bytes=1)) == 1
    assert len(storage.entries(1, 11)) == 10


def test_compaction_and_snapshot_reset(log) -> None:  # type: ignore[no-untyped-def]
    storage, writer = log
    writer.call(lambda w: storage.append(w, ents(1, 11, term=3)))
    writer.call(lambda w: storage.compact(w, 4))
    assert storage.first_index() == 5 and storage.term(4) == 3
    with pytest.raises(CompactedError):
        storage.entries(4, 6)
    meta = SnapshotMeta(20, 5, ConfState(voters=frozenset({1, 2})))
    writer.call(lambda w: storage.reset_to_snapshot(w, meta))
    assert (storage.first_index(), storage.last_index(), storage.term(20)) == (21, 20, 5)
    assert storage.snapshot_meta() == meta
    writer.call(lambda w: storage.append(w, ents(21, 23, term=5)))
    assert storage.last_index() == 22


def test_state_survives_reopen(tmp_path: Path) -> None:
    env = Env(tmp_path / "db")
    writer = Writer(env)
    storage = LmdbRaftStorage(env)
    writer.call(lambda w: (storage.append(w, ents(1, 4)), storage.set_hard_state(w, HardState(4, 2, 3))))
    writer.call(lambda w: storage.compact(w, 2))
    writer.close()
    env.close()
    reopened = LmdbRaftStorage(Env(tmp_path / "db"))
    assert reopened.initial_state()[0] == HardState(4, 2, 3)
    assert (reopened.first_index(), reopened.last_index(), reopened.term(2)) == (3, 3, 1)


def test_identity_mismatch_is_refused(log) -> None:  # type: ignore[no-untyped-def]
    storage, writer = log
    storage.check_identity(1, 2)  # fresh directory: anything goes
    writer.call(lambda w: storage.set_identity(w, 1, 2))
    storage.check_identity(1, 2)
    with pytest.raises(IdentityMismatch, match="cluster"):
        storage.check_identity(9, 2)
    with pytest.raises(IdentityMismatch, match="member"):
        storage.check_identity(1, 9)


def test_failed_job_commits_nothing_and_writer_keeps_serving(log) -> None:  # type: ignore[no-untyped-def]
    storage, writer = log

    def broken(w: WriteTxn) -> None:
        storage.append(w, ents(1, 3))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        writer.call(broken)
    assert storage.last_index() == 0
    writer.call(lambda w: storage.append(w, ents(1, 2)))
    assert storage.last_index() == 1


def test_map_grows_until_its_maximum_then_storage_full(tmp_path: Path) -> None:
    env = Env(tmp_path / "db", map_size=1 << 20, max_map_size=8 << 20)
    writer = Writer(env)
    storage = LmdbRaftStorage(env)
    for start in range(1, 41, 10):  # 4 x 10 x 64 KiB = 2.5 MiB: needs two doublings
        writer.call(lambda w, s=start: storage.append(w, ents(s, s + 10, size=64 << 10)))
    assert env.map_size >= 4 << 20 and storage.last_index() == 40
    with pytest.raises(StorageFull):
        writer.call(lambda w: storage.append(w, ents(41, 241, size=64 << 10)))
    assert storage.last_index() == 40  # nothing of the failed write is visible, and the store still works
    assert storage.entries(40, 41)[0].data[:1] == bytes([40])
    writer.call(lambda w: storage.append(w, ents(41, 42)))
    writer.close()
    env.close()


def test_after_a_failed_flush_no_job_is_run_or_reported_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux may drop the pages a failed fsync could not write and report the next fsync as a success, so
    after one failure nothing later may be acknowledged as durable: every job, queued then or after, fails."""
    env = Env(tmp_path / "db")
    writer = Writer(env)
    try:
        def fail() -> None:
            raise lmdb.Error("fsync: Input/output error")

        monkeypatch.setattr(env, "flush", fail)
        with pytest.raises(FlushFailed):
            writer.call(lambda w: w.txn.put(b"a", b"1", db=env.db("meta")))
        monkeypatch.undo()  # the next fsync would "succeed": it must not be believed
        ran: list[str] = []
        later = [writer.submit(lambda w: ran.append("durable")), writer.submit(lambda w: ran.append("apply"), durable=False)]
        for future in later:
            with pytest.raises(FlushFailed):
                future.result(timeout=10)
        assert ran == []
    finally:
        writer.close()
        env.close()

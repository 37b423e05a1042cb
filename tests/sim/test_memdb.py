"""The simulator's in-memory environment answers exactly as LMDB does, for the calls the store makes.

Random transactions of puts, deletes and cursor walks (positioning, iteration with and without duplicates,
deleting under a cursor) run against a real LMDB environment and against ``MemoryEnv``; every answer and
the final contents must be identical. Then the durability half: only synced commits survive ``crash``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.sim.memdb import MemoryEnv, sealed

DBS = {"kv": False, "keyrev": True}  # one plain and one dupsort sub-database, as the store has
keys = st.binary(min_size=1, max_size=2).map(lambda b: b"k" + b)
values = st.binary(max_size=2).map(lambda b: b"v" + b)
ops = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(sorted(DBS)), keys, values),
    st.tuples(st.just("delete"), st.sampled_from(sorted(DBS)), keys, st.one_of(st.just(b""), values)),
    st.tuples(st.just("get"), st.sampled_from(sorted(DBS)), keys, st.just(b"")),
    st.tuples(st.sampled_from(["scan", "scan_nodup", "delete_from", "ends"]), st.sampled_from(sorted(DBS)), keys, values),
    st.tuples(st.sampled_from(["dup_walk", "before"]), st.just("keyrev"), keys, values),  # dupsort only
)
transactions = st.lists(st.lists(ops, max_size=12), min_size=1, max_size=6)


def _run(txn: Any, db: Any, op: tuple[str, str, bytes, bytes]) -> object:
    kind, _, key, value = op
    if kind == "put":
        txn.put(key, value, db=db)
        return None
    if kind == "delete":
        return txn.delete(key, value, db=db) if value else txn.delete(key, db=db)
    if kind == "get":
        got = txn.get(key, db=db)
        return None if got is None else bytes(got)
    cur = txn.cursor(db=db)
    if kind == "scan":
        return [(bytes(k), bytes(v)) for k, v in cur.iternext()] if cur.set_range(key) else []
    if kind == "scan_nodup":
        return [bytes(k) for k in cur.iternext_nodup(keys=True, values=False)] if cur.set_range(key) else []
    if kind == "dup_walk":
        return [bytes(v) for v in cur.iternext_dup()] if cur.set_key(key) else []
    if kind == "before":
        if cur.set_range_dup(key, value):
            found = cur.prev_dup()
        else:
            found = cur.set_key(key) and cur.last_dup()
        return bytes(cur.value()) if found else None
    if kind == "delete_from":
        deleted = 0
        if cur.set_range(key):
            while cur.key() and deleted < 2:
                cur.delete()
                deleted += 1
        return deleted
    return (bytes(cur.key()) if cur.first() else None, bytes(cur.key()) if cur.last() else None)


def _contents(txn: Any, db: Any) -> list[tuple[bytes, bytes]]:
    return [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(transactions)
def test_memory_env_answers_as_lmdb_does(tmp_path: Path, txns: list[list[tuple[str, str, bytes, bytes]]]) -> None:
    path = tmp_path / f"lmdb-{abs(hash(str(txns)))}"
    env = lmdb.open(str(path), max_dbs=4, map_size=1 << 22, sync=False, metasync=False)
    real = {name: env.open_db(name.encode(), dupsort=dup) for name, dup in DBS.items()}
    mem = MemoryEnv()
    try:
        for batch in txns:
            with env.begin(write=True) as txn:
                expected = [_run(txn, real[op[1]], op) for op in batch]
            wtxn = mem.begin_write()
            got = [_run(wtxn, op[1], op) for op in batch]
            mem.commit(wtxn)
            assert got == expected, batch
        with env.begin() as txn:
            mtxn = mem.begin()
            for name in DBS:
                assert _contents(mtxn, name) == _contents(txn, real[name])
    finally:
        env.close()


def _put(env: MemoryEnv, key: bytes) -> None:
    txn = sealed(env.begin_write())
    txn.put(key, b"1", db="kv")
    env.commit(txn.raw)


def _keys(env: MemoryEnv) -> list[bytes]:
    with env.read() as view:
        return [k for k in (b"a", b"b", b"c") if view.get(k, db="kv") is not None]


def test_a_crash_undoes_the_last_commit_unless_it_was_flushed() -> None:
    """As LMDB opened ``metasync=False``: a commit's meta page is on disk once the next commit syncs its
    pages, or once ``flush`` syncs it; a power loss before that undoes the commit, and only that one."""
    env = MemoryEnv(sync=True)
    _put(env, b"a")
    _put(env, b"b")
    env.crash()
    assert _keys(env) == [b"a"]
    _put(env, b"b")
    env.flush()
    env.crash()
    assert _keys(env) == [b"a", b"b"]
    _put(env, b"c")
    env.crash()
    assert _keys(env) == [b"a", b"b"]


def test_only_synced_commits_survive_a_crash() -> None:
    env = MemoryEnv(sync=True)
    txn = sealed(env.begin_write())
    txn.put(b"a", b"1", db="kv")
    env.commit(txn.raw)
    env.flush()
    env.sync = False  # e.g. the planted skip-fsync bug
    txn = sealed(env.begin_write())
    txn.put(b"b", b"2", db="kv")
    env.commit(txn.raw)
    with env.read() as view:
        assert view.get(b"b", db="kv") == b"2"
    env.crash()
    with env.read() as view:
        assert view.get(b"a", db="kv") == b"1" and view.get(b"b", db="kv") is None


def test_a_read_view_keeps_seeing_the_state_it_began_with() -> None:
    env = MemoryEnv()
    with env.read() as before:
        txn = sealed(env.begin_write())
        txn.put(b"a", b"1", db="kv")
        env.commit(txn.raw)
        assert before.get(b"a", db="kv") is None
    with env.read() as after:
        assert after.get(b"a", db="kv") == b"1"


def test_a_child_transaction_joins_its_parent_or_vanishes() -> None:
    """As LMDB's nested write transactions (the applier rolls a refused request back through one)."""
    env = MemoryEnv()
    txn = sealed(env.begin_write())
    txn.put(b"a", b"1", db="kv")
    with env.begin_child(txn) as child:
        assert child.get(b"a", db="kv") == b"1"
        child.put(b"b", b"2", db="kv")
    try:
        with env.begin_child(txn) as child:
            child.put(b"c", b"3", db="kv")
            raise RuntimeError("refused")
    except RuntimeError:
        pass
    env.commit(txn.raw)
    with env.read() as view:
        assert [k for k, _ in view.cursor(db="kv")] == [b"a", b"b"]

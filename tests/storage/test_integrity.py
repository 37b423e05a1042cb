"""Damaged data is found, never served: flipped bytes in a value, a log entry and a B-tree index page of a
real data file, each caught when the store opens or when the record is read; and the migration from the
format before checksums."""

from __future__ import annotations

import struct
from pathlib import Path

import lmdb
import pytest

from raftkv.core.types import Entry, HardState
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.statemachine.node_store import NodeStore
from raftkv.storage import integrity
from raftkv.storage.env import SUB_DBS
from raftkv.storage.sealed import CHECKSUM_BYTES, CorruptionError, seal
from tests.statemachine.conftest import Harness

_PAGE_HEAD = struct.Struct("=QHHHH")  # LMDB 0.9: page number, pad, flags, lower, upper
P_BRANCH = 0x01


def data_file(path: Path) -> Path:
    return path / "db" / "data.mdb"


def flip_every(path: Path, marker: bytes) -> int:
    """Flip one byte inside every copy of ``marker`` in the data file; returns how many were flipped."""
    raw = bytearray(data_file(path).read_bytes())
    count, at = 0, raw.find(marker)
    while at != -1:
        raw[at + len(marker) // 2] ^= 0x20
        count, at = count + 1, raw.find(marker, at + 1)
    data_file(path).write_bytes(bytes(raw))
    return count


def filled(path: Path, puts: int = 50, value: bytes = b"v" * 100) -> Harness:
    h = Harness(path)
    for i in range(puts):
        h.put(b"/k/%05d" % i, value)
    return h


def test_a_flipped_value_is_found_at_start_and_on_read_and_never_served(tmp_path: Path) -> None:
    h = filled(tmp_path / "n")
    h.put(b"/victim", b"VALUE-MARKER-0123456789")
    h.store.close()
    assert flip_every(tmp_path / "n", b"VALUE-MARKER-0123456789") >= 2  # kv, history (and the log entry)
    with pytest.raises(CorruptionError, match="fails its checksum"):
        NodeStore(tmp_path / "n")
    store = NodeStore(tmp_path / "n", verify_limit_bytes=0)  # not checked at start: checked on read
    try:
        with pytest.raises(CorruptionError, match="sub-database 'kv'"):
            store.range(rpc_pb2.RangeRequest(key=b"/victim"))
        assert store.range(rpc_pb2.RangeRequest(key=b"/k/00001")).kvs[0].value == b"v" * 100
    finally:
        store.close()


def test_a_range_delete_over_a_flipped_value_fails_whole(tmp_path: Path) -> None:
    """The range delete reads each value as it deletes it (one cursor): the damaged one stops the apply,
    as any damaged read does, and nothing of it is committed."""
    h = filled(tmp_path / "n")
    h.put(b"/k/00020x", b"VALUE-MARKER-0123456789")
    index = h.index
    h.store.close()
    assert flip_every(tmp_path / "n", b"VALUE-MARKER-0123456789") >= 2
    store = NodeStore(tmp_path / "n", verify_limit_bytes=0)
    try:
        request = internal_pb2.InternalRequest(delete_range=rpc_pb2.DeleteRangeRequest(key=b"/k/", range_end=b"/k0"))
        entry = Entry(1, index + 1, data=request.SerializeToString())
        store.save(None, [entry], HardState(1, 1, index + 1)).result()
        with pytest.raises(CorruptionError, match="sub-database 'kv'"):
            store.apply([entry]).result()
        assert store.applied_index() == index
        assert store.range(rpc_pb2.RangeRequest(key=b"/k/", range_end=b"/k/00020", count_only=True)).count == 20
    finally:
        store.close()


def test_a_flipped_log_entry_is_found_at_start_and_on_read(tmp_path: Path) -> None:
    h = filled(tmp_path / "n")
    h.delete(b"LOG-ONLY-MARKER-0123456789")  # deletes nothing: the key is in the log entry alone
    index = h.index
    h.store.close()
    assert flip_every(tmp_path / "n", b"LOG-ONLY-MARKER-0123456789") >= 1  # the entry (and stale free pages)
    with pytest.raises(CorruptionError, match="sub-database 'log'"):
        NodeStore(tmp_path / "n")
    store = NodeStore(tmp_path / "n", verify_limit_bytes=0)
    try:
        with pytest.raises(CorruptionError, match="sub-database 'log'"):
            store.log.entries(index, index + 1)
        assert store.log.entries(2, index - 1)[-1].index == index - 2
    finally:
        store.close()


def test_a_flipped_byte_in_a_btree_index_page_is_found_before_lmdb_reads_the_file(tmp_path: Path) -> None:
    h = filled(tmp_path / "n", puts=3000, value=b"x" * 600)
    h.store.close()
    raw = bytearray(data_file(tmp_path / "n").read_bytes())
    page_size = 4096
    branches = [
        pgno for pgno in range(2, len(raw) // page_size)
        if _PAGE_HEAD.unpack_from(raw, pgno * page_size)[2] == P_BRANCH
        and (_PAGE_HEAD.unpack_from(raw, pgno * page_size)[3] - 16) // 2 >= 3
    ]
    assert branches, "no branch page with three or more children"
    # Each of them: some are free pages (a tree's older copies), which nothing reads, and which one comes
    # first in the file depends on the history of commits; the live ones among them must be found.
    for pgno in branches:
        base = pgno * page_size
        second_node = struct.unpack_from("=H", raw, base + 16 + 2 * 2)[0]  # node 2: node 0 has no key
        raw[base + second_node + 8] ^= 0xFF  # the first byte of its separator key
    data_file(tmp_path / "n").write_bytes(bytes(raw))
    with pytest.raises(CorruptionError, match="data.mdb"):
        integrity.check_structure(tmp_path / "n" / "db")
    with pytest.raises(CorruptionError):
        NodeStore(tmp_path / "n")


def test_a_data_dir_without_checksums_is_migrated_in_place(tmp_path: Path) -> None:
    """Format 1: the same records, bare. Opening migrates every record; the data reads back the same."""
    h = filled(tmp_path / "n")
    h.apply(compaction=rpc_pb2.CompactionRequest(revision=10))
    before = (h.store.hash_kv(), h.range(b"/k/", b"/k0"), h.store.log.last_index(), h.store.applied_index())
    h.store.close()
    _strip_checksums(tmp_path / "n" / "db")
    store = NodeStore(tmp_path / "n")
    try:
        after = (store.hash_kv(), store.range(rpc_pb2.RangeRequest(key=b"/k/", range_end=b"/k0")),
                 store.log.last_index(), store.applied_index())
        assert after == before
        assert integrity.check_records(store.env) > 150
    finally:
        store.close()
    NodeStore(tmp_path / "n").close()  # and opens again as format 2, with nothing to migrate


def test_a_data_dir_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    filled(tmp_path / "n", puts=1).store.close()
    env = lmdb.open(str(tmp_path / "n" / "db"), max_dbs=len(SUB_DBS) + 2)
    with env.begin(write=True) as txn:
        txn.put(integrity.K_FORMAT, seal(integrity.K_FORMAT, struct.pack(">I", 3)), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(integrity.FormatError, match="storage format 3"):
        NodeStore(tmp_path / "n")


def _strip_checksums(db_dir: Path) -> None:
    """Turn a format-2 environment into the format before checksums."""
    env = lmdb.open(str(db_dir), max_dbs=len(SUB_DBS) + 2)
    with env.begin(write=True) as txn:
        for name, dupsort in SUB_DBS.items():
            db = env.open_db(name.encode(), txn=txn, dupsort=dupsort)
            records = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]
            txn.drop(db, delete=False)
            for key, value in records:
                if name == "meta" and key == integrity.K_FORMAT:
                    continue
                txn.put(key, value[:-CHECKSUM_BYTES], db=db)
    env.close()

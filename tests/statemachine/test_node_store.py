"""The node-store facade: exactly-once, snapshots across environments, crash consistency, quota, defrag."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from raftkv import errors
from raftkv.core.types import Entry, HardState
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.statemachine.node_store import NodeStore
from tests.statemachine.conftest import Harness

REPO = Path(__file__).resolve().parents[2]


def test_a_retried_request_gets_the_stored_original_response(h: Harness) -> None:
    first = h.apply(client_id=7, seq=1, put=rpc_pb2.PutRequest(key=b"k", value=b"1", prev_kv=True))
    h.put(b"k", b"2")
    retry = h.apply(client_id=7, seq=1, put=rpc_pb2.PutRequest(key=b"k", value=b"1", prev_kv=True))
    assert retry.result == first.result and not retry.events
    assert h.range(b"k").kvs[0].value == b"2"  # the retry was not applied again
    assert h.store.revision() == 3


def test_dedup_window_is_bounded_per_client(tmp_path: Path) -> None:
    from raftkv.statemachine.applier import ApplyConfig

    h = Harness(tmp_path / "n", apply_config=ApplyConfig(dedup_window=3, min_lease_ttl=2))
    for seq in range(1, 11):
        h.apply(client_id=9, seq=seq, put=rpc_pb2.PutRequest(key=b"k", value=b"%d" % seq))
    with h.store.env.read() as txn:
        assert txn.stat(h.store.env.db("dedup"))["entries"] == 3
    h.store.close()


def test_snapshot_stream_install_reproduces_the_state(h: Harness, tmp_path: Path) -> None:
    grant = h.apply(lease_grant=rpc_pb2.LeaseGrantRequest(TTL=60)).result.lease_grant
    for i in range(300):
        h.put(b"key/%04d" % i, os.urandom(900), lease=grant.ID if i % 10 == 0 else 0)
    h.apply(compaction=rpc_pb2.CompactionRequest(revision=100))
    meta = h.store.create_snapshot().result()
    assert meta.index == h.index
    chunks = list(h.store.open_snapshot(meta))
    assert len(chunks) > 1  # streamed, not one blob
    other = NodeStore(tmp_path / "other")
    installer = other.begin_snapshot_install(meta)
    for chunk in chunks:
        installer.write(chunk)
    other.save(installer, [], HardState(1, 0, meta.index)).result()
    assert other.hash_kv() == h.store.hash_kv()
    assert other.applied_index() == meta.index and other.conf_state() == meta.conf_state
    assert other.log.first_index() == meta.index + 1 and other.log.snapshot_meta() == meta
    assert len(other.lease(grant.ID)[1]) == 30  # type: ignore[index]
    # The follower continues from the log after the snapshot.
    nxt = internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=b"after", value=b"1"))
    ent = [Entry(1, meta.index + 1, data=nxt.SerializeToString())]
    other.save(None, ent, HardState(1, 0, meta.index + 1)).result()
    assert other.apply(ent).result()[0].revision == h.store.revision() + 1
    other.close()


def test_snapshot_keeps_catch_up_entries(tmp_path: Path) -> None:
    h = Harness(tmp_path / "n", snapshot_catchup_entries=5)
    for i in range(20):
        h.put(b"k%d" % i)
    meta = h.store.create_snapshot().result()
    assert meta.index == h.index
    assert h.store.log.first_index() == meta.index - 5 + 1
    h.store.close()


def test_nospace_alarm_refuses_writes_that_add_data(h: Harness) -> None:
    h.put(b"a")
    alarm = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=1, alarm=rpc_pb2.NOSPACE)
    h.apply(alarm=alarm)
    assert h.put(b"b").result.error == errors.NO_SPACE.message
    assert h.delete(b"a").result.delete_range.deleted == 1  # deleting frees space: allowed
    alarm.action = rpc_pb2.AlarmRequest.DEACTIVATE
    h.apply(alarm=alarm)
    assert h.put(b"b").result.error == ""


def test_an_alarm_within_a_batch_holds_for_the_writes_after_it_in_that_batch(h: Harness) -> None:
    """The applier reads the alarms once per batch: an alarm request in the batch must still count at once."""
    alarm = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=1, alarm=rpc_pb2.NOSPACE)
    off = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=1, alarm=rpc_pb2.NOSPACE)

    def put(key: bytes) -> internal_pb2.InternalRequest:
        return internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, value=b"v"))

    raised = internal_pb2.InternalRequest(alarm=alarm)
    cleared = internal_pb2.InternalRequest(alarm=off)
    out = h.apply_many(put(b"a"), raised, put(b"b"), cleared, put(b"c"), raised, put(b"d"))
    assert [o.result.error if o.result else None for o in out] == [
        "", "", errors.NO_SPACE.message, "", "", "", errors.NO_SPACE.message]
    assert h.apply_many(put(b"e"))[0].result.error == errors.NO_SPACE.message  # the next batch sees it too
    # Each result's revision is the store's after its entry, whether read or known from the write.
    assert [o.revision for o in out] == [2, 2, 2, 2, 3, 3, 3] and h.store.revision() == 3
    assert out[0].result.put.header.revision == 2 and out[4].result.put.header.revision == 3


def test_defragment_keeps_data_and_shrinks_the_file(h: Harness) -> None:
    for i in range(200):
        h.put(b"k%d" % i, b"x" * 4000)
    h.delete(b"k", b"l")
    h.apply(compaction=rpc_pb2.CompactionRequest(revision=h.store.revision()))
    before, digest = h.store.db_size(), h.store.hash_kv()
    h.store.defragment().result()
    assert h.store.db_size() < before and h.store.hash_kv() == digest
    h.put(b"after")
    assert h.range(b"after").count == 1


def test_the_quota_counts_history_not_the_raft_log_nor_the_key_index(h: Harness) -> None:
    """What etcd counts: its bolt file holds each revision's value once; its WAL and key index are elsewhere."""
    empty = h.store.quota_usage()
    for i in range(300):
        h.put(b"k%d" % i, b"x" * 1000)
    counted = h.store.quota_usage() - empty
    with h.store.env.read() as txn:
        history = h.store.env.pages_in_use(txn, ["history"], with_overhead=False)
        everything = h.store.env.pages_in_use(txn, ["history", "log", "kv", "keyrev"], with_overhead=False)
    assert history <= counted < history + 8 * 4096 and everything > 2.5 * counted
    assert counted < 300 * 1000 * 1.5  # appended history fills its pages


def test_defragment_compacts_the_raft_log_and_returns_the_space(h: Harness) -> None:
    """etcd: about 20 KiB after deleting everything, compacting and defragmenting."""
    for i in range(500):
        h.put(b"k%d" % i, b"x" * 4000)
    h.delete(b"k", b"l")
    h.apply(compaction=rpc_pb2.CompactionRequest(revision=h.store.revision()))
    h.store.defragment().result()
    assert h.store.log.first_index() == h.index + 1  # everything applied is out of the log
    assert h.store.db_size() <= 64 << 10 and h.store.db_size_in_use() <= h.store.db_size()


CHILD = """
import sys
from raftkv.core.types import Entry, HardState
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.statemachine.node_store import NodeStore
store = NodeStore(sys.argv[1])
store.bootstrap(1, 1, [(1, b"")])
index = 1
while True:
    index += 1
    req = internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=b"counter", value=b"%d" % index))
    ents = [Entry(1, index, data=req.SerializeToString())]
    store.save(None, ents, HardState(1, 1, index)).result()
    store.apply(ents).result()
    print(index, flush=True)
"""


def test_kill_9_mid_write_loop_leaves_applied_index_and_state_in_agreement(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "n")], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    acknowledged = 0
    while acknowledged < 40:
        assert time.monotonic() < deadline, "child made no progress"
        acknowledged = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = NodeStore(tmp_path / "n")
    applied = store.applied_index()
    assert applied >= acknowledged  # every acknowledged commit survived
    assert store.range(rpc_pb2.RangeRequest(key=b"counter")).kvs[0].value == b"%d" % applied
    assert store.revision() == applied  # one revision per applied put, after bootstrap's revision 1
    assert store.log.last_index() >= applied and store.log.entries(applied, applied + 1)
    store.close()


def test_commit_throughput(tmp_path: Path) -> None:
    """Figures for the report (printed with -s), not asserted: fsync cost dominates."""
    h = Harness(tmp_path / "n")
    for batch in (1, 100):
        start, commits = time.perf_counter(), 0
        while time.perf_counter() - start < 1.0:
            reqs = [internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=b"k%d" % i, value=b"v" * 100)) for i in range(batch)]
            h.apply_many(*reqs)
            commits += 1
        elapsed = time.perf_counter() - start
        print(f"\nsave + apply: {batch} entries/txn: {commits / elapsed:.0f} commits/s, {commits * batch / elapsed:.0f} entries/s")
    h.store.close()

"""A power loss under a real LMDB file loses no acknowledged write.

The store opens LMDB ``metasync=False``: each commit fsyncs the pages it wrote and then writes its meta page
without syncing it; a durable job's commit is flushed (that meta page fsynced too) before its future
resolves. So what a power loss can leave behind is the file as the last flush or commit left it, or -- when
the last commit was not flushed -- that file without its newest meta page: LMDB then opens the commit before
(it picks the valid meta page with the higher transaction id, and a commit never overwrites a page of the
two trees before it). ``power_loss_image`` builds exactly that from the live file, and a member restarts
on it: the log must hold every entry it acknowledged, the state must agree with its applied index, and
replaying the log from there must give the state the member had.

The writer's own counters say whether the last commit was flushed, so the planted bug -- acknowledging an
append whose commit was not flushed -- is judged by what the store did, and caught.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from raftkv.core.types import Entry, HardState
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.statemachine.node_store import NodeStore

#: Where ``mm_txnid`` sits in an LMDB 0.9 meta page on a 64-bit machine: the 16-byte page header, then
#: magic, version (u32 each), address, map size (8 each), the two core MDB_db records (48 each), last page.
META_TXNID_OFFSET = 16 + 4 + 4 + 8 + 8 + 2 * 48 + 8


def _meta_txnids(path: Path, page_size: int) -> list[int]:
    with open(path, "rb") as fh:
        ids = []
        for slot in (0, 1):
            fh.seek(slot * page_size + META_TXNID_OFFSET)
            ids.append(int.from_bytes(fh.read(8), "little"))
        return ids


def power_loss_image(store: NodeStore, data_dir: Path, *, undo_last: bool) -> Path:
    """A data dir holding what a power loss now could leave of ``store``'s file: the file, with its newest
    meta page lost when ``undo_last`` (the last commit was not flushed)."""
    image = data_dir / "db" / "data.mdb"
    image.parent.mkdir(parents=True)
    shutil.copyfile(store.env.path / "data.mdb", image)
    if undo_last:
        page_size = store.env.lmdb.stat()["psize"]
        ids = _meta_txnids(image, page_size)
        last = store.env.lmdb.info()["last_txnid"]
        assert sorted(ids) == [last - 1, last], f"meta pages hold transactions {ids}, the env is at {last}"
        with open(image, "r+b") as fh:
            fh.seek(ids.index(last) * page_size + META_TXNID_OFFSET)
            fh.write(bytes(8))  # the newest meta page never reached the disk
    return data_dir


def _put(index: int) -> Entry:
    req = internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=b"counter", value=b"%d" % index))
    req.header.id = index
    return Entry(1, index, data=req.SerializeToString())


def _counter(store: NodeStore) -> int:
    kvs = store.range(rpc_pb2.RangeRequest(key=b"counter")).kvs
    return int(kvs[0].value) if kvs else 1


def restart_problems(store: NodeStore, data_dir: Path, undo_last: bool, acknowledged: int) -> list[str]:
    """Restart a member on what a power loss would leave of ``store`` now; what it got wrong."""
    revived = NodeStore(power_loss_image(store, data_dir, undo_last=undo_last))
    try:
        problems = []
        applied = revived.applied_index()
        if revived.log.last_index() < acknowledged:
            problems.append(f"acknowledged entry {acknowledged} is not in the log (it ends at "
                            f"{revived.log.last_index()})")
            return problems
        if _counter(revived) != applied or revived.revision() != applied:
            problems.append(f"state at {_counter(revived)} (revision {revived.revision()}), applied index {applied}")
        if revived.log.initial_state()[0].commit < applied:
            problems.append(f"applied index {applied} beyond commit index {revived.log.initial_state()[0].commit}")
        # The restart replays the log from the stored applied index (the cluster tells it the commit index).
        last = store.applied_index()
        if last > applied:
            revived.apply(revived.log.entries(applied + 1, last + 1)).result()
        if revived.hash_kv() != store.hash_kv():
            problems.append(f"after replaying to {last} the state differs from the member's")
        return problems
    finally:
        revived.close()


def run_member(tmp_path: Path, puts: int, *, flush_appends: bool = True) -> list[str]:
    """A member driven as the Raft loop drives it, a power loss simulated after each of its commits."""
    store = NodeStore(tmp_path / "member")
    store.bootstrap(0xC1, 1, [(1, b"")])
    problems: list[str] = []
    acknowledged = 1
    try:
        for index in range(2, puts + 2):
            entry = _put(index)
            # The Ready that appends the entry: the append is acknowledged (an APP_RESP, the leader's own
            # count) once this job resolves.
            jobs = [lambda: store.save(None, [entry], HardState(1, 1, index - 1), durable=flush_appends),
                    # The next Ready: the commit index moves and the entry is applied, not flushed; the
                    # client is answered once it resolves.
                    lambda: store.save(None, (), HardState(1, 1, index), [entry], durable=False)]
            for n, job in enumerate(jobs):
                flushes = store.writer.flushes
                job().result()
                acknowledged = index
                undo_last = store.writer.flushes == flushes
                if n == 1:
                    assert undo_last, "an apply-only commit is not flushed"
                image = tmp_path / f"image-{index}-{n}"
                problems += [f"after entry {index}'s {('append', 'apply')[n]}: {p}"
                             for p in restart_problems(store, image, undo_last, acknowledged)]
                shutil.rmtree(image)
    finally:
        store.close()
    return problems


def test_a_power_loss_after_any_commit_keeps_every_acknowledged_entry_and_replays_to_the_same_state(
    tmp_path: Path,
) -> None:
    assert run_member(tmp_path, puts=12) == []


def test_undoing_an_unflushed_commit_gives_exactly_the_commit_before(tmp_path: Path) -> None:
    """The image is what LMDB promises: the newest meta page lost, the file opens at the previous commit."""
    store = NodeStore(tmp_path / "member")
    try:
        store.bootstrap(0xC1, 1, [(1, b"")])
        entry = _put(2)
        store.save(None, [entry], HardState(1, 1, 1)).result()
        store.save(None, (), HardState(1, 1, 2), [entry], durable=False).result()
        assert store.applied_index() == 2
        revived = NodeStore(power_loss_image(store, tmp_path / "image", undo_last=True))
        try:
            assert revived.applied_index() == 1 and revived.log.last_index() == 2
            assert revived.log.initial_state()[0] == HardState(1, 1, 1)
        finally:
            revived.close()
    finally:
        store.close()


def test_the_check_catches_an_append_acknowledged_before_its_commit_is_flushed(tmp_path: Path) -> None:
    """The planted bug: the append job not durable. Its power-loss image has lost the acknowledged entry."""
    problems = run_member(tmp_path, puts=3, flush_appends=False)
    assert problems and all("is not in the log" in p for p in problems), problems
    assert len(problems) == 3  # one per append; the apply commit after it fsyncs the append's meta page

"""Removed members are state, not memory: recorded with the configuration that lacks them, kept across a
reopen, carried by snapshots, cleared when the id is added again; a store from before the record existed
opens with nobody removed."""

from __future__ import annotations

from pathlib import Path

import lmdb

from raftkv.core.types import ConfChange, ConfChangeType, Entry, EntryType, HardState
from raftkv.statemachine.node_store import NodeStore
from raftkv.storage.env import SUB_DBS


def _founded(path: Path) -> NodeStore:
    """Member 1 of a cluster founded by members 1, 2 and 3."""
    store = NodeStore(path)
    store.bootstrap(0xC1, 1, [(1, b""), (2, b""), (3, b"")])
    return store


def _change(store: NodeStore, kind: ConfChangeType, node_id: int) -> None:
    """Persist and apply one conf change entry, as the Raft loop does."""
    index = store.log.last_index() + 1
    entry = Entry(term=1, index=index, type=EntryType.CONF_CHANGE, data=ConfChange(kind, node_id).encode())
    store.save(None, [entry], HardState(1, 0, index)).result()
    store.apply([entry]).result()


def test_a_removed_id_survives_a_reopen_and_a_snapshot_install(tmp_path: Path) -> None:
    store = _founded(tmp_path / "n1")
    _change(store, ConfChangeType.REMOVE_NODE, 3)
    assert store.removed_members() == {3} and 3 not in store.conf_state().members()
    store.close()
    store = NodeStore(tmp_path / "n1")
    assert store.removed_members() == {3}
    # A member that catches up from a snapshot past the removal refuses the removed member too; what it
    # recorded before (here: a removal the snapshot's state does not hold) is replaced with the rest.
    meta = store.create_snapshot().result()
    newcomer = _founded(tmp_path / "n4")
    _change(newcomer, ConfChangeType.REMOVE_NODE, 2)
    installer = newcomer.begin_snapshot_install(meta)
    for chunk in store.open_snapshot(meta):
        installer.write(chunk)
    newcomer.save(installer, [], HardState(1, 0, meta.index)).result()
    assert newcomer.removed_members() == {3} and newcomer.conf_state() == store.conf_state()
    newcomer.close()
    store.close()


def test_an_id_added_again_is_a_member_again(tmp_path: Path) -> None:
    """Ids come from the peer URL, so a machine replaced at the same URL comes back with the same id."""
    store = _founded(tmp_path / "n1")
    _change(store, ConfChangeType.REMOVE_NODE, 3)
    _change(store, ConfChangeType.ADD_LEARNER, 3)
    assert store.removed_members() == frozenset() and 3 in store.conf_state().learners
    store.close()


def test_a_store_from_before_the_record_opens_with_nobody_removed(tmp_path: Path) -> None:
    """A data dir written before ``members_removed`` existed (same storage format, one sub-db fewer) opens,
    reads as nobody removed, and records the removals applied from then on."""
    store = _founded(tmp_path / "n1")
    store.close()
    env = lmdb.open(str(tmp_path / "n1" / "db"), max_dbs=len(SUB_DBS) + 2)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"members_removed", txn=txn), delete=True)
    with env.begin() as txn:
        assert txn.get(b"members_removed") is None  # the main db lists named sub-dbs: it is gone
    env.close()
    store = NodeStore(tmp_path / "n1")
    assert store.removed_members() == frozenset()
    _change(store, ConfChangeType.REMOVE_NODE, 2)
    assert store.removed_members() == {2}
    store.close()

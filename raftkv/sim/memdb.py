"""An in-memory stand-in for the LMDB environment, so the production store runs inside the simulator.

It offers the part of py-lmdb's API that ``raftkv.storage`` and ``raftkv.statemachine`` use — named
sub-databases (some ``dupsort``), read and write transactions, cursors — with LMDB's semantics: a write
transaction sees its own writes, a read transaction sees the state committed when it began (snapshot
isolation), cursors walk keys (and duplicates) in byte order and stay valid while their transaction
changes the database. ``tests/sim/test_memdb.py`` runs the same random operations against this and real
LMDB and requires identical answers.

What it adds is the disk's memory, as LMDB opened ``sync=True, metasync=False`` keeps it: ``commit`` makes a
transaction visible and makes the commit *before* it durable (its fsync of the data also writes back the
previous commit's meta page), ``flush`` makes the last commit durable too, and ``crash`` throws away
everything that is not durable -- at most the last commit, unless it was flushed. Each sub-database is an
immutable sorted list of (key, value) pairs, replaced (copy on write) by a commit that changed it; so a
durable state or a read view is just a reference, and a crash is one assignment.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import lmdb

from raftkv.storage.env import DEFAULT_MAP_SIZE, SUB_DBS
from raftkv.storage.sealed import SealedTxn

Items = list[tuple[bytes, bytes]]
PAGE_SIZE = 4096
State = dict[str, Items]
_LOWEST = b""
#: Sub-database handles are their names here; what ``SealedTxn`` names in its errors.
NAMES = {name: name for name in SUB_DBS}


class _Table:
    """One sub-database inside one transaction: the sorted items, copied before the first change."""

    __slots__ = ("items", "dupsort", "owned", "version")

    def __init__(self, items: Items, dupsort: bool) -> None:
        self.items = items
        self.dupsort = dupsort
        self.owned = False
        self.version = 0

    def writable(self) -> Items:
        if not self.owned:
            self.items = list(self.items)
            self.owned = True
        self.version += 1
        return self.items


class MemoryTxn:
    """A transaction over one ``State``; ``write`` ones collect their changes for ``MemoryEnv.commit``.
    A child (``parent`` given) sees its parent's uncommitted changes and hands its own back on success."""

    def __init__(self, state: State, write: bool, parent: MemoryTxn | None = None) -> None:
        self._state = state
        self._write = write
        self._parent = parent
        self._tables: dict[str, _Table] = {}

    def table(self, db: str) -> _Table:
        table = self._tables.get(db)
        if table is None:
            items = self._parent.table(db).items if self._parent is not None else self._state[db]
            table = self._tables[db] = _Table(items, SUB_DBS[db])
        return table

    def commit_into_parent(self) -> None:
        assert self._parent is not None
        for name, table in self._tables.items():
            if table.owned:
                target = self._parent.table(name)
                target.items = table.items
                target.owned = True
                target.version += 1

    def changed(self) -> dict[str, Items]:
        return {name: t.items for name, t in self._tables.items() if t.owned}

    # --- py-lmdb Transaction API ------------------------------------------------------------------------
    def get(self, key: bytes, default: bytes | None = None, db: str = "") -> bytes | None:
        items = self.table(db).items
        i = bisect_left(items, (bytes(key), _LOWEST))
        if i < len(items) and items[i][0] == key:
            return items[i][1]
        return default

    def put(self, key: bytes, value: bytes, db: str = "", append: bool = False) -> bool:
        """``append``: the caller promises ``key`` sorts after every key; as LMDB, nothing is stored (and
        False returned) when it does not."""
        assert self._write, "put in a read transaction"
        table = self.table(db)
        key, value = bytes(key), bytes(value)
        assert key, "LMDB keys are never empty"
        items = table.items
        if append and items and items[-1][0] >= key:
            assert not table.dupsort, "append to a dupsort sub-database is not modelled"
            return False
        if table.dupsort:
            i = bisect_left(items, (key, value))
            if i < len(items) and items[i] == (key, value):
                return False
            table.writable().insert(i, (key, value))
            return True
        i = bisect_left(items, (key, _LOWEST))
        writable = table.writable()
        if i < len(items) and items[i][0] == key:
            writable[i] = (key, value)
        else:
            writable.insert(i, (key, value))
        return True

    def delete(self, key: bytes, value: bytes = b"", db: str = "") -> bool:
        assert self._write, "delete in a read transaction"
        table = self.table(db)
        key = bytes(key)
        items = table.items
        if table.dupsort and value:
            i = bisect_left(items, (key, bytes(value)))
            if i < len(items) and items[i] == (key, bytes(value)):
                del table.writable()[i]
                return True
            return False
        lo = bisect_left(items, (key, _LOWEST))
        hi = lo
        while hi < len(items) and items[hi][0] == key:
            hi += 1
        if hi == lo:
            return False
        del table.writable()[lo:hi]
        return True

    def drop(self, db: str, delete: bool = True) -> None:
        assert self._write and not delete, "only emptying a sub-database is supported"
        table = self.table(db)
        table.writable().clear()

    def cursor(self, db: str = "") -> MemoryCursor:
        return MemoryCursor(self, db)

    def stat(self, db: str | None = None) -> dict[str, int]:
        """LMDB's statistics of one sub-database (or of the main one, which lists the sub-databases): as if
        each item took its bytes on leaf pages, packed."""
        if db is None:
            return {"psize": PAGE_SIZE, "entries": len(SUB_DBS), "branch_pages": 0, "leaf_pages": 1,
                    "overflow_pages": 0, "depth": 1}
        items = self.table(db).items
        size = sum(len(k) + len(v) for k, v in items)
        return {"psize": PAGE_SIZE, "entries": len(items), "branch_pages": 0,
                "leaf_pages": -(-size // PAGE_SIZE), "overflow_pages": 0, "depth": 1}


class MemoryCursor:
    """py-lmdb's Cursor over one sub-database. The position is the item it points at, found again by
    bisection whenever the transaction changed the table, so deleting under a cursor moves it to the next
    item exactly as LMDB does."""

    def __init__(self, txn: MemoryTxn, db: str) -> None:
        self._txn = txn
        self._db = db
        self._table = txn.table(db)
        self._item: tuple[bytes, bytes] | None = None
        self._index = 0
        self._version = self._table.version

    def _locate(self) -> int | None:
        if self._item is None:
            return None
        if self._version != self._table.version:
            # A replaced value keeps its key's place (one item per key unless dupsort).
            probe = self._item if self._table.dupsort else (self._item[0], _LOWEST)
            self._index = bisect_left(self._table.items, probe)
            self._version = self._table.version
            items = self._table.items
            if self._index >= len(items):
                self._item = None
                return None
            self._item = items[self._index]
        return self._index

    def _move(self, index: int) -> bool:
        items = self._table.items
        self._version = self._table.version
        if 0 <= index < len(items):
            self._index, self._item = index, items[index]
            return True
        self._item = None
        return False

    # --- positioning ------------------------------------------------------------------------------------
    def first(self) -> bool:
        return self._move(0)

    def last(self) -> bool:
        return self._move(len(self._table.items) - 1)

    def set_key(self, key: bytes) -> bool:
        items = self._table.items
        i = bisect_left(items, (bytes(key), _LOWEST))
        if i < len(items) and items[i][0] == key:
            return self._move(i)
        self._item = None
        return False

    def set_range(self, key: bytes) -> bool:
        return self._move(bisect_left(self._table.items, (bytes(key), _LOWEST)))

    def set_range_dup(self, key: bytes, value: bytes) -> bool:
        items = self._table.items
        i = bisect_left(items, (bytes(key), bytes(value)))
        if i < len(items) and items[i][0] == key:
            return self._move(i)
        self._item = None
        return False

    def next(self) -> bool:
        i = self._locate()
        return self._move(0 if i is None else i + 1)

    def prev_dup(self) -> bool:
        i = self._locate()
        if i is None or i == 0 or self._table.items[i - 1][0] != self._table.items[i][0]:
            return False
        return self._move(i - 1)

    def last_dup(self) -> bool:
        i = self._locate()
        if i is None:
            return False
        items = self._table.items
        key = items[i][0]
        while i + 1 < len(items) and items[i + 1][0] == key:
            i += 1
        return self._move(i)

    # --- reading ----------------------------------------------------------------------------------------
    def key(self) -> bytes:
        return b"" if self._locate() is None or self._item is None else self._item[0]

    def value(self) -> bytes:
        return b"" if self._locate() is None or self._item is None else self._item[1]

    def item(self) -> tuple[bytes, bytes]:
        return (self.key(), self.value())

    def delete(self, dupdata: bool = False) -> bool:
        """Delete the current item; the cursor then points at the one after it (if any)."""
        i = self._locate()
        if i is None:
            return False
        assert not dupdata
        del self._table.writable()[i]
        return self._move(i)

    def putmulti(
        self, items: Iterable[tuple[bytes, bytes]], dupdata: bool = True, overwrite: bool = True, append: bool = False
    ) -> tuple[int, int]:
        """``put`` each item in turn (through the transaction: this cursor is not moved); (consumed, added)."""
        assert dupdata and overwrite, "only py-lmdb's defaults are modelled"
        consumed = added = 0
        for key, value in items:
            consumed += 1
            added += self._txn.put(key, value, db=self._db, append=append)
        return consumed, added

    # --- iteration (starting at the current item, or at the first when unpositioned) ---------------------
    def iternext(self, keys: bool = True, values: bool = True) -> Iterator[Any]:
        ok = self._locate() is not None or self.first()
        while ok:
            yield self._shape(keys, values)
            ok = self.next()

    def iternext_nodup(self, keys: bool = True, values: bool = False) -> Iterator[Any]:
        ok = self._locate() is not None or self.first()
        while ok:
            yield self._shape(keys, values)
            current = self.key()
            ok = self.next()
            while ok and self.key() == current:
                ok = self.next()

    def iternext_dup(self, keys: bool = False, values: bool = True) -> Iterator[Any]:
        if self._locate() is None:
            return
        current = self.key()
        ok = True
        while ok and self.key() == current:
            yield self._shape(keys, values)
            ok = self.next()

    def __iter__(self) -> Iterator[Any]:
        return self.iternext()

    def _shape(self, keys: bool, values: bool) -> Any:
        assert self._item is not None
        if keys and values:
            return self._item
        return self._item[0] if keys else self._item[1]


class MemoryEnv:
    """The environment: a live state (what readers see) and a durable one (what survives ``crash``)."""

    def __init__(self, sync: bool = True) -> None:
        self.sync = sync
        self.live: State = {name: [] for name in SUB_DBS}
        self.durable: State = self.live
        self.map_size = DEFAULT_MAP_SIZE
        self.path = Path("/nonexistent/sim")
        self.commits = 0

    def db(self, name: str) -> str:
        assert name in SUB_DBS, name
        return name

    @contextlib.contextmanager
    def read(self) -> Iterator[SealedTxn]:
        """As ``Env.read``: records come out checked (the production seal, over this environment)."""
        yield sealed(MemoryTxn(self.live, write=False))

    def begin(self) -> MemoryTxn:
        """A raw read transaction (py-lmdb's ``Environment.begin()``): values as stored, seals included."""
        return MemoryTxn(self.live, write=False)

    def begin_write(self) -> MemoryTxn:
        """A raw write transaction, for ``commit``; the store's writer wraps it as ``Writer`` does."""
        return MemoryTxn(self.live, write=True)

    @contextlib.contextmanager
    def begin_child(self, parent: SealedTxn) -> Iterator[SealedTxn]:
        """A nested write transaction: its changes join ``parent`` if the block ends normally, else vanish."""
        child = MemoryTxn(self.live, write=True, parent=cast(MemoryTxn, parent.raw))
        yield sealed(child)
        child.commit_into_parent()

    def commit(self, txn: MemoryTxn) -> None:
        """Make ``txn`` visible. When this environment syncs, the commit before it is now durable (LMDB's
        fsync of this commit's pages flushes that commit's meta page); this one is not until the next commit
        or ``flush``. Without syncing, nothing is durable before ``write_back``."""
        previous = self.live
        changed = txn.changed()
        if changed:
            self.live = {**self.live, **changed}
        self.commits += 1
        if self.sync:
            self.durable = previous

    def flush(self) -> None:
        """``Env.flush``: the last commit is durable too (when this environment syncs at all)."""
        if self.sync:
            self.durable = self.live

    def write_back(self) -> None:
        """The operating system wrote everything back (what an unsynced environment waits for)."""
        self.durable = self.live

    def crash(self) -> None:
        """Power loss: whatever was not durable is gone."""
        self.live = self.durable

    def file_size(self) -> int:
        with self.read() as txn:
            return self.pages_in_use(txn, SUB_DBS)

    def pages_in_use(self, txn: SealedTxn, names: Iterable[str], *, with_overhead: bool = True) -> int:
        """As ``Env.pages_in_use``, from ``MemoryTxn.stat``."""
        pages = sum(txn.stat(name)["leaf_pages"] for name in names)
        return (pages + (3 if with_overhead else 0)) * PAGE_SIZE

    def compact_file(self) -> None:
        """Defragmentation has nothing to do in memory."""

    def close(self) -> None:
        pass


def sealed(txn: MemoryTxn) -> SealedTxn:
    """``txn`` behind the production seal. A ``MemoryTxn`` answers the part of py-lmdb's ``Transaction`` that
    ``SealedTxn`` uses, as ``tests/sim/test_memdb.py`` checks against LMDB itself."""
    return SealedTxn(cast(lmdb.Transaction, txn), NAMES)

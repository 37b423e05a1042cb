"""A checksum on every record: each value stored in LMDB ends with the CRC-32 of its key and value, checked
whenever the record is read.

LMDB checks nothing of what it returns: a flipped bit in a value, a log entry or a key is served as if it
had been written so. Sealing every record where transactions are made (``Env.read``, the ``Writer``) rather
than in each caller makes the rule structural: no code path can read a record without checking it, or
write one without sealing it. The key is part of the checksum, so a damaged key (its record found under
another name) fails too. A failed check raises :class:`CorruptionError`; what the member then does is the
server's business (``raftkv.server.integrity``).

The wrappers offer the part of py-lmdb's ``Transaction`` and ``Cursor`` that raftkv uses. Positioning by a
value prefix (``set_range_dup``) works unchanged: the checksum is a suffix, so sealed values sort as their
payloads do whenever no payload is a prefix of another (true of every dupsort database here: their values
have a fixed size).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import lmdb

_CRC = struct.Struct(">I")
CHECKSUM_BYTES = _CRC.size
#: What py-lmdb hands back (bytes, as raftkv never asks for buffers).
Raw = bytes | memoryview


class CorruptionError(Exception):
    """A stored record (or the file holding it) is not what was written. Never serve it."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"damaged data in {where}: {detail}")
        self.where = where
        self.detail = detail


def _crc(key: Raw, value: Raw) -> int:
    """The checksum of a record: its key and then its value, so that a record found under another key fails."""
    return _crc32(value, _crc32(key))


def seal(key: Raw, value: Raw) -> bytes:
    return bytes(value) + _PACK_CRC(_crc(key, value))


def _checked(key: Raw, raw: bytes) -> bytes | None:
    """The payload of the sealed record ``raw`` stored at ``key``, or None if it is shorter than its checksum
    or does not match it. The one check of a record read: ``unseal`` and the cursors' loops all call it."""
    end = len(raw) - CHECKSUM_BYTES
    payload = raw[:end]
    if end < 0 or _UNPACK_CRC(raw, end)[0] != _crc(key, payload):
        return None
    return payload


def _damaged(db: str, key: Raw, raw: Raw) -> CorruptionError:
    """What a record that failed ``_checked`` is: too short to hold a checksum, or not the one it holds."""
    what = "is shorter than its checksum" if len(raw) < CHECKSUM_BYTES else "fails its checksum"
    return CorruptionError(f"sub-database {db!r}", f"the record at key {bytes(key[:64])!r} {what}")


# Bound once: a record is sealed or checked for every record written or read (several per applied put, one
# per key a range delete or a scan touches), where attribute look-ups are a measurable share of the apply.
_PACK_CRC = _CRC.pack
_UNPACK_CRC = _CRC.unpack_from
_crc32 = zlib.crc32


def unseal(db: str, key: Raw, raw: Raw) -> bytes:
    """The payload of a sealed record; raises ``CorruptionError`` if it does not match its checksum."""
    payload = _checked(key, bytes(raw))
    if payload is None:
        raise _damaged(db, key, raw)
    return payload


class SealedTxn:
    """An LMDB transaction whose values are sealed on the way in and checked on the way out. ``raw`` is the
    underlying transaction, for code that moves records whole (format migration)."""

    __slots__ = ("raw", "_names")

    def __init__(self, raw: lmdb.Transaction, names: Mapping[Any, str]) -> None:
        self.raw = raw
        self._names = names

    def get(self, key: bytes, default: bytes | None = None, *, db: Any) -> bytes | None:
        raw = self.raw.get(key, db=db)
        return default if raw is None else unseal(self._names[db], key, raw)

    def put(self, key: bytes, value: bytes, *, db: Any, **flags: bool) -> bool:
        return bool(self.raw.put(key, seal(key, value), db=db, **flags))

    def put_many(self, records: Iterable[tuple[bytes, bytes]], *, db: Any, append: bool = False) -> None:
        """``put`` each (key, value) in order, in one call into LMDB (``Cursor.putmulti``): what a write of
        many records costs per record is then mostly LMDB's. ``append`` as for ``put``: keys beyond the
        last (and, here, ascending)."""
        self.raw.cursor(db=db).putmulti([(key, seal(key, value)) for key, value in records], append=append)

    def delete(self, key: bytes, value: bytes = b"", *, db: Any) -> bool:
        """Delete ``key`` (a dupsort database: only its duplicate ``value``, when given)."""
        return bool(self.raw.delete(key, seal(key, value) if value else b"", db=db))

    def cursor(self, *, db: Any) -> SealedCursor:
        return SealedCursor(self.raw.cursor(db=db), self._names[db])

    def stat(self, db: Any = None) -> dict[str, Any]:
        return dict(self.raw.stat(db) if db is not None else self.raw.stat())

    def drop(self, db: Any, delete: bool = True) -> None:
        self.raw.drop(db, delete=delete)

    def abort(self) -> None:
        self.raw.abort()


class SealedCursor:
    """A cursor over one sub-database; values come out checked. Positioning methods pass through."""

    __slots__ = ("_cur", "_db")

    def __init__(self, cur: lmdb.Cursor, db: str) -> None:
        self._cur = cur
        self._db = db

    def key(self) -> bytes:
        return bytes(self._cur.key())

    def value(self) -> bytes:
        return unseal(self._db, self._cur.key(), self._cur.value())

    def set_key(self, key: bytes) -> bool:
        return bool(self._cur.set_key(key))

    def set_range(self, key: bytes) -> bool:
        return bool(self._cur.set_range(key))

    def set_range_dup(self, key: bytes, value_prefix: bytes) -> bool:
        return bool(self._cur.set_range_dup(key, value_prefix))

    def first(self) -> bool:
        return bool(self._cur.first())

    def last(self) -> bool:
        return bool(self._cur.last())

    def next(self) -> bool:
        return bool(self._cur.next())

    def prev_dup(self) -> bool:
        return bool(self._cur.prev_dup())

    def last_dup(self) -> bool:
        return bool(self._cur.last_dup())

    def delete(self) -> bool:
        return bool(self._cur.delete())

    def pop_until(self, past_end: Callable[[bytes], bool]) -> Iterator[tuple[bytes, bytes]]:
        """From the current record on, each (key, checked value) before the first key ``past_end`` accepts,
        deleted as it is yielded (a database without duplicates; nothing else may write to it meanwhile).
        One cursor walks and deletes: no search of the tree per record, as a delete by key needs."""
        cur: Any = self._cur  # its keys and values are bytes: the environment does not ask for buffers
        checked = _checked
        key: bytes = cur.key()
        while key and not past_end(key):
            raw = cur.value()
            value = checked(key, raw)
            if value is None:
                raise _damaged(self._db, key, raw)
            cur.delete()  # and moves to the next record (none: an empty key)
            yield key, value
            key = cur.key()

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return self.iternext()

    def iternext(self, keys: bool = True, values: bool = True) -> Iterator[Any]:
        if not values:
            yield from self._cur.iternext(keys=True, values=False)
            return
        cur: Any = self._cur  # its values are bytes (as in pop_until), so not unseal: this loop serves every scan
        checked = _checked
        for key, raw in cur.iternext(keys=True, values=True):
            value = checked(key, raw)
            if value is None:
                raise _damaged(self._db, key, raw)
            yield (key, value) if keys else value

    def iternext_nodup(self, keys: bool = True, values: bool = False) -> Iterator[Any]:
        if not values:
            yield from self._cur.iternext_nodup(keys=True, values=False)
            return
        for key, raw in self._cur.iternext_nodup(keys=True, values=True):
            value = unseal(self._db, key, raw)
            yield (key, value) if keys else value

    def iternext_dup(self) -> Iterator[bytes]:
        """The values of the current key, from the current one on."""
        key = self._cur.key()
        for raw in self._cur.iternext_dup(keys=False, values=True):
            yield unseal(self._db, key, raw)

"""The bbolt file format (etcd's backend database), read and written without bbolt: enough for snapshots.

etcd's snapshots are its bbolt database file (followed by a SHA-256 when streamed). raftkv reads one to
restore an etcd cluster's data, and writes one so that ``etcdctl snapshot status`` and ``restore`` take
raftkv's snapshots. Only what that needs is here: top-level buckets of sorted keys and values, no nested
buckets, written once in a single pass and read sequentially.

The layout (go.etcd.io/bbolt ``page.go``, ``db.go``, ``bucket.go``), all integers little-endian:

- page header: id u64, flags u16 (branch 0x01, leaf 0x02, meta 0x04, freelist 0x10), count u16, overflow
  u32 (a page of n+1 consecutive pages has overflow n);
- pages 0 and 1 are meta pages: magic, version 2, page size, flags, the root bucket (root page id, sequence),
  the freelist's page id, the high-water page id, the transaction id and an FNV-1a checksum of the rest;
  readers take the valid one with the higher transaction id;
- leaf elements: flags u32 (0x01: the value is a nested bucket), pos u32, key size u32, value size u32;
  branch elements: pos u32, key size u32, child page id u64; ``pos`` counts from the element itself to its
  key (a leaf's value follows the key);
- the root bucket is a tree whose leaves map each bucket's name to its header (root page id, sequence); a
  header whose root is 0 is followed by the bucket's whole (small) leaf page, inline.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

PAGE_SIZE = 4096
MAGIC = 0xED0CDAED
VERSION = 2

BRANCH, LEAF, META, FREELIST = 0x01, 0x02, 0x04, 0x10
BUCKET_LEAF_FLAG = 0x01
_MAX_COUNT = 0xFFFF

_HEADER = struct.Struct("<QHHI")
_LEAF_ELEMENT = struct.Struct("<IIII")
_BRANCH_ELEMENT = struct.Struct("<IIQ")
_BUCKET = struct.Struct("<QQ")
_META = struct.Struct("<IIII16sQQQ")  # then the checksum, u64
_U64 = struct.Struct("<Q")


class BoltFormatError(Exception):
    """Bytes that are not a bbolt database this module can read."""


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _meta_page(page_id: int, page_size: int, root: int, freelist: int, high_water: int, txid: int) -> bytes:
    body = _META.pack(MAGIC, VERSION, page_size, 0, _BUCKET.pack(root, 0), freelist, high_water, txid)
    return _HEADER.pack(page_id, META, 0, 0) + body + _U64.pack(_fnv1a64(body))


class BoltWriter:
    """Writes a bbolt file in one pass: ``bucket(name, items)`` per bucket, then ``close()``.

    ``out`` must be seekable (the meta pages at the front are written last). Items must come in ascending
    key order. Leaves are filled up to a page (a single large item gets an overflowing page of its own)."""

    def __init__(self, out: BinaryIO, page_size: int = PAGE_SIZE) -> None:
        self._out = out
        self._page_size = page_size
        self._start = out.tell()
        self._next = 3  # 0 and 1: meta, 2: the (empty) freelist
        self._buckets: list[tuple[bytes, int]] = []
        self._out.seek(self._start + 3 * page_size)

    def bucket(self, name: bytes, items: Iterable[tuple[bytes, bytes]]) -> None:
        assert all(name != known for known, _ in self._buckets), f"bucket {name!r} written twice"
        self._buckets.append((name, self._tree(((k, v, 0) for k, v in items))))

    def close(self) -> int:
        """Write the root bucket, the freelist and the meta pages; returns the file's length."""
        root = self._tree((name, _BUCKET.pack(page, 0), BUCKET_LEAF_FLAG) for name, page in sorted(self._buckets))
        end = self._start + self._next * self._page_size
        self._out.seek(self._start + 2 * self._page_size)
        self._out.write(self._padded(_HEADER.pack(2, FREELIST, 0, 0)))
        for page_id in (0, 1):
            self._out.seek(self._start + page_id * self._page_size)
            self._out.write(self._padded(_meta_page(page_id, self._page_size, root, 2, self._next, page_id)))
        self._out.seek(end)
        return end - self._start

    def _tree(self, items: Iterable[tuple[bytes, bytes, int]]) -> int:
        """Write the leaves for ``items`` and the branches above them; returns the root's page id."""
        children: list[tuple[bytes, int]] = []
        batch: list[tuple[bytes, bytes, int]] = []
        size = _HEADER.size
        for key, value, flags in items:
            grown = size + _LEAF_ELEMENT.size + len(key) + len(value)
            if batch and (grown > self._page_size or len(batch) == _MAX_COUNT):
                children.append((batch[0][0], self._leaf(batch)))
                batch, grown = [], _HEADER.size + _LEAF_ELEMENT.size + len(key) + len(value)
            batch.append((key, value, flags))
            size = grown
        if batch or not children:
            children.append((batch[0][0] if batch else b"", self._leaf(batch)))
        while len(children) > 1:
            level: list[tuple[bytes, int]] = []
            group: list[tuple[bytes, int]] = []
            size = _HEADER.size
            for key, page in children:
                grown = size + _BRANCH_ELEMENT.size + len(key)
                if group and (grown > self._page_size or len(group) == _MAX_COUNT):
                    level.append((group[0][0], self._branch(group)))
                    group, grown = [], _HEADER.size + _BRANCH_ELEMENT.size + len(key)
                group.append((key, page))
                size = grown
            level.append((group[0][0], self._branch(group)))
            children = level
        return children[0][1]

    def _leaf(self, batch: list[tuple[bytes, bytes, int]]) -> int:
        elements, data = bytearray(), bytearray()
        offset = _HEADER.size + _LEAF_ELEMENT.size * len(batch)
        for i, (key, value, flags) in enumerate(batch):
            pos = offset + len(data) - (_HEADER.size + _LEAF_ELEMENT.size * i)
            elements += _LEAF_ELEMENT.pack(flags, pos, len(key), len(value))
            data += key + value
        return self._page(LEAF, len(batch), bytes(elements + data))

    def _branch(self, group: list[tuple[bytes, int]]) -> int:
        elements, data = bytearray(), bytearray()
        offset = _HEADER.size + _BRANCH_ELEMENT.size * len(group)
        for i, (key, page) in enumerate(group):
            pos = offset + len(data) - (_HEADER.size + _BRANCH_ELEMENT.size * i)
            elements += _BRANCH_ELEMENT.pack(pos, len(key), page)
            data += key
        return self._page(BRANCH, len(group), bytes(elements + data))

    def _page(self, flags: int, count: int, body: bytes) -> int:
        page_id = self._next
        pages = -(-(_HEADER.size + len(body)) // self._page_size)
        self._out.write(self._padded(_HEADER.pack(page_id, flags, count, pages - 1) + body))
        self._next += pages
        return page_id

    def _padded(self, page: bytes) -> bytes:
        return page + bytes(-len(page) % self._page_size)


class BoltReader:
    """Reads the buckets of a bbolt file held in memory (``data``: the file, or a snapshot's bytes)."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = memoryview(data)
        self._page_size, self._root = self._meta()

    def _meta(self) -> tuple[int, int]:
        best: tuple[int, int, int] | None = None
        page_size = PAGE_SIZE
        for page_id in (0, 1):
            start = page_id * page_size + _HEADER.size
            raw = bytes(self._data[start : start + _META.size + 8])
            if len(raw) < _META.size + 8:
                continue
            magic, version, size, _, root, _, _, txid = _META.unpack(raw[: _META.size])
            if magic != MAGIC or version != VERSION:
                continue
            (checksum,) = _U64.unpack(raw[_META.size :])
            if checksum and checksum != _fnv1a64(raw[: _META.size]):
                continue
            if page_id == 0:
                page_size = size  # page 1 sits one page (of this size) further on
            if best is None or txid > best[0]:
                best = (txid, size, _BUCKET.unpack(root)[0])
        if best is None:
            raise BoltFormatError("no valid bbolt meta page (not an etcd database, or damaged)")
        return best[1], best[2]

    def buckets(self) -> list[bytes]:
        return [bytes(key) for key, _, _ in self._walk(self._page(self._root))]

    def items(self, name: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The bucket's keys and values in key order (nothing if the bucket does not exist)."""
        for key, value, flags in self._walk(self._page(self._root)):
            if key == name and flags & BUCKET_LEAF_FLAG:
                root, _ = _BUCKET.unpack(bytes(value[: _BUCKET.size]))
                page = value[_BUCKET.size :] if root == 0 else self._page(root)
                for k, v, f in self._walk(page):
                    if not f & BUCKET_LEAF_FLAG:
                        yield bytes(k), bytes(v)
                return

    def _page(self, page_id: int) -> memoryview:
        start = page_id * self._page_size
        if start + _HEADER.size > len(self._data):
            raise BoltFormatError(f"page {page_id} lies beyond the end of the file")
        _, _, _, overflow = _HEADER.unpack(self._data[start : start + _HEADER.size])
        return self._data[start : start + (overflow + 1) * self._page_size]

    def _walk(self, page: memoryview) -> Iterator[tuple[memoryview, memoryview, int]]:
        _, flags, count, _ = _HEADER.unpack(page[: _HEADER.size])
        if flags & LEAF:
            for i in range(count):
                at = _HEADER.size + _LEAF_ELEMENT.size * i
                element_flags, pos, ksize, vsize = _LEAF_ELEMENT.unpack(page[at : at + _LEAF_ELEMENT.size])
                key = page[at + pos : at + pos + ksize]
                yield key, page[at + pos + ksize : at + pos + ksize + vsize], element_flags
        elif flags & BRANCH:
            for i in range(count):
                at = _HEADER.size + _BRANCH_ELEMENT.size * i
                _, _, child = _BRANCH_ELEMENT.unpack(page[at : at + _BRANCH_ELEMENT.size])
                yield from self._walk(self._page(child))
        else:
            raise BoltFormatError(f"page of type {flags:#x} where a tree page was expected")

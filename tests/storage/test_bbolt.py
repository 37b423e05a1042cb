"""The bbolt writer and reader agree, on trees of several levels, overflowing pages and empty buckets (that
etcd reads the writer's files, and the reader etcd's, is shown in tests/api/test_snapshot_exchange.py)."""

from __future__ import annotations

import io

import pytest

from raftkv.storage.bbolt import PAGE_SIZE, BoltFormatError, BoltReader, BoltWriter


def written(buckets: dict[bytes, list[tuple[bytes, bytes]]]) -> bytes:
    out = io.BytesIO()
    writer = BoltWriter(out)
    for name, items in buckets.items():
        writer.bucket(name, items)
    length = writer.close()
    assert length == len(out.getvalue()) and length % PAGE_SIZE == 0
    return out.getvalue()


def test_round_trip_of_many_keys_large_values_and_empty_buckets() -> None:
    many = [(i.to_bytes(8, "big"), b"v" * (i % 7)) for i in range(70_000)]  # more than a page's 65535 items
    large = [(b"a", b"x" * (3 * PAGE_SIZE + 5)), (b"b", b""), (b"c", b"y" * 100)]
    data = written({b"many": many, b"large": large, b"empty": []})
    reader = BoltReader(data)
    assert reader.buckets() == [b"empty", b"large", b"many"]
    assert list(reader.items(b"many")) == many
    assert list(reader.items(b"large")) == large
    assert list(reader.items(b"empty")) == []
    assert list(reader.items(b"missing")) == []


def test_damaged_meta_pages_are_refused() -> None:
    data = bytearray(written({b"k": [(b"1", b"2")]}))
    for page in (0, 1):
        data[page * PAGE_SIZE + 40] ^= 0xFF  # inside each meta page's checksummed body
    with pytest.raises(BoltFormatError, match="no valid bbolt meta page"):
        BoltReader(bytes(data))
    with pytest.raises(BoltFormatError):
        BoltReader(b"not a database at all")

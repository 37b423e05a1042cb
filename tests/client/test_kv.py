"""Round trips of the KV surface against a live cluster."""

from __future__ import annotations

import pytest

from raftkv.client import Client, InvalidArgument
from raftkv.client.ops import get, mod_revision, put, value, version


def test_put_get_delete_round_trip(client: Client, prefix: str) -> None:
    first = client.put(prefix + "a", "1")
    assert client.get(prefix + "a").value == b"1"  # type: ignore[union-attr]
    assert client.get(prefix + "missing") is None
    second = client.put(prefix + "a", b"2", prev_kv=True)
    assert second.revision == first.revision + 1 and second.prev_kv is not None and second.prev_kv.value == b"1"
    assert client.get(prefix + "a", revision=first.revision).value == b"1"  # type: ignore[union-attr]
    assert client.get(prefix + "a", serializable=True) is not None

    deleted = client.delete(prefix + "a", prev_kv=True)
    assert deleted.deleted == 1 and [kv.value for kv in deleted.prev_kvs] == [b"2"]
    assert client.get(prefix + "a") is None


def test_range_options(client: Client, prefix: str) -> None:
    for i, key in enumerate(["c", "a", "b"]):
        client.put(prefix + key, str(i))
    everything = client.get_prefix(prefix)
    assert [kv.key for kv in everything.kvs] == [(prefix + k).encode() for k in "abc"]
    assert everything.count == 3 and not everything.more

    limited = client.get_prefix(prefix, limit=2, sort_order="descend", sort_target="key")
    assert [kv.key[-1:] for kv in limited.kvs] == [b"c", b"b"] and limited.more
    keys_only = client.get_prefix(prefix, keys_only=True)
    assert all(kv.value == b"" for kv in keys_only.kvs)
    assert client.get_prefix(prefix, count_only=True).count == 3
    assert [kv.key[-1:] for kv in client.get_range(prefix + "b", prefix + "c").kvs] == [b"b"]
    assert client.delete(prefix, prefix=True).deleted == 3


def test_txn_builder_and_compare_and_swap(client: Client, prefix: str) -> None:
    key = prefix + "k"
    assert client.put_if_absent(key, "v1") is True
    assert client.put_if_absent(key, "other") is False

    result = client.txn().if_(value(key) == "v1").then(put(key, "v2")).else_(get(key)).commit()
    assert result.succeeded and client.get(key).value == b"v2"  # type: ignore[union-attr]

    result = client.txn().if_(value(key) == "v1").then(put(key, "v3")).else_(get(key)).commit()
    assert not result.succeeded
    assert result.responses[0].kvs[0].value == b"v2"  # type: ignore[union-attr]

    current = client.get(key)
    assert current is not None
    assert client.txn().if_(mod_revision(key) == current.mod_revision, version(key) > 0).commit().succeeded
    assert client.compare_and_swap(key, "v2", "v4") is True
    assert client.compare_and_swap(key, "v2", "v5") is False
    assert client.get(key).value == b"v4"  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["", b""])
def test_empty_key_is_refused(client: Client, bad: str) -> None:
    with pytest.raises(InvalidArgument, match="key is not provided"):
        client.put(bad, "v")

"""The registration format: etcd's endpoints-manager JSON under ``<namespace>/<service>/<id>``."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.discovery import record


def test_value_is_the_endpoints_manager_json() -> None:
    assert record.encode("10.0.0.1:50051") == b'{"Op":0,"Addr":"10.0.0.1:50051","Metadata":null}'
    assert record.encode("h:1", {"zone": "a", "weight": 2}) == b'{"Op":0,"Addr":"h:1","Metadata":{"weight":2,"zone":"a"}}'


def test_prefix_keeps_its_trailing_slash_and_namespace_is_normalised() -> None:
    assert record.service_prefix("foo") == "/services/foo/"
    assert record.service_prefix("foo", "/custom/") == "/custom/foo/"
    assert record.instance_key("foo", "10.0.0.1:1") == "/services/foo/10.0.0.1:1"


@pytest.mark.parametrize("name", ["", "a/b", " a", "a "])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(record.RecordError, match="key segment"):
        record.service_prefix(name)


@pytest.mark.parametrize("addr", ["host", "host:", ":80", "host:0", "host:70000", "host:x"])
def test_bad_addresses_are_refused(addr: str) -> None:
    with pytest.raises(record.RecordError, match="host:port"):
        record.encode(addr)


@pytest.mark.parametrize("weight", [0, -1, 1.5, "x", 1001, float("nan")])
def test_bad_weights_are_refused(weight: object) -> None:
    with pytest.raises(record.RecordError, match="weight"):
        record.encode("h:1", {"weight": weight})


@pytest.mark.parametrize("value, reason", [
    (b"not json", "not JSON"), (b'{"Op":1,"Addr":"h:1"}', "Add update"), (b'{"Op":0}', "Add update"),
    (b'{"Op":0,"Addr":"nope"}', "host:port"), (b"\xff", "not JSON"),
])
def test_decode_refuses_what_is_not_a_registration(value: bytes, reason: str) -> None:
    with pytest.raises(record.RecordError, match=reason):
        record.decode(b"/services/s/i", value)


def test_decode_reads_what_go_writes() -> None:
    # grpc-go's endpoints manager with a non-map Metadata (any JSON is allowed there).
    inst = record.decode(b"/services/s/i1", b'{"Op":0,"Addr":"1.2.3.4:5","Metadata":"v1"}', lease=7, mod_revision=9)
    assert (inst.id, inst.addr, dict(inst.metadata), inst.lease, inst.weight) == ("i1", "1.2.3.4:5", {"value": "v1"}, 7, 1)


@given(port=st.integers(1, 65535), meta=st.dictionaries(st.text(min_size=1), st.text() | st.integers()))
def test_encode_then_decode_round_trips(port: int, meta: dict[str, object]) -> None:
    meta.pop("weight", None)
    inst = record.decode(b"/services/s/x", record.encode(f"h:{port}", meta))
    assert inst.addr == f"h:{port}" and dict(inst.metadata) == meta
    assert json.loads(record.encode(f"h:{port}", meta))["Op"] == 0

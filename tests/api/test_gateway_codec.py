"""The sans-I/O parts of the client port's HTTP side: how a connection is classified from its first bytes
(with real ClientHellos from Python's TLS), and the JSON conversion, checked against protobuf's own
``json_format`` and Python's ``json`` for every message and value hypothesis draws. What etcd answers for
the same bytes is the business of ``test_gateway_same_as_etcd``."""

from __future__ import annotations

import base64
import json
import ssl
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.api.front.classify import H2_PREFACE, PEEK_BYTES, Route, alpn_protocols, classify
from raftkv.api.gateway import routes
from raftkv.api.gateway.calls import request_class
from raftkv.api.gateway.gojson import GoJSONError, NeedMore, next_value, quote
from raftkv.api.gateway.jsonpb import _go_base64_slow, decode, encode, go_base64
from raftkv.proto import rpc_pb2

from ..hostile.strategies import messages


def client_hello(alpn: list[str] | None) -> bytes:
    """The first flight of a real TLS client offering ``alpn`` (None: no ALPN extension)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="raftkv.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize(("alpn", "route"), [
    (["h2"], Route.GRPC),  # grpc-go (etcdctl, every Go client) and grpcio
    (["h2", "http/1.1"], Route.HTTP),  # curl
    (["http/1.1"], Route.HTTP),  # Go's and Python's HTTP clients
    (None, Route.HTTP),
])
def test_tls_connections_are_told_apart_by_alpn(alpn: list[str] | None, route: Route) -> None:
    hello = client_hello(alpn)
    assert classify(hello, tls=True) is route
    for cut in range(len(hello)):  # a ClientHello arriving a few bytes at a time: wait, never guess
        assert classify(hello[:cut], tls=True) is None, cut


def test_alpn_list_is_read_as_offered() -> None:
    hello = client_hello(["h2", "http/1.1"])
    body = hello[5 + 4:]  # record header, handshake header
    assert alpn_protocols(body) == [b"h2", b"http/1.1"]


@pytest.mark.parametrize(("data", "route"), [
    (H2_PREFACE + b"\x00\x00", Route.GRPC),
    (H2_PREFACE[:10], None),
    (b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\n\r\n", Route.HTTP),
    (b"GET /health HTTP/1.0\n", Route.HTTP),
    (b"GET /heal", None),
    (b"GET /health HTTP/2.0\r\n", Route.REFUSE),
    (b"\x00\x01garbage\r\n", Route.REFUSE),
    (b"GET  /x HTTP/1.1\r\n", Route.REFUSE),
])
def test_plaintext_connections(data: bytes, route: Route | None) -> None:
    assert classify(data, tls=False) is route


@pytest.mark.parametrize("data", [b"GET /health HTTP/1.1\r\n\r\n", b"\x00\x01garbage", b"\x16\x03\x01\x00\x00",
                                  b"\x16\x02\x01\x00\x05hello", b"\x16\x03\x01\x00\x05\x02abcd"])
def test_what_is_not_a_client_hello_is_refused_on_a_tls_port(data: bytes) -> None:
    assert classify(data, tls=True) is Route.REFUSE


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600), tls=st.booleans())
def test_any_bytes_get_a_decision_or_a_wait_never_an_exception(data: bytes, tls: bool) -> None:
    route = classify(data, tls)
    assert route is None or isinstance(route, Route)
    if route is not None:  # a decision, once made, holds whatever follows
        assert classify(data + b"\x00" * 64, tls) is route


def test_a_full_peek_always_decides() -> None:
    for data in (b"\x16\x03\x01\x40\x00" + b"\x01" * (PEEK_BYTES - 5), b"G" * PEEK_BYTES, b"GET /" + b"a" * PEEK_BYTES):
        for tls in (True, False):
            assert classify(data, tls) is not None


# ---------------------------------------------------------------------------------------------- JSON
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(deadline=None, max_examples=100)
@given(value=json_values, pad=st.sampled_from(["", " ", "\n\t "]))
def test_next_value_finds_what_json_parses(value: object, pad: str) -> None:
    text = (pad + json.dumps(value, ensure_ascii=bool(len(pad) % 2)) + pad).encode()
    span = next_value(text, 0, final=True)
    assert span is not None and json.loads(text[span[0]:span[1]]) == value
    assert not text[span[1]:].strip()


def _python_refuses(text: bytes) -> bool:
    def no_constants(name: str) -> None:
        raise ValueError(name)

    try:
        json.loads(text, parse_constant=no_constants)
    except ValueError:
        return True
    return False


@settings(deadline=None, max_examples=300)
@given(text=st.text(alphabet='{}[]",: 0123456789.eE+-tfnrulasx\\\n', max_size=24))
def test_next_value_refuses_what_json_refuses(text: str) -> None:
    data = text.encode()
    try:
        span = next_value(data, 0, final=True)
        whole = span is not None and not data[span[1]:].strip()
    except GoJSONError:
        whole = False
    assert whole == (not _python_refuses(data) and bool(data.strip()))


def test_stream_of_values_waits_for_more() -> None:
    with pytest.raises(NeedMore):
        next_value(b'{"ID": "5"', 0, final=False)
    with pytest.raises(NeedMore):
        next_value(b"12", 0, final=False)  # a number may go on
    assert next_value(b'{"ID": 5} {"ID"', 0, final=False) == (0, 9)


def test_go_error_texts() -> None:
    for data, text in [(b"garbage", "invalid character 'g' looking for beginning of value"),
                       (b'{"a" 1}', "invalid character '1' after object key"),
                       (b"[1 2]", "invalid character '2' after array element"),
                       (b"tru", "unexpected EOF"), (b'"\x01"', "invalid character '\\x01' in string literal")]:
        with pytest.raises(GoJSONError, match=f"^{__import__('re').escape(text)}$"):
            next_value(data, 0, final=True)


def test_quote_escapes_as_go_does() -> None:
    assert quote("<a&b>\u2028\"\\\n\x01é") == '"\\u003ca\\u0026b\\u003e\\u2028\\"\\\\\\n\\u0001é"'


GATEWAY_TYPES = sorted({request_class(method) for method in routes.METHODS.values()} - {None},
                       key=lambda cls: cls.DESCRIPTOR.full_name)  # type: ignore[union-attr]
RESPONSE_TYPES = [rpc_pb2.RangeResponse, rpc_pb2.PutResponse, rpc_pb2.DeleteRangeResponse, rpc_pb2.TxnResponse,
                  rpc_pb2.LeaseGrantResponse, rpc_pb2.LeaseTimeToLiveResponse, rpc_pb2.WatchResponse,
                  rpc_pb2.MemberListResponse, rpc_pb2.StatusResponse, rpc_pb2.AlarmResponse]


@settings(deadline=None, max_examples=15, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
@pytest.mark.parametrize("cls", [*GATEWAY_TYPES, *RESPONSE_TYPES], ids=lambda cls: cls.DESCRIPTOR.name)
def test_encode_is_json_format_and_decode_inverts_it(cls: type, data: st.DataObject) -> None:
    message = data.draw(messages(cls, depth=3))
    written = encode(message)
    assert json.loads(written) == json_format.MessageToDict(message, preserving_proto_field_name=True)
    again = cls()
    decode(again, written.encode())
    assert again == message


def test_requests_read_under_either_name_and_in_either_integer_form() -> None:
    request = rpc_pb2.RangeRequest()
    decode(request, b'{"key": "Zm9v", "rangeEnd": "Zm9w", "limit": "3", "revision": 7, "sort_order": 1}')
    assert request == rpc_pb2.RangeRequest(key=b"foo", range_end=b"fop", limit=3, revision=7, sort_order=1)


@pytest.mark.parametrize(("text", "error"), [
    (b"Zm9", "illegal base64 data at input byte 0"),
    (b"Zm9v!", "illegal base64 data at input byte 4"),
    (b"Zg=", "illegal base64 data at input byte 3"),
])
def test_base64_errors_at_gos_offsets(text: bytes, error: str) -> None:
    with pytest.raises(GoJSONError, match=error):
        go_base64(text)


def test_base64_ignores_newlines_as_go_does() -> None:
    assert go_base64(b"Zm9v\nYmFy\r\n") == b"foobar" == base64.b64decode(b"Zm9vYmFy")


def _outcome(decoder: Any, text: bytes) -> bytes | str:
    try:
        return decoder(text)  # type: ignore[no-any-return]
    except GoJSONError as exc:
        return str(exc)


@given(st.one_of(st.binary(max_size=40).map(base64.b64encode),
                 st.lists(st.sampled_from(list(b"AZaz09+/=\n\r!-_")), max_size=24).map(bytes)))
def test_the_fast_base64_path_agrees_with_gos_loop(text: bytes) -> None:
    """The ``binascii`` fast path accepts nothing Go's decoding loop would refuse, and decodes alike."""
    assert _outcome(go_base64, text) == _outcome(_go_base64_slow, text)

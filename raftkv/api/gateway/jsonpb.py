"""Protobuf messages to and from JSON exactly as etcd 3.4's gateway converts them (golang/protobuf ``jsonpb``
with ``OrigName``, unknown fields allowed), errors included.

Writing: fields in declaration order under their ``.proto`` names, zero values left out, 64-bit integers
as strings, enums by name, bytes in standard base64 — what ``json_format`` does too, but in Go's field
order and Go's string escapes, so the bytes match etcd's and not only the values.

Reading follows ``jsonpb.Unmarshaler.unmarshalValue``: a field may be named by its ``.proto`` name or its
JSON (camelCase) name; integers may be numbers or strings; enums names or numbers; ``null`` leaves a field
unset; a bytes field takes base64 (or, as Go's ``encoding/json`` allows, an array of byte values). A wrong
value fails with the text Go gives (``json: cannot unmarshal number into Go value of type []uint8``,
``illegal base64 data at input byte 3``, ``unknown value "X" for enum etcdserverpb.RangeRequest_SortOrder``).
"""

from __future__ import annotations

import base64
import binascii
import json
import json.decoder
import json.scanner
import re
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from raftkv.api.gateway.gojson import GoJSONError, next_value, quote, quote_char

_F = FieldDescriptor
_INT64 = {_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64}
_UINT64 = {_F.TYPE_UINT64, _F.TYPE_FIXED64}
_INT32 = {_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32}
_UINT32 = {_F.TYPE_UINT32, _F.TYPE_FIXED32}
_RANGES = {"int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1), "int32": (-(2**31), 2**31 - 1),
           "uint32": (0, 2**32 - 1), "uint8": (0, 255)}
_MAP = "map[string]json.RawMessage"
_LIST = "[]json.RawMessage"
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)\Z")


# ---------------------------------------------------------------------------------------------- writing
def encode(message: Message) -> str:
    """``message`` as etcd's gateway writes it."""
    parts = []
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated:
            values = getattr(message, field.name)
            if not len(values):
                continue
            text = "[" + ",".join(_encode_value(field, value) for value in values) + "]"
        elif field.containing_oneof is not None or field.type == _F.TYPE_MESSAGE:
            if not message.HasField(field.name):
                continue
            text = _encode_value(field, getattr(message, field.name))
        else:
            value = getattr(message, field.name)
            if not value:
                continue
            text = _encode_value(field, value)
        parts.append(f'"{field.name}":{text}')
    return "{" + ",".join(parts) + "}"


def _encode_value(field: FieldDescriptor, value: Any) -> str:
    kind = field.type
    if kind == _F.TYPE_MESSAGE:
        return encode(value)
    if kind == _F.TYPE_BYTES:
        return '"' + base64.b64encode(value).decode() + '"'
    if kind == _F.TYPE_STRING:
        return quote(value)
    if kind == _F.TYPE_BOOL:
        return "true" if value else "false"
    if kind == _F.TYPE_ENUM:
        known = field.enum_type.values_by_number.get(value)
        return f'"{known.name}"' if known is not None else str(value)
    if kind in _INT64 or kind in _UINT64:
        return f'"{value}"'
    return str(value)


# ---------------------------------------------------------------------------------------------- reading
class _Number(str):
    """A JSON number, kept as its text (Go's errors quote it, and its type decides what it may become)."""


class _String(str):
    """A JSON string; ``raw`` is its text between the quotes, escapes unresolved (jsonpb parses a quoted
    integer from that text)."""

    raw: str


def _parse_string(text: str, end: int, strict: bool = True) -> tuple[str, int]:
    value, after = json.decoder.scanstring(text, end, strict)  # type: ignore[attr-defined]
    string = _String(value)
    string.raw = text[end : after - 1]
    return string, after


def _decoder() -> json.JSONDecoder:
    decoder = json.JSONDecoder(parse_int=_Number, parse_float=_Number, parse_constant=_Number, strict=False)
    decoder.parse_string = _parse_string  # type: ignore[attr-defined]
    # the pure-Python scanner honours parse_string
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder


_DECODER = _decoder()


def decode(message: Message, raw: bytes) -> None:
    """Fill ``message`` from the JSON value ``raw`` (one complete, syntactically valid value).
    Raises ``GoJSONError`` with Go's text for values of the wrong type."""
    _fill(message, _DECODER.decode(raw.decode("utf-8", "replace")))


def _kind(value: Any) -> str:
    """The name Go's ``UnmarshalTypeError`` gives a JSON value."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, _Number):
        return "number"
    return "string"


def _type_error(value: Any, go_type: str) -> GoJSONError:
    return GoJSONError(f"json: cannot unmarshal {_kind(value)} into Go value of type {go_type}")


def _fill(message: Message, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _type_error(value, _MAP)
    descriptor: Descriptor = message.DESCRIPTOR
    regular = [f for f in descriptor.fields if f.containing_oneof is None]
    # Go visits the struct's own fields first, then the oneofs' (in no fixed order).
    for field in regular + [f for f in descriptor.fields if f.containing_oneof is not None]:
        found = _consume(value, field)
        if found is _MISSING:
            continue
        if field.is_repeated:
            _fill_repeated(message, field, found)
        elif field.type == _F.TYPE_MESSAGE:
            if found is not None:
                sub = getattr(message, field.name)
                sub.SetInParent()
                _fill(sub, found)
        else:
            scalar = _scalar(field, found)
            if scalar is not None:
                setattr(message, field.name, scalar)
            elif field.containing_oneof is not None:  # Go sets the oneof even for null: to the zero value
                setattr(message, field.name, _zero(field))


_MISSING = object()


def _consume(value: dict[str, Any], field: FieldDescriptor) -> Any:
    """The value given under the field's proto name or its JSON name (the JSON name wins if both are)."""
    found = _MISSING
    for name in dict.fromkeys((field.name, field.json_name)):
        if name in value:
            found = value.pop(name)
    return found


def _fill_repeated(message: Message, field: FieldDescriptor, found: Any) -> None:
    if found is None:
        return
    if not isinstance(found, list):
        raise _type_error(found, _LIST)
    target = getattr(message, field.name)
    for item in found:
        if field.type == _F.TYPE_MESSAGE:
            sub = target.add()
            _fill(sub, item)
        else:
            scalar = _scalar(field, item)
            target.append(_zero(field) if scalar is None else scalar)


def _zero(field: FieldDescriptor) -> Any:
    return {_F.TYPE_BYTES: b"", _F.TYPE_STRING: "", _F.TYPE_BOOL: False}.get(field.type, 0)


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    """A scalar field's value from JSON, or None for ``null`` (Go leaves the field as it is)."""
    kind = field.type
    if kind == _F.TYPE_ENUM:
        return _enum(field.enum_type, value)
    if value is None:
        return None
    if kind == _F.TYPE_BYTES:
        return _bytes(value)
    if kind == _F.TYPE_STRING:
        if not isinstance(value, str) or isinstance(value, _Number):
            raise _type_error(value, "string")
        return _valid_text(value)
    if kind == _F.TYPE_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, "bool")
        return value
    go_type = ("int64" if kind in _INT64 else "uint64" if kind in _UINT64 else "int32" if kind in _INT32
               else "uint32" if kind in _UINT32 else None)
    if go_type is None:  # floating point: no etcd request has one
        if not isinstance(value, _Number):
            raise _type_error(value, "float64")
        return float(value)
    if isinstance(value, _String):
        value = _unquoted_number(value)
        if value is None:
            return None
    return _integer(value, go_type)


def _unquoted_number(text: _String) -> Any:
    """jsonpb drops the quotes around a number given as a string and parses what is inside as JSON."""
    inner = text.raw.encode()
    try:
        span = next_value(inner, 0, final=True)
    except GoJSONError as exc:
        if str(exc) == "unexpected EOF":
            raise GoJSONError("unexpected end of JSON input") from None
        raise
    if span is None:
        raise GoJSONError("unexpected end of JSON input")
    rest = inner[span[1]:].strip(b" \t\r\n")
    if rest:
        raise GoJSONError(f"invalid character {quote_char(rest[0])} after top-level value")
    return _DECODER.decode(inner[span[0] : span[1]].decode())


def _integer(value: Any, go_type: str) -> int:
    if not isinstance(value, _Number):
        raise _type_error(value, go_type)
    low, high = _RANGES[go_type]
    if not _INTEGER.match(value) or not low <= int(value) <= high:
        raise GoJSONError(f"json: cannot unmarshal number {value} into Go value of type {go_type}")
    return int(value)


def go_enum_name(enum: EnumDescriptor) -> str:
    """The name golang/protobuf registers an enum under: ``etcdserverpb.RangeRequest_SortOrder``."""
    package = enum.file.package
    return f"{package}.{enum.full_name[len(package) + 1:].replace('.', '_')}"


def _enum(enum: EnumDescriptor, value: Any) -> int | None:
    if isinstance(value, str) and not isinstance(value, _Number):
        known = enum.values_by_name.get(value)
        if known is None:
            raise GoJSONError(f"unknown value {json.dumps(value)} for enum {go_enum_name(enum)}")
        return int(known.number)
    if value is None:
        return None
    return _integer_as(value, "int32", go_enum_name(enum))


def _integer_as(value: Any, range_type: str, go_type: str) -> int:
    try:
        return _integer(value, range_type)
    except GoJSONError:
        if isinstance(value, _Number):
            raise GoJSONError(f"json: cannot unmarshal number {value} into Go value of type {go_type}") from None
        raise _type_error(value, go_type) from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_text(text: str) -> str:
    """Go turns an escaped lone surrogate into U+FFFD. (ASCII, the common case, is checked in C first: a
    multi-megabyte value must not hold the event loop for a regex scan.)"""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _bytes(value: Any) -> bytes:
    if isinstance(value, list):  # encoding/json fills a []byte from an array of numbers
        return bytes(_integer_as(item, "uint8", "uint8") if item is not None else 0 for item in value)
    if not isinstance(value, str) or isinstance(value, _Number):
        raise _type_error(value, "[]uint8")
    return go_base64(_valid_text(value).encode())


def go_base64(data: bytes) -> bytes:
    """``base64.StdEncoding.Decode``: strict padding, CR and LF ignored, errors at Go's byte offset.

    Canonical base64 (what every client sends) is decoded by ``binascii`` in strict mode, which accepts
    exactly that: the alphabet only, padded to a multiple of four, nothing after the padding. Anything it
    refuses goes to Go's own loop, which either decodes it (line breaks) or names Go's offset. A regex
    check was 13x slower than the decode itself and held the event loop for 0.3 s per 8 MiB value."""
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error:
        return _go_base64_slow(data)


_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}


def _corrupt(offset: int) -> GoJSONError:
    return GoJSONError(f"illegal base64 data at input byte {offset}")


def _go_base64_slow(src: bytes) -> bytes:
    """Go's ``decodeQuantum`` loop, for input that is not plain canonical base64."""
    out = bytearray()
    si = 0
    while True:
        quantum: list[int] = []
        dlen = 4
        j = 0
        while j < 4:
            if si == len(src):
                if j == 0:
                    return bytes(out)
                raise _corrupt(si - j)
            c = src[si]
            si += 1
            if c in _DECODE:
                quantum.append(_DECODE[c])
                j += 1
                continue
            if c in (0x0A, 0x0D):
                continue
            if c != 0x3D:  # '='
                raise _corrupt(si - 1)
            if j in (0, 1):
                raise _corrupt(si - 1)
            if j == 2:  # "==" expected; the first '=' is consumed
                while si < len(src) and src[si] in (0x0A, 0x0D):
                    si += 1
                if si == len(src):
                    raise _corrupt(len(src))
                if src[si] != 0x3D:
                    raise _corrupt(si - 1)
                si += 1
            while si < len(src) and src[si] in (0x0A, 0x0D):
                si += 1
            if si < len(src):
                raise _corrupt(si)
            dlen = j
            break
        quantum += [0] * (4 - len(quantum))
        value = quantum[0] << 18 | quantum[1] << 12 | quantum[2] << 6 | quantum[3]
        out += value.to_bytes(3, "big")[: dlen - 1]
        if dlen < 4:
            return bytes(out)

"""Output in etcdctl's formats: ``simple`` (line-oriented) and ``json`` (Go's JSON of the response).

etcdctl's JSON is Go's encoding of the protobuf structs: snake_case field names as in the .proto, zero
values omitted, 64-bit integers as JSON numbers (not strings, unlike protobuf's own JSON mapping), bytes
as base64 and enums as numbers. ``to_json`` reproduces that so scripts written for one tool work with both.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from raftkv.proto import kv_pb2


def to_json(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.is_repeated:
            out[field.name] = [_scalar(field, v) for v in value]
        else:
            out[field.name] = _scalar(field, value)
    return out


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_json(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value


def print_json(message: Message | dict[str, Any] | list[Any]) -> None:
    data = to_json(message) if isinstance(message, Message) else message
    print(json.dumps(data, separators=(",", ":")))


def text(data: bytes) -> str:
    """Keys and values as etcdctl prints them: raw bytes, decoded leniently for the terminal."""
    return data.decode("utf-8", errors="surrogateescape")


def write_line(line: str) -> None:
    sys.stdout.write(line + "\n")


def print_kv(kv: kv_pb2.KeyValue, *, keys_only: bool = False, value_only: bool = False) -> None:
    """etcdctl's simple format: key line, value line (``--keys-only`` leaves the value line empty)."""
    if value_only:
        write_line(text(kv.value))
        return
    write_line(text(kv.key))
    write_line("" if keys_only else text(kv.value))


def human_bytes(size: int) -> str:
    """go-humanize's ``Bytes`` as etcdctl shows db sizes: SI units, e.g. ``25 kB``."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def table(headers: list[str], rows: list[list[str]]) -> str:
    """An ASCII table like etcdctl's ``-w table`` (tablewriter)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: list[str], center: bool) -> str:
        fmt = [c.center(w) if center else c.rjust(w) for c, w in zip(cells, widths, strict=True)]
        return "| " + " | ".join(fmt) + " |"

    return "\n".join([rule, line(headers, True), rule, *(line(r, False) for r in rows), rule])

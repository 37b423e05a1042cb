"""JSON the way Go's ``encoding/json`` reads and writes it, so the gateway's answers and errors match etcd's.

etcd's gateway decodes request bodies with a ``json.Decoder`` (one value at a time from the body: what
follows the first value is ignored for a unary call and is the next request of a stream) and reports
syntax errors in Go's words: ``invalid character 'g' looking for beginning of value``, ``unexpected EOF``.
:func:`next_value` finds where the next value ends and raises :class:`GoJSONError` with Go's text where
Go's scanner would fail; the value itself is then parsed by Python's ``json``.

:func:`quote` writes a string as Go's encoder does (HTML-safe escapes, ``\\u2028``/``\\u2029`` escaped).
"""

from __future__ import annotations

import re
import unicodedata

#: Go's ``maxNestingDepth``.
MAX_DEPTH = 10000
_SPACE = b" \t\r\n"
_DIGITS = b"0123456789"
_HEX = b"0123456789abcdefABCDEF"


class GoJSONError(Exception):
    """A JSON error with the text Go's ``encoding/json`` gives for it."""


class NeedMore(Exception):
    """The value is not complete yet (at the end of the body this is Go's ``unexpected EOF``)."""


def quote_char(c: int) -> str:
    """Go's ``quoteChar``: how a byte is shown in a syntax error."""
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    return "'" + _go_quote_rune(chr(c)) + "'"


def _go_quote_rune(ch: str) -> str:
    """``strconv.Quote(string(rune))`` without its quotes."""
    special = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
               "\\": "\\\\"}
    if ch in special:
        return special[ch]
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if ch == " " or unicodedata.category(ch)[0] in "LMNPS":
        return ch
    return f"\\u{code:04x}"


def _syntax(c: int, context: str) -> GoJSONError:
    return GoJSONError(f"invalid character {quote_char(c)} {context}")


def skip_space(data: bytes, at: int) -> int:
    while at < len(data) and data[at] in _SPACE:
        at += 1
    return at


def next_value(data: bytes, at: int, final: bool) -> tuple[int, int] | None:
    """``(start, end)`` of the JSON value beginning at or after ``at`` in ``data``; None if only white space
    is left (Go's ``io.EOF``). ``final`` says no more bytes will come: an unfinished value is then Go's
    ``unexpected EOF``, otherwise :class:`NeedMore` asks for more. Raises :class:`GoJSONError` for bytes Go's
    scanner refuses."""
    start = skip_space(data, at)
    if start == len(data):
        return None
    try:
        end = _value(data, start)
        if end == len(data) and data[start] not in b"{[\"" and not final:
            raise NeedMore  # a number or literal may go on in the next bytes
        return start, end
    except NeedMore:
        if final:
            raise GoJSONError("unexpected EOF") from None
        raise


def _byte(data: bytes, at: int) -> int:
    if at >= len(data):
        raise NeedMore
    return data[at]


def _value(data: bytes, at: int) -> int:
    """The end of the value starting exactly at ``at``: Go's scanner, with an explicit stack of the
    objects and arrays it is inside (``True`` for an object), so nesting costs no Python recursion."""
    stack: list[bool] = []
    while True:
        # A value begins here (Go's stateBeginValue).
        c = _byte(data, at)
        if c == 0x7B or c == 0x5B:  # { or [
            if len(stack) >= MAX_DEPTH:
                raise GoJSONError("exceeded max depth")
            at = skip_space(data, at + 1)
            closing = 0x7D if c == 0x7B else 0x5D
            if _byte(data, at) == closing:
                at += 1
            else:
                stack.append(c == 0x7B)
                if c == 0x7B:
                    at = _object_key(data, at)
                continue
        elif c == 0x22:
            at = _string(data, at + 1)
        elif c == 0x2D or c in _DIGITS:
            at = _number(data, at)
        elif c in b"tfn":
            word = {0x74: b"true", 0x66: b"false", 0x6E: b"null"}[c]
            at = _literal(data, at, word)
        else:
            raise _syntax(c, "looking for beginning of value")
        # The value ended (Go's stateEndValue): close containers, or go on to the next element.
        while True:
            if not stack:
                return at
            at = skip_space(data, at)
            c = _byte(data, at)
            in_object = stack[-1]
            if c == (0x7D if in_object else 0x5D):
                stack.pop()
                at += 1
                continue
            if c != 0x2C:
                raise _syntax(c, "after object key:value pair" if in_object else "after array element")
            at = skip_space(data, at + 1)
            if in_object:
                at = _object_key(data, at)
            break


def _object_key(data: bytes, at: int) -> int:
    """A key and its colon; returns where the value starts."""
    c = _byte(data, at)
    if c != 0x22:
        raise _syntax(c, "looking for beginning of object key string")
    at = skip_space(data, _string(data, at + 1))
    c = _byte(data, at)
    if c != 0x3A:
        raise _syntax(c, "after object key")
    return skip_space(data, at + 1)


_STRING_RUN = re.compile(rb'[^"\\\x00-\x1f]*')


def _string(data: bytes, at: int) -> int:
    """After the opening quote; returns the index after the closing one."""
    while True:
        at = _STRING_RUN.match(data, at).end()  # type: ignore[union-attr]
        c = _byte(data, at)
        if c == 0x22:
            return at + 1
        if c < 0x20:
            raise _syntax(c, "in string literal")
        escaped = _byte(data, at + 1)
        if escaped == 0x75:  # \u
            for i in range(4):
                h = _byte(data, at + 2 + i)
                if h not in _HEX:
                    raise _syntax(h, "in \\u hexadecimal character escape")
            at += 6
        elif escaped in b'"\\/bfnrt':
            at += 2
        else:
            raise _syntax(escaped, "in string escape code")


def _number(data: bytes, at: int) -> int:
    if data[at] == 0x2D:
        at += 1
        c = _byte(data, at)
        if c not in _DIGITS:
            raise _syntax(c, "in numeric literal")
    if data[at] == 0x30:
        at += 1
    else:
        while at < len(data) and data[at] in _DIGITS:
            at += 1
    if at < len(data) and data[at] == 0x2E:
        c = _byte(data, at + 1)
        if c not in _DIGITS:
            raise _syntax(c, "after decimal point in numeric literal")
        at += 1
        while at < len(data) and data[at] in _DIGITS:
            at += 1
    if at < len(data) and data[at] in b"eE":
        at += 1
        c = _byte(data, at)
        if c in b"+-":
            at += 1
            c = _byte(data, at)
        if c not in _DIGITS:
            raise _syntax(c, "in exponent of numeric literal")
        while at < len(data) and data[at] in _DIGITS:
            at += 1
    return at


def _literal(data: bytes, at: int, word: bytes) -> int:
    name = word.decode()
    for i in range(1, len(word)):
        c = _byte(data, at + i)
        if c != word[i]:
            raise _syntax(c, f"in literal {name} (expecting {quote_char(word[i])})")
    return at + len(word)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_NEEDS_ESCAPE = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029]')


def quote(text: str) -> str:
    """A JSON string as Go's ``json.Marshal`` writes it (``SetEscapeHTML(true)``, the default)."""
    return '"' + _NEEDS_ESCAPE.sub(_escape, text) + '"'


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return _ESCAPES.get(ch) or f"\\u{ord(ch):04x}"

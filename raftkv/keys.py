"""etcd's key-range conventions, shared by the server's recipes and the clients."""

from __future__ import annotations


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (etcd's GetPrefixRangeEnd).

    Trailing 0xff bytes cannot be incremented and are dropped; an empty or all-0xff prefix means
    "every key from here on", which etcd spells as a range end of ``\\0``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\0"
    return trimmed[:-1] + bytes([trimmed[-1] + 1])

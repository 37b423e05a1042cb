"""Password hashes for raftkv's users: scrypt (a memory-hard, deliberately slow KDF from the standard library).

etcd uses bcrypt at cost 10; the hash never crosses the etcd wire (clients send plaintext over TLS and the
member that receives it hashes or checks it), so any strong KDF is compatible. The parameters travel in the
hash, so they can be raised later without invalidating stored passwords. A hash takes about as long as
etcd's bcrypt (tens of milliseconds): call these off the event loop (``asyncio.to_thread``); OpenSSL's
scrypt releases the GIL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

_SCHEME = "scrypt"
#: 2**14 x 8 x 1 costs 16 MiB and about 60 ms on a current core, close to bcrypt at etcd's cost 10.
DEFAULT_N, DEFAULT_R, DEFAULT_P = 2**14, 8, 1
_SALT_BYTES = 16
_KEY_BYTES = 32
_MAX_MEMORY = 256 << 20


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEMORY, dklen=_KEY_BYTES)


def hash_password(password: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    """``scrypt$n$r$p$salt$key`` with a fresh random salt."""
    salt = os.urandom(_SALT_BYTES)
    return "$".join((_SCHEME, str(n), str(r), str(p), _b64(salt), _b64(_derive(password, salt, n, r, p))))


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches ``hashed``; False for anything that is not a hash made here."""
    parts = hashed.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
        derived = _derive(password, salt, n, r, p)
    except ValueError:
        return False
    return hmac.compare_digest(derived, key)

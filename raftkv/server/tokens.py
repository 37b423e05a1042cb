"""etcd's simple tokens (``--auth-token simple``): random strings every member maps to a user, in memory.

A token is issued by applying an ``authenticate`` entry, so every member registers it at the same point of
the log; its text is ``<16 random letters>.<index of that entry>``. A member asked about a token from an
entry it has not applied yet waits (bounded) until it has, as etcd's ``tokenSimple`` does. A token lives
``ttl`` seconds (etcd: 300) from its last use on that member; changing a user's password or deleting the
user voids its tokens, disabling authentication voids them all (``TokenChange`` from the applier).
Tokens are not persisted: after a restart clients authenticate again (etcd clients do so on
``invalid auth token``).
"""

from __future__ import annotations

import asyncio
import secrets
import string
import time
from collections.abc import Callable

from raftkv.proto import internal_pb2

DEFAULT_TTL = 300.0
PREFIX_LETTERS = 16
_ALPHABET = string.ascii_letters


def new_prefix() -> str:
    """The random part of a token, drawn by the member that checked the password."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_LETTERS))


def token_index(token: str) -> int | None:
    """The log index a simple token was issued at, or None for text that is no simple token."""
    _, dot, index = token.rpartition(".")
    return int(index) if dot and index.isdigit() else None


class SimpleTokens:
    """token -> (user, expiry) on one member; all methods run on the node's event loop."""

    def __init__(self, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self._next_prune = 0.0

    def __len__(self) -> int:
        return len(self._tokens)

    def apply(self, change: internal_pb2.TokenChange) -> None:
        """What an applied auth request did to the tokens."""
        if change.revoke_all:
            self._tokens.clear()
        if change.revoke_user:
            for token in [t for t, (user, _) in self._tokens.items() if user == change.user]:
                del self._tokens[token]
        if change.issue_token:
            now = self._clock()
            self._tokens[change.issue_token] = (change.user, now + self._ttl)
            for waiter in self._waiting.pop(change.issue_token, ()):
                if not waiter.done():
                    waiter.set_result(None)
            self._prune(now)

    def user(self, token: str) -> str | None:
        """The token's user, refreshing its TTL; None for an unknown or expired token."""
        entry = self._tokens.get(token)
        if entry is None:
            return None
        now = self._clock()
        if entry[1] <= now:
            del self._tokens[token]
            return None
        self._tokens[token] = (entry[0], now + self._ttl)
        return entry[0]

    async def user_when_applied(self, token: str, applied_index: int, timeout: float) -> str | None:
        """``user``, but first wait up to ``timeout`` for a token from an entry past ``applied_index``."""
        user = self.user(token)
        index = token_index(token)
        if user is not None or index is None or index <= applied_index or timeout <= 0:
            return user
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(token, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiting.get(token)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiting[token]
        return self.user(token)

    def _prune(self, now: float) -> None:
        """Drop expired tokens now and then, so tokens nobody uses again do not pile up."""
        if now < self._next_prune:
            return
        self._next_prune = now + self._ttl / 10
        for token in [t for t, (_, expiry) in self._tokens.items() if expiry <= now]:
            del self._tokens[token]

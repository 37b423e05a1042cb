"""Simple tokens on one member: TTL refreshed on use, revocation, and waiting for an unapplied entry."""

from __future__ import annotations

import asyncio

from raftkv.proto import internal_pb2
from raftkv.security.passwords import hash_password, verify_password
from raftkv.server.tokens import SimpleTokens, new_prefix, token_index


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ttl_is_refreshed_by_use_and_expires_unused() -> None:
    clock = Clock()
    tokens = SimpleTokens(ttl=10, clock=clock)
    tokens.apply(internal_pb2.TokenChange(issue_token="t.5", user="alice"))
    clock.now = 9
    assert tokens.user("t.5") == "alice"
    clock.now = 18
    assert tokens.user("t.5") == "alice"  # refreshed at 9
    clock.now = 29
    assert tokens.user("t.5") is None


def test_revocations() -> None:
    tokens = SimpleTokens()
    for token, user in (("a.1", "alice"), ("b.2", "bob")):
        tokens.apply(internal_pb2.TokenChange(issue_token=token, user=user))
    tokens.apply(internal_pb2.TokenChange(user="alice", revoke_user=True))
    assert tokens.user("a.1") is None and tokens.user("b.2") == "bob"
    tokens.apply(internal_pb2.TokenChange(revoke_all=True))
    assert len(tokens) == 0


def test_a_token_from_a_later_entry_is_waited_for() -> None:
    async def run() -> tuple[str | None, str | None, str | None]:
        tokens = SimpleTokens()
        waiting = asyncio.ensure_future(tokens.user_when_applied("x.9", applied_index=5, timeout=5))
        await asyncio.sleep(0)
        tokens.apply(internal_pb2.TokenChange(issue_token="x.9", user="alice"))
        applied_before = await tokens.user_when_applied("y.3", applied_index=5, timeout=5)  # no wait
        never = await tokens.user_when_applied("z.7", applied_index=5, timeout=0.01)
        return await waiting, applied_before, never

    assert asyncio.run(run()) == ("alice", None, None)


def test_token_text() -> None:
    prefix = new_prefix()
    assert len(prefix) == 16 and prefix.isalpha()
    assert token_index(f"{prefix}.42") == 42 and token_index("garbage") is None


def test_password_hash_round_trip() -> None:
    # Long enough that base64 of random salt and digest cannot contain it by chance ("pw" did, 1 run in ~60).
    password = "correct horse battery staple"
    hashed = hash_password(password, n=2**10)
    assert hashed.startswith("scrypt$") and password not in hashed
    assert verify_password(password, hashed) and not verify_password(password + "!", hashed)
    assert not verify_password(password, "") and not verify_password(password, "scrypt$1$1$1$!!$!!")

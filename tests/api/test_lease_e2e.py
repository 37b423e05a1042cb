"""Leases end to end with the real ``etcdctl lease ...``, on the leader and on a follower, against etcd too."""

from __future__ import annotations

import re

from .etcdctl import Etcdctl, poll

GRANTED = re.compile(r"^lease ([0-9a-f]{16}) granted with TTL\((\d+)s\)$")


def grant(etcdctl: Etcdctl, ttl: int, member: str) -> tuple[str, int]:
    """``lease grant``; returns (hex id, granted TTL)."""
    found = GRANTED.match(etcdctl("lease", "grant", str(ttl), member=member).ok().stdout.strip())
    assert found, "unexpected lease grant output"
    return found[1], int(found[2])


def test_grant_keepalive_timetolive_list_revoke(etcdctl: Etcdctl, member: str, prefix: str) -> None:
    lease, ttl = grant(etcdctl, 60, member)
    assert ttl == 60
    key = f"{prefix}attached"
    etcdctl("put", f"--lease={lease}", key, "v", member=member).ok()

    kept = etcdctl("lease", "keep-alive", "--once", lease, member=member).ok().stdout
    assert kept == f"lease {lease} keepalived with TTL(60)\n"
    alive = etcdctl("lease", "timetolive", "--keys", lease, member=member).ok().stdout
    found = re.match(rf"^lease {lease} granted with TTL\(60s\), remaining\((\d+)s\), attached keys\(\[(.*)\]\)$",
                     alive.strip())
    assert found, alive
    assert 55 <= int(found[1]) <= 60 and found[2] == key
    assert lease in etcdctl("lease", "list", member=member).ok().stdout

    assert etcdctl("lease", "revoke", lease, member=member).ok().stdout == f"lease {lease} revoked\n"
    assert etcdctl("get", key, member=member).ok().stdout == ""
    gone = etcdctl("lease", "timetolive", lease, member=member).ok().stdout
    assert gone == f"lease {lease} already expired\n"
    assert lease not in etcdctl("lease", "list", member=member).ok().stdout
    assert etcdctl("lease", "revoke", lease, member=member).error == (
        "failed to revoke lease (etcdserver: requested lease not found)"
    )


def test_short_ttl_is_raised_to_the_minimum_and_expires_with_its_keys(
    etcdctl: Etcdctl, member: str, prefix: str
) -> None:
    lease, ttl = grant(etcdctl, 1, member)
    assert ttl == 2  # ceil(1.5 x the 1 s election timeout)
    key = f"{prefix}ephemeral"
    etcdctl("put", f"--lease={lease}", key, "v", member=member).ok()
    poll(lambda: True if etcdctl("get", key, member=member).ok().stdout == "" else None, 10, "the key to expire")
    assert etcdctl("lease", "timetolive", lease, member=member).ok().stdout == f"lease {lease} already expired\n"


def test_lease_errors(etcdctl: Etcdctl, member: str) -> None:
    too_large = etcdctl("lease", "grant", "9000000001", member=member).error
    assert too_large == "failed to grant lease (etcdserver: too large lease TTL)"
    assert etcdctl("lease", "revoke", "1234abcd", member=member).error == (
        "failed to revoke lease (etcdserver: requested lease not found)"
    )
    assert etcdctl("lease", "timetolive", "1234abcd", member=member).ok().stdout == (
        "lease 000000001234abcd already expired\n"
    )


def test_remaining_ttl_is_rounded_down(etcdctl: Etcdctl, member: str) -> None:
    """etcd truncates the remaining time to whole seconds: right after `grant 10` it says 9, not 10."""
    lease, _ = grant(etcdctl, 10, member)
    alive = etcdctl("lease", "timetolive", lease, member=member).ok().stdout
    found = re.match(rf"^lease {lease} granted with TTL\(10s\), remaining\((\d+)s\)$", alive.strip())
    assert found, alive
    assert 5 <= int(found[1]) <= 9
    etcdctl("lease", "revoke", lease, member=member).ok()

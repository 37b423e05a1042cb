"""Bad input through the real etcdctl: etcd's exact error text, the member stays up, and nothing that
was acknowledged before is lost."""

from __future__ import annotations

import pytest

from raftkv.localcluster import LocalCluster

from .etcdctl import Etcdctl

#: etcd's default --max-request-bytes is 1.5 MiB; this value is above it but below the gRPC limit
#: (request limit + 512 KiB), so the server's own size check must answer.
OVERSIZED_VALUE = b"x" * (1536 * 1024 + 10_000)


def txn_script(prefix: str, puts: int) -> str:
    """An etcdctl txn with no compares and ``puts`` distinct puts in the success branch."""
    return "\n" + "".join(f"put {prefix}{i} v\n" for i in range(puts)) + "\n\n"


@pytest.mark.parametrize(
    "command",
    [("put", "", "v"), ("get", ""), ("del", "")],
    ids=["put", "get", "del"],
)
def test_empty_key(etcdctl: Etcdctl, member: str, command: tuple[str, ...]) -> None:
    result = etcdctl(*command, member=member)
    assert (result.returncode, result.error) == (1, "etcdserver: key is not provided")


def test_request_too_large(etcdctl: Etcdctl, member: str, prefix: str) -> None:
    result = etcdctl("put", f"{prefix}big", member=member, stdin=OVERSIZED_VALUE)
    assert (result.returncode, result.error) == (1, "etcdserver: request is too large")
    assert etcdctl("get", f"{prefix}big", member=member).ok().stdout == ""
    # Just below the limit is fine.
    etcdctl("put", f"{prefix}big", member=member, stdin=b"y" * (1024 * 1024)).ok()


def test_txn_operation_limit(etcdctl: Etcdctl, member: str, prefix: str) -> None:
    result = etcdctl("txn", member=member, stdin=txn_script(prefix, 129))
    assert (result.returncode, result.error) == (1, "etcdserver: too many operations in txn request")
    assert etcdctl("get", prefix, "--prefix", "--keys-only", member=member).ok().stdout == ""  # none applied
    assert etcdctl("txn", member=member, stdin=txn_script(prefix, 128)).ok().stdout.startswith("SUCCESS\n")


def test_txn_duplicate_key(etcdctl: Etcdctl, member: str, prefix: str) -> None:
    script = f"\nput {prefix}k a\nput {prefix}k b\n\n\n"
    result = etcdctl("txn", member=member, stdin=script)
    assert (result.returncode, result.error) == (1, "etcdserver: duplicate key given in txn request")
    script = f"\ndel {prefix} --prefix\nput {prefix}k b\n\n\n"
    result = etcdctl("txn", member=member, stdin=script)
    assert (result.returncode, result.error) == (1, "etcdserver: duplicate key given in txn request")


def test_future_revision(etcdctl: Etcdctl, member: str, prefix: str) -> None:
    result = etcdctl("get", f"{prefix}k", "--rev=1000000000", member=member)
    assert (result.returncode, result.error) == (1, "etcdserver: mvcc: required revision is a future revision")


def test_bad_input_loses_nothing(etcdctl: Etcdctl, cluster: LocalCluster, prefix: str) -> None:
    """Acknowledged writes interleaved with every kind of refused request are all there afterwards, on
    every member, and every member is still healthy."""
    acknowledged = {}
    bad_requests: list[tuple[tuple[str, ...], bytes | str | None]] = [
        (("put", "", "v"), None),
        (("put", f"{prefix}big"), OVERSIZED_VALUE),
        (("txn",), txn_script(prefix, 129)),
        (("get", f"{prefix}0", "--rev=1000000000"), None),
    ]
    for i, (command, stdin) in enumerate(bad_requests):
        key = f"{prefix}ok{i}"
        etcdctl("put", key, str(i)).ok()
        acknowledged[key] = str(i)
        assert etcdctl(*command, stdin=stdin).returncode == 1

    etcdctl("endpoint", "health").ok()
    expected = "".join(f"{key}\n{value}\n" for key, value in sorted(acknowledged.items()))
    for name in cluster.names:
        assert cluster.is_running(name)
        assert etcdctl("get", prefix, "--prefix", member=name).ok().stdout == expected

"""Key-value commands of the real etcdctl, on the leader and on a follower, with etcd's exact output."""

from __future__ import annotations

import base64
import json

from .etcdctl import Etcdctl


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_put_get_delete(etcdctl: Etcdctl, member: str, prefix: str) -> None:
    assert etcdctl("put", f"{prefix}a", "1", member=member).ok().stdout == "OK\n"
    assert etcdctl("get", f"{prefix}a", member=member).ok().stdout == f"{prefix}a\n1\n"
    assert etcdctl("get", f"{prefix}missing", member=member).ok().stdout == ""
    assert etcdctl("del", f"{prefix}a", member=member).ok().stdout == "1\n"
    assert etcdctl("del", f"{prefix}a", member=member).ok().stdout == "0\n"
    assert etcdctl("get", f"{prefix}a", member=member).ok().stdout == ""


def test_prefix_ranges_and_sorting(etcdctl: Etcdctl, member: str, prefix: str) -> None:
    for key, value in (("b", "2"), ("a", "1"), ("c/x", "3")):
        etcdctl("put", f"{prefix}{key}", value, member=member).ok()
    etcdctl("put", f"{prefix[:-1]}0", "outside", member=member).ok()  # sorts right after the prefix

    listed = etcdctl("get", prefix, "--prefix", member=member).ok().stdout
    assert listed == f"{prefix}a\n1\n{prefix}b\n2\n{prefix}c/x\n3\n"
    keys = etcdctl("get", prefix, "--prefix", "--keys-only", "--order=DESCEND", member=member).ok().stdout
    assert keys.split() == [f"{prefix}c/x", f"{prefix}b", f"{prefix}a"]
    limited = etcdctl("get", prefix, "--prefix", "--limit=1", "-w", "json", member=member).ok().stdout
    answer = json.loads(limited)
    assert (answer["count"], answer["more"], len(answer["kvs"])) == (3, True, 1)

    assert etcdctl("del", prefix, "--prefix", member=member).ok().stdout == "3\n"
    assert etcdctl("get", f"{prefix[:-1]}0", member=member).ok().stdout == f"{prefix[:-1]}0\noutside\n"


def test_json_output_revisions_and_versions(etcdctl: Etcdctl, member: str, prefix: str) -> None:
    key = f"{prefix}k"
    etcdctl("put", key, "v1", member=member).ok()
    first = json.loads(etcdctl("get", key, "-w", "json", member=member).ok().stdout)
    etcdctl("put", key, "v2", member=member).ok()
    second = json.loads(etcdctl("get", key, "-w", "json", member=member).ok().stdout)

    assert set(first["header"]) == {"cluster_id", "member_id", "revision", "raft_term"}
    [kv1], [kv2] = first["kvs"], second["kvs"]
    assert (kv1["key"], kv1["value"], kv1["version"]) == (b64(key), b64("v1"), 1)
    assert kv1["create_revision"] == kv1["mod_revision"] == first["header"]["revision"]
    assert (kv2["value"], kv2["version"], kv2["create_revision"]) == (b64("v2"), 2, kv1["create_revision"])
    assert kv2["mod_revision"] == second["header"]["revision"] == first["header"]["revision"] + 1
    assert first["count"] == 1 and "more" not in first

    old = etcdctl("get", key, f"--rev={kv1['mod_revision']}", member=member).ok().stdout
    assert old == f"{key}\nv1\n"


def test_serializable_read_sees_acknowledged_write_on_same_member(
    etcdctl: Etcdctl, member: str, prefix: str
) -> None:
    """A write is acknowledged only once applied on the member that took it, so a serializable read
    there must see it (on another member it may briefly lag, which is what --consistency=s allows)."""
    etcdctl("put", f"{prefix}s", "local", member=member).ok()
    answer = etcdctl("get", f"{prefix}s", "--consistency=s", member=member).ok().stdout
    assert answer == f"{prefix}s\nlocal\n"


def test_txn_from_stdin(etcdctl: Etcdctl, member: str, prefix: str) -> None:
    etcdctl("put", f"{prefix}flag", "on", member=member).ok()
    script = (
        f'value("{prefix}flag") = "on"\n\n'
        f"put {prefix}then yes\nget {prefix}flag\n\n"
        f"put {prefix}else yes\n\n"
    )
    taken = etcdctl("txn", member=member, stdin=script).ok().stdout
    assert taken == f"SUCCESS\n\nOK\n\n{prefix}flag\non\n"

    etcdctl("put", f"{prefix}flag", "off", member=member).ok()
    assert etcdctl("txn", member=member, stdin=script).ok().stdout == "FAILURE\n\nOK\n"
    both = etcdctl("get", f"{prefix}", "--prefix", "--keys-only", member=member).ok().stdout
    assert both.split() == [f"{prefix}else", f"{prefix}flag", f"{prefix}then"]


def test_txn_compares_on_revisions_and_missing_keys(etcdctl: Etcdctl, member: str, prefix: str) -> None:
    """A missing key has version/create/mod revision 0; etcdctl's `c(...)`/`m(...)`/`ver(...)` compares."""
    script = f'ver("{prefix}new") = "0"\n\nput {prefix}new created\n\n\n'
    assert etcdctl("txn", member=member, stdin=script).ok().stdout == "SUCCESS\n\nOK\n"
    assert etcdctl("txn", member=member, stdin=script).ok().stdout == "FAILURE\n"
    revision = json.loads(etcdctl("get", f"{prefix}new", "-w", "json", member=member).ok().stdout)["header"][
        "revision"
    ]
    script = f'mod("{prefix}new") = "{revision}"\n\ndel {prefix}new\n\n\n'
    assert etcdctl("txn", member=member, stdin=script).ok().stdout == "SUCCESS\n\n1\n"

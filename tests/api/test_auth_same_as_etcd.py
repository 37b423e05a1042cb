"""Authorization as etcd 3.4 does it: one etcdctl session against a fresh etcd cluster and a fresh raftkv
cluster must print the same thing, allowed and denied calls, error texts and listings included.

The session creates root and a user, a role with a prefix READWRITE and a single-key READ permission,
enables auth, and then tries puts, gets, prefix gets, deletes, txns, watches and user management as that
user (by password token, and by the CommonName of a certificate minted for it), as root (by the CN of the
cluster's client certificate), with a wrong password and as an unknown user; it changes the password,
revokes, deletes and finally disables auth, by root and (refused) by a user without the root role.
"""

from __future__ import annotations

import subprocess

from raftkv.localcluster import LocalCluster
from raftkv.security.certs import issue_client, load_issued, write_issued

from .etcdctl import Etcdctl, Result, assert_same, normalise

ALICE = "--user=alice:alicepw"
#: (etcdctl arguments, stdin, the CN of the client certificate to use; None = the cluster's root one)
Step = tuple[tuple[str, ...], str | None, str | None]

SESSION: list[Step] = [
    (("user", "add", "root", "--new-user-password=rootpw"), None, None),
    (("user", "add", "alice", "--new-user-password=alicepw"), None, None),
    (("user", "add", "carol", "--new-user-password=carolpw"), None, None),
    (("role", "add", "svc"), None, None),
    (("role", "add", "svc"), None, None),
    (("role", "grant-permission", "svc", "readwrite", "/svc/", "--prefix"), None, None),
    (("role", "grant-permission", "svc", "read", "/config"), None, None),
    (("role", "grant-permission", "nope", "read", "/config"), None, None),
    (("user", "grant-role", "alice", "svc"), None, None),
    (("user", "grant-role", "alice", "nope"), None, None),
    (("user", "list"), None, None),
    (("role", "list"), None, None),
    (("role", "get", "svc"), None, None),
    (("user", "get", "alice"), None, None),
    (("user", "get", "alice", "--detail"), None, None),
    (("auth", "enable"), None, None),
    (("role", "list"), None, None),
    (("user", "get", "root"), None, None),
    # alice by password: her prefix and her single key.
    (("put", "/svc/a", "1", ALICE), None, None),
    (("get", "/svc/a", ALICE), None, None),
    (("get", "/svc/", "--prefix", ALICE), None, None),
    (("put", "/config", "x", ALICE), None, None),
    (("put", "/config", "x"), None, None),  # root, by the CN of the cluster's certificate
    (("get", "/config", ALICE), None, None),
    (("get", "/other", ALICE), None, None),
    (("get", "/", "--prefix", ALICE), None, None),
    (("get", "/svc", "--prefix", ALICE), None, None),
    (("put", "/svc/b", "2", "--prev-kv", ALICE), None, None),
    (("del", "/svc/b", ALICE), None, None),
    (("del", "/config", ALICE), None, None),
    (("del", "/svc/", "--prefix", "--prev-kv", ALICE), None, None),
    (("txn", ALICE), 'value("/config") = "x"\n\nput /svc/t yes\n\nput /svc/t no\n\n', None),
    (("txn", ALICE), 'value("/config") = "x"\n\nput /other yes\n\n\n', None),
    (("txn", ALICE), '\n\nget /config\nget /svc/t\n\n\n', None),
    (("txn", ALICE), 'value("/other") = "x"\n\nget /svc/t\n\n\n', None),
    (("watch", "/other", ALICE), None, None),
    (("watch", "/", "--prefix", ALICE), None, None),
    (("user", "add", "bob", "--new-user-password=bobpw", ALICE), None, None),
    (("user", "list", ALICE), None, None),
    (("role", "list", ALICE), None, None),
    (("user", "get", "alice", ALICE), None, None),
    (("user", "get", "root", ALICE), None, None),
    (("role", "get", "svc", ALICE), None, None),
    (("role", "get", "root", ALICE), None, None),
    (("member", "add", "x", "--peer-urls=http://127.0.0.1:1", ALICE), None, None),
    (("defrag", ALICE), None, None),
    (("endpoint", "hashkv", ALICE), None, None),
    (("get", "/svc/t", "--user=alice:wrong"), None, None),
    (("get", "/svc/t", "--user=nobody:pw"), None, None),
    # alice by the CN of a certificate minted for her, and a token taking precedence over a CN.
    (("get", "/svc/t"), None, "alice"),
    (("put", "/config", "y"), None, "alice"),
    (("put", "/config", "y", "--user=root:rootpw"), None, "alice"),
    (("get", "/config"), None, "nobody"),
    # password change, revocation, deletion.
    (("user", "passwd", "alice", "--interactive=false"), "alicepw2\n", None),
    (("get", "/svc/t", ALICE), None, None),
    (("get", "/svc/t", "--user=alice:alicepw2"), None, None),
    (("role", "revoke-permission", "svc", "/config"), None, None),
    (("role", "revoke-permission", "svc", "/config"), None, None),
    (("role", "get", "svc"), None, None),
    (("get", "/config", "--user=alice:alicepw2"), None, None),
    (("user", "revoke-role", "alice", "svc"), None, None),
    (("user", "revoke-role", "alice", "svc"), None, None),
    (("get", "/svc/t", "--user=alice:alicepw2"), None, None),
    (("user", "revoke-role", "root", "root"), None, None),
    (("user", "delete", "root"), None, None),
    (("role", "delete", "root"), None, None),
    (("user", "delete", "alice"), None, None),
    (("user", "delete", "alice"), None, None),
    (("get", "/svc/t", "--user=alice:alicepw2"), None, None),
    (("role", "delete", "svc"), None, None),
    (("auth", "disable", "--user=carol:carolpw"), None, None),
    (("auth", "disable"), None, None),
    (("put", "/config", "z"), None, "nobody"),
    (("user", "list"), None, None),
    (("auth", "disable"), None, None),
    (("user", "delete", "root"), None, None),
    (("user", "list"), None, None),
]


def client_cert_env(cluster: LocalCluster, common_name: str) -> dict[str, str]:
    """etcdctl's variables for a client certificate with ``common_name``, signed by the cluster's CA."""
    certs = cluster.certs_dir
    cert, key = certs / f"cn-{common_name}.crt", certs / f"cn-{common_name}.key"
    if not cert.exists():
        write_issued(issue_client(load_issued(certs / "ca.crt", certs / "ca.key"), common_name), cert, key)
    return {"ETCDCTL_CERT": str(cert), "ETCDCTL_KEY": str(key)}


def transcript(etcdctl: Etcdctl) -> list[tuple[str, int, str, str]]:
    lines = []
    for args, stdin, common_name in SESSION:
        env = client_cert_env(etcdctl.cluster, common_name) if common_name else None
        # A watch never ends by itself: one allowed is cut short, one refused ends at once.
        # Generous client deadlines: a password check is slow on purpose (bcrypt, scrypt), more so on a loaded machine.
        slow = (*args, "--dial-timeout=20s", "--command-timeout=30s")
        result = etcdctl(*slow, stdin=stdin, env=env, timeout=60.0) if args[0] != "watch" else watch(etcdctl, args)
        error = error_line(result.stderr) if result.returncode else ""
        who = f" (CN {common_name})" if common_name else ""
        lines.append((" ".join(args) + who, result.returncode, normalise(result.stdout), error))
    return lines


def error_line(stderr: str) -> str:
    """What etcdctl said about a failure: its ``Error:`` line, else its last line that is not a client log."""
    lines = [line for line in stderr.splitlines() if line and not line.startswith("{")]
    errors = [line for line in lines if line.startswith("Error: ")]
    return normalise((errors or lines or [""])[-1])


def watch(etcdctl: Etcdctl, args: tuple[str, ...]) -> Result | _Cut:
    try:
        return etcdctl(*args, timeout=3.0)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return _Cut(out)


class _Cut:
    """A watch still running when cut short (it was allowed)."""

    def __init__(self, stdout: str) -> None:
        self.returncode = -1
        self.stdout = stdout
        self.stderr = "<still watching>"


def test_auth_session_same_output(fresh_clusters: dict[str, LocalCluster]) -> None:
    assert_same(transcript(Etcdctl(fresh_clusters["etcd"])), transcript(Etcdctl(fresh_clusters["raftkv"])))

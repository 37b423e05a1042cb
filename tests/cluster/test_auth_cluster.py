"""Authorization on a real cluster: it survives a leader kill and a restart of every member, and every
member enforces the same rules for its own reads and watches (a follower included), for a user known by
password (the Python client authenticates and refreshes its token) and one known by certificate CN."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from raftkv import discovery
from raftkv.client import Client, ClientConfig, ClientError
from raftkv.localcluster import LocalCluster
from raftkv.proto import auth_pb2, rpc_pb2, rpc_pb2_grpc
from raftkv.security.certs import issue_client, load_issued, write_issued

from .conftest import wait_for

READWRITE = auth_pb2.Permission.READWRITE


def setup_auth(cluster: LocalCluster) -> None:
    """root (the cluster certificate's CN), alice by password and bob by certificate, each with a prefix."""
    url = cluster.endpoints[0]
    with cluster.client_config([url]).channel(url) as channel:
        auth = rpc_pb2_grpc.AuthStub(channel)
        for name, password in (("root", "rootpw"), ("alice", "alicepw")):
            auth.UserAdd(rpc_pb2.AuthUserAddRequest(name=name, password=password), timeout=10)
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="bob", options=auth_pb2.UserAddOptions(no_password=True)),
                     timeout=10)
        auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="root"), timeout=10)
        auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
        for user in ("alice", "bob"):
            auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name=user), timeout=10)
            perm = auth_pb2.Permission(permType=READWRITE, key=f"/{user}/".encode(), range_end=f"/{user}0".encode())
            auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(name=user, perm=perm), timeout=10)
            auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user=user, role=user), timeout=10)
        auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=10)


def cert_config(cluster: LocalCluster, endpoint: str, common_name: str) -> ClientConfig:
    certs = cluster.certs_dir
    cert, key = certs / f"cn-{common_name}.crt", certs / f"cn-{common_name}.key"
    if not cert.exists():
        write_issued(issue_client(load_issued(certs / "ca.crt", certs / "ca.key"), common_name), cert, key)
    return ClientConfig(endpoints=(endpoint,), cacert=str(certs / "ca.crt"), cert=str(cert), key=str(key))


def denied(call: Callable[[], object]) -> str:
    """What ``call`` answered: "permission denied" is what the caller expects; anything else (a success,
    another error) is named in the assertion that compares with it."""
    try:
        outcome = call()
    except ClientError as exc:
        return "permission denied" if "permission denied" in str(exc) else f"{type(exc).__name__}: {exc}"
    return f"allowed, answered {outcome!r}"


def check_member(cluster: LocalCluster, name: str) -> None:
    """On member ``name`` alone: alice by password and bob by CN each read their own prefix only, and a
    watch outside it is canceled; serializable reads are served (and checked) by that member itself."""
    url = cluster.client_url(name)
    base = cluster.client_config([url])
    alice = Client(config=ClientConfig(endpoints=(url,), cacert=base.cacert, cert=base.cert, key=base.key,
                                       user="alice", password="alicepw"), timeout=10)
    bob = Client(config=cert_config(cluster, url, "bob"), timeout=10)
    with alice, bob:
        assert alice.get("/alice/k", serializable=True) is not None
        assert bob.get("/bob/k", serializable=True) is not None
        assert denied(lambda: alice.get("/bob/k", serializable=True)) == "permission denied"
        assert denied(lambda: bob.get("/alice/k")) == "permission denied"
        assert denied(lambda: alice.put("/bob/x", "no")) == "permission denied"
        with base.channel(url) as channel:  # a watch outside alice's prefix, with her token
            token = rpc_pb2_grpc.AuthStub(channel).Authenticate(
                rpc_pb2.AuthenticateRequest(name="alice", password="alicepw"), timeout=10).token
            responses = rpc_pb2_grpc.WatchStub(channel).Watch(
                iter([rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"/bob/k"))]),
                metadata=(("token", token),), timeout=10)
            first = next(responses)
            assert first.created and first.canceled and "permission denied" in first.cancel_reason
            responses.cancel()


def test_auth_survives_leader_kill_and_full_restart_on_every_member(cluster: LocalCluster) -> None:
    setup_auth(cluster)
    root = Client(config=cluster.client_config(), timeout=15)  # CN root
    with root:
        root.put("/alice/k", "a")
        root.put("/bob/k", "b")
    for name in cluster.names:
        check_member(cluster, name)

    leader = wait_for(cluster.leader_name, 20, "a leader")
    cluster.kill_member(leader)  # type: ignore[arg-type]
    wait_for(lambda: cluster.leader_name() not in (None, leader), 30, "a new leader")
    for name in cluster.running():
        check_member(cluster, name)

    for name in cluster.names:
        if cluster.is_running(name):
            cluster.stop_member(name)
    for name in cluster.names:
        cluster.start_member(name)
    cluster.wait_ready(timeout=30, all_members=True)
    for name in cluster.names:
        wait_for(lambda: _auth_on(cluster, name), 30, f"{name} to serve with auth on")
        check_member(cluster, name)


def _auth_on(cluster: LocalCluster, name: str) -> bool:
    url = cluster.client_url(name)
    try:
        with cluster.client_config([url]).channel(url) as channel:
            status = rpc_pb2_grpc.AuthStub(channel).AuthStatus(rpc_pb2.AuthStatusRequest(), timeout=2)
        return status.enabled
    except grpc.RpcError:
        return False


def test_client_reauthenticates_after_password_change(cluster: LocalCluster) -> None:
    setup_auth(cluster)
    config = cluster.client_config()
    alice = Client(config=ClientConfig(endpoints=config.endpoints, cacert=config.cacert, cert=config.cert,
                                       key=config.key, user="alice", password="alicepw"), timeout=10)
    with alice, Client(config=config, timeout=10) as root:
        alice.put("/alice/1", "x")
        url = cluster.endpoints[0]
        with config.channel(url) as channel:
            rpc_pb2_grpc.AuthStub(channel).UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="bob"),
                                                           timeout=10)
        # The grant moved the auth revision on: alice's next write is re-checked and then allowed.
        alice.put("/bob/1", "y")
        assert root.get("/bob/1") is not None
        with config.channel(url) as channel:
            rpc_pb2_grpc.AuthStub(channel).UserChangePassword(
                rpc_pb2.AuthUserChangePasswordRequest(name="alice", password="new"), timeout=10)
        with pytest.raises(ClientError, match="authentication failed"):
            alice.put("/alice/2", "z")  # the old token is void and the old password no longer works


def test_registry_recipe_one_role_per_service(cluster: LocalCluster) -> None:
    """docs/authorization.md's recipe, made with kvctl: a service's instances register, renew and are
    resolved under their own prefix, and cannot write another service's."""
    repo = Path(__file__).resolve().parents[2]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KVCTL_")}, **cluster.env()}

    def kvctl(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "cli.kvctl", *args], capture_output=True, text=True,
                              env=env, cwd=repo, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    kvctl("user", "add", "root", "--new-user-password=rootpw")
    for command in (
        ("role", "add", "svc-payments"),
        ("role", "grant-permission", "svc-payments", "readwrite", "/services/payments/", "--prefix"),
        ("user", "add", "svc-payments", "--no-password"),
        ("user", "grant-role", "svc-payments", "svc-payments"),
        ("role", "add", "services-readers"),
        ("role", "grant-permission", "services-readers", "read", "/services/", "--prefix"),
        ("user", "add", "orders-client", "--no-password"),
        ("user", "grant-role", "orders-client", "services-readers"),
    ):
        kvctl(*command)
    assert kvctl("auth", "enable") == "Authentication Enabled\n"

    url = cluster.endpoints[0]
    payments = Client(config=cert_config(cluster, url, "svc-payments"), timeout=10)
    reader = Client(config=cert_config(cluster, url, "orders-client"), timeout=10)
    with payments, reader:
        with discovery.register("payments", "127.0.0.1:7001", instance_id="p1", client=payments):
            resolver = discovery.resolve("payments", client=reader)
            try:
                wait_for(lambda: "p1" in resolver.instances, 15, "the instance to be resolved")
            finally:
                resolver.stop()
            assert denied(lambda: payments.put("/services/orders/p1", "{}")) == "permission denied"
            assert denied(lambda: payments.delete("/services/", prefix=True)) == "permission denied"
            assert denied(lambda: reader.put("/services/payments/fake", "{}")) == "permission denied"


def test_a_user_who_cannot_authenticate_is_not_served_under_the_certificate_cn(cluster: LocalCluster) -> None:
    """A member without a quorum cannot issue alice's token. Her client holds the cluster certificate (CN
    root): were it to send her read without a token, the member would serve it as root's."""
    setup_auth(cluster)
    with Client(config=cluster.client_config(), timeout=15) as root:
        root.put("/bob/k", "b")
    alone, *others = cluster.names
    for name in others:
        cluster.stop_member(name)
    url = cluster.client_url(alone)
    base = cluster.client_config([url])
    alice = Client(config=ClientConfig(endpoints=(url,), cacert=base.cacert, cert=base.cert, key=base.key,
                                       user="alice", password="alicepw"), timeout=3)
    with alice:
        outcome = denied(lambda: alice.get("/bob/k", serializable=True))
    assert outcome.startswith("TimeoutError"), outcome

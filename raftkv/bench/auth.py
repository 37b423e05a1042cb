"""Authorization for a benchmark run: the same cluster measured with auth off, then on, as a user that is
not root (so every request's permission is really checked), known either by password token or by the CN
of its client certificate. etcd and raftkv get exactly the same users, role and permissions."""

from __future__ import annotations

from dataclasses import dataclass, replace

from raftkv.bench.load import Metadata
from raftkv.client.config import ClientConfig
from raftkv.localcluster import LocalCluster
from raftkv.proto import auth_pb2, rpc_pb2, rpc_pb2_grpc
from raftkv.security.certs import issue_client, load_issued, write_issued

#: Modes, in the order they run on one cluster: auth must be off for the first.
MODES = ("off", "token", "cn")
USER, PASSWORD = "bench", "bench-password"


@dataclass(frozen=True)
class Identity:
    config: ClientConfig
    metadata: Metadata


def enable(cluster: LocalCluster, config: ClientConfig) -> None:
    """root (the CN of the cluster's own certificate) and ``bench`` with READWRITE on ``bench/``."""
    url = config.endpoints[0]
    with config.channel(url) as channel:
        auth = rpc_pb2_grpc.AuthStub(channel)
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="root-password"), timeout=30)
        auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="root"), timeout=30)
        auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"), timeout=30)
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name=USER, password=PASSWORD), timeout=30)
        auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name=USER), timeout=30)
        perm = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"bench/", range_end=b"bench0")
        auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(name=USER, perm=perm), timeout=30)
        auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user=USER, role=USER), timeout=30)
        auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=30)


def identity(mode: str, cluster: LocalCluster, config: ClientConfig) -> Identity:
    if mode == "off":
        return Identity(config, ())
    if mode == "token":
        url = config.endpoints[0]
        with config.channel(url) as channel:
            token = rpc_pb2_grpc.AuthStub(channel).Authenticate(
                rpc_pb2.AuthenticateRequest(name=USER, password=PASSWORD), timeout=30).token
        return Identity(config, (("token", token),))
    assert mode == "cn", mode
    certs = cluster.certs_dir
    cert, key = certs / f"{USER}-cn.crt", certs / f"{USER}-cn.key"
    write_issued(issue_client(load_issued(certs / "ca.crt", certs / "ca.key"), USER), cert, key)
    return Identity(replace(config, cert=str(cert), key=str(key)), ())

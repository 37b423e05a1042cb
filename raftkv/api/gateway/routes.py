"""Which gRPC method each of etcd 3.4's gateway paths calls (the ``google.api.http`` annotations of
etcd's ``rpc.proto``, ``v3lock.proto`` and ``v3election.proto``), checked path by path against etcd 3.4.23.

Every path is served under ``/v3/`` and under the deprecated ``/v3beta/`` that etcd 3.4 still answers.
Three Lease methods also answer under their older ``/v3/kv/lease/...`` names; ``LeaseGrant`` and
``LeaseKeepAlive`` have no such alias (etcd answers 404 there), and ``HashKV`` is not on the gateway at all.
"""

from __future__ import annotations

PREFIXES = ("/v3/", "/v3beta/")

#: path below the prefix -> full gRPC method name.
METHODS: dict[str, str] = {
    "kv/range": "/etcdserverpb.KV/Range",
    "kv/put": "/etcdserverpb.KV/Put",
    "kv/deleterange": "/etcdserverpb.KV/DeleteRange",
    "kv/txn": "/etcdserverpb.KV/Txn",
    "kv/compaction": "/etcdserverpb.KV/Compact",
    "watch": "/etcdserverpb.Watch/Watch",
    "lease/grant": "/etcdserverpb.Lease/LeaseGrant",
    "lease/revoke": "/etcdserverpb.Lease/LeaseRevoke",
    "kv/lease/revoke": "/etcdserverpb.Lease/LeaseRevoke",
    "lease/keepalive": "/etcdserverpb.Lease/LeaseKeepAlive",
    "lease/timetolive": "/etcdserverpb.Lease/LeaseTimeToLive",
    "kv/lease/timetolive": "/etcdserverpb.Lease/LeaseTimeToLive",
    "lease/leases": "/etcdserverpb.Lease/LeaseLeases",
    "kv/lease/leases": "/etcdserverpb.Lease/LeaseLeases",
    "cluster/member/add": "/etcdserverpb.Cluster/MemberAdd",
    "cluster/member/remove": "/etcdserverpb.Cluster/MemberRemove",
    "cluster/member/update": "/etcdserverpb.Cluster/MemberUpdate",
    "cluster/member/list": "/etcdserverpb.Cluster/MemberList",
    "cluster/member/promote": "/etcdserverpb.Cluster/MemberPromote",
    "maintenance/alarm": "/etcdserverpb.Maintenance/Alarm",
    "maintenance/status": "/etcdserverpb.Maintenance/Status",
    "maintenance/defragment": "/etcdserverpb.Maintenance/Defragment",
    "maintenance/hash": "/etcdserverpb.Maintenance/Hash",
    "maintenance/snapshot": "/etcdserverpb.Maintenance/Snapshot",
    "maintenance/transfer-leadership": "/etcdserverpb.Maintenance/MoveLeader",
    "auth/enable": "/etcdserverpb.Auth/AuthEnable",
    "auth/disable": "/etcdserverpb.Auth/AuthDisable",
    "auth/authenticate": "/etcdserverpb.Auth/Authenticate",
    "auth/user/add": "/etcdserverpb.Auth/UserAdd",
    "auth/user/get": "/etcdserverpb.Auth/UserGet",
    "auth/user/list": "/etcdserverpb.Auth/UserList",
    "auth/user/delete": "/etcdserverpb.Auth/UserDelete",
    "auth/user/changepw": "/etcdserverpb.Auth/UserChangePassword",
    "auth/user/grant": "/etcdserverpb.Auth/UserGrantRole",
    "auth/user/revoke": "/etcdserverpb.Auth/UserRevokeRole",
    "auth/role/add": "/etcdserverpb.Auth/RoleAdd",
    "auth/role/get": "/etcdserverpb.Auth/RoleGet",
    "auth/role/list": "/etcdserverpb.Auth/RoleList",
    "auth/role/delete": "/etcdserverpb.Auth/RoleDelete",
    "auth/role/grant": "/etcdserverpb.Auth/RoleGrantPermission",
    "auth/role/revoke": "/etcdserverpb.Auth/RoleRevokePermission",
    "lock/lock": "/v3lockpb.Lock/Lock",
    "lock/unlock": "/v3lockpb.Lock/Unlock",
    "election/campaign": "/v3electionpb.Election/Campaign",
    "election/proclaim": "/v3electionpb.Election/Proclaim",
    "election/leader": "/v3electionpb.Election/Leader",
    "election/observe": "/v3electionpb.Election/Observe",
    "election/resign": "/v3electionpb.Election/Resign",
}


#: Unary methods that may wait without bound (for a lock, for leadership): the gateway cancels them when
#: their HTTP client goes away. Every other unary call ends within the server's request timeout.
WAITING_METHODS = frozenset({"/v3lockpb.Lock/Lock", "/v3electionpb.Election/Campaign"})


def method_for(path: str) -> str | None:
    """The gRPC method a gateway path calls, or None if the path is not the gateway's."""
    for prefix in PREFIXES:
        if path.startswith(prefix):
            return METHODS.get(path[len(prefix):])
    return None


def is_gateway_path(path: str) -> bool:
    """Paths under the gateway's prefixes: an unknown one gets grpc-gateway's 404 (``Not Found``), not the
    HTTP mux's (``404 page not found``)."""
    return path.startswith(PREFIXES)

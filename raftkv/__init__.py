"""raftkv: a Raft-replicated key-value store that speaks etcd's v3 gRPC protocol."""

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it

#: The etcd release whose v3 API raftkv speaks and whose answers its tests compare with, byte for byte:
#: what raftkv reports as its server version wherever etcd reports its own (Maintenance.Status, etcdctl
#: endpoint status, ``GET /version``). Clients gate on its major.minor (clientv3 refuses a cluster below
#: 3.2); the patch level says which release's answers to expect. The one place it is written.
ETCD_VERSION = "3.4.23"
#: The cluster version etcd reports beside it (``etcdcluster``): the members' major.minor, patch 0.
ETCD_CLUSTER_VERSION = ".".join(ETCD_VERSION.split(".")[:2]) + ".0"

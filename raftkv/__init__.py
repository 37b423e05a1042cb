"""raftkv: a Raft-replicated key-value store that speaks etcd's v3 gRPC protocol."""

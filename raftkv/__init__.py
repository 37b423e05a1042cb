"""raftkv: a Raft-replicated key-value store that speaks etcd's v3 gRPC protocol."""

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it

"""raftkv's key-value state as etcd v3.4 keeps it in its backend (bbolt) database, and back.

etcd's snapshot is its backend file, so this is what lets snapshots cross: ``Maintenance/Snapshot`` streams
the state in etcd's layout (``etcdctl snapshot status`` and ``restore`` read it), and ``kvctl snapshot
restore`` takes an etcd snapshot (an etcd cluster's data moves into raftkv). The buckets used
(etcd ``mvcc/kvstore.go``, ``mvcc/revision.go``, ``lease/lessor.go``):

- ``key``: revision (8-byte big-endian main revision, ``_``, 8-byte sub revision; a trailing ``t`` marks a
  deletion) -> ``mvccpb.KeyValue`` (a deletion's holds the key only). raftkv's ``history`` is the same list
  of revisions, so each record maps to one record, both ways, and compacted history stays compacted;
- ``meta``: ``consistent_index`` (the applied log index) and ``finishedCompactRev`` (a revision);
- ``lease``: 8-byte big-endian lease id -> ``leasepb.Lease`` (ID, TTL, remaining TTL);
- ``auth`` (``authEnabled``: one byte, ``authRevision``: 8-byte big-endian), ``authUsers`` (name ->
  ``authpb.User``) and ``authRoles`` (name -> ``authpb.Role``), etcd ``auth/store.go``. A user's password
  hash is carried as is: raftkv's are scrypt and etcd's bcrypt, so a user moved across keeps its roles and
  its certificate identity, and needs ``user passwd`` before it can log in with a password.

Membership, alarms and raftkv's exactly-once table are not carried: a restore makes a new cluster anyway.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from raftkv.proto import auth_pb2, kv_pb2, lease_pb2
from raftkv.statemachine import auth_store
from raftkv.statemachine import leases as leases_mod
from raftkv.statemachine.mvcc import (
    K_COMPACT,
    K_REVISION,
    encode_revision,
    history_position,
    history_record,
    keyrev_record,
    lease_id_bytes,
    lease_key,
    read_compact_revision,
)
from raftkv.storage.bbolt import BoltReader, BoltWriter
from raftkv.storage.env import Env
from raftkv.storage.sealed import SealedTxn

_MAIN_SUB = struct.Struct(">Q1sQ")
_TOMBSTONE = b"t"
_U64 = struct.Struct(">Q")
_DELETE = kv_pb2.Event.EventType.DELETE
_PUT = kv_pb2.Event.EventType.PUT

K_CONSISTENT_INDEX = b"consistent_index"
K_FINISHED_COMPACT = b"finishedCompactRev"
K_AUTH_ENABLED = b"authEnabled"
K_AUTH_REVISION = b"authRevision"


class EtcdBackendError(Exception):
    """An etcd database this module cannot turn into raftkv's state (a missing bucket, a bad record)."""


def _revision_key(revision: int, sub: int, tombstone: bool) -> bytes:
    return _MAIN_SUB.pack(revision, b"_", sub) + (_TOMBSTONE if tombstone else b"")


def write_etcd_db(txn: SealedTxn, env: Env, consistent_index: int, out: BinaryIO) -> int:
    """Write the state seen by ``txn`` to ``out`` as an etcd backend file; returns its length."""
    writer = BoltWriter(out)
    writer.bucket(b"key", _key_bucket(txn, env))
    meta = [(K_CONSISTENT_INDEX, _U64.pack(consistent_index))]
    compacted = read_compact_revision(txn, env)
    if compacted:
        meta.append((K_FINISHED_COMPACT, _revision_key(compacted, 0, False)))
    writer.bucket(b"meta", sorted(meta))
    writer.bucket(b"lease", (
        (lease_id_bytes(lease.id), lease_pb2.Lease(ID=lease.id, TTL=lease.granted_ttl,
                                              RemainingTTL=lease.remaining_ttl).SerializeToString())
        for lease in sorted(leases_mod.all_leases(txn, env), key=lambda lease: lease.id)
    ))
    auth = auth_store.AuthReader().state(txn, env)
    writer.bucket(b"auth", [(K_AUTH_ENABLED, b"\x01" if auth.enabled else b"\x00"),
                            (K_AUTH_REVISION, _U64.pack(auth.revision))])
    writer.bucket(b"authUsers", sorted((name.encode(), user.SerializeToString()) for name, user in auth.users.items()))
    writer.bucket(b"authRoles", sorted((name.encode(), role.SerializeToString()) for name, role in auth.roles.items()))
    return writer.close()


def _key_bucket(txn: SealedTxn, env: Env) -> Iterator[tuple[bytes, bytes]]:
    for hkey, raw in txn.cursor(db=env.db("history")).iternext(keys=True, values=True):
        revision, sub = history_position(hkey)
        event = kv_pb2.Event.FromString(raw)
        if event.type == _DELETE:
            yield _revision_key(revision, sub, True), kv_pb2.KeyValue(key=event.kv.key).SerializeToString()
        else:
            yield _revision_key(revision, sub, False), event.kv.SerializeToString()


def read_etcd_db(data: bytes | memoryview) -> Iterator[tuple[str, bytes, bytes]]:
    """raftkv's state-machine records (sub-db name, key, value) for an etcd backend file: ``history``,
    ``keyrev``, ``kv``, ``leases``, ``lease_keys`` and the ``meta`` revision keys.

    Raises ``EtcdBackendError`` (and ``BoltFormatError`` for a file that is not bbolt at all)."""
    bolt = BoltReader(data)
    if b"key" not in bolt.buckets():
        raise EtcdBackendError("no 'key' bucket: not an etcd v3 database")
    latest: dict[bytes, kv_pb2.KeyValue | None] = {}
    revision = 1
    for rkey, raw in bolt.items(b"key"):
        if len(rkey) not in (_MAIN_SUB.size, _MAIN_SUB.size + 1) or rkey[8:9] != b"_":
            raise EtcdBackendError(f"key bucket record {rkey!r} is not a revision")
        main, _, sub = _MAIN_SUB.unpack(rkey[: _MAIN_SUB.size])
        tombstone = rkey[_MAIN_SUB.size :] == _TOMBSTONE
        kv = kv_pb2.KeyValue.FromString(raw)
        if tombstone:
            event = kv_pb2.Event(type=_DELETE, kv=kv_pb2.KeyValue(key=kv.key, mod_revision=main))
        else:
            event = kv_pb2.Event(type=_PUT, kv=kv)
        yield ("history", *history_record(main, sub, event))
        yield ("keyrev", *keyrev_record(kv.key, main, sub, tombstone))
        latest[kv.key] = None if tombstone else kv
        revision = max(revision, main)
    compacted = 0
    for mkey, value in bolt.items(b"meta"):
        if mkey == K_FINISHED_COMPACT:
            compacted = _MAIN_SUB.unpack(value[: _MAIN_SUB.size])[0]
    revision = max(revision, compacted)  # etcd's own rule: a compaction past the last write still counts
    for key in sorted(latest):
        kv = latest[key]
        if kv is None:
            continue
        yield "kv", key, kv.SerializeToString()
        if kv.lease:
            yield "lease_keys", lease_key(kv.lease, key), b""
    for _, raw in bolt.items(b"lease"):
        lease = lease_pb2.Lease.FromString(raw)
        yield ("leases", *leases_mod.lease_record(leases_mod.Lease(lease.ID, lease.TTL, lease.RemainingTTL)))
    yield "meta", K_REVISION, encode_revision(revision)
    if compacted:
        yield "meta", K_COMPACT, encode_revision(compacted)
    yield from _auth_records(bolt)


def _auth_records(bolt: BoltReader) -> Iterator[tuple[str, bytes, bytes]]:
    """etcd's auth buckets as the records of raftkv's ``auth`` sub-database (none if it never had any)."""
    for akey, value in bolt.items(b"auth"):
        if akey == K_AUTH_ENABLED:
            yield ("auth", *auth_store.enabled_record(value == b"\x01"))
        elif akey == K_AUTH_REVISION:
            yield ("auth", *auth_store.revision_record(_U64.unpack(value)[0]))
    for _, raw in bolt.items(b"authUsers"):
        yield ("auth", *auth_store.user_record(auth_pb2.User.FromString(raw)))
    for _, raw in bolt.items(b"authRoles"):
        yield ("auth", *auth_store.role_record(auth_pb2.Role.FromString(raw)))


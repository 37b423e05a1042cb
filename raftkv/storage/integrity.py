"""The data file's format version, the migration from the format before checksums, and the checks a
member makes before it trusts its data dir.

Format 1 (raftkv before checksums) stored bare values; format 2 seals every record (``sealed.py``) and
records ``storage_format`` = 2 in ``meta``. A format-1 data dir is migrated in place, in one LMDB
transaction, when a member opens it: a crash part-way leaves format 1 (the transaction never committed)
and the next start migrates again; a full disk fails the migration with nothing changed. Migrating rather
than refusing keeps every member's data through a rolling upgrade with no operator step; what a format-1
file held cannot be checked (it had no checksums), so damage from before the upgrade is sealed as it is
and left to the cross-member hash check to find. A data dir of a newer format is refused.

At start (``check_data_dir``), before LMDB is given the file, its structure is verified offline by
py-lmdb's pure-Python verifier (every page reachable once, keys ordered, counts right: the damage that
would make LMDB misroute a lookup or crash), and then every record's checksum is checked. Both read the
whole file, so files larger than a limit are not checked at start; their records are still checked on
every read.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

from lmdb import verify as lmdb_verify

from raftkv.storage.env import SUB_DBS, Env, Writer, WriteTxn
from raftkv.storage.sealed import CorruptionError, seal, unseal

log = logging.getLogger("raftkv.storage")

FORMAT = 2
K_FORMAT = b"storage_format"
_FORMAT = struct.Struct(">I")
_SCRATCH_DB = b"migrating"


class FormatError(Exception):
    """The data dir was written in a storage format this raftkv cannot read."""


def check_structure(db_dir: Path) -> None:
    """Raise ``CorruptionError`` if LMDB's data file in ``db_dir`` is structurally damaged (offline: the
    file is read as bytes, never mapped by LMDB)."""
    data = db_dir / "data.mdb"
    if not data.exists():
        return
    try:
        problems = lmdb_verify.verify(str(db_dir))
    except lmdb_verify.VerifyError as exc:
        raise CorruptionError(str(data), f"not a usable LMDB file: {exc}") from None
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CorruptionError(str(data), "; ".join(problems[:3]) + more)


def check_records(env: Env) -> int:
    """Check every record's checksum; returns how many were checked."""
    checked = 0
    with env.read() as txn:
        for name in SUB_DBS:
            for _ in txn.cursor(db=env.db(name)):
                checked += 1
    return checked


def prepare_format(env: Env, writer: Writer) -> None:
    """Make sure the environment is in format 2: mark a new one, migrate a format-1 one, refuse a newer one."""
    with env.read() as txn:
        raw = txn.raw.get(K_FORMAT, db=env.db("meta"))
        empty = all(txn.stat(env.db(name))["entries"] == 0 for name in SUB_DBS)
    if raw is not None:
        version = _FORMAT.unpack(unseal("meta", K_FORMAT, raw))[0]
        if version != FORMAT:
            raise FormatError(
                f"{env.path} holds storage format {version}; this raftkv reads format {FORMAT} "
                f"(and migrates format 1): run the raftkv that wrote it"
            )
        return
    if not empty:
        log.warning("%s: migrating the data dir from storage format 1 to %d (checksums on every record)",
                    env.path, FORMAT)
    writer.call(lambda w: _migrate(w, env) if not empty else _mark(w, env))


def _mark(w: WriteTxn, env: Env) -> None:
    w.txn.put(K_FORMAT, _FORMAT.pack(FORMAT), db=env.db("meta"))


def _migrate(w: WriteTxn, env: Env) -> None:
    """Seal every record, one sub-database at a time through a scratch database, all in ``w``'s transaction
    (the writer runs it again from the start if the map must grow)."""
    raw = w.txn.raw
    for name, dupsort in SUB_DBS.items():
        db = env.db(name)
        scratch = env.lmdb.open_db(_SCRATCH_DB, txn=raw, dupsort=dupsort)
        for key, value in raw.cursor(db=db):
            raw.put(key, seal(key, value), db=scratch)
        raw.drop(db, delete=False)
        for key, value in raw.cursor(db=scratch):
            raw.put(key, value, db=db, append=not dupsort)
        raw.drop(scratch, delete=True)
    _mark(w, env)

"""``python -m raftkv.statemachine.bench_apply``: the CPU the state machine's applier spends per applied write.

The LMDB writer thread applies every committed entry, and a long apply holds up every write behind it
(a DeleteRange of a whole prefix is one entry, one revision, however many keys it deletes). This measures
that thread's work alone, in-process, over a real ``NodeStore`` in a temporary directory: the entries are
saved and applied as the node driver does (decoded first, as the Raft loop decodes them, so the writer
decodes nothing), and ``time.thread_time`` is read inside the writer job around ``Applier.apply`` (the
commit, which the apply's own records do not change, is left out). CPU time rather
than wall time, so that a loaded machine moves the figures less; still, run the code before and after a
change in turns and compare ratios. It lives beside the code it measures because it drives the store's
internals, which ``raftkv.bench`` (the cluster benchmarks, ``make bench-etcd``) may not import.

Workloads:

- ``put``: puts of ``--value-bytes`` values over 5,000 keys, in batches of 16 entries, each with an
  exactly-once header (as the API proposes them); CPU per applied put.
- ``delete-range``: ``--keys`` keys filled by txns of 100 puts, then one DeleteRange over all of them
  (what ``etcdctl check perf`` ends with); CPU per deleted key.

Each workload runs ``--rounds`` times in one store; the minimum and the median are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from raftkv.core.types import Entry, HardState
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.statemachine.applier import AppliedEntry, Committed
from raftkv.statemachine.node_store import NodeStore
from raftkv.storage.env import WriteTxn


class _Store:
    def __init__(self, path: Path) -> None:
        self.store = NodeStore(path)
        self.store.bootstrap(0xC1, 1, [(1, b"")])
        self.index = 1

    def apply(self, requests: list[internal_pb2.InternalRequest]) -> float:
        """Save and apply ``requests`` as one batch; the writer thread's CPU seconds in ``Applier.apply``."""
        entries = []
        for request in requests:
            self.index += 1
            request.header.id = self.index
            entries.append(Entry(1, self.index, data=request.SerializeToString()))
        self.store.save(None, entries, HardState(1, 1, self.index)).result()
        committed = Committed.decode(entries)
        spent: list[float] = []

        def job(w: WriteTxn) -> list[AppliedEntry]:
            started = time.thread_time()
            applied = self.store.applier.apply(w, committed)
            spent.append(time.thread_time() - started)
            return applied

        self.store.writer.submit(job, durable=False).result()
        return spent[0]


def _puts(store: _Store, count: int, value: bytes, first_seq: int) -> float:
    """CPU seconds per applied put, over ``count`` puts in batches of 16."""
    spent, batches = 0.0, count // 16
    for batch in range(batches):
        requests = []
        for i in range(16):
            n = batch * 16 + i
            request = internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=b"k/%06d" % (n % 5000), value=value))
            request.header.client_id, request.header.seq = 7, first_seq + n
            requests.append(request)
        spent += store.apply(requests)
    return spent / (batches * 16)


def _delete_range(store: _Store, keys: int, value: bytes) -> float:
    """CPU seconds per key of one DeleteRange over ``keys`` keys (the fill is not counted)."""
    for batch in range(keys // 100):
        ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"perf/%08d" % (batch * 100 + i), value=value))
               for i in range(100)]
        store.apply([internal_pb2.InternalRequest(txn=rpc_pb2.TxnRequest(success=ops))])
    delete = rpc_pb2.DeleteRangeRequest(key=b"perf/", range_end=b"perf0")
    return store.apply([internal_pb2.InternalRequest(delete_range=delete)]) / (keys // 100 * 100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m raftkv.statemachine.bench_apply", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("workload", choices=("put", "delete-range"))
    parser.add_argument("--puts", type=int, default=8000, help="puts per round (put)")
    parser.add_argument("--keys", type=int, default=100_000, help="keys deleted per round (delete-range)")
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    value = b"x" * args.value_bytes
    with tempfile.TemporaryDirectory(prefix="raftkv-apply-cpu-") as tmp:
        store = _Store(Path(tmp) / "node")
        try:
            run: Callable[[int], float] = (
                (lambda r: _puts(store, args.puts, value, r * args.puts + 1)) if args.workload == "put"
                else (lambda r: _delete_range(store, args.keys, value))
            )
            figures = [run(r) * 1e6 for r in range(args.rounds)]
        finally:
            store.store.close()
    unit = "put" if args.workload == "put" else "deleted key"
    print(f"{args.workload}: writer-thread CPU per {unit}: min {min(figures):.2f} us, "
          f"median {statistics.median(figures):.2f} us ({' '.join(f'{f:.2f}' for f in figures)})")


if __name__ == "__main__":
    main()

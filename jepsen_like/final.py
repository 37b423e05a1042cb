"""The end of a run: after healing and a quiet period, read everything from every member.

Recorded per member: ``final-read`` (every key under ``jepsen/``, read locally with a serializable Range so it
is *that* member's state), ``final-dump`` (its whole event history, replayed by a watch from revision 1: the
ground truth for the watch and durability checkers) and ``hash-kv`` at one common revision.
"""

from __future__ import annotations

import threading
import time

import grpc

from jepsen_like.client import Member, Outcome, event_list, prefix_end
from jepsen_like.history import OK, Event, HistoryWriter
from raftkv.proto import rpc_pb2

PREFIX = "jepsen/"


def wait_converged(members: list[Member], timeout: float) -> int:
    """Poll until every member reports the same revision; returns it (or the lowest seen at the deadline)."""
    deadline = time.monotonic() + timeout
    revs: dict[str, int] = {}
    while True:
        for m in members:
            try:
                revs[m.name] = int(m.status().header.revision)
            except Outcome:
                revs.pop(m.name, None)
        if len(revs) == len(members) and len(set(revs.values())) == 1:
            return next(iter(revs.values()))
        if time.monotonic() > deadline:
            return min(revs.values(), default=0)
        time.sleep(0.2)


def dump(m: Member, upto: int, timeout: float = 20.0, idle_s: float = 2.0) -> list[list[object]]:
    """Every event under PREFIX from revision 1 through ``upto``, as this member's watch replays them.

    A replay streams without pauses, so ``idle_s`` without a response ends it: a server that lost the newest
    events (a bug the checkers then report) costs seconds, not the whole ``timeout``.  Progress replies
    cannot end it instead: etcd 3.4 sends them ahead of events still being replayed."""
    events: list[list[object]] = []
    if upto <= 1:
        return events
    create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
        key=PREFIX.encode(), range_end=prefix_end(PREFIX), start_revision=1))
    stream = m.watch.Watch(iter([create]), timeout=timeout)
    last = [time.monotonic()]
    done = threading.Event()

    def watchdog() -> None:
        while not done.wait(0.2):
            if time.monotonic() - last[0] > idle_s:
                stream.cancel()
                return

    threading.Thread(target=watchdog, name=f"dump-{m.name}", daemon=True).start()
    try:
        for resp in stream:
            last[0] = time.monotonic()
            events.extend(event_list(resp.events))
            if events and int(events[-1][3]) >= upto:  # type: ignore[call-overload]
                break
            if resp.header.revision >= upto and not resp.events and not resp.created:
                break
    except grpc.RpcError:
        pass  # a short dump shows up as missing events, which the checkers report
    finally:
        done.set()
        stream.cancel()
    return [e for e in events if int(e[3]) <= upto]  # type: ignore[call-overload]


def final_reads(members: list[Member], history: HistoryWriter, quiet_s: float) -> None:
    revision = wait_converged(members, timeout=quiet_s + 30)
    for m in members:
        try:
            kvs, rev = m.range_prefix(PREFIX, serializable=True)
            history.log(Event("final", OK, "final-read", revision=rev, member=m.name,
                              extra={"record": True, "kvs": kvs}))
            history.log(Event("final", OK, "final-dump", revision=revision, member=m.name,
                              extra={"record": True, "events": dump(m, revision)}))
            h, hrev = m.hash_kv(revision)
            history.log(Event("final", OK, "hash-kv", revision=revision, member=m.name,
                              extra={"record": True, "hash": h, "header_revision": hrev}))
        except Outcome as exc:
            history.log(Event("final", OK, "final-error", member=m.name, error=exc.detail,
                              extra={"record": True}))

"""Client workloads: register (get/put/CAS/delete), watch (prefix watchers kept across faults), lease.

Each worker is a thread bound to a member (its own failover moves it to the next member after an error).
Every operation goes through ``Worker.run_op``, which logs invoke and completion and retires the process
after an ``info`` so that no process ever has two operations in doubt.
"""

from __future__ import annotations

import itertools
import queue
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from jepsen_like.client import Member, Outcome, event_list, prefix_end
from jepsen_like.history import FAIL, INFO, INVOKE, OK, Event, HistoryWriter
from raftkv.proto import rpc_pb2

REG_PREFIX = "jepsen/reg/"
LEASE_PREFIX = "jepsen/lease/"
_process_ids = itertools.count()
_process_lock = threading.Lock()


def new_process() -> int:
    with _process_lock:
        return next(_process_ids)


class Worker(threading.Thread):
    """Base: a thread with a process id, a member, and the invoke/complete protocol."""

    def __init__(self, index: int, members: list[Member], history: HistoryWriter, stop: threading.Event,
                 seed: int) -> None:
        super().__init__(name=f"{type(self).__name__}-{index}", daemon=True)
        self.index, self.members, self.history, self.stop_event = index, members, history, stop
        self.rng = random.Random(seed * 1000 + index)
        self.member_index = index % len(members)
        self.process = new_process()
        self.seq = 0

    @property
    def member(self) -> Member:
        return self.members[self.member_index]

    def failover(self) -> None:
        self.member_index = (self.member_index + 1) % len(self.members)

    def unique(self) -> str:
        """A value no other write in the run uses: process and sequence number."""
        self.seq += 1
        return f"p{self.process}-{self.seq}"

    def run_op(self, f: str, key: str | None, value: Any, call: Callable[[Member], dict[str, Any]],
               read_only: bool = False, **extra: Any) -> dict[str, Any] | None:
        """Invoke ``call`` and log the outcome; ``call`` returns the completion fields (type defaults ok)."""
        m = self.member
        self.history.log(Event(self.process, INVOKE, f, key, value, member=m.name, extra=dict(extra)))
        try:
            fields = call(m)
        except Outcome as exc:
            typ = FAIL if exc.certain or read_only else INFO
            self.history.log(Event(self.process, typ, f, key, value, error=exc.detail, member=m.name,
                                   extra=dict(extra)))
            if typ == INFO:
                self.process = new_process()
            self.failover()
            return None
        done = dict(fields)
        typ = done.pop("type", OK)
        more = {**extra, **done.pop("extra", {})}
        self.history.log(Event(self.process, typ, f, key, member=m.name, extra=more, **done))
        return fields


class RegisterWorker(Worker):
    """get/put/CAS/delete on its key group with unique values; failed CAS and delete report what they saw."""

    def __init__(self, *args: Any, keys: list[str], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.keys = keys
        self.last_seen: dict[str, str | None] = {}

    def run(self) -> None:
        while not self.stop_event.is_set():
            key = self.rng.choice(self.keys)
            r = self.rng.random()
            if r < 0.4:
                self.run_op("read", key, None, lambda m: self.op_read(m, key), read_only=True)
            elif r < 0.7:
                v = self.unique()
                self.run_op("write", key, v, lambda m: {"revision": m.put(key, v)})
            elif r < 0.92:
                expected = self.last_seen.get(key)
                new = self.unique()
                self.run_op("cas", key, [expected, new], lambda m: self.op_cas(m, key, expected, new))
            else:
                self.run_op("delete", key, None, lambda m: self.op_delete(m, key))

    def op_read(self, m: Member, key: str) -> dict[str, Any]:
        r = m.read(key)
        self.last_seen[key] = r.value
        return {"value": r.value, "revision": r.revision, "mod_revision": r.mod_revision}

    def op_cas(self, m: Member, key: str, expected: str | None, new: str) -> dict[str, Any]:
        ok, r = m.cas(key, expected, new)
        self.last_seen[key] = r.value
        if ok:
            return {"revision": r.revision}
        return {"type": FAIL, "value": r.value, "revision": r.revision, "mod_revision": r.mod_revision,
                "extra": {"observed": True}}

    def op_delete(self, m: Member, key: str) -> dict[str, Any]:
        r = m.delete(key)
        self.last_seen[key] = None
        return {"value": r.value, "revision": r.revision, "mod_revision": r.mod_revision}


class WatchWorker(Worker):
    """A prefix watcher that survives faults: on a broken stream it resumes from last revision + 1."""

    def __init__(self, *args: Any, prefix: str, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.prefix = prefix
        self.last_rev = 0
        self.start_rev = 0
        self.high = 0  # highest revision known delivered (events or progress)
        self.requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        self._watch_ids = itertools.count()
        self._stream: Any = None

    def close(self) -> None:
        """End the current stream (the thread then sees the stop event)."""
        self.requests.put(None)
        if self._stream is not None:
            self._stream.cancel()

    def request_progress(self) -> None:
        self.requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def _requests(self, create: rpc_pb2.WatchRequest) -> Iterator[rpc_pb2.WatchRequest]:
        yield create
        while True:
            req = self.requests.get()
            if req is None:
                return
            yield req

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.start_rev = self.last_rev + 1 if self.last_rev else 0
            wid = f"{self.index}.{next(self._watch_ids)}"
            create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                key=self.prefix.encode(), range_end=prefix_end(self.prefix), start_revision=self.start_rev))
            stream = self._stream = self.member.watch.Watch(self._requests(create))
            try:
                for resp in stream:
                    if self.stop_event.is_set():
                        break
                    self._record(resp, wid)
            except grpc.RpcError:
                pass
            finally:
                stream.cancel()
            self.failover()
            self.requests.put(None)
            self.requests = queue.Queue()
            self.stop_event.wait(0.2)

    def _record(self, resp: Any, wid: str) -> None:
        if resp.created or resp.canceled:
            return
        events = event_list(resp.events)
        progress = not events
        if events:
            self.last_rev = max(self.last_rev, events[-1][3])
        self.high = max(self.high, self.last_rev, resp.header.revision if progress else 0)
        self.history.log(Event(self.process, OK, "watch-response", self.prefix, revision=resp.header.revision,
                               member=self.member.name,
                               extra={"record": True, "watch": wid, "prefix": self.prefix,
                                      "start": self.start_rev, "events": events, "progress": progress}))


class LeaseWorker(Worker):
    """Grants short leases, attaches keys, keeps some alive, revokes some, lets the rest expire; reads keys."""

    TTL = 5

    def run(self) -> None:
        owned: list[tuple[int, list[str], str]] = []  # (lease, keys, fate)
        while not self.stop_event.is_set():
            if len(owned) < 2:
                granted = self.run_op("lease-grant", None, self.TTL, self.op_grant)
                if granted is not None:
                    lease = int(granted["extra"]["lease"])
                    owned.append((lease, [], self.rng.choice(["keep", "revoke", "expire"])))
                continue
            lease, keys, fate = self.rng.choice(owned)
            r = self.rng.random()
            if r < 0.3 and len(keys) < 3:
                key = f"{LEASE_PREFIX}{lease:x}/{len(keys)}"
                v = self.unique()
                if self.run_op("lease-put", key, v, lambda m: {"revision": m.put(key, v, lease)}, lease=lease):
                    keys.append(key)
            elif r < 0.6 and keys:
                key = self.rng.choice(keys)
                self.run_op("read", key, None, lambda m: self.op_read(m, key), read_only=True)
            elif fate == "keep" or (fate == "revoke" and r < 0.9):
                self.run_op("lease-keepalive", None, lease, lambda m: self.op_keepalive(m, lease), lease=lease)
            elif fate == "revoke":
                self.run_op("lease-revoke", None, lease, lambda m: {"revision": m.lease_revoke(lease)})
                owned.remove((lease, keys, fate))
            else:
                owned.remove((lease, keys, fate))  # let it expire
            self.stop_event.wait(0.05)

    def op_grant(self, m: Member) -> dict[str, Any]:
        lease, ttl = m.lease_grant(self.TTL)
        return {"value": lease, "extra": {"lease": lease, "ttl": ttl}}

    def op_keepalive(self, m: Member, lease: int) -> dict[str, Any]:
        ttl = m.lease_keepalive(lease)
        return {"value": ttl, "extra": {"ttl": ttl}}

    def op_read(self, m: Member, key: str) -> dict[str, Any]:
        r = m.read(key)
        return {"value": r.value, "revision": r.revision, "mod_revision": r.mod_revision}

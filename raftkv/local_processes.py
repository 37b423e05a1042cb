"""Ports and processes on this machine: what a local cluster, the chaos harness and tests share.

Members are separate processes that may outlive whoever started them, so liveness is judged from the pid
(and ``/proc``), never from a handle; ports are picked where no outgoing connection can take them first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from raftkv.process_stat import process_state

HOST = "127.0.0.1"
#: Where ports handed out by ``free_ports`` are written down, for every process on this machine to see.
RESERVATIONS = Path(tempfile.gettempdir()) / f"raftkv-ports-{os.getuid()}.json"
#: How long a port handed out stays reserved: long enough for its member to start and bind it on a loaded
#: machine (tens of seconds at load 40); after that the bind test sees the member itself.
RESERVATION_SECONDS = 180.0


def free_ports(count: int) -> list[int]:
    """Distinct bindable ports below the kernel's ephemeral range, reserved for a while on this machine.

    They are released before the members bind them.  Ports the kernel hands out for ``bind(0)`` come from the
    ephemeral range, which is also where every outgoing connection's local port comes from, so one of those
    could take a port in that gap; ports below the range are only ever taken by an explicit bind.  The
    explicit binds that could take one in that gap are other local clusters' members, started by another
    process on the same machine (a test run beside a benchmark): a member then fails with "address already
    in use" (seen once in a suite run beside three benchmarks). So each port handed out is written down in
    ``RESERVATIONS``, under a lock, and no process picks it again for ``RESERVATION_SECONDS``."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.SystemRandom()
    ports: list[int] = []
    with _reservations() as reserved:
        while len(ports) < count:
            port = rng.randrange(10000, low)
            if port in ports or str(port) in reserved:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((HOST, port))
                except OSError:
                    continue
            ports.append(port)
        until = time.time() + RESERVATION_SECONDS
        reserved.update({str(port): until for port in ports})
    return ports


@contextlib.contextmanager
def _reservations() -> Iterator[dict[str, float]]:
    """The machine's unexpired port reservations (port -> until, wall clock), under an exclusive lock;
    written back when the block ends without an error."""
    with open(RESERVATIONS, "a+") as file:  # a+: created if missing, never truncated before the lock is held
        fcntl.flock(file, fcntl.LOCK_EX)  # released when the file closes
        file.seek(0)
        try:
            found = json.loads(file.read() or "{}")
        except ValueError:
            found = {}  # a file cut short by a crash reserves nothing
        now = time.time()
        reserved = {port: until for port, until in found.items() if isinstance(until, float | int) and until > now}
        yield reserved
        file.seek(0)
        file.truncate()
        file.write(json.dumps(reserved))


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) process. Reaps it if it is our own exited child."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: a member started by an earlier process
    try:
        return process_state(pid) != "Z"
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)

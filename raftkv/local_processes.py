"""Ports and processes on this machine: what a local cluster, the chaos harness and tests share.

Members are separate processes that may outlive whoever started them, so liveness is judged from the pid
(and ``/proc``), never from a handle; ports are picked where no outgoing connection can take them first.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """Distinct bindable ports below the kernel's ephemeral range.

    They are released before the members bind them.  Ports the kernel hands out for ``bind(0)`` come from the
    ephemeral range, which is also where every outgoing connection's local port comes from, so one of those
    could take a port in that gap; ports below the range are only ever taken by an explicit bind."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.SystemRandom()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(10000, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) process. Reaps it if it is our own exited child."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: a member started by an earlier process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)

"""What raftkv reads of a process from ``/proc/<pid>/stat``: its state and the CPU time it has used.

One parser for the file, because its second field (the command name, in parentheses) may itself hold spaces
and parentheses: fields are counted only after the *last* ``)``. The member's metrics (the client port's
relay processes), the benchmarks (a server's CPU per call) and the local-cluster manager (is a member still
alive) all read it here, so they cannot disagree on which field is which.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Clock ticks per second, the unit of the CPU fields.
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
# Indexes among the fields after the command name (proc(5) numbers them from 1 with pid and comm first).
_STATE, _UTIME, _STIME = 0, 11, 12


def _fields(pid: int) -> list[bytes]:
    """The fields after the command name. Raises ``OSError`` if there is no such process."""
    return Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()


def process_state(pid: int) -> str:
    """The one-letter state of ``pid`` (``R``, ``S``, ``Z`` for a zombie, ...). Raises ``OSError`` if there
    is no such process."""
    return _fields(pid)[_STATE].decode()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds that every thread of ``pid`` has used so far. Raises ``OSError`` if there
    is no such process."""
    fields = _fields(pid)
    return (int(fields[_UTIME]) + int(fields[_STIME])) / CLOCK_TICK

"""The one reader of ``/proc/<pid>/stat``: CPU seconds and state, also for a command name with spaces and
parentheses (the fields are counted after the last ``)``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raftkv.process_stat import process_cpu_seconds, process_state


def test_own_cpu_seconds_follow_os_times() -> None:
    """The kernel's counters for this process, read two ways, agree to a few ticks."""
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # spend some CPU so that the figure is not zero
        pass
    times = os.times()
    assert process_cpu_seconds(os.getpid()) == pytest.approx(times.user + times.system, abs=0.1)


def test_a_command_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    """A child whose command name is ``a) b (c``: its state and CPU are still read from the right fields;
    once it exits unreaped it is a zombie."""
    python = tmp_path / "a) b (c"
    python.symlink_to(sys.executable)
    child = subprocess.Popen([python, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert Path(f"/proc/{child.pid}/stat").read_text().startswith(f"{child.pid} (a) b (c) ")
        assert process_state(child.pid) in {"R", "S"}
        assert 0.0 <= process_cpu_seconds(child.pid) < 60.0
        assert child.stdin is not None
        child.stdin.close()
        deadline = time.monotonic() + 30
        while process_state(child.pid) != "Z":  # exited, not yet reaped
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()


def test_no_such_process_is_an_oserror() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid names no process now (until reused, which a test run will not reach)
    with pytest.raises(OSError):
        process_state(child.pid)
    with pytest.raises(OSError):
        process_cpu_seconds(child.pid)

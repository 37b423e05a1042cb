"""One rule for a threaded program that waits for SIGTERM (or Ctrl-C) to stop: wait in slices.

The kernel delivers a process's signal to any of its threads that does not block it, and gRPC's threads do
not. Python runs the handler on the main thread, but only when that thread next runs bytecode: if the
signal went to another thread, a main thread blocked in an endless ``Event.wait()`` is never woken, and
the program ignores the signal (CI saw ``kvctl service watch`` outlive its SIGTERM by 15 s;
``tests/discovery/test_kvctl_service.py`` sends one to a gRPC thread). asyncio programs are immune: their
handlers go through the loop's wake-up descriptor (``loop.add_signal_handler``).
"""

from __future__ import annotations

import signal
import threading

#: How often the waiting main thread wakes to run a signal handler that another thread received.
SLICE = 0.2


def stop_on(*signals: signal.Signals) -> threading.Event:
    """An event set when one of ``signals`` arrives (the main thread's handler for each is replaced)."""
    stop = threading.Event()
    for sig in signals:
        signal.signal(sig, lambda *_: stop.set())
    return stop


def wait_for(stop: threading.Event) -> None:
    """Block until ``stop`` is set, waking every ``SLICE`` seconds so that signal handlers run."""
    while not stop.wait(SLICE):
        pass

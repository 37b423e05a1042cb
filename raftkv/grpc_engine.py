"""Which of gRPC's I/O engines a member's process runs on: the polling engine, not EventEngine's threads.

grpcio 1.85 does a connection's reads and writes on EventEngine's own threads (``event_engine`` in
``/proc/<pid>/task/*/comm``), so every message crosses three threads before a coroutine sees it: the
engine's, the aio poller's and the event loop's, with a futex and a wake-up at each handoff. Turning the
experiments below off brings back gRPC's polling engine, where the aio poller thread does the I/O itself.
Measured on the reference two-core machine (three members, mutual TLS, a fresh cluster per run, the
engine changed in the members only, interleaved pairs): the leader's CPU per operation fell in every one
of 15 pairs, by 3-9% for put c=1, 4-16% for put c=64, 15-20% for get-l c=64 and 2-23% for get-s c=64,
most of it system time (futex and wake-ups); the engine's threads went from 500 us of CPU per put to 10.

gRPC's core reads ``GRPC_EXPERIMENTS`` once, when it starts, so the choice is made before anything in
the process imports grpc (``raftkv/main.py`` calls this first) and never overrides an operator's own
setting. Clients (``raftkv.client``, ``kvctl``) keep gRPC's default: the choice is the member's.
"""

from __future__ import annotations

import os
import sys

#: The experiments a member turns off (a leading "-" turns one off); names from grpcio's experiments list.
MEMBER_EXPERIMENTS = "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"


def choose_polling_engine() -> None:
    """Set ``GRPC_EXPERIMENTS`` for this process unless the operator set it. A no-op once grpc is loaded
    (too late for this process, and children should not inherit a choice this process did not make)."""
    if "grpc" in sys.modules:
        return
    os.environ.setdefault("GRPC_EXPERIMENTS", MEMBER_EXPERIMENTS)

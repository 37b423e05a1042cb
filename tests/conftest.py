"""Settings for the whole test session."""

from __future__ import annotations

from grpc.experimental import aio as grpc_aio

# grpc.aio shuts its poller thread down when the last aio object is freed. When that object is a task of
# an event loop that has already closed (a test that failed mid-scenario leaves such tasks for the garbage
# collector), the shutdown joins a poller that no longer wakes, and the pytest process hangs after its
# summary, forever (grpc/grpc#22365). Holding one reference for the whole session, as grpc's maintainers
# advise, keeps that shutdown from running: a failing test then fails, it does not hang the run.
grpc_aio.init_grpc_aio()

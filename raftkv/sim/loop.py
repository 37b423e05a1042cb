"""The simulator's asyncio event loop: virtual time, no I/O, one thread, the same order on every run.

The production node is asyncio code, so the simulator gives it an asyncio loop of its own making:

- **Virtual time.** ``time()`` is a number the loop advances itself: when nothing is ready, it jumps to
  the earliest timer instead of sleeping. ``asyncio.sleep``, ``call_later`` and timeouts all run on it,
  so an hour of cluster time costs only the CPU of what happens in it.
- **No I/O and no threads.** There is no selector; ``run_in_executor`` (``asyncio.to_thread``) runs the
  function inline. Ready callbacks run in FIFO order and timers in (time, insertion) order, so one seed
  gives one exact run.
- **Crashes.** Every simulated member's process runs inside a ``Life`` (a context variable that tasks and
  callbacks inherit). When a member crashes its life ends, and from then on no callback or task step of
  that life runs again — exactly what a killed process does. No code of the dead member gets to clean up.
- **Failures stop the run.** An exception escaping a callback (an invariant violation raised where the
  node cannot catch it, a task that died) is recorded and stops the loop at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
from collections.abc import Callable
from typing import Any


class Life:
    """One run of one member's process; ``end`` kills everything it started."""

    __slots__ = ("member", "number", "alive", "tasks")

    def __init__(self, member: int, number: int) -> None:
        self.member = member
        self.number = number
        self.alive = True
        self.tasks: list[asyncio.Task[Any]] = []

    def end(self) -> None:
        self.alive = False

    def __repr__(self) -> str:
        return f"Life(n{self.member}#{self.number}{'' if self.alive else ' dead'})"


CURRENT_LIFE: contextvars.ContextVar[Life | None] = contextvars.ContextVar("raftkv_sim_life", default=None)


class _VirtualSelector:
    """Stands where the selector would: "waiting" for the next timer is moving the clock to it."""

    def __init__(self, loop: SimLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise SimulationStalled("nothing is scheduled and the awaited work is not done")
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        pass


class SimulationStalled(RuntimeError):
    """No timer and nothing ready, yet the simulation's main task is not done: it waits forever."""


class SimLoop(asyncio.BaseEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._selector = _VirtualSelector(self)
        self._clock_resolution = 1e-9
        self.failure: str | None = None
        self.steps = 0
        self.root_tasks: list[asyncio.Task[Any]] = []
        self._hash = hashlib.sha256()
        self.set_task_factory(_task_factory)
        self.set_exception_handler(_record_exception)

    # --- time -------------------------------------------------------------------------------------------
    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    # --- the kill switch ----------------------------------------------------------------------------------
    # The signatures are typeshed's in spirit; its TypeVarTuple spelling buys nothing in a test loop.
    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        return super().call_soon(_guard(callback, context), *args, context=context)

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.TimerHandle:
        return super().call_at(when, _guard(callback, context), *args, context=context)

    def call_soon_threadsafe(  # type: ignore[override]
        self, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        return super().call_soon(_guard(callback, context), *args, context=context)

    # --- no I/O -------------------------------------------------------------------------------------------
    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        future = self.create_future()
        try:
            future.set_result(func(*args))
        except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting coroutine, as an executor would
            future.set_exception(exc)
        return future

    # --- the trace and failures -----------------------------------------------------------------------------
    def _run_once(self) -> None:
        self.steps += 1
        super()._run_once()  # type: ignore[misc]  # BaseEventLoop's private step, the one this loop counts

    def note(self, line: str) -> None:
        """Fold an observation into the trace hash (two runs of one seed must produce the same lines)."""
        self._hash.update(f"{self._now:.6f} {line}\n".encode())

    def trace_hash(self) -> str:
        return self._hash.hexdigest()

    def fail(self, message: str) -> None:
        """Record the run's verdict (the first failure wins) and stop the loop."""
        if self.failure is None:
            self.failure = message
        self.stop()


def _guard(callback: Callable[..., Any], context: contextvars.Context | None) -> Callable[..., Any]:
    life = CURRENT_LIFE.get() if context is None else context.get(CURRENT_LIFE)
    if life is None:
        return callback

    def guarded(*args: Any) -> None:
        if life.alive:
            callback(*args)

    return guarded


def _task_factory(
    loop: asyncio.AbstractEventLoop, coro: Any, context: contextvars.Context | None = None
) -> asyncio.Task[Any]:
    task = asyncio.Task(coro, loop=loop, context=context)
    task._log_destroy_pending = False  # type: ignore[attr-defined]  # a crashed member's tasks stay pending
    life = CURRENT_LIFE.get() if context is None else context.get(CURRENT_LIFE)
    if life is not None:
        life.tasks.append(task)
    elif isinstance(loop, SimLoop):
        loop.root_tasks.append(task)
    return task


def _record_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    assert isinstance(loop, SimLoop)
    exc = context.get("exception")
    detail = f"{type(exc).__name__}: {exc}" if exc is not None else ""
    loop.fail(f"{context.get('message', 'unhandled error')} {detail}".strip())


def finish(loop: SimLoop, lives: list[Life]) -> None:
    """End a run cleanly: every member's process stops dead, the clients are cancelled, the loop closes.

    The coroutines of the members' tasks are closed while the loop is still open, so that nothing of a
    stopped member runs later, during garbage collection, against a closed loop."""
    for life in lives:
        life.end()
        for task in life.tasks:
            if not task.done():
                task.get_coro().close()
    pending = [t for t in loop.root_tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()

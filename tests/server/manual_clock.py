"""A clock the test moves by hand, for the node's timer-driven pieces (reads, the commit notice).

It has the shape of the node's ``Clock`` (``now``, ``call_later``, ``sleep``) and no real time at all, so
a test can put an event exactly at, or just before, a deadline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class ManualTimer:
    due: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class ManualClock:
    """Time moves only when the test says (``advance``, or setting ``t``); due timers fire in ``advance``."""

    t: float = 100.0
    timers: list[ManualTimer] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> Awaitable[None]:
        raise AssertionError("the code under test must not sleep: it arms a timer instead")

    def call_later(self, delay: float, callback: Callable[[], None]) -> ManualTimer:
        timer = ManualTimer(self.t + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.t += seconds
        due = [t for t in self.timers if t.due <= self.t and not t.cancelled]
        self.timers = [t for t in self.timers if t not in due]
        for timer in due:
            timer.callback()

    def armed(self) -> int:
        """Timers set and neither fired nor cancelled."""
        return sum(not t.cancelled for t in self.timers)

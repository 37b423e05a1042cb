"""One rule for asyncio code that awaits grpc.aio streaming calls: a cancel is a cancel.

grpc.aio can answer the cancel of a task that is blocked in a streaming call (a write, a read, the call's
end) with an ``AioRpcError`` (INTERNAL, UNKNOWN or CANCELLED) instead of ``CancelledError``, and
``asyncio.wait_for`` on Python 3.11 can swallow a cancel that arrives as its inner future completes. A
retry loop that catches ``grpc.RpcError`` would then carry on (back off, reconnect) as if the peer had
failed, and whoever cancelled it to shut down waits forever. The task's own cancellation count says what
really happened; a loop asks it before it retries.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Raise ``CancelledError`` if the current task has been asked to stop, whatever an await said."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

"""Stopping asyncio tasks for certain, and waiting on an event with a bound.

On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that arrives
just as the awaited thing finishes (fixed in 3.12): a loop built on it then
runs on after ``task.cancel()``, and a shutdown that awaits the task hangs.
:func:`stop_tasks` cancels again until every task has ended, and
:func:`wait_event` waits with ``asyncio.timeout`` where it exists.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["stop_tasks", "wait_event"]

#: How long a cancelled task may take to end before it is cancelled again.
_RECANCEL = 0.1


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended, cancelling again if needed.

    Exceptions of the tasks are not raised here (they were stopping anyway);
    cancelling the caller still cancels it.
    """
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=_RECANCEL)
        for task in pending:  # a cancel that got lost: say it again
            task.cancel()


if sys.version_info >= (3, 11):

    async def wait_event(event: asyncio.Event, timeout: float) -> bool:
        """Wait for ``event`` at most ``timeout`` s; True if it was set."""
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True

else:  # pragma: no cover - Python 3.10

    async def wait_event(event: asyncio.Event, timeout: float) -> bool:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

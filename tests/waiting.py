"""Bounded waits for tests: wait on the condition itself, never a fixed time.

Every helper polls its condition in small steps and fails with a message
naming what it waited for once its time is up, so a broken feature shows
as a clear failure rather than a hung test run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: How often a condition is looked at again.
POLL = 0.005


def run(test: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> None:
    """Run an async test body with an overall time limit."""
    asyncio.run(asyncio.wait_for(test(), timeout))


@contextlib.asynccontextmanager
async def background(work: Coroutine[Any, Any, Any]) -> AsyncIterator[asyncio.Task[Any]]:
    """Run ``work`` as a task meanwhile; cancel it and wait for it to end after."""
    task = asyncio.get_running_loop().create_task(work)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Return once ``condition()`` holds; AssertionError naming ``what`` after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL)


async def read_until(
    read: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    what: str,
    timeout: float = 5.0,
) -> T:
    """The first ``await read()`` to pass ``check``; AssertionError naming ``what`` on time-out.

    For conditions that take a round trip to look at, such as a CA read.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await read()
        if check(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last read {value!r})")
        await asyncio.sleep(POLL)


async def on_virtual_time(clock: Any, work: Awaitable[T], step: float = 0.0002) -> T:
    """Await ``work`` while moving a virtual ``clock`` on (bounded: 10 virtual s).

    Time moves on by ``step`` only while the clock is idle: every bus
    worker on it is waiting for calls or blocked on the clock itself, and
    the event loop has run what was ready. So virtual time never overtakes
    work already under way, however slowly a loaded machine runs it.
    """
    task = asyncio.ensure_future(work)
    start = clock.monotonic()
    while not task.done():
        await until(lambda: clock.idle or task.done(), "the bus workers to be idle", 10.0)
        await asyncio.sleep(0)  # what the workers handed back runs first
        if task.done():
            break
        if clock.monotonic() - start > 10.0:
            task.cancel()
            raise AssertionError("still waiting after 10 virtual seconds")
        clock.advance(step)
    return task.result()

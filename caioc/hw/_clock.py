"""Clocks: the real one, and a virtual one that moves only when told.

Everything in :mod:`caioc.hw` that measures or waits for time takes a
:class:`Clock`. Production code uses :data:`REAL_CLOCK`. Simulators and
tests use a :class:`VirtualClock`, whose time stands still until the test
calls :meth:`VirtualClock.advance`; a 100 ms conversion or a 1 s bus
timeout then costs no real time and happens at exactly the same point on
every run.

Besides ``monotonic()`` and ``sleep()`` a clock can wait for a
:class:`concurrent.futures.Future` with a timeout measured on that clock,
from a thread (:meth:`Clock.wait`) or a coroutine (:meth:`Clock.wait_async`);
the per-bus worker threads use this, so bus timeouts follow the virtual
clock in tests too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["REAL_CLOCK", "Clock", "RealClock", "TimerHandle", "VirtualClock", "VirtualClockStalled"]


@runtime_checkable
class Clock(Protocol):
    """What :mod:`caioc.hw` needs from a clock."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for *seconds* of this clock's time."""
        ...

    def wait(self, future: concurrent.futures.Future[Any], timeout: float | None) -> bool:
        """Block until *future* is done or *timeout* passes; return ``future.done()``."""
        ...

    async def wait_async(
        self, future: concurrent.futures.Future[Any], timeout: float | None
    ) -> bool:
        """Await *future* without blocking the event loop; return ``future.done()``."""
        ...


class RealClock:
    """The system's monotonic clock (``time.monotonic``)."""

    def monotonic(self) -> float:
        """Seconds from :func:`time.monotonic`."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Block for *seconds* of real time."""
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, future: concurrent.futures.Future[Any], timeout: float | None) -> bool:
        """Block until *future* is done or *timeout* real seconds pass."""
        concurrent.futures.wait([future], timeout=timeout)
        return future.done()

    async def wait_async(
        self, future: concurrent.futures.Future[Any], timeout: float | None
    ) -> bool:
        """Await *future* for at most *timeout* real seconds."""
        waiter = _loop_waiter(future)
        await asyncio.wait({waiter}, timeout=timeout)
        return future.done()


REAL_CLOCK = RealClock()
"""The one real clock; the default wherever a clock is optional."""


class VirtualClockStalled(RuntimeError):
    """A wait on a :class:`VirtualClock` lasted too long in real time.

    Time on a virtual clock moves only when a test advances it; a test that
    forgets to would otherwise hang forever. The limit is the clock's
    ``stall_timeout``.
    """


class TimerHandle:
    """A callback scheduled on a :class:`VirtualClock`; ``cancel()`` drops it."""

    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the callback (harmless if it already ran)."""
        self.cancelled = True


class VirtualClock:
    """A clock whose time advances only when :meth:`advance` is called.

    Threads that ``sleep()`` or ``wait()`` on it block until another thread
    advances the time past their deadline (or the future they wait for
    completes). Timers fire in deadline order, and while one fires the
    clock reads exactly its deadline, so a run is the same every time.

    *stall_timeout* bounds, in real seconds, how long any one wait may
    block; past it the wait raises :class:`VirtualClockStalled` instead of
    hanging a test forever. ``None`` means no bound.

    Bus worker threads on the clock say when they have calls to run
    (:meth:`work_queued`, :meth:`work_done`), so that :attr:`idle` can tell
    a test whether moving time on now could overtake work under way: a
    worker with calls to run is busy unless it is blocked on this clock.
    """

    def __init__(self, start: float = 0.0, *, stall_timeout: float | None = 30.0) -> None:
        self._now = start
        self._stall_timeout = stall_timeout
        self._condition = threading.Condition()
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._sequence = itertools.count()
        self._waiters = 0
        self._work: dict[threading.Thread, int] = {}  # worker -> calls queued or running
        # threads waiting on this clock -> what wakes them (set: no longer waiting)
        self._blocked: dict[threading.Thread, threading.Event] = {}

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now!r}, waiters={self._waiters})"

    def monotonic(self) -> float:
        """The current virtual time in seconds."""
        return self._now

    @property
    def waiters(self) -> int:
        """How many threads and tasks are blocked on this clock right now."""
        return self._waiters

    @property
    def idle(self) -> bool:
        """True unless a worker thread has calls to run and is not blocked on this clock.

        While it is true, time can only move on by :meth:`advance`: every
        worker is either waiting for calls or waiting for this clock.
        """
        with self._condition:
            return self._idle_locked()

    def _idle_locked(self) -> bool:
        for thread, calls in self._work.items():
            woken = self._blocked.get(thread)
            # A thread whose wait has just ended counts as busy at once,
            # before it gets round to running again.
            if calls and (woken is None or woken.is_set()):
                return False
        return True

    def work_queued(self, worker: threading.Thread, calls: int = 1) -> None:
        """*calls* more calls were queued for the thread *worker*."""
        with self._condition:
            self._work[worker] = self._work.get(worker, 0) + calls

    def work_done(self, worker: threading.Thread) -> None:
        """*worker* ran (or dropped) one of its queued calls."""
        with self._condition:
            self._work[worker] -= 1
            self._condition.notify_all()

    def wait_for_idle(self, timeout: float = 5.0) -> None:
        """Block (real time, at most *timeout*) until :attr:`idle` holds."""
        with self._condition:
            if not self._condition.wait_for(self._idle_locked, timeout):
                raise TimeoutError(f"{self!r}: the workers still busy after {timeout} s")

    def advance(self, seconds: float) -> None:
        """Move time forward by *seconds*, firing every timer that falls due."""
        if seconds < 0:
            raise ValueError("a clock never goes backwards")
        with self._condition:
            target = self._now + seconds
            while self._timers and self._timers[0][0] <= target:
                deadline, _, handle = heapq.heappop(self._timers)
                if handle.cancelled:
                    continue
                self._now = max(self._now, deadline)
                handle.callback()
            self._now = target
            self._condition.notify_all()

    def call_at(self, deadline: float, callback: Callable[[], None]) -> TimerHandle:
        """Run *callback* when the time reaches *deadline* (at once if it has).

        The callback runs on the thread that calls :meth:`advance`, with the
        clock's lock held: it must be quick and must not use the clock.
        """
        handle = TimerHandle(deadline, callback)
        with self._condition:
            if deadline <= self._now:
                callback()
            else:
                heapq.heappush(self._timers, (deadline, next(self._sequence), handle))
        return handle

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run *callback* after *delay* seconds of virtual time."""
        with self._condition:
            return self.call_at(self._now + delay, callback)

    def sleep(self, seconds: float) -> None:
        """Block until the clock has been advanced by *seconds*."""
        if seconds <= 0:
            return
        woken = threading.Event()
        handle = self.call_later(seconds, woken.set)
        try:
            self._block(woken)
        finally:
            handle.cancel()

    def wait(self, future: concurrent.futures.Future[Any], timeout: float | None) -> bool:
        """Block until *future* is done or *timeout* virtual seconds pass."""
        if future.done():
            return True
        woken = threading.Event()
        future.add_done_callback(lambda _: woken.set())
        handle = self.call_later(timeout, woken.set) if timeout is not None else None
        try:
            self._block(woken)
        finally:
            if handle is not None:
                handle.cancel()
        return future.done()

    async def wait_async(
        self, future: concurrent.futures.Future[Any], timeout: float | None
    ) -> bool:
        """Await *future* for at most *timeout* virtual seconds."""
        if future.done():
            return True
        waiter = _loop_waiter(future)
        loop = asyncio.get_running_loop()
        handle = None
        if timeout is not None:
            handle = self.call_later(timeout, lambda: _set_threadsafe(loop, waiter))
        self._add_waiter(1)
        try:
            await asyncio.wait({waiter}, timeout=self._stall_timeout)
        finally:
            self._add_waiter(-1)
            if handle is not None:
                handle.cancel()
        if not waiter.done():
            raise VirtualClockStalled(
                f"{self!r}: waited {self._stall_timeout} real seconds; advance the clock"
            )
        return future.done()

    def wait_for_waiters(self, count: int = 1, timeout: float = 5.0) -> None:
        """Block (real time, at most *timeout*) until *count* waiters are blocked.

        A test calls this before :meth:`advance` to be sure the thread it
        started has reached its wait, so the advance is not missed.
        """
        with self._condition:
            if not self._condition.wait_for(lambda: self._waiters >= count, timeout):
                raise TimeoutError(f"{self!r}: expected {count} waiter(s) within {timeout} s")

    async def wait_for_waiters_async(self, count: int = 1, timeout: float = 5.0) -> None:
        """Like :meth:`wait_for_waiters`, for a test running on an event loop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._waiters < count:
            if loop.time() >= deadline:
                raise TimeoutError(f"{self!r}: expected {count} waiter(s) within {timeout} s")
            # Polling is the only way to watch a counter other threads change
            # without blocking the loop; the interval bounds the latency.
            await asyncio.sleep(0.001)

    def _add_waiter(self, delta: int) -> None:
        with self._condition:
            self._waiters += delta
            self._condition.notify_all()

    def _block(self, woken: threading.Event) -> None:
        thread = threading.current_thread()
        with self._condition:
            self._waiters += 1
            self._blocked[thread] = woken
            self._condition.notify_all()
        try:
            if not woken.wait(self._stall_timeout):
                raise VirtualClockStalled(
                    f"{self!r}: waited {self._stall_timeout} real seconds; advance the clock"
                )
        finally:
            with self._condition:
                self._waiters -= 1
                del self._blocked[thread]
                self._condition.notify_all()


def _set_threadsafe(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None]) -> None:
    """Complete *waiter* from any thread; a closed loop means nobody waits."""

    def complete() -> None:
        if not waiter.done():
            waiter.set_result(None)

    # A closed loop raises RuntimeError: nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(complete)


def _loop_waiter(future: concurrent.futures.Future[Any]) -> asyncio.Future[None]:
    """An asyncio future completed (with None) when *future* is done.

    Unlike :func:`asyncio.wrap_future` it never carries the result or the
    exception, so abandoning it after a timeout logs nothing.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    future.add_done_callback(lambda _: _set_threadsafe(loop, waiter))
    return waiter

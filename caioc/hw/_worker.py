"""One worker thread per bus: blocking calls run there, one at a time.

smbus2 and spidev block in ioctl(); a wedged bus (a device holding SDA
low, a clock-stretching sensor) can block for ever. Running every call of
one bus on that bus's own thread keeps the calls serialised (the hardware
needs that anyway), keeps the event loop free, and lets the caller give up
after a timeout: the caller gets :class:`BusTimeout`, the worker stays
stuck with the bus it owns, and other buses, with their own workers, carry
on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ._clock import REAL_CLOCK, Clock
from ._errors import BusTimeout, DeviceClosed

__all__ = ["BusWorker"]

_log = logging.getLogger("caioc.hw")

T = TypeVar("T")

_Job = tuple[concurrent.futures.Future[Any], Callable[[], Any], str]


class BusWorker:
    """A daemon thread that runs submitted calls in order, with timeouts.

    *name* appears in the thread name and in error messages; *clock*
    measures the timeouts (a :class:`~caioc.hw.VirtualClock` in tests).
    """

    def __init__(self, name: str, *, clock: Clock = REAL_CLOCK) -> None:
        self.name = name
        self.clock = clock
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._current: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"caioc-{name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        state = (
            "closed" if self._closed else f"busy with {self._current}" if self._current else "idle"
        )
        return f"<BusWorker {self.name} {state}>"

    @property
    def thread(self) -> threading.Thread:
        """The worker thread itself (tests check calls run on it)."""
        return self._thread

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def submit(self, function: Callable[[], T], description: str) -> concurrent.futures.Future[T]:
        """Queue *function* to run on the worker; return its future."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise DeviceClosed(f"{self.name} is closed", source=self.name)
            self._jobs.put((future, function, description))
        return future

    def call(self, function: Callable[[], T], description: str, timeout: float | None) -> T:
        """Run *function* on the worker and wait for it, at most *timeout* seconds."""
        future = self.submit(function, description)
        self.clock.wait(future, timeout)
        return self._outcome(future, description, timeout)

    async def call_async(
        self, function: Callable[[], T], description: str, timeout: float | None
    ) -> T:
        """Like :meth:`call`, awaiting the worker without blocking the event loop."""
        future = self.submit(function, description)
        try:
            await self.clock.wait_async(future, timeout)
        except asyncio.CancelledError:
            future.cancel()  # a call not yet started need not run at all
            raise
        return self._outcome(future, description, timeout)

    def close(self, timeout: float = 1.0) -> None:
        """:meth:`shutdown`, then :meth:`join`; idempotent."""
        self.shutdown()
        self.join(timeout)

    def shutdown(self) -> None:
        """Accept no more calls and fail the queued ones; idempotent.

        Calls still queued fail with :class:`DeviceClosed`; the call in
        progress, if any, is left to finish (or to hang).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._fail_queued()
            self._jobs.put(None)

    def join(self, timeout: float = 1.0) -> bool:
        """Wait (real time) for the thread to end; False if it is still stuck.

        A thread stuck in a hung call is left behind (it is a daemon
        thread), with a warning.
        """
        if threading.current_thread() is self._thread:
            return False
        self._thread.join(timeout)
        if self._thread.is_alive():
            _log.warning(
                "%s: worker still blocked in %s; leaving it behind", self.name, self._current
            )
            return False
        return True

    def _fail_queued(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and job[0].set_running_or_notify_cancel():
                job[0].set_exception(DeviceClosed(f"{self.name} is closed", source=self.name))

    def _outcome(
        self, future: concurrent.futures.Future[T], description: str, timeout: float | None
    ) -> T:
        """The result of *future*, or :class:`BusTimeout` if it is not done yet."""
        if not future.done():
            if future.cancel():
                raise BusTimeout(
                    f"{self.name}: {description} did not start within {timeout} s "
                    f"(queued behind {self._current or 'another call'})",
                    source=self.name,
                )
            if not future.done():
                raise BusTimeout(
                    f"{self.name}: {description} did not finish within {timeout} s",
                    source=self.name,
                )
        return future.result()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            future, function, description = job
            if not future.set_running_or_notify_cancel():
                continue  # the caller timed out while it was queued
            self._current = description
            try:
                result = function()
            except BaseException as exc:  # handed to the caller, who re-raises it
                future.set_exception(exc)
            else:
                future.set_result(result)
            finally:
                self._current = None


_B = TypeVar("_B", bound="WorkerBus")


class WorkerBus:
    """What every bus served by a :class:`BusWorker` shares.

    Subclasses set ``name`` and ``_worker`` and implement :meth:`close`;
    this gives them ``closed``, ``worker``, ``repr`` and ``with`` blocks.
    """

    name: str
    _worker: BusWorker

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}{' closed' if self.closed else ''}>"

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._worker.closed

    @property
    def worker(self) -> BusWorker:
        """The worker thread's owner (for diagnostics and tests)."""
        return self._worker

    def close(self) -> None:
        """Release the bus and stop its worker; idempotent."""
        raise NotImplementedError

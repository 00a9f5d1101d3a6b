"""One worker thread per bus: blocking calls run there, one at a time.

smbus2 and spidev block in ioctl(); a wedged bus (a device holding SDA
low, a clock-stretching sensor) can block for ever. Running every call of
one bus on that bus's own thread keeps the calls serialised (the hardware
needs that anyway), keeps the event loop free, and lets the caller give up
after a timeout: the caller gets :class:`BusTimeout`, the worker stays
stuck with the bus it owns, and other buses, with their own workers, carry
on.

Calls awaited on an event loop travel in batches: those made in one pass
of the loop (a poll tick's reads of every device on the bus) reach the
worker as one queue item, one thread wake-up, and share one deadline
entry; their results come back with one wake-up of the loop. Each call
still has its own outcome and timeout.

Each worker also keeps its bus's :class:`PortStats` (calls, failures,
timeouts, the latest error, whether the link is up), counted where every
call's outcome reaches its caller, so that
:class:`~caioc.hw.PortStatus` can serve them as PVs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import itertools
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, TypeVar

from ._clock import REAL_CLOCK, Clock, RealClock, VirtualClock
from ._errors import BusTimeout, DeviceClosed, DeviceUnplugged

__all__ = ["BusWorker", "PortSnapshot", "PortStats"]

_log = logging.getLogger("caioc.hw")

T = TypeVar("T")


class _Completion(Protocol):
    """What the worker needs of a call's future (concurrent or :class:`_LoopCall`)."""

    def set_running_or_notify_cancel(self) -> bool: ...

    def set_result(self, result: Any) -> None: ...

    def set_exception(self, exception: BaseException | None) -> None: ...

    def done(self) -> bool: ...

    def cancel(self) -> bool: ...

    def result(self) -> Any: ...


_Job = tuple[_Completion, Callable[[], Any], str]
_Batch = list[_Job]

_PENDING, _RUNNING, _DONE, _CANCELLED = range(4)


class _Mailbox:
    """The calls of one worker awaited on one event loop, both ways in batches.

    Outbound, the calls made during one pass of the loop wait in an outbox
    and go to the worker together when the pass ends (:meth:`flush`, run
    by ``call_soon``): one queue item and one wake-up of the worker thread
    for a poll tick's reads of every device, instead of one per read.
    The worker is not slower to start for it: the loop holds the GIL for
    the rest of its pass anyway.

    Inbound, the worker posts each finished call here; the loop is woken
    once for all the calls that finished before it got round to them,
    instead of once per call (each wake-up is a write to the loop's
    self-pipe and a pass of its select).

    The timeouts are kept on the loop's side, on one timer: a heap of
    deadlines, one entry per batch and timeout (measured from the batch's
    first call, so no call waits longer than its own), and a single loop
    timer armed for the earliest. A batch whose calls all ended in time
    stays in the heap until it reaches the top, where it is dropped without
    ceremony.

    The mailbox refers to its loop weakly: it is the value of a
    weak-keyed mapping from loops, which a strong reference would keep
    alive for ever. Its lock also guards the state of its calls (one lock
    per loop rather than one per call).
    """

    __slots__ = (
        "__weakref__",
        "_armed",
        "_deadlines",
        "_loop",
        "_outbox",
        "_ready",
        "_sequence",
        "_since",
        "_submit",
        "_timed",
        "lock",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, submit: Callable[[_Batch], None]) -> None:
        self._loop = weakref.ref(loop)
        self._submit = submit
        self.lock = threading.Lock()
        self._ready: list[_LoopCall] = []
        self._outbox: _Batch = []
        self._since = 0.0  # loop time of the outbox's first call
        self._timed: dict[float, list[_LoopCall]] = {}  # the outbox's calls by timeout
        # (deadline, sequence, calls) of the batches awaited with a timeout
        self._deadlines: list[tuple[float, int, list[_LoopCall]]] = []
        self._sequence = itertools.count()
        self._armed: asyncio.TimerHandle | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the calls are awaited on (None once it is gone)."""
        return self._loop()

    def send(
        self,
        loop: asyncio.AbstractEventLoop,
        call: _LoopCall,
        function: Callable[[], Any],
        description: str,
        timeout: float | None,
    ) -> None:
        """Queue *call* for the worker with the others of this loop pass (loop only)."""
        if not self._outbox:
            self._since = loop.time()
            loop.call_soon(self.flush)
        self._outbox.append((call, function, description))
        if timeout is not None:
            timed = self._timed.get(timeout)
            if timed is None:
                self._timed[timeout] = [call]
            else:
                timed.append(call)

    def flush(self) -> None:
        """Hand the outbox to the worker as one batch and arm its deadlines (loop only)."""
        batch, self._outbox = self._outbox, []
        timed, self._timed = self._timed, {}
        try:
            self._submit(batch)
        except DeviceClosed as error:  # closed meanwhile: the calls fail as queued ones do
            _fail(batch, error)
            return
        loop = self._loop()
        if loop is not None:
            for timeout, calls in timed.items():
                self._expire_at(loop, self._since + timeout, calls)

    def post(self, call: _LoopCall) -> None:
        """Hand *call* to the loop (any thread)."""
        with self.lock:
            self._ready.append(call)
            if len(self._ready) > 1:
                return  # a delivery is already on its way and will take this one
        loop = self._loop()
        if loop is None:
            return  # nobody waits any more
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self.lock:
            ready, self._ready = self._ready, []
        for call in ready:
            if not call.waiter.done():
                call.waiter.set_result(None)

    def _expire_at(
        self, loop: asyncio.AbstractEventLoop, deadline: float, calls: list[_LoopCall]
    ) -> None:
        """Wake the waiters of *calls* at *deadline* (loop time) if nothing has by then."""
        deadlines = self._deadlines
        while deadlines and _all_woken(deadlines[0][2]):  # ended in time: forget them
            heapq.heappop(deadlines)
        heapq.heappush(deadlines, (deadline, next(self._sequence), calls))
        armed = self._armed
        if armed is None or deadline < armed.when():
            if armed is not None:
                armed.cancel()
            self._armed = loop.call_at(deadline, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._armed is not None
        # The loop may run a timer a hair before its time (its clock resolution).
        due = max(loop.time(), self._armed.when())
        self._armed = None
        deadlines = self._deadlines
        while deadlines and (deadlines[0][0] <= due or _all_woken(deadlines[0][2])):
            for call in heapq.heappop(deadlines)[2]:
                if not call.waiter.done():
                    call.waiter.set_result(None)  # the caller sees it is not done: a timeout
        if deadlines:
            self._armed = loop.call_at(deadlines[0][0], self._expire, loop)


def _all_woken(calls: list[_LoopCall]) -> bool:
    return all(call.waiter.done() for call in calls)


def _fail(batch: _Batch, error: BaseException) -> None:
    """Fail the calls of *batch* that have not started (nor been cancelled) with *error*."""
    for completion, _, _ in batch:
        if completion.set_running_or_notify_cancel():
            completion.set_exception(error)


class _LoopCall:
    """A call awaited on the event loop: a light stand-in for a concurrent Future.

    It has the methods the worker and :meth:`BusWorker._outcome` use, and
    wakes its waiter through the loop's :class:`_Mailbox`, without the
    condition variable and callbacks of :class:`concurrent.futures.Future`
    and the extra future and timer of :func:`asyncio.wait`.
    """

    __slots__ = ("_error", "_lock", "_mailbox", "_state", "_value", "waiter")

    def __init__(self, waiter: asyncio.Future[None], mailbox: _Mailbox) -> None:
        self.waiter = waiter
        self._mailbox = mailbox
        self._lock = mailbox.lock  # held only for a state change, never while calling out
        self._state = _PENDING
        self._value: Any = None
        self._error: BaseException | None = None

    def set_running_or_notify_cancel(self) -> bool:
        with self._lock:
            if self._state == _CANCELLED:
                return False
            self._state = _RUNNING
            return True

    def cancel(self) -> bool:
        with self._lock:
            if self._state == _PENDING:
                self._state = _CANCELLED
            return self._state == _CANCELLED

    def done(self) -> bool:
        return self._state >= _DONE

    def set_result(self, result: Any) -> None:
        self._value = result
        self._state = _DONE
        self._mailbox.post(self)

    def set_exception(self, exception: BaseException | None) -> None:
        self._error = exception
        self._state = _DONE
        self._mailbox.post(self)

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class PortSnapshot(NamedTuple):
    """The figures of a :class:`PortStats` at one moment."""

    connected: bool
    transactions: int
    errors: int
    timeouts: int
    last_error: str
    #: POSIX time of the latest error, None before the first one.
    last_error_time: float | None
    #: True while the latest call failed.
    failing: bool


class PortStats:
    """What one bus or port has done: calls, failures, timeouts, the latest error.

    ``transactions`` counts every call whose outcome reached its caller,
    failed or not; ``errors`` the failed ones (timeouts included);
    ``timeouts`` those that failed with a :class:`~caioc.hw.BusTimeout`
    (the caller gave up, or the hardware reported a timeout). A call the
    caller cancelled counts nowhere. ``connected`` goes false when a call
    finds the link gone (:class:`~caioc.hw.DeviceUnplugged`) and true again
    with the next call that succeeds.

    Updated from whichever thread a call returns on; reading one attribute
    is safe anywhere, :meth:`snapshot` gives a consistent set. Listeners
    (:meth:`add_listener`) hear about changes of the *error state* only (a
    call failing after successes, succeeding after failures, the link going
    or coming back), never about every call, so they may publish at once
    without flooding anybody.
    """

    def __init__(self, *, connected: bool = True) -> None:
        self.connected = connected
        self.transactions = 0
        self.errors = 0
        self.timeouts = 0
        self.last_error = ""
        self.last_error_time: float | None = None
        self.failing = False
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return (
            f"<PortStats {'connected' if self.connected else 'disconnected'} "
            f"transactions={self.transactions} errors={self.errors} timeouts={self.timeouts}>"
        )

    def snapshot(self) -> PortSnapshot:
        """All the figures, taken together."""
        with self._lock:
            return PortSnapshot(
                self.connected,
                self.transactions,
                self.errors,
                self.timeouts,
                self.last_error,
                self.last_error_time,
                self.failing,
            )

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each change of the error state.

        It runs on the thread that recorded the change (the event loop, the
        worker, any caller): it must be quick and thread-safe, for example
        ``lambda: loop.call_soon_threadsafe(event.set)``.
        """
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling *listener* (unknown ones are ignored)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def record_success(self) -> None:
        """One call succeeded."""
        with self._lock:
            self.transactions += 1
            if not self.failing and self.connected:
                return  # the common case: no change of state, nobody to tell
            self.failing = False
            self.connected = True
            listeners = list(self._listeners)
        self._notify(listeners)

    def record_failure(self, error: BaseException, *, counted: bool = False) -> None:
        """One call failed with *error*.

        *counted* says the call is already in ``transactions`` (it came
        back, and only then turned out wrong: an undecodable reply).
        """
        with self._lock:
            if not counted:
                self.transactions += 1
            self.errors += 1
            if isinstance(error, BusTimeout):
                self.timeouts += 1
            self.last_error = f"{type(error).__name__}: {error}"
            self.last_error_time = time.time()
            changed = not self.failing
            self.failing = True
            if isinstance(error, DeviceUnplugged) and self.connected:
                self.connected = False
                changed = True
            listeners = list(self._listeners) if changed else []
        self._notify(listeners)

    def set_connected(self, connected: bool) -> None:
        """Say the link is up or down (a port opened or closed) without a call."""
        with self._lock:
            if self.connected == connected:
                return
            self.connected = connected
            listeners = list(self._listeners)
        self._notify(listeners)

    @staticmethod
    def _notify(listeners: list[Callable[[], None]]) -> None:
        for listener in listeners:
            try:
                listener()
            except Exception:  # a broken listener must not fail the bus call
                _log.exception("port status listener %r failed", listener)


class BusWorker:
    """A daemon thread that runs submitted calls in order, with timeouts.

    *name* appears in the thread name and in error messages; *clock*
    measures the timeouts (a :class:`~caioc.hw.VirtualClock` in tests);
    *connected* is the link's state before the first call (false for a
    port that opens on first use).
    """

    def __init__(self, name: str, *, clock: Clock = REAL_CLOCK, connected: bool = True) -> None:
        self.name = name
        self.clock = clock
        self.stats = PortStats(connected=connected)
        """The bus's counters (see :class:`PortStats`)."""
        self._jobs: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = (
            weakref.WeakKeyDictionary()
        )
        self._mailbox: _Mailbox | None = None  # the latest loop's, looked up without a weakref
        self._lock = threading.Lock()
        self._closed = False
        self._current: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"caioc-{name}", daemon=True)
        # A virtual clock is told what the worker has to do (see VirtualClock.idle).
        self._virtual = clock if isinstance(clock, VirtualClock) else None
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
        self._put([(future, function, description)])
        return future

    def _put(self, batch: _Batch) -> None:
        """Queue *batch*: its calls run one after the other, in order."""
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if self._virtual is not None:
                self._virtual.work_queued(self._thread, len(batch))
            self._jobs.put(batch)

    def _closed_error(self) -> DeviceClosed:
        return DeviceClosed(f"{self.name} is closed", source=self.name)

    def call(
        self,
        function: Callable[[], T],
        description: str,
        timeout: float | None,
        *,
        count: bool = True,
    ) -> T:
        """Run *function* on the worker and wait for it, at most *timeout* seconds.

        The outcome goes into :attr:`stats` unless *count* is false (for
        housekeeping such as closing the port, which is no traffic).
        """
        future = self.submit(function, description)
        self.clock.wait(future, timeout)
        return self._outcome(future, description, timeout, count)

    async def call_async(
        self,
        function: Callable[[], T],
        description: str,
        timeout: float | None,
        *,
        count: bool = True,
    ) -> T:
        """Like :meth:`call`, awaiting the worker without blocking the event loop."""
        if type(self.clock) is not RealClock:
            # Another clock (a virtual one in tests) decides when time is up.
            future = self.submit(function, description)
            try:
                await self.clock.wait_async(future, timeout)
            except asyncio.CancelledError:
                future.cancel()  # a call not yet started need not run at all
                raise
            return self._outcome(future, description, timeout, count)
        # Real time: the lighter path, taken by every poll of every device.
        if self._closed:
            raise self._closed_error()
        loop = asyncio.get_running_loop()
        mailbox = self._mailbox
        if mailbox is None or mailbox.loop is not loop:
            mailbox = self._mailboxes.get(loop)
            if mailbox is None:
                mailbox = self._mailboxes[loop] = _Mailbox(loop, self._put)
            self._mailbox = mailbox
        waiter = loop.create_future()
        call = _LoopCall(waiter, mailbox)
        mailbox.send(loop, call, function, description, timeout)
        try:
            await waiter
        except asyncio.CancelledError:
            call.cancel()
            raise
        return self._outcome(call, description, timeout, count)

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
        self.stats.set_connected(False)

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
                batch = self._jobs.get_nowait()
            except queue.Empty:
                return
            if batch is not None:
                _fail(batch, self._closed_error())
                for _ in batch:
                    self._done()

    def _done(self) -> None:
        """One queued call has been run or dropped."""
        if self._virtual is not None:
            self._virtual.work_done(self._thread)

    def _outcome(
        self,
        future: _Completion,
        description: str,
        timeout: float | None,
        count: bool,
    ) -> Any:
        """The result of *future*, or :class:`BusTimeout` if it is not done yet.

        Every call ends here exactly once, on its caller's side, which is
        why the counting happens here: a hung call counts once, as the
        timeout its caller saw, not again when the worker comes back.
        """
        try:
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
            result = future.result()
        except Exception as error:
            if count:
                self.stats.record_failure(error)
            raise
        if count:
            self.stats.record_success()
        return result

    def _run(self) -> None:
        while True:
            batch = self._jobs.get()
            if batch is None:
                break
            for future, function, description in batch:
                self._run_one(future, function, description)
                self._done()

    def _run_one(self, future: _Completion, function: Callable[[], Any], description: str) -> None:
        if not future.set_running_or_notify_cancel():
            return  # the caller timed out while it was queued
        if self._closed:  # closed during the batch: the rest fail as queued calls do
            future.set_exception(self._closed_error())
            return
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

    @property
    def stats(self) -> PortStats:
        """The bus's counters: calls, errors, timeouts, the latest error."""
        return self._worker.stats

    def close(self) -> None:
        """Release the bus and stop its worker; idempotent."""
        raise NotImplementedError


_H = TypeVar("_H", bound="BusDevice")


class BusDevice:
    """What a device handle on a shared bus (an I2C address, an SPI chip select) shares.

    Closing the handle forgets the device; the bus stays open for the others.
    Subclasses set ``name`` and ``_closed = False``.
    """

    name: str
    _closed: bool

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}{' closed' if self._closed else ''}>"

    def __enter__(self: _H) -> _H:
        self._check()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def close(self) -> None:
        """Forget the device; idempotent. The bus stays open."""
        self._closed = True

    def _check(self) -> None:
        if self._closed:
            raise DeviceClosed(f"{self.name} is closed", source=self.name)

"""Unsolicited serial lines: queues for coroutines and I/O-interrupt readings.

:meth:`~caioc.hw.SerialPort.listen` and :meth:`~caioc.hw.SerialPort.lines`
deliver the lines an instrument sends unasked (the framing rule is in
:mod:`caioc.hw.serial`); this module holds what consumes them: the bounded
:class:`LineQueue` a coroutine reads, and :class:`line_reading` with
:class:`LineBinding`, which post matching lines to a Device's PVs as an
EPICS "I/O Intr" record would be processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from caioc.ca import AlarmSeverity

from ._device import Device, classify, reading

if TYPE_CHECKING:
    from .serial import SerialPort

__all__ = ["LineBinding", "LineListener", "LineQueue", "SerialLine", "line_reading"]


class SerialLine(NamedTuple):
    """One unsolicited line: its text and when its terminator arrived."""

    text: str
    #: POSIX time the line was complete (for the PV's timestamp).
    timestamp: float


LineListener = Callable[[SerialLine], None]


class LineQueue:
    """A port's unsolicited lines for one coroutine, bounded: a flood drops the oldest.

    ::

        async with port.lines(maxlen=100) as lines:
            async for line in lines:          # SerialLine(text, timestamp)
                ...

    Lines arrive on the port's worker thread and wait here; the event loop
    is woken once per batch, not once per line. Once *maxlen* lines wait,
    each new one pushes the oldest out and :attr:`dropped` counts it, so
    an instrument that talks faster than the IOC reads costs a fixed
    amount of memory. Make it on the loop that reads it.
    """

    def __init__(self, port: SerialPort, maxlen: int = 100) -> None:
        if maxlen < 1:
            raise ValueError("a line queue holds at least one line")
        self.port = port
        self.maxlen = maxlen
        self.dropped = 0
        """Lines pushed out by newer ones before anybody read them."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._lock = threading.Lock()
        self._lines: deque[SerialLine] = deque()
        self._signalled = False  # a wake-up is on its way to the loop
        self._closed = False
        self._stop = port.listen(self._put)

    def __repr__(self) -> str:
        return f"<LineQueue {self.port.name} {len(self._lines)} waiting, {self.dropped} dropped>"

    def __len__(self) -> int:
        return len(self._lines)

    async def __aenter__(self) -> LineQueue:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[SerialLine]:
        return self

    async def __anext__(self) -> SerialLine:
        line = await self.get()
        if line is None:
            raise StopAsyncIteration
        return line

    def close(self) -> None:
        """Stop listening; lines already queued can still be read (idempotent)."""
        self._stop()
        with self._lock:
            self._closed = True
        self._wake.set()

    def get_nowait(self) -> SerialLine | None:
        """The oldest waiting line, or None."""
        with self._lock:
            return self._lines.popleft() if self._lines else None

    async def get(self) -> SerialLine | None:
        """The oldest line, waiting for one; None once closed and empty."""
        while True:
            with self._lock:
                if self._lines:
                    return self._lines.popleft()
                if self._closed:
                    return None
                self._signalled = False
            await self._wake.wait()
            self._wake.clear()

    def _put(self, line: SerialLine) -> None:
        # On the port's worker thread.
        with self._lock:
            if len(self._lines) >= self.maxlen:
                self._lines.popleft()
                self.dropped += 1
            self._lines.append(line)
            if self._signalled:
                return  # the loop has not been round yet: it will take this one too
            self._signalled = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody reads any more
            self._loop.call_soon_threadsafe(self._wake.set)


Parser = Callable[[Any, "re.Match[str]"], Any]


class line_reading(reading):
    r"""A reading set by unsolicited lines matching *pattern*: an I/O-interrupt reading.

    *pattern* is a regular expression tried on each line with
    :func:`re.match`. The value is ``parse(device, match)``; by default
    the first group (or the whole match) converted to the type of *value*
    (float, int or str). A line that matches but does not parse raises the
    alarm its error names (CALC for a ValueError) and keeps the last good
    value. The PV's timestamp is when the line arrived. It is never
    polled; give *stale_after* to raise TIMEOUT when the lines stop.
    :class:`LineBinding` feeds it::

        class Thermometer(Device):
            temperature = line_reading(r"T=([-+.\d]+)", units="degC", stale_after=5.0)
    """

    def __init__(
        self,
        pattern: str | re.Pattern[str],
        value: Any = 0.0,
        *,
        parse: Parser | None = None,
        **options: Any,
    ) -> None:
        if options.pop("period", None) is not None:
            raise ValueError("a line reading is never polled: it has no period")
        super().__init__(value, period=None, **options)
        self.pattern = re.compile(pattern)
        self.parse_function = parse

    def parser(self, function: Parser) -> line_reading:
        """``def f(self, match) -> value``: how a matching line becomes the value."""
        self.parse_function = function
        return self

    def parse(self, device: Any, match: re.Match[str]) -> Any:
        """The value of a matching line (ValueError when it has none)."""
        if self.parse_function is not None:
            return self.parse_function(device, match)
        text = match.group(1) if match.re.groups else match.group(0)
        if isinstance(self.value, str):
            return text.strip()
        if isinstance(self.value, int) and not isinstance(self.value, bool):
            return int(text)
        return float(text)


class LineBinding:
    """Feeds a port's unsolicited lines to the :class:`line_reading` PVs of a device.

    A driver starts one when it opens its port and stops it when it closes
    the port::

        async def open(self):
            self.port = ...
            self.lines = LineBinding(self, self.port)
            await self.lines.start()

        async def close(self):
            await self.lines.stop()
            ...

    Each line goes to every line reading whose pattern it matches, through
    :meth:`~caioc.hw.Device.post`; lines nobody matches are counted in
    :attr:`unmatched`. *maxlen* bounds the lines waiting (see
    :class:`LineQueue`).
    """

    def __init__(self, device: Device, port: SerialPort, *, maxlen: int = 100) -> None:
        self.device = device
        self.port = port
        self.maxlen = maxlen
        self.unmatched = 0
        """Lines no line reading of the device matched."""
        self.readings = [
            (attribute, declared)
            for attribute, declared in device._declared()
            if isinstance(declared, line_reading)
        ]
        self._queue: LineQueue | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def dropped(self) -> int:
        """Lines dropped because the device fell behind (see :attr:`LineQueue.dropped`)."""
        return self._queue.dropped if self._queue is not None else 0

    async def start(self) -> None:
        """Listen to the port and post what arrives (idempotent).

        The port is open when this returns (lines sent before a port opens
        are lost on a real line too); a port that cannot open raises
        :class:`~caioc.hw.DeviceUnplugged`, as a failed ``open`` should.
        """
        if self._task is not None:
            return
        self._queue = self.port.lines(self.maxlen)
        self._task = asyncio.get_running_loop().create_task(self._run(self._queue))
        try:
            await self.port.open_async()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        queue, self._queue = self._queue, None
        task, self._task = self._task, None
        if queue is not None:
            queue.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, queue: LineQueue) -> None:
        async for line in queue:
            await self.handle(line)

    async def handle(self, line: SerialLine) -> None:
        """Post *line* to the readings it matches (what each arriving line goes through)."""
        matched = False
        for attribute, declared in self.readings:
            match = declared.pattern.match(line.text)
            if match is None:
                continue
            matched = True
            try:
                value = declared.parse(self.device, match)
            except Exception as error:  # the instrument sent nonsense: an alarm
                channel = getattr(self.device, attribute)
                await channel.set_alarm(classify(error), AlarmSeverity.INVALID)
                continue
            await self.device.post(attribute, value, timestamp=line.timestamp)
        if not matched:
            self.unmatched += 1

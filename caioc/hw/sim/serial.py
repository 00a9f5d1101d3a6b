"""A simulated serial instrument on a pseudo-terminal that real pyserial opens.

:class:`SimulatedInstrument` creates a pty pair (:func:`os.openpty`) and
answers on the master end from a thread, while the code under test opens
the slave end by its path with ordinary pyserial, exactly as it would open
``/dev/ttyUSB0``. The path is a symlink in a private temporary folder that
survives :meth:`~SimulatedInstrument.unplug` /
:meth:`~SimulatedInstrument.replug` (each replug is a new pty), just as a
USB adapter's device name comes back when it is plugged in again::

    sim = SimulatedInstrument()
    sim.state["volts"] = 1.5
    sim.on(r"\\*IDN\\?", "ACME,PSU-1,0042,1.0")
    sim.on(r"VOLT\\?", lambda match, sim: f"{sim.state['volts']:.3f}")

    @sim.on(r"VOLT (?P<value>[-+.\\d]+)")
    def set_volts(match, sim):
        sim.state["volts"] = float(match["value"])
        return None                        # no reply, like most setters

    with sim:
        port = SerialPort(sim.path)
        port.query("VOLT?")               # -> "1.500"

A command is one line ending in *read_terminator*; the first pattern that
matches it in full picks the handler; a string handler is a fixed reply, a
callable returns the reply (``None`` for none). Replies end in
*write_terminator*. :attr:`~SimulatedInstrument.faults` injects the
failures real instruments have.

Instruments that talk unasked are simulated too: :meth:`~SimulatedInstrument.send`
sends one line now, :meth:`~SimulatedInstrument.send_raw` bytes as they
are (a line cut off mid-way), and :meth:`~SimulatedInstrument.every` a
line every so often (a measurement stream, a periodic ``ALARM``)::

    stream = sim.every(0.5, lambda sim: f"T={sim.state['celsius']:.2f}")
    ...
    stream.stop()
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import shutil
import tempfile
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["SerialFaults", "SimulatedInstrument", "SimulatedStream"]

_log = logging.getLogger("caioc.hw.sim")

Handler = Callable[[re.Match[str], "SimulatedInstrument"], "str | bytes | None"]
Garbler = Callable[[bytes], bytes]


def _set_top_bits(data: bytes) -> bytes:
    # What a wrong baud rate or line noise tends to produce: no longer ASCII.
    return bytes(byte | 0x80 for byte in data)


class SerialFaults:
    """Faults injected into a simulated instrument's next replies.

    Each counted fault applies to the next *count* commands that would get
    a reply. Safe to change from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[tuple[str, Any]] = deque()
        self.reply_delay = 0.0
        """Real seconds to wait before every reply (a slow instrument)."""

    def no_reply_next(self, count: int = 1) -> None:
        """Swallow the next *count* commands without answering (a timeout)."""
        with self._lock:
            self._pending.extend([("silent", None)] * count)

    def partial_reply_next(self, count: int = 1, *, keep: int | None = None) -> None:
        """Send only the first *keep* bytes of the next replies, no terminator.

        By default half of the reply (at least one byte) is sent.
        """
        with self._lock:
            self._pending.extend([("partial", keep)] * count)

    def garble_next(self, count: int = 1, garbler: Garbler | None = None) -> None:
        """Corrupt the next replies (the terminator still arrives).

        *garbler* maps the reply bytes to what is sent; the default sets the
        top bit of every byte, so an ASCII reply no longer decodes.
        """
        with self._lock:
            self._pending.extend([("garble", garbler or _set_top_bits)] * count)

    def clear(self) -> None:
        """Remove every pending fault and the reply delay."""
        with self._lock:
            self._pending.clear()
            self.reply_delay = 0.0

    def _take(self) -> tuple[str, Any]:
        with self._lock:
            return self._pending.popleft() if self._pending else ("ok", None)


class SimulatedStream:
    """Lines an instrument sends every *period* seconds; made by :meth:`SimulatedInstrument.every`.

    Sent from the instrument's own thread, so a line never interleaves
    with a reply; paused while the instrument is unplugged.
    """

    def __init__(self, instrument: SimulatedInstrument, period: float, message: Any) -> None:
        if not period > 0:
            raise ValueError("a stream's period must be positive")
        self.instrument = instrument
        self.period = period
        self.message = message
        self.sent = 0
        """Lines sent so far."""
        self.next_time = time.monotonic() + period

    def __repr__(self) -> str:
        return f"<SimulatedStream every {self.period} s, {self.sent} sent>"

    def stop(self) -> None:
        """Send no more lines (idempotent)."""
        self.instrument._remove_stream(self)

    def _text(self) -> str | bytes | None:
        if callable(self.message):
            result: str | bytes | None = self.message(self.instrument)
            return result
        return self.message


class SimulatedInstrument:
    """A command/reply instrument behind a pty; open :attr:`path` with pyserial.

    *read_terminator* ends the commands it receives, *write_terminator*
    its replies. *unknown* is the reply to a command no pattern matches
    (``None``: stay silent, as many instruments do). *state* is free for
    handlers to keep the instrument's settings in.
    """

    def __init__(
        self,
        *,
        read_terminator: str | bytes = "\n",
        write_terminator: str | bytes = "\n",
        encoding: str = "ascii",
        unknown: str | None = None,
        name: str = "ttySIM0",
        state: dict[str, Any] | None = None,
    ) -> None:
        self.encoding = encoding
        self.read_terminator = (
            read_terminator.encode(encoding)
            if isinstance(read_terminator, str)
            else read_terminator
        )
        self.write_terminator = (
            write_terminator.encode(encoding)
            if isinstance(write_terminator, str)
            else write_terminator
        )
        self.unknown = unknown
        self.name = name
        self.state: dict[str, Any] = state if state is not None else {}
        self.faults = SerialFaults()
        self.received: list[str] = []
        """Every command line received, in order (undecodable bytes escaped)."""
        self.sent: list[bytes] = []
        """Every reply or message sent, as the bytes that went out."""
        self._handlers: list[tuple[re.Pattern[str], Handler]] = []
        self._folder: str | None = None
        self._thread: threading.Thread | None = None
        self._master = -1
        self._slave = -1
        self._wake_read = -1
        self._wake_write = -1
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._write_lock = threading.Lock()
        self._streams: list[SimulatedStream] = []
        self._streams_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SimulatedInstrument {self.name} {'plugged' if self.plugged else 'unplugged'}>"

    def __enter__(self) -> SimulatedInstrument:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Describing the instrument.

    def on(self, pattern: str, reply: str | Handler | None = None) -> Any:
        """Answer commands matching *pattern* (a regex, matched in full).

        With a string *reply* the answer is fixed; with a callable it is
        ``reply(match, instrument)``. Without *reply*, returns a decorator.
        """
        if reply is None:

            def decorate(handler: Handler) -> Handler:
                self.on(pattern, handler)
                return handler

            return decorate
        if isinstance(reply, str):
            text = reply
            handler: Handler = lambda match, instrument: text  # noqa: E731
        else:
            handler = reply
        self._handlers.append((re.compile(pattern), handler))
        return handler

    # Lifetime and the unplug/replug faults.

    @property
    def path(self) -> str:
        """The device path to open, stable across unplug and replug."""
        if self._folder is None:
            raise RuntimeError(f"{self!r} is not started")
        return os.path.join(self._folder, self.name)

    @property
    def plugged(self) -> bool:
        """True while the pty exists and the instrument answers."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SimulatedInstrument:
        """Create the pty and start answering; returns the instrument."""
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="caioc-sim-serial-")
        self.replug()
        return self

    def stop(self) -> None:
        """Unplug and remove the device path; idempotent."""
        self.unplug()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def unplug(self, timeout: float = 5.0) -> None:
        """Close the pty, as pulling a USB adapter out does; idempotent.

        Open ports on it fail from now on, and :attr:`path` disappears
        until :meth:`replug`.
        """
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        os.write(self._wake_write, b"x")
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"{self!r}: simulator thread did not stop")
        self._thread = None
        # The wake pipe is closed here, after the join, never by the thread:
        # the thread may have ended on its own and its numbers be reused.
        for descriptor in (self._wake_read, self._wake_write):
            os.close(descriptor)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def replug(self) -> None:
        """Create a fresh pty behind :attr:`path` and answer on it again."""
        if self.plugged:
            return
        self._master, self._slave = os.openpty()
        # Writes must never block the simulator for ever: with nobody reading
        # the port (an IOC stopped mid-stream) the pty fills up, and a
        # blocked write would keep unplug() from stopping the thread.
        os.set_blocking(self._master, False)
        # Raw mode: no echo, no newline translation, before anyone opens it.
        # The simulator keeps the slave open too: reading a master whose
        # slaves are all closed fails with EIO.
        tty.setraw(self._slave)
        self._wake_read, self._wake_write = os.pipe()
        self._stopping.clear()
        link = self.path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.symlink(os.ttyname(self._slave), link)
        self._thread = threading.Thread(
            target=self._serve, name=f"caioc-sim-{self.name}", daemon=True
        )
        self._thread.start()

    # Observing it from a test.

    def wait_for_commands(self, count: int, timeout: float = 5.0) -> list[str]:
        """Block until *count* commands have arrived in all; return them all."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise TimeoutError(
                    f"{self!r}: {len(self.received)} of {count} commands within {timeout} s"
                )
            return list(self.received)

    def wait_for_sent(self, count: int, timeout: float = 5.0) -> list[bytes]:
        """Block until *count* replies or messages have gone out; return them all."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.sent) >= count, timeout):
                raise TimeoutError(f"{self!r}: {len(self.sent)} of {count} sent within {timeout} s")
            return list(self.sent)

    def send(self, text: str | bytes) -> None:
        """Send one unsolicited line to the host (a status message, a reading)."""
        data = text.encode(self.encoding) if isinstance(text, str) else text
        self._write(data + self.write_terminator)

    def send_raw(self, data: bytes) -> None:
        """Send *data* as it is, with no terminator (a line cut off mid-way, noise)."""
        self._write(bytes(data))

    def every(
        self,
        period: float,
        message: str | bytes | Callable[[SimulatedInstrument], str | bytes | None],
    ) -> SimulatedStream:
        """Send *message* as a line every *period* seconds, until the stream stops.

        A callable *message* is called each time with the instrument and
        returns the line (None: skip this one), so a stream can follow
        :attr:`state`.
        """
        stream = SimulatedStream(self, period, message)
        with self._streams_lock:
            self._streams.append(stream)
        self._wake()
        return stream

    def _remove_stream(self, stream: SimulatedStream) -> None:
        with self._streams_lock:
            if stream in self._streams:
                self._streams.remove(stream)

    def _wake(self) -> None:
        # The serve thread recomputes its next stream time; nothing to do if unplugged.
        with contextlib.suppress(OSError):
            if self._thread is not None:
                os.write(self._wake_write, b"w")

    # The simulator thread.

    def _stream_delay(self) -> float | None:
        with self._streams_lock:
            if not self._streams:
                return None
            first = min(stream.next_time for stream in self._streams)
        return max(0.0, first - time.monotonic())

    def _send_due_lines(self) -> None:
        now = time.monotonic()
        with self._streams_lock:
            due = [stream for stream in self._streams if stream.next_time <= now]
        for stream in due:
            # Catch up by skipping, not bursting, after a pause (an unplug).
            stream.next_time = max(stream.next_time + stream.period, now)
            try:
                text = stream._text()
            except Exception:  # a broken stream must not kill the instrument
                _log.exception("%r: stream %r failed", self, stream)
                continue
            if text is not None:
                self.send(text)
                stream.sent += 1

    def _serve(self) -> None:
        buffer = bytearray()
        try:
            while not self._stopping.is_set():
                ready, _, _ = select.select(
                    [self._master, self._wake_read], [], [], self._stream_delay()
                )
                if self._wake_read in ready:
                    os.read(self._wake_read, 64)
                    if self._stopping.is_set():
                        break
                self._send_due_lines()
                if self._master not in ready:
                    continue
                try:
                    data = os.read(self._master, 4096)
                except BlockingIOError:
                    continue  # readable a moment ago, drained since: nothing lost
                except OSError:
                    break  # the pty is gone
                buffer += data
                while (end := buffer.find(self.read_terminator)) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + len(self.read_terminator)]
                    self._answer(line)
        finally:
            for descriptor in (self._master, self._slave):
                with contextlib.suppress(OSError):
                    os.close(descriptor)

    def _answer(self, line: bytes) -> None:
        command = line.decode(self.encoding, errors="backslashreplace")
        try:
            reply = self._reply_to(command)
        except Exception:  # a broken handler must not kill the instrument
            _log.exception("%r: handler for %r failed", self, command)
            reply = None
        with self._changed:
            self.received.append(command)
            self._changed.notify_all()
        if reply is None:
            return
        data = reply.encode(self.encoding) if isinstance(reply, str) else reply
        fault, detail = self.faults._take()
        if self.faults.reply_delay and self._stopping.wait(self.faults.reply_delay):
            return  # unplugged while "thinking"
        if fault == "silent":
            return
        if fault == "partial":
            keep = detail if detail is not None else max(1, len(data) // 2)
            self._write(data[:keep])
            return
        if fault == "garble":
            data = detail(data)
        self._write(data + self.write_terminator)

    def _reply_to(self, command: str) -> str | bytes | None:
        for pattern, handler in self._handlers:
            match = pattern.fullmatch(command)
            if match is not None:
                return handler(match, self)
        return self.unknown

    def _write(self, data: bytes) -> None:
        # One lock around the whole write: a reply and a send() from a test
        # thread must not interleave on the wire.
        with self._write_lock:
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self._master, view)
                except BlockingIOError:
                    # Nobody reads the port: wait for room, as a UART
                    # would hold its line, but give up when unplugged.
                    if self._stopping.is_set():
                        return
                    select.select([], [self._master], [], 0.05)
                    continue
                except OSError:
                    return  # the pty is gone: the bytes go nowhere, as on a cut cable
                view = view[written:]
        with self._changed:
            self.sent.append(data)
            self._changed.notify_all()

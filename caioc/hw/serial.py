"""Serial ports: line-oriented queries over pyserial, from threads or asyncio.

:class:`SerialPort` opens a port by path or by any pyserial URL
(``/dev/ttyUSB0``, ``loop://``, ``socket://host:port``, ``spy://...``)
through :func:`serial.serial_for_url`, and asks an instrument questions::

    port = SerialPort("/dev/ttyUSB0", baudrate=115200, read_terminator="\\r\\n")
    idn = port.query("*IDN?")                 # from a thread
    volts = await port.query_async("MEAS?")   # from a coroutine

How it runs, and why: every pyserial call of one port runs on that port's
own worker thread (the same :class:`~caioc.hw.BusWorker` the I2C buses
use), and asyncio callers await it. We chose that over fd-based reads on
the event loop because

* it works for every pyserial URL handler, several of which (``loop://``,
  ``rfc2217://``) have no file descriptor to watch;
* a query is one job on the worker, so queries from threads and from
  coroutines are serialised in one FIFO and a reply can never be handed
  to the wrong asker;
* the reply and inter-byte timeouts are enforced in one place, in plain
  blocking code, and the loop never runs a syscall on the port.

The cost is one mostly idle thread per port, which a board with a handful
of ports affords easily.

Timeouts follow StreamDevice: *reply_timeout* for the first byte of a
reply, *inter_byte_timeout* for each gap after it, and *query_timeout* for
the whole query including time queued behind other queries. Faults arrive
as :class:`~caioc.hw.BusTimeout` (no reply), :class:`~caioc.hw.PartialReply`
(the reply stopped before its terminator), :class:`~caioc.hw.BadReply`
(undecodable or not matching *expect*) and :class:`~caioc.hw.DeviceUnplugged`
(the port vanished). After an unplug the port reopens itself on the next
query, so a replugged instrument just works again.

Unsolicited lines
-----------------

Some instruments talk unasked: a stream of measurements (``T=23.5``),
alarms (``ALARM HIGH``), SRQ-style event lines. :meth:`SerialPort.listen`
hands every such line to a callback, :meth:`SerialPort.lines` queues them
for a coroutine (bounded, dropping the oldest and counting the drops), and
:class:`line_reading` binds them to a :class:`~caioc.hw.Device` reading,
the serial counterpart of an EPICS "I/O Intr" record. While anyone
listens, the worker reads the port between jobs, in slices that end as
soon as a query is waiting, so queries stay as prompt as before.

Which line is a reply and which is unsolicited (the framing rule):

* a line that arrives while no query waits for a reply is unsolicited;
* a query is never written in the middle of an incoming line: a line
  that has begun arriving is first let finish (at most
  *inter_byte_timeout* per gap), then the query goes out;
* after a query is written, the first line that comes back is its reply,
  unless the port has an *unsolicited* pattern: then lines that match it
  (:func:`re.match`) are passed to the listeners and the first line that
  does not is the reply. An instrument that may talk unasked while it is
  being queried needs that pattern, since it is the only way to tell;
* with an *unsolicited* pattern, lines that arrive outside a query and
  do not match it are late replies to queries that timed out: they are
  discarded, as they are when nobody listens at all;
* a line cut mid-way (bytes, then a gap longer than
  *inter_byte_timeout* with no terminator) is dropped and counted in
  :attr:`SerialPort.cut_lines`; it never reaches a listener, so a reading
  bound to the stream keeps its last good value (and goes stale, if it
  has *stale_after*, when no good line follows).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import serial  # type: ignore[import-untyped]  # pyserial ships no type hints

from caioc.ca import AlarmStatus

from ._errors import (
    BadReply,
    BusTimeout,
    DeviceClosed,
    DeviceUnplugged,
    HardwareError,
    PartialReply,
)
from ._serial_lines import LineBinding, LineListener, LineQueue, SerialLine, line_reading
from ._worker import BusWorker, PortStats

try:
    import termios

    _PORT_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, termios.error)
except ImportError:  # not a POSIX system
    _PORT_ERRORS = (serial.SerialException, OSError)

__all__ = [
    "LineBinding",
    "LineQueue",
    "SerialLine",
    "SerialPort",
    "line_reading",
    "parse_usb_address",
    "resolve_port",
]

_log = logging.getLogger("caioc.hw")

# How long one pyserial read may block; the reply timeouts are checked at
# least this often. Short enough for tight timeouts, long enough to idle.
_POLL_INTERVAL = 0.02
# Longest a listening slice holds the worker when nobody queries; it ends
# sooner, within one read, when a query is waiting.
_LISTEN_SLICE = 0.25
# How often a listening port that cannot open tries again.
_LISTEN_RETRY = 0.5


def parse_usb_address(address: str) -> tuple[int, int, str | None]:
    """``usb:VID:PID[:SERIAL]`` (hex ids) as (vid, pid, serial number or None)."""
    fields = address.split(":")[1:]
    if len(fields) not in (2, 3):
        raise ValueError(f"a USB serial address is usb:VID:PID or usb:VID:PID:SERIAL: {address!r}")
    try:
        vid, pid = int(fields[0], 16), int(fields[1], 16)
    except ValueError:
        raise ValueError(f"USB ids are hex numbers: {address!r}") from None
    return vid, pid, fields[2] if len(fields) == 3 else None


def resolve_port(address: int | str) -> str:
    """The device path or pyserial URL for a board file's serial *address*.

    ``usb:VID:PID[:SERIAL]`` (hex ids) is looked up among the present ports
    (:class:`~caioc.hw.DeviceUnplugged` if none matches, so the driver
    retries); anything else is a path or URL and is used as it is.
    """
    if not isinstance(address, str) or not address:
        raise ValueError(f"a serial port address is a path, URL or usb:VID:PID, not {address!r}")
    if not address.startswith("usb:"):
        return address
    vid, pid, serial_number = parse_usb_address(address)
    from serial.tools import list_ports  # type: ignore[import-untyped]

    matches = sorted(
        port.device
        for port in list_ports.comports()
        if port.vid == vid
        and port.pid == pid
        and (serial_number is None or port.serial_number == serial_number)
    )
    if not matches:
        raise DeviceUnplugged(
            f"no serial port with USB id {address[4:]} is present", source=address
        )
    if len(matches) > 1:
        # Which one is "the" port is a guess: say so, and make it repeatable.
        _log.warning(
            "%s matches %s; using %s (add the serial number)", address, matches, matches[0]
        )
    return str(matches[0])


class _Ticket:
    """One public call on its way to the worker (see ``SerialPort._waiting``)."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = False


def _as_bytes(text: str | bytes, encoding: str) -> bytes:
    return text.encode(encoding) if isinstance(text, str) else bytes(text)


class SerialPort:
    """A serial port for line-oriented command/reply instruments.

    *url* is a device path or a pyserial URL. *baudrate*, *bytesize*,
    *parity*, *stopbits*, *xonxoff* and *rtscts* are pyserial's framing
    options. Commands are sent followed by *write_terminator*; replies end
    with *read_terminator*; both are text in *encoding* (or bytes).

    The port is opened on first use (or by :meth:`open`), never in the
    constructor, so an instrument that is off at start-up is a fault to
    report, not a crash. After a disconnect it is reopened on the next
    call.

    *unsolicited* is a regular expression for the lines the instrument
    sends unasked (see "Unsolicited lines" in the module doc); without it,
    every line outside a query is unsolicited and the first line after a
    query is its reply.
    """

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        xonxoff: bool = False,
        rtscts: bool = False,
        read_terminator: str | bytes = "\n",
        write_terminator: str | bytes = "\n",
        encoding: str = "ascii",
        reply_timeout: float = 1.0,
        inter_byte_timeout: float = 0.1,
        write_timeout: float = 1.0,
        query_timeout: float | None = None,
        max_reply_bytes: int = 4096,
        unsolicited: str | re.Pattern[str] | None = None,
        name: str | None = None,
    ) -> None:
        self.url = url
        self.name = name or url
        self.encoding = encoding
        self.read_terminator = _as_bytes(read_terminator, encoding)
        self.write_terminator = _as_bytes(write_terminator, encoding)
        if not self.read_terminator:
            raise ValueError("read_terminator must not be empty")
        self.reply_timeout = reply_timeout
        self.inter_byte_timeout = inter_byte_timeout
        self.write_timeout = write_timeout
        self.query_timeout = (
            query_timeout if query_timeout is not None else write_timeout + reply_timeout + 2.0
        )
        self.max_reply_bytes = max_reply_bytes
        self.settings: dict[str, Any] = {
            "baudrate": baudrate,
            "bytesize": bytesize,
            "parity": parity,
            "stopbits": stopbits,
            "xonxoff": xonxoff,
            "rtscts": rtscts,
            "write_timeout": write_timeout,
            "timeout": max(0.001, min(_POLL_INTERVAL, inter_byte_timeout / 4, reply_timeout / 4)),
        }
        """Keyword arguments for :func:`serial.serial_for_url`."""
        self._port: Any = None  # a serial.Serial, touched only on the worker
        self._received = bytearray()  # bytes read past the last terminator
        # Not connected until the first call opens the port.
        self._worker = BusWorker(f"serial {self.name}", connected=False)
        self.unsolicited = re.compile(unsolicited) if unsolicited is not None else None
        """Lines matching this are unsolicited even during a query (None: no pattern)."""
        self.unsolicited_lines = 0
        """Unsolicited lines handed to the listeners so far."""
        self.cut_lines = 0
        """Incoming lines dropped because they stopped before their terminator."""
        self._listeners: list[LineListener] = []
        # Guards the listeners, the waiting count and the slice flag; taken
        # by callers, the worker and listen() alike, never for long.
        self._listen_lock = threading.Lock()
        self._waiting = 0  # public calls queued for the worker, not yet started
        self._slice_queued = False  # a listening slice is queued or running
        self._listen_retry_at = 0.0  # monotonic time a failed open may be retried

    def __repr__(self) -> str:
        state = "closed" if self.closed else "connected" if self.connected else "disconnected"
        return f"<SerialPort {self.name} {state}>"

    def __enter__(self) -> SerialPort:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._worker.closed

    @property
    def connected(self) -> bool:
        """True while the underlying port is open (it reopens on demand)."""
        return self._port is not None

    @property
    def worker(self) -> BusWorker:
        """The port's worker (for diagnostics and tests)."""
        return self._worker

    @property
    def stats(self) -> PortStats:
        """The port's counters: queries, errors, timeouts, the latest error."""
        return self._worker.stats

    def close(self) -> None:
        """Close the port and stop its worker; idempotent."""
        if self._worker.closed:
            return
        with self._listen_lock:
            self._listeners.clear()  # a listening slice ends at its next read
        # A wedged port is left to the abandoned worker.
        with contextlib.suppress(HardwareError):
            self._worker.call(self._disconnect, "close", self.write_timeout + 1.0, count=False)
        self._worker.close()

    # Public operations: each is one job on the worker.

    def open(self) -> None:
        """Open the port now (it otherwise opens on first use)."""
        self._run(self._connect, "open", self.query_timeout)

    async def open_async(self) -> None:
        """Like :meth:`open`, awaiting the worker."""
        await self._run_async(self._connect, "open", self.query_timeout)

    def query(self, command: str, *, expect: str | re.Pattern[str] | None = None) -> str:
        """Send *command* and return the reply line, without its terminator.

        With *expect*, a reply that does not match it in full raises
        :class:`~caioc.hw.BadReply`.
        """
        reply = self.query_bytes(command.encode(self.encoding) + self.write_terminator)
        return self._decode(reply, expect)

    async def query_async(
        self, command: str, *, expect: str | re.Pattern[str] | None = None
    ) -> str:
        """Like :meth:`query`, awaiting the worker without blocking the loop."""
        reply = await self.query_bytes_async(command.encode(self.encoding) + self.write_terminator)
        return self._decode(reply, expect)

    def query_bytes(self, data: bytes) -> bytes:
        """Send *data* as it is and return the raw reply, without its terminator."""
        deadline = time.monotonic() + self.query_timeout
        return self._run(lambda: self._exchange(data, deadline), "query", self.query_timeout)

    async def query_bytes_async(self, data: bytes) -> bytes:
        """Like :meth:`query_bytes`, awaiting the worker."""
        deadline = time.monotonic() + self.query_timeout
        job = lambda: self._exchange(data, deadline)  # noqa: E731
        return await self._run_async(job, "query", self.query_timeout)

    def write_line(self, command: str) -> None:
        """Send *command* and its terminator; expect no reply."""
        data = command.encode(self.encoding) + self.write_terminator
        self._run(lambda: self._send(data), "write", self.query_timeout)

    async def write_line_async(self, command: str) -> None:
        """Like :meth:`write_line`, awaiting the worker."""
        data = command.encode(self.encoding) + self.write_terminator
        await self._run_async(lambda: self._send(data), "write", self.query_timeout)

    def read_line(self, timeout: float | None = None) -> str:
        """Wait for one line the instrument sends unasked (at most *timeout*)."""
        limit = self.reply_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit + self.query_timeout
        line = self._run(lambda: self._receive(limit, deadline), "read", limit + self.query_timeout)
        return self._decode(line, None)

    async def read_line_async(self, timeout: float | None = None) -> str:
        """Like :meth:`read_line`, awaiting the worker."""
        limit = self.reply_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit + self.query_timeout
        job = lambda: self._receive(limit, deadline)  # noqa: E731
        return self._decode(await self._run_async(job, "read", limit + self.query_timeout), None)

    # Unsolicited lines.

    def listen(self, listener: LineListener) -> Callable[[], None]:
        """Call ``listener(line)`` with every unsolicited :class:`SerialLine`.

        The port is read between queries from now on (and opened if it is
        not open yet). *listener* runs on the port's worker thread: it must
        be quick and thread-safe, as :class:`LineQueue` is. Returns a
        function that stops the listening (idempotent).
        """
        if self._worker.closed:
            raise DeviceClosed(f"{self.name} is closed", source=self.name)
        with self._listen_lock:
            self._listeners.append(listener)

        def stop() -> None:
            with self._listen_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        self._resume_listening()
        return stop

    def lines(self, maxlen: int = 100) -> LineQueue:
        """A :class:`LineQueue` of the unsolicited lines, for a coroutine.

        At most *maxlen* lines wait in it; a flood drops the oldest and
        counts them (:attr:`LineQueue.dropped`). Call it on the event loop
        that will read it.
        """
        return LineQueue(self, maxlen)

    @property
    def listening(self) -> bool:
        """True while anybody listens for unsolicited lines."""
        return bool(self._listeners)

    # Plumbing shared by the sync and async faces.

    def _run(self, job: Any, description: str, timeout: float) -> Any:
        if self._worker.closed:
            raise DeviceClosed(f"{self.name} is closed", source=self.name)
        ticket, wrapped = self._ticketed(job)
        try:
            # The job watches its own deadline; the margin only catches a
            # pyserial call that never returns.
            return self._worker.call(wrapped, description, timeout + 0.5)
        finally:
            self._start(ticket)  # a call that never ran must not count as waiting

    async def _run_async(self, job: Any, description: str, timeout: float) -> Any:
        if self._worker.closed:
            raise DeviceClosed(f"{self.name} is closed", source=self.name)
        ticket, wrapped = self._ticketed(job)
        try:
            return await self._worker.call_async(wrapped, description, timeout + 0.5)
        finally:
            self._start(ticket)

    def _ticketed(self, job: Any) -> tuple[_Ticket, Any]:
        """*job* wrapped so a listening slice knows a call is waiting for the worker.

        Slices end as soon as ``_waiting`` is non-zero, and the call's job
        resumes the listening when it is done, so listening never delays a
        call by more than one read and never spins while calls queue.
        """
        ticket = _Ticket()
        with self._listen_lock:
            self._waiting += 1

        def wrapped() -> Any:
            self._start(ticket)
            try:
                return job()
            finally:
                self._resume_listening()

        return ticket, wrapped

    def _start(self, ticket: _Ticket) -> None:
        with self._listen_lock:
            if ticket.started:
                return
            ticket.started = True
            self._waiting -= 1
        self._resume_listening()

    def _resume_listening(self) -> None:
        """Queue a listening slice if anybody listens, no call waits and none is queued."""
        with self._listen_lock:
            if not self._listeners or self._waiting or self._slice_queued:
                return
            self._slice_queued = True
        try:
            self._worker.submit(self._listen_slice, "listen")
        except DeviceClosed:
            with self._listen_lock:
                self._slice_queued = False

    def _decode(self, reply: bytes, expect: str | re.Pattern[str] | None) -> str:
        try:
            text = reply.decode(self.encoding)
        except UnicodeDecodeError as exc:
            error = BadReply(
                f"{self.name}: reply is not {self.encoding}: {reply!r}",
                data=reply,
                source=self.name,
            )
            # The exchange itself was counted as a success when it came back.
            self._worker.stats.record_failure(error, counted=True)
            raise error from exc
        if expect is not None and re.fullmatch(expect, text) is None:
            pattern = expect.pattern if isinstance(expect, re.Pattern) else expect
            error = BadReply(
                f"{self.name}: reply {text!r} does not match {pattern!r}",
                data=reply,
                source=self.name,
            )
            self._worker.stats.record_failure(error, counted=True)
            raise error
        return text

    # Jobs: these run on the worker thread only.

    def _connect(self) -> Any:
        if self._port is None:
            try:
                # usb:VID:PID is looked up at each open: a replugged adapter
                # may come back as another /dev/ttyUSBn.
                self._port = serial.serial_for_url(resolve_port(self.url), **self.settings)
            except _PORT_ERRORS as exc:
                raise DeviceUnplugged(
                    f"{self.name}: cannot open the port: {exc}", source=self.name
                ) from exc
            self._received.clear()
        return self._port

    def _disconnect(self) -> None:
        port, self._port = self._port, None
        self._received.clear()
        if port is not None:
            # The port may be gone already; closing it is all we wanted.
            with contextlib.suppress(*_PORT_ERRORS):
                port.close()

    def _guarded(self, action: Any) -> Any:
        """Run *action(port)*; a failing port is dropped and reported as unplugged."""
        port = self._connect()
        try:
            return action(port)
        except HardwareError:
            raise
        except serial.SerialTimeoutException as exc:
            raise BusTimeout(
                f"{self.name}: write timed out", kind=AlarmStatus.WRITE, source=self.name
            ) from exc
        except _PORT_ERRORS as exc:
            self._disconnect()
            raise DeviceUnplugged(f"{self.name}: port failed: {exc}", source=self.name) from exc

    def _send(self, data: bytes) -> None:
        self._guarded(lambda port: port.write(data))

    def _exchange(self, data: bytes, deadline: float) -> bytes:
        if time.monotonic() >= deadline:
            # Queued too long: the asker has given up, so do not even ask.
            raise BusTimeout(f"{self.name}: query not sent in time", source=self.name)
        reopened = self._port is None
        try:
            self._start_exchange(data, deadline)
        except DeviceUnplugged:
            if reopened:
                raise
            # The port we had went stale while nobody used it (the device
            # was unplugged and came back). Nothing was sent on the dead
            # descriptor, so reopening and sending once more is safe.
            self._start_exchange(data, deadline)
        result: bytes = self._guarded(
            lambda port: self._read_reply(port, self.reply_timeout, deadline, route=True)
        )
        return result

    def _start_exchange(self, data: bytes, deadline: float) -> None:
        def run(port: Any) -> None:
            # Whatever arrived since the last query (a late reply to one
            # that timed out, an unsolicited line) must not be taken as the
            # answer to this one: it goes to the listeners or away.
            self._settle_input(port, deadline)
            port.write(data)

        self._guarded(run)

    def _settle_input(self, port: Any, deadline: float) -> None:
        """Empty the input before a query: lines to the listeners, a line in flight finished."""
        buffer = self._received
        waiting = port.in_waiting
        if waiting:
            buffer += port.read(waiting)
        last_byte = time.monotonic()
        while True:
            self._pass_on_lines(buffer)
            if not buffer:
                return
            # A line has begun arriving: writing now would make its end look
            # like our reply. Let it finish, unless it has stopped.
            now = time.monotonic()
            if (
                now - last_byte >= self.inter_byte_timeout
                or now >= deadline
                or len(buffer) > self.max_reply_bytes
            ):
                self._cut_line(buffer)
                return
            chunk = port.read(port.in_waiting or 1)
            if chunk:
                buffer += chunk
                last_byte = time.monotonic()

    def _pass_on_lines(self, buffer: bytearray) -> None:
        """Take every complete line out of *buffer*: unsolicited ones to the listeners.

        Outside a query every line is unsolicited unless the port has a
        pattern, which a line must then match; the rest are late replies.
        """
        terminator = self.read_terminator
        while (end := buffer.find(terminator)) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + len(terminator)]
            text = line.decode(self.encoding, errors="backslashreplace")
            if self.unsolicited is None or self.unsolicited.match(text):
                self._deliver(text)
            else:
                _log.debug("%s: discarded a late reply %r", self.name, text)

    def _cut_line(self, buffer: bytearray) -> None:
        self.cut_lines += 1
        _log.debug("%s: dropped a line cut after %d bytes: %r", self.name, len(buffer), buffer)
        buffer.clear()

    def _deliver(self, text: str) -> None:
        with self._listen_lock:
            listeners = list(self._listeners)
        if not listeners:
            return  # nobody listens: as before listening existed, it is dropped
        self.unsolicited_lines += 1
        line = SerialLine(text, time.time())
        for listener in listeners:
            try:
                listener(line)
            except Exception:  # a broken listener must not stop the port
                _log.exception("%s: unsolicited-line listener %r failed", self.name, listener)

    def _listen_slice(self) -> None:
        """Read unsolicited lines until a call waits (or for one slice at most)."""
        try:
            self._listen(time.monotonic() + _LISTEN_SLICE)
        finally:
            with self._listen_lock:
                self._slice_queued = False
            self._resume_listening()

    def _idle(self) -> bool:
        return bool(self._listeners) and not self._waiting and not self._worker.closed

    def _listen(self, until: float) -> None:
        while time.monotonic() < self._listen_retry_at:
            if not self._idle() or time.monotonic() >= until:
                return
            time.sleep(_POLL_INTERVAL)
        try:
            self._guarded(lambda port: self._read_unsolicited(port, until))
        except HardwareError as error:
            # Nobody asked, so nobody is told; the port's status says it
            # went away, and the next slice tries again a little later.
            _log.debug("%s: listening: %s", self.name, error)
            self._listen_retry_at = time.monotonic() + _LISTEN_RETRY
            if isinstance(error, DeviceUnplugged):
                self._worker.stats.set_connected(False)

    def _read_unsolicited(self, port: Any, until: float) -> None:
        buffer = self._received
        last_byte = time.monotonic()
        self._worker.stats.set_connected(True)
        while self._idle():
            chunk = port.read(port.in_waiting or 1)
            now = time.monotonic()
            if chunk:
                buffer += chunk
                last_byte = now
                self._pass_on_lines(buffer)
                if len(buffer) > self.max_reply_bytes:
                    self._cut_line(buffer)
            elif buffer and now - last_byte >= self.inter_byte_timeout:
                self._cut_line(buffer)
            if now >= until and not buffer:
                return  # a slice ends between lines, never inside one
            if now >= until + self.inter_byte_timeout:
                return  # a line still trickling in: finished by the next job

    def _receive(self, first_byte_timeout: float, deadline: float) -> bytes:
        result: bytes = self._guarded(
            lambda port: self._read_reply(port, first_byte_timeout, deadline)
        )
        return result

    def _read_reply(
        self, port: Any, first_byte_timeout: float, deadline: float, *, route: bool = False
    ) -> bytes:
        """The next line; with *route*, lines matching the unsolicited pattern are passed on."""
        buffer = self._received
        terminator = self.read_terminator
        start = time.monotonic()
        last_byte = start if buffer else None
        while True:
            end = buffer.find(terminator)
            if 0 <= end <= self.max_reply_bytes:
                reply = bytes(buffer[:end])
                del buffer[: end + len(terminator)]
                if route and self.unsolicited is not None:
                    text = reply.decode(self.encoding, errors="backslashreplace")
                    if self.unsolicited.match(text):
                        self._deliver(text)
                        if not buffer:
                            last_byte = None  # the reply's first byte is still to come
                        continue
                return reply
            if len(buffer) > self.max_reply_bytes:
                data = bytes(buffer)
                buffer.clear()
                raise BadReply(
                    f"{self.name}: no terminator in the first {self.max_reply_bytes} bytes",
                    data=data,
                    source=self.name,
                )
            chunk = port.read(port.in_waiting or 1)
            now = time.monotonic()
            if chunk:
                buffer += chunk
                last_byte = now
                continue
            if last_byte is None:
                if now - start >= first_byte_timeout:
                    raise BusTimeout(
                        f"{self.name}: no reply within {first_byte_timeout} s", source=self.name
                    )
            elif now - last_byte >= self.inter_byte_timeout:
                data = bytes(buffer)
                buffer.clear()
                raise PartialReply(
                    f"{self.name}: reply stopped after {len(data)} bytes: {data!r}",
                    data=data,
                    source=self.name,
                )
            if now >= deadline:
                raise BusTimeout(f"{self.name}: reply not complete in time", source=self.name)

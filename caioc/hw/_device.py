"""Devices: hardware bound to PVs, with faults turned into EPICS alarms.

A driver subclasses :class:`Device` (a :class:`~caioc.ioc.PVGroup`),
implements ``open``/``probe``/``initialise``/``close`` and declares its
quantities::

    class Thermometer(Device):
        temperature = reading(0.0, units="degC", precision=2, period=1.0)

        @temperature.reader
        async def temperature(self):
            raw = await self.chip.read_registers_async(0xFA, 2)
            return convert(raw)

        setpoint = setting(20.0, units="degC")

        @setpoint.writer
        async def setpoint(self, value):
            await self.chip.write_register_async(0x10, encode(value))

What the framework does with them:

* a reading is polled every ``period`` seconds (or set by I/O-interrupt
  code with :meth:`Device.post`), each read bounded by ``timeout``;
* a failed read keeps the last good value and its timestamp and raises the
  alarm the fault names (timeout -> TIMEOUT, cut-off reply -> READ, bad
  reply or wrong chip id -> CALC, all INVALID); a value never read is
  UDF/INVALID; ``stale_after`` seconds without a good read raise TIMEOUT;
* after ``comm_failures`` failures in a row, or an unplugged device, the
  device counts as disconnected (COMM/INVALID on every reading) and is
  reopened with back-off: ``open``, ``probe`` and ``initialise`` again;
* a failed write refuses the client's put (ECA_PUTFAIL, with the reason)
  and raises WRITE/INVALID on the setting;
* status PVs ``connected``, ``error_count`` and ``last_error`` say how the
  device is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, NamedTuple

from .._tasks import stop_tasks
from ..ca import ECA, AlarmSeverity, AlarmStatus
from ..ioc import PVGroup, pvproperty
from ..server import ChannelData, ChannelError
from ._errors import BadReply, DeviceUnplugged, HardwareError

__all__ = ["Device", "reading", "register_reading", "setting"]

log = logging.getLogger("caioc.hw")

Reader = Callable[[Any], Awaitable[Any]]
Writer = Callable[[Any, Any], Awaitable[None]]


def classify(error: BaseException) -> AlarmStatus:
    """The EPICS alarm condition a failure maps to."""
    if isinstance(error, HardwareError):
        return error.kind
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return AlarmStatus.TIMEOUT
    if isinstance(error, (ValueError, ArithmeticError)):
        return AlarmStatus.CALC  # the device answered nonsense
    if isinstance(error, (ConnectionError, OSError)):
        return AlarmStatus.COMM
    return AlarmStatus.READ


if sys.version_info >= (3, 11):

    async def _bounded(operation: Awaitable[Any], timeout: float | None) -> Any:
        """``await operation`` for at most ``timeout`` s (TimeoutError after).

        asyncio.timeout runs the operation in the caller's task, where
        wait_for would make a task for every read of every poll.
        """
        async with asyncio.timeout(timeout):
            return await operation

    def _cancel_count(task: asyncio.Task[Any]) -> int:
        return task.cancelling()

    def _uncancel(task: asyncio.Task[Any]) -> int:
        return task.uncancel()

else:  # pragma: no cover - Python 3.10

    async def _bounded(operation: Awaitable[Any], timeout: float | None) -> Any:
        return await asyncio.wait_for(operation, timeout)

    # No count of cancellation requests before 3.11: a deadline's is the only one.
    def _cancel_count(task: asyncio.Task[Any]) -> int:
        return 0

    def _uncancel(task: asyncio.Task[Any]) -> int:
        return 0


class reading(pvproperty):
    """A read-only PV whose value comes from the hardware."""

    def __init__(
        self,
        value: Any = 0.0,
        *,
        period: float | None = 1.0,
        timeout: float = 2.0,
        stale_after: float | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("read_only", True)
        super().__init__(value, **options)
        self.period = period
        self.timeout = timeout
        self.stale_after = stale_after
        self.read_function: Reader | None = None

    def reader(self, function: Reader) -> reading:
        """``async def f(self) -> value``: one hardware read."""
        self.read_function = function
        return self


class setting(pvproperty):
    """A writable PV whose puts go to the hardware."""

    def __init__(self, value: Any = 0.0, *, timeout: float = 2.0, **options: Any) -> None:
        super().__init__(value, **options)
        self.timeout = timeout
        self.write_function: Writer | None = None

    def writer(self, function: Writer) -> setting:
        """``async def f(self, value)``: one hardware write; raise to refuse."""
        self.write_function = function
        return self


class register_reading(reading):
    """A reading of a chip register, read by the framework: there is no reader to write.

    *register* is the register's address (a byte, or the bytes to write
    for chips with wider addresses); *format* a :mod:`struct` format of
    one value (``">h"``: a big-endian signed 16-bit word), whose size is
    the number of bytes read. The value is ``raw * scale + offset`` (a
    float when either is given), or what a :meth:`decoder` makes of the
    bytes. *port* names the device's attribute that reads the register:
    an :class:`~caioc.hw.I2CDevice` (``chip`` by default, as in the
    bundled I2C drivers)::

        class TMP117(Device):  # open() sets self.chip = bus.device(0x48)
            temperature = register_reading(0x00, ">h", scale=0.0078125, units="degC")
            config = register_reading(0x01, ">H", period=10.0)

    The register readings of a device that share a port, a period and a
    timeout are polled together: each tick reads them, one transfer
    each, in one job of the bus worker (one thread hand-off for the lot),
    and a register that fails fails its own reading only. A read on
    demand (``.PROC``, after a reconnect) reads the one register.
    """

    def __init__(
        self,
        register: int | bytes,
        format: str = ">H",
        value: Any = None,
        *,
        scale: float | None = None,
        offset: float = 0.0,
        port: str = "chip",
        **options: Any,
    ) -> None:
        layout = struct.Struct(format)
        if value is None:
            floating = scale is not None or offset != 0.0 or format[-1:] in ("e", "f", "d")
            value = 0.0 if floating else 0
        super().__init__(value, **options)
        if isinstance(register, int) and not 0 <= register <= 0xFF:
            raise ValueError(f"register {register!r} is not a byte; give wider addresses as bytes")
        self.register = register
        self.format = format
        self.size = layout.size
        self.scale = scale
        self.offset = offset
        self.port = port
        self.decode_function: Callable[[Any, bytes], Any] | None = None
        self._unpack = layout.unpack
        self.read_function = self._read_one

    def decoder(self, function: Callable[[Any, bytes], Any]) -> register_reading:
        """``def f(self, raw) -> value``: how the register's bytes become the value."""
        self.decode_function = function
        return self

    @property
    def batched(self) -> bool:
        """True unless a :meth:`reader` of the driver's own replaced the register read."""
        return getattr(self.read_function, "__func__", None) is register_reading._read_one

    def __set_name__(self, owner: type, attribute: str) -> None:
        super().__set_name__(owner, attribute)
        # The class body has run, decorators and all: the declaration is complete.
        if self.decode_function is None and len(self._unpack(bytes(self.size))) != 1:
            raise TypeError(
                f"{owner.__name__}.{attribute}: format {self.format!r} gives several "
                "values; give the reading a decoder"
            )

    def decode(self, device: Any, raw: bytes) -> Any:
        """The value of the register's bytes *raw* (a ValueError when they make none)."""
        if self.decode_function is not None:
            return self.decode_function(device, raw)
        (number,) = self._unpack(raw)
        if self.scale is None and self.offset == 0.0:
            return number
        return number * (1.0 if self.scale is None else self.scale) + self.offset

    async def _read_one(self, device: Any) -> Any:
        (raw,) = await getattr(device, self.port).read_registers_batch_async(
            [(self.register, self.size)], timeout=self.timeout
        )
        if isinstance(raw, Exception):
            raise raw
        return self.decode(device, raw)


class _RegisterGroup(NamedTuple):
    """Register readings of one device polled together: same port, period and timeout."""

    port: str
    timeout: float
    readings: list[tuple[str, register_reading]]
    requests: list[tuple[int | bytes, int]]


class _SharedScan:
    """Each tick of one period, the register readings of every device on the shared schedule.

    As an EPICS IOC scans the records of one period in one pass, one task
    reads, at each multiple of the period, the register groups of all the
    devices that set :attr:`Device.shared_schedule`: those on one I2C bus
    (with the same timeout) in a single job of its worker, one transfer per
    register, and the results of each device go back to it. A device whose
    port reads batches its own way (a subclass of ``I2CDevice`` with its own
    ``read_registers_batch_async``, another kind of port) is read through
    that port, in the same pass. Devices join on start-up and leave on
    shut-down; the scan ends with its last device.
    """

    _scans: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _SharedScan]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float) -> None:
        self.loop = loop
        self.period = period
        self.members: dict[Device, list[_RegisterGroup]] = {}
        self.task = loop.create_task(self._run())

    @classmethod
    def join(
        cls, loop: asyncio.AbstractEventLoop, period: float, device: Device, group: _RegisterGroup
    ) -> None:
        scans = cls._scans.setdefault(loop, {})
        scan = scans.get(period)
        if scan is None:
            scan = scans[period] = cls(loop, period)
        scan.members.setdefault(device, []).append(group)

    @classmethod
    def leave(cls, device: Device) -> None:
        for loop, scans in list(cls._scans.items()):
            for period, scan in list(scans.items()):
                if scan.members.pop(device, None) is not None and not scan.members:
                    del scans[period]
                    scan.task.cancel()
            if not scans:
                del cls._scans[loop]

    async def _run(self) -> None:
        loop, period = self.loop, self.period
        tick = math.floor(loop.time() / period) + 1
        while True:
            when = tick * period  # the same times, to the bit, as Device._poll's shared ticks
            tick += 1
            if when > loop.time():
                waiter = loop.create_future()
                loop.call_at(when, _set_if_pending, waiter)
                await waiter
            else:  # late (a slow pass): go on at once
                await asyncio.sleep(0)
            try:
                await self._scan()
            except Exception:  # a bug must not stop every device's polls
                log.exception("shared scan of period %s s failed", period)

    async def _scan(self) -> None:
        jobs: dict[tuple[Any, float], list[tuple[Device, _RegisterGroup, list[Any]]]] = {}
        passes: list[Awaitable[None]] = []
        loop, task = self.loop, asyncio.current_task()
        assert task is not None
        for device, groups in self.members.items():
            if not device._online:
                continue
            for group in groups:
                port = getattr(device, group.port, None)
                shared = getattr(port, "_shared_batch", None)
                target = shared(group.requests) if shared is not None else None
                if target is None:  # read through the device's own port
                    passes.append(device._poll_registers(loop, task, 0.0, *group))
                    continue
                bus, transfers = target
                jobs.setdefault((bus, group.timeout), []).append((device, group, transfers))
        for (bus, timeout), entries in jobs.items():
            passes.append(self._read_bus(bus, timeout, entries))
        if len(passes) == 1:
            await passes[0]
        elif passes:
            await asyncio.gather(*passes)

    async def _read_bus(
        self, bus: Any, timeout: float, entries: list[tuple[Device, _RegisterGroup, list[Any]]]
    ) -> None:
        """One worker job for the register groups of *entries*, all on *bus*."""
        requests: list[Any] = []
        for _, _, transfers in entries:
            requests += transfers
        try:
            results = await bus.transfers_to_async(requests, timeout=timeout)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            for device, group, _ in entries:
                if device in self.members:
                    await device._registers_failed(group.readings, error)
            return
        start = 0
        for device, group, _ in entries:
            end = start + len(group.requests)
            if device in self.members:  # not shut down meanwhile
                await device._registers_read(group.readings, results[start:end], group.port)
            start = end


def _set_if_pending(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Device(PVGroup):
    """Hardware behind PVs; subclasses implement the lifecycle hooks."""

    connected = pvproperty(0, enum_strings=["Disconnected", "Connected"], read_only=True)
    error_count = pvproperty(0, read_only=True, doc="Failures since start")
    last_error = pvproperty("", read_only=True, doc="The latest failure")

    # read_now's lookup table, built once per class by _declared_map.
    _declared_cache: ClassVar[dict[str, Any]]

    #: Failures in a row after which the device counts as disconnected.
    comm_failures = 3
    #: Reconnect back-off: first delay, factor, ceiling (seconds).
    reconnect_delays = (0.1, 2.0, 10.0)
    #: Poll on the IOC's common schedule: after the first read at start-up,
    #: a reading is read at the multiples of its period (of the loop's
    #: clock), so readings of one period come due at the same times in
    #: every device that sets this, as an EPICS IOC scans all records of
    #: one period together. Their reads then reach a shared bus in one
    #: batch (one worker wake-up) however far apart the devices started:
    #: less CPU, but each read of a large burst waits for the loop to take
    #: the results before it. The register readings of all such devices go
    #: further: one scan per period reads those of every device on a bus in
    #: a single worker job (see register_reading). False (the default):
    #: every period from the device's own start.
    shared_schedule = False

    def __init__(self, prefix: str = "", **kwargs: Any) -> None:
        super().__init__(prefix, **kwargs)
        self._failures = 0
        self._online = False
        self._good: dict[str, float] = {}  # reading attribute -> monotonic time of last good
        self._loops: list[asyncio.Task[None]] = []
        # Polls due at the same loop time share one timer: due time -> their waiters.
        self._wakeups: dict[float, list[asyncio.Future[float]]] = {}
        # Poll reads that must end by the same loop time share one timer too:
        # deadline -> the poll tasks reading; those a deadline has cancelled.
        self._reads: dict[float, set[asyncio.Task[Any]]] = {}
        self._overdue: set[asyncio.Task[Any]] = set()
        self._poll_start = 0.0
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False
        for attribute, declared in self._declared():
            if isinstance(declared, reading):
                # Never read yet: UDF/INVALID until the first good value.
                channel = self._channels[attribute]
                channel.set_nowait(channel.value, status=AlarmStatus.UDF, severity=3)
            elif isinstance(declared, setting) and declared.write_function is not None:
                self._channels[attribute].put_hook = self._put_hook(attribute, declared)

    # -- what drivers implement -------------------------------------------------

    async def open(self) -> None:
        """Acquire the transport (open the bus, the port ...)."""

    async def probe(self) -> None:
        """Check the device is the expected one; raise BadReply if not."""

    async def initialise(self) -> None:
        """Configure the device after (re)connecting."""

    async def close(self) -> None:
        """Put the device in a safe state and release the transport."""

    # -- lifecycle ----------------------------------------------------------------

    async def startup(self) -> None:
        """Connect (or start reconnecting) and start polling."""
        await super().startup()
        await self._connect_or_retry()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        # One schedule for all polls: readings of one period come due together.
        self._poll_start = loop.time()
        # Register readings of one port, period and timeout: one poll, one worker job a tick.
        groups: dict[tuple[str, float, float], list[tuple[str, register_reading]]] = {}
        for attribute, declared in self._declared():
            if not isinstance(declared, reading):
                continue
            if declared.period is not None and declared.read_function is not None:
                if isinstance(declared, register_reading) and declared.batched:
                    key = (declared.port, declared.period, declared.timeout)
                    groups.setdefault(key, []).append((attribute, declared))
                else:
                    poll = self._poll(declared.period, self._poll_read, attribute, declared)
                    self._loops.append(loop.create_task(poll))
            if declared.stale_after is not None:
                self._loops.append(loop.create_task(self._watch_stale(attribute, declared)))
        for (port, period, timeout), group in groups.items():
            requests = [(declared.register, declared.size) for _, declared in group]
            if not self.shared_schedule:
                poll = self._poll(period, self._poll_registers, port, timeout, group, requests)
                self._loops.append(loop.create_task(poll))
                continue
            # Read at once, then on the shared schedule's ticks with every other device.
            first = self._poll_registers(loop, task, 0.0, port, timeout, group, requests)
            self._loops.append(loop.create_task(first))
            _SharedScan.join(loop, period, self, _RegisterGroup(port, timeout, group, requests))

    async def shutdown(self) -> None:
        """Stop polling and reconnecting, then close the device (idempotent)."""
        if self._closed:
            return
        self._closed = True
        _SharedScan.leave(self)
        await stop_tasks([*self._loops, *([self._reconnecting] if self._reconnecting else [])])
        self._loops.clear()
        with contextlib.suppress(Exception):
            await self.close()
        await super().shutdown()

    async def _connect_or_retry(self) -> None:
        try:
            await self._connect()
        except Exception as error:
            await self._went_offline(error)

    async def _connect(self) -> None:
        await self.open()
        await self.probe()
        await self.initialise()
        self._online = True
        self._failures = 0
        await self.connected.set(1)

    async def _went_offline(self, error: BaseException) -> None:
        was_online = self._online
        self._online = False
        await self.connected.set(0)
        await self._record_error(error)
        # A device that answers, but wrongly (a wrong chip id, garbage), is a
        # CALC fault; one that does not answer is COMM.
        status = AlarmStatus.CALC if classify(error) == AlarmStatus.CALC else AlarmStatus.COMM
        for attribute, declared in self._declared():
            if isinstance(declared, reading):
                await self._channels[attribute].set_alarm(status, AlarmSeverity.INVALID)
        if was_online:
            log.warning("%s disconnected: %s", type(self).__name__, error)
            with contextlib.suppress(Exception):
                await self.close()
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        first, factor, ceiling = self.reconnect_delays
        delay = first
        while not self._closed:
            await asyncio.sleep(delay)
            try:
                await self._connect()
            except Exception as error:
                await self._record_error(error)
                with contextlib.suppress(Exception):
                    await self.close()
                delay = min(delay * factor, ceiling)
                continue
            log.info("%s reconnected", type(self).__name__)
            # Read at once rather than leave COMM up until each reading's
            # next poll, which may be a whole (long) period away.
            for attribute, declared in self._declared():
                if isinstance(declared, reading) and declared.read_function is not None:
                    if not self._online:
                        break
                    await self.read_now(attribute)
            if self._online:
                return
            # Connected, but those reads failed and took it offline again
            # (a chip that answers its probe, not its data): this task is
            # still the one reconnecting, so it goes on trying.
            delay = min(delay * factor, ceiling)

    async def _record_error(self, error: BaseException) -> None:
        await self.error_count.set(int(self.error_count.value) + 1)
        text = f"{type(error).__name__}: {error}"
        await self.last_error.set(text.encode()[:39].decode(errors="ignore"))

    # -- readings ---------------------------------------------------------------------

    async def _poll(self, period: float, read: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Every *period* s while online: ``await read(loop, task, woken, *args)``.

        *woken* is the loop time the tick began (reads time out from it).
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        # The first read at once; then at start + n periods, n = 1, 2 ... or,
        # on the shared schedule, at the multiples of the period to come (the
        # same times, to the bit, in every device: see shared_schedule).
        woken = loop.time()
        start, tick = self._poll_start, 1
        if self.shared_schedule:
            start, tick = 0.0, math.floor(woken / period) + 1
        while True:
            if self._online:
                await read(loop, task, woken, *args)
            next_time = start + tick * period
            tick += 1
            if next_time > loop.time():
                woken = await self._wake_at(loop, next_time)
            else:  # late (a slow read): go on at once, as sleep(0) would
                await asyncio.sleep(0)
                woken = loop.time()

    def _wake_at(self, loop: asyncio.AbstractEventLoop, when: float) -> asyncio.Future[float]:
        """A future done, with the loop time then, at *when*; the polls due then share one timer."""
        waiter: asyncio.Future[float] = loop.create_future()
        waiters = self._wakeups.get(when)
        if waiters is None:
            waiters = self._wakeups[when] = []
            loop.call_at(when, self._wake, loop, when)
        waiters.append(waiter)
        return waiter

    def _wake(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        now = loop.time()
        for waiter in self._wakeups.pop(when, ()):
            if not waiter.done():  # a poll cancelled meanwhile has a cancelled waiter
                waiter.set_result(now)

    async def _poll_read(
        self,
        loop: asyncio.AbstractEventLoop,
        task: asyncio.Task[Any],
        woken: float,
        attribute: str,
        declared: reading,
    ) -> None:
        """One polled read, cancelled (a TimeoutError) if not ended ``timeout`` after *woken*.

        The reads of one poll tick share their deadline (the tick's time
        plus the timeout), and so one loop timer, where ``asyncio.timeout``
        would make and cancel a timer for every read. The cancellation is
        counted as asyncio.timeout counts it, so a cancellation from
        elsewhere (shutdown) that comes meanwhile still goes through.
        """
        assert declared.read_function is not None
        deadline = woken + declared.timeout
        reads = self._reads.get(deadline)
        if reads is None:
            reads = self._reads[deadline] = set()
            loop.call_at(deadline, self._time_out_reads, deadline)
        reads.add(task)
        cancelling = _cancel_count(task)
        timed_out = False
        try:
            try:
                value = await declared.read_function(self)
            finally:
                reads.discard(task)
                if task in self._overdue:  # the deadline came: take its cancellation back
                    self._overdue.discard(task)
                    timed_out = _uncancel(task) <= cancelling
        except asyncio.CancelledError:
            if not timed_out:
                raise
            error: Exception = TimeoutError(f"no answer within {declared.timeout} s")
        except Exception as exception:
            error = exception
        else:
            await self._read_succeeded(attribute, value)
            return
        await self._read_failed(attribute, declared, error)

    async def _poll_registers(
        self,
        loop: asyncio.AbstractEventLoop,
        task: asyncio.Task[Any],
        woken: float,
        port: str,
        timeout: float,
        group: list[tuple[str, register_reading]],
        requests: list[tuple[int | bytes, int]],
    ) -> None:
        """One tick of a group of register readings: one worker job reads them all.

        A failed register (a NACK) fails its own reading; a failure of the
        whole job (the bus timed out, closed) fails each of them, as the
        same failures of separate reads would.
        """
        try:
            results: list[Any] = await getattr(self, port).read_registers_batch_async(
                requests, timeout=timeout
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await self._registers_failed(group, error)
            return
        await self._registers_read(group, results, port)

    async def _registers_failed(
        self, group: list[tuple[str, register_reading]], error: Exception
    ) -> None:
        for attribute, declared in group:
            if not self._online:
                return  # gone offline: every reading has its COMM alarm
            await self._read_failed(attribute, declared, error)

    async def _registers_read(
        self, group: list[tuple[str, register_reading]], results: list[Any], port: str
    ) -> None:
        """Post the values of a group's registers; fail the readings whose read failed."""
        if len(results) != len(group):  # a port of the driver's own that miscounts
            error = BadReply(f"{port}: {len(results)} results for {len(group)} registers")
            await self._registers_failed(group, error)
            return
        plain = type(self).post is Device.post  # then post without a coroutine each
        for (attribute, declared), raw in zip(group, results, strict=True):
            if not self._online:
                return
            if isinstance(raw, Exception):
                await self._read_failed(attribute, declared, raw)
                continue
            try:
                value = declared.decode(self, raw)
            except Exception as error:
                await self._read_failed(attribute, declared, error)
                continue
            if plain:
                self._post_now(attribute, value, None)
                self._failures = 0
            else:
                await self._read_succeeded(attribute, value)

    def _time_out_reads(self, deadline: float) -> None:
        for task in self._reads.pop(deadline, ()):
            self._overdue.add(task)
            task.cancel()

    async def read_now(self, attribute: str) -> Any:
        """Read one reading from the hardware now; returns the value or None."""
        declared = type(self)._declared_map()[attribute]
        assert isinstance(declared, reading) and declared.read_function is not None
        return await self._read_reading(attribute, declared)

    async def _read_reading(self, attribute: str, declared: reading) -> Any:
        assert declared.read_function is not None
        try:
            value = await _bounded(declared.read_function(self), declared.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await self._read_failed(attribute, declared, error)
            return None
        await self._read_succeeded(attribute, value)
        return value

    async def _read_succeeded(self, attribute: str, value: Any) -> None:
        if type(self).post is Device.post:
            self._post_now(attribute, value, None)  # the same, without a coroutine
        else:
            await self.post(attribute, value)  # a driver's own post (a filter, a conversion)
        self._failures = 0

    async def _process(self, attribute: str) -> None:
        """A ``.PROC`` write to a reading reads the hardware now."""
        declared = type(self)._declared_map().get(attribute)
        if not isinstance(declared, reading) or declared.read_function is None:
            await super()._process(attribute)
            return
        if self._channels[attribute].check_disabled() or not self._online:
            return  # disabled, or the reconnect loop is already at work
        await self.read_now(attribute)

    async def post(self, attribute: str, value: Any, *, timestamp: float | None = None) -> None:
        """Publish a good value of a reading (polls and I/O interrupts use this).

        *timestamp* (POSIX seconds) is when the hardware saw the value, for
        I/O-interrupt updates that carry their own time (a GPIO edge's
        kernel timestamp); None: now.
        """
        self._post_now(attribute, value, timestamp)

    def _post_now(self, attribute: str, value: Any, timestamp: float | None) -> None:
        self._channels[attribute].set_nowait(value, timestamp=timestamp)
        if not (isinstance(value, float) and math.isnan(value)):  # NaN is UDF by itself
            self._good[attribute] = time.monotonic()

    async def _read_failed(self, attribute: str, declared: reading, error: BaseException) -> None:
        self._failures += 1
        await self._record_error(error)
        channel = self._channels[attribute]
        if isinstance(error, DeviceUnplugged) or self._failures >= self.comm_failures:
            await self._went_offline(error)
            return
        # Keep the last good value and its timestamp; say what went wrong.
        await channel.set_alarm(classify(error), AlarmSeverity.INVALID)

    async def _watch_stale(self, attribute: str, declared: reading) -> None:
        """Check a reading's age a few times per ``stale_after``, polled or not."""
        assert declared.stale_after is not None
        while True:
            await asyncio.sleep(declared.stale_after / 4)
            await self._check_stale(attribute, declared)

    async def _check_stale(self, attribute: str, declared: reading) -> None:
        assert declared.stale_after is not None
        last = self._good.get(attribute)
        channel = self._channels[attribute]
        # Never read (UDF), or already flagged INVALID (COMM, CALC, READ,
        # TIMEOUT ...): that alarm says more than a stale one would.
        if last is None or channel.alarm_severity == AlarmSeverity.INVALID:
            return
        if time.monotonic() - last > declared.stale_after:
            await channel.set_alarm(AlarmStatus.TIMEOUT, AlarmSeverity.INVALID)

    # -- settings ------------------------------------------------------------------------

    def _put_hook(self, attribute: str, declared: setting) -> Callable[..., Awaitable[Any]]:
        async def hook(channel: ChannelData, value: Any) -> Any:
            assert declared.write_function is not None
            if not self._online:
                raise ChannelError(ECA.PUTFAIL, f"{channel!r}: the device is disconnected")
            try:
                await _bounded(declared.write_function(self, value), declared.timeout)
            except ChannelError:
                raise
            except Exception as error:
                await self._record_error(error)
                await channel.set_alarm(AlarmStatus.WRITE, AlarmSeverity.INVALID)
                if isinstance(error, DeviceUnplugged):
                    await self._went_offline(error)
                raise ChannelError(ECA.PUTFAIL, f"write failed: {error}") from error
            return value

        return hook

    @classmethod
    def _declared_map(cls) -> dict[str, Any]:
        cached: dict[str, Any] | None = cls.__dict__.get("_declared_cache")
        if cached is None:
            cached = dict(cls._declared())
            cls._declared_cache = cached
        return cached

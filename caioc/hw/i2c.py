"""I2C: a bus (smbus2 on its own worker thread) and devices on it.

:class:`I2CBus` wraps an :class:`smbus2.SMBus` (or anything with the same
methods, such as :class:`caioc.hw.sim.SimulatedI2CBus`). Every call runs
on the bus's one worker thread, in order, and gives up after the bus
timeout with :class:`~caioc.hw.BusTimeout`, so a wedged bus never blocks
the caller for ever and never blocks the event loop: each method has an
``..._async`` twin that awaits the worker.

Errors from the kernel are translated here, at the boundary, into the
domain exceptions of :mod:`caioc.hw`:

=================================  =====================================
``OSError`` errno                  raised as
=================================  =====================================
EREMOTEIO (121), ENXIO (6)         :class:`~caioc.hw.NoAcknowledge`
ETIMEDOUT (110)                    :class:`~caioc.hw.BusTimeout`
ENODEV, ENOENT, EBADF, ESHUTDOWN   :class:`~caioc.hw.DeviceUnplugged`
any other                          :class:`~caioc.hw.HardwareError`
=================================  =====================================

:class:`I2CDevice` is an address on a bus, in the style of Adafruit
BusDevice's ``I2CDevice``: it reads into caller buffers
(:meth:`~I2CDevice.readinto`, :meth:`~I2CDevice.write_then_readinto`),
closes idempotently, works as a context manager and raises
:class:`~caioc.hw.DeviceClosed` when used after ``close()``.

Combined write-then-read transfers (:meth:`I2CBus.write_then_read`) use
``i2c_rdwr`` with a repeated start, so they have no 32-byte SMBus limit.
Any other smbus2 call runs on the worker through :meth:`I2CBus.call`
(``bus.call(lambda smbus: smbus.read_i2c_block_data(0x48, 0, 8))``), for
example on an SMBus-only adapter that has no ``i2c_rdwr``.
"""

from __future__ import annotations

import asyncio
import errno
import functools
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

from smbus2 import SMBus, i2c_msg

from caioc.ca import AlarmStatus

from ._clock import REAL_CLOCK, Clock
from ._errors import BusTimeout, DeviceClosed, DeviceUnplugged, HardwareError, NoAcknowledge
from ._worker import BusDevice, BusWorker, WorkerBus

__all__ = ["I2CBus", "I2CDevice", "SMBusLike"]

T = TypeVar("T")

_NACK_ERRNOS = frozenset({errno.EREMOTEIO, errno.ENXIO})
_GONE_ERRNOS = frozenset({errno.ENODEV, errno.ENOENT, errno.EBADF, errno.ESHUTDOWN})

Buffer = bytes | bytearray | memoryview
WritableBuffer = bytearray | memoryview

#: How many prepared reads (address, bytes written, length) a bus keeps.
_PREPARED_READS = 256


class SMBusLike(Protocol):
    """The part of :class:`smbus2.SMBus` that :class:`I2CBus` uses."""

    def close(self) -> None:
        """Release the bus."""
        ...

    def write_quick(self, i2c_addr: int, /) -> None:
        """Address the device with no data (a presence probe)."""
        ...

    def read_byte(self, i2c_addr: int, /) -> int:
        """Read one byte with no register."""
        ...

    def write_byte(self, i2c_addr: int, value: int, /) -> None:
        """Write one byte with no register."""
        ...

    def read_byte_data(self, i2c_addr: int, register: int, /) -> int:
        """Read the byte at *register*."""
        ...

    def write_byte_data(self, i2c_addr: int, register: int, value: int, /) -> None:
        """Write *value* to *register*."""
        ...

    def read_word_data(self, i2c_addr: int, register: int, /) -> int:
        """Read a little-endian 16-bit word at *register*."""
        ...

    def write_word_data(self, i2c_addr: int, register: int, value: int, /) -> None:
        """Write a little-endian 16-bit word to *register*."""
        ...

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int, /) -> list[int]:
        """Read up to 32 bytes from *register* on."""
        ...

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int], /) -> None:
        """Write up to 32 bytes from *register* on."""
        ...

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None:
        """Run several messages as one transfer with repeated starts."""
        ...


def _translate(exc: OSError, description: str, source: str, write: bool) -> HardwareError:
    """The domain exception for an OSError raised by an SMBus call."""
    kind = AlarmStatus.WRITE if write else AlarmStatus.READ
    message = f"{source}: {description}: {exc.strerror or exc}"
    if exc.errno in _NACK_ERRNOS:
        return NoAcknowledge(message, kind=kind, source=source, error_number=exc.errno or 0)
    if exc.errno == errno.ETIMEDOUT:
        return BusTimeout(message, source=source)
    if exc.errno in _GONE_ERRNOS:
        return DeviceUnplugged(message, source=source)
    return HardwareError(message, kind=kind, source=source)


class I2CBus(WorkerBus):
    """An I2C bus whose calls run serialised on one worker thread.

    *bus* is an adapter number (``1`` for ``/dev/i2c-1``), a device path, or
    an object with the :class:`smbus2.SMBus` methods (a simulated bus);
    the :class:`I2CBus` owns it and closes it on :meth:`close`.

    *timeout* (seconds) bounds every call, including time spent queued
    behind other calls. *clock* measures it; by default the backend's own
    ``clock`` attribute when it has one (a simulated bus on a virtual
    clock), else the real clock.
    """

    def __init__(
        self,
        bus: int | str | SMBusLike,
        *,
        timeout: float = 1.0,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(bus, int | str):
            label = f"i2c-{bus}" if isinstance(bus, int) else bus
            try:
                backend: SMBusLike = SMBus(bus)
            except FileNotFoundError as exc:
                raise DeviceUnplugged(
                    f"{label}: no such I2C adapter ({exc})", source=label
                ) from exc
            except PermissionError as exc:
                raise HardwareError(
                    f"{label}: permission denied (is the user in the i2c group?)", source=label
                ) from exc
        else:
            backend = bus
            label = str(getattr(bus, "name", None) or "i2c")
        self.name = name or label
        self.timeout = timeout
        self.clock: Clock = clock or getattr(backend, "clock", None) or REAL_CLOCK
        self._smbus = backend
        self._worker = BusWorker(self.name, clock=self.clock)
        # (address, written, length) -> (description, job) of a read transfer
        self._prepared: dict[tuple[int, bytes, int], tuple[str, Callable[[], bytes]]] = {}

    def close(self) -> None:
        """Stop the worker and close the adapter; idempotent."""
        if self._worker.closed:
            return
        self._worker.shutdown()
        # Close from here, not on the worker: if the worker is wedged in a
        # call, closing the adapter is what may set it free.
        self._smbus.close()
        self._worker.join()

    def device(self, address: int, *, probe: bool = False) -> I2CDevice:
        """An :class:`I2CDevice` at *address* on this bus."""
        return I2CDevice(self, address, probe=probe)

    # The one place calls enter the worker; errors are translated there.

    def _job(
        self, description: str, write: bool, function: Callable[[SMBusLike], T]
    ) -> Callable[[], T]:
        smbus, name = self._smbus, self.name

        def job() -> T:
            try:
                return function(smbus)
            except OSError as exc:
                if isinstance(exc, HardwareError):
                    raise
                raise _translate(exc, description, name, write) from exc

        return job

    def call(
        self,
        function: Callable[[SMBusLike], T],
        *,
        description: str = "call",
        write: bool = False,
        timeout: float | None = None,
    ) -> T:
        """Run ``function(smbus)`` on the worker: the escape hatch for other calls.

        *write* says which alarm a failure maps to; *timeout* overrides the
        bus timeout for this call.
        """
        if self._worker.closed:
            raise DeviceClosed(f"{self.name} is closed", source=self.name)
        job = self._job(description, write, function)
        return self._worker.call(job, description, self.timeout if timeout is None else timeout)

    async def call_async(
        self,
        function: Callable[[SMBusLike], T],
        *,
        description: str = "call",
        write: bool = False,
        timeout: float | None = None,
    ) -> T:
        """Like :meth:`call`, awaiting the worker without blocking the loop."""
        if self._worker.closed:
            raise DeviceClosed(f"{self.name} is closed", source=self.name)
        job = self._job(description, write, function)
        limit = self.timeout if timeout is None else timeout
        return await self._worker.call_async(job, description, limit)

    async def _operate_async(self, operation: tuple[str, bool, Callable[[SMBusLike], T]]) -> T:
        """:meth:`call_async` of an operation below, with the bus timeout."""
        description, write, function = operation
        if self._worker.closed:
            raise DeviceClosed(f"{self.name} is closed", source=self.name)
        job = self._job(description, write, function)
        return await self._worker.call_async(job, description, self.timeout)

    def _transfer(self, address: int, data: Buffer, length: int) -> tuple[str, Callable[[], bytes]]:
        """(description, job) of a write-then-read transfer (``i2c_rdwr``, repeated start).

        A read's messages and job are built once per (address, bytes
        written, length) and kept: a poll reads the same registers over and
        over, and building two ctypes messages costs more than the
        simulated transfer itself. Sharing them is safe because only the
        bus's one worker thread runs them, one call at a time.
        """
        out = bytes(data)
        if not length:
            if not out:
                raise ValueError("nothing to transfer: no bytes to write and none to read")
            return self._prepare_transfer(address, out, 0)
        key = (address, out, length)
        prepared = self._prepared.get(key)
        if prepared is None:
            if len(self._prepared) >= _PREPARED_READS:
                self._prepared.clear()  # registers read once each (a dump): start afresh
            prepared = self._prepared[key] = self._prepare_transfer(address, out, length)
        return prepared

    def _prepare_transfer(
        self, address: int, out: bytes, length: int
    ) -> tuple[str, Callable[[], bytes]]:
        if not length:
            write = i2c_msg.write(address, out)

            def run(bus: SMBusLike) -> bytes:
                bus.i2c_rdwr(write)
                return b""

        else:
            read = i2c_msg.read(address, length)
            messages = (i2c_msg.write(address, out), read) if out else (read,)
            # The bytes read, as bytes(read) gives them, but sliced from the
            # message's ctypes pointer: bytes() goes through ctypes.string_at,
            # whose foreign call costs about a microsecond per read.
            buffer = read.buf

            def run(bus: SMBusLike) -> bytes:
                bus.i2c_rdwr(*messages)
                return buffer[:length]

        description = _describe_transfer(address, len(out), length)
        return description, self._job(description, not length, run)

    def _transfer_sync(self, address: int, data: Buffer, length: int) -> bytes:
        if self._worker.closed:
            raise DeviceClosed(f"{self.name} is closed", source=self.name)
        description, job = self._transfer(address, data, length)
        return self._worker.call(job, description, self.timeout)

    def _transfer_async(
        self, address: int, data: Buffer, length: int
    ) -> Coroutine[Any, Any, bytes]:
        """The worker's call of a transfer, to await (a plain function: one frame less per read)."""
        if self._worker.closed:
            raise DeviceClosed(f"{self.name} is closed", source=self.name)
        description, job = self._transfer(address, data, length)
        return self._worker.call_async(job, description, self.timeout)

    # Operations: each builds (description, direction, function) once, and
    # the sync and async methods share it.

    @staticmethod
    def _probe(address: int) -> tuple[str, bool, Callable[[SMBusLike], None]]:
        return f"probe 0x{address:02x}", True, lambda bus: bus.write_quick(address)

    @staticmethod
    def _read_byte_data(
        address: int, register: int
    ) -> tuple[str, bool, Callable[[SMBusLike], int]]:
        return (
            f"read_byte_data(0x{address:02x}, 0x{register:02x})",
            False,
            lambda bus: bus.read_byte_data(address, register),
        )

    @staticmethod
    def _write_byte_data(
        address: int, register: int, value: int
    ) -> tuple[str, bool, Callable[[SMBusLike], None]]:
        return (
            f"write_byte_data(0x{address:02x}, 0x{register:02x})",
            True,
            lambda bus: bus.write_byte_data(address, register, value),
        )

    @staticmethod
    def _read_word_data(
        address: int, register: int
    ) -> tuple[str, bool, Callable[[SMBusLike], int]]:
        return (
            f"read_word_data(0x{address:02x}, 0x{register:02x})",
            False,
            lambda bus: bus.read_word_data(address, register),
        )

    @staticmethod
    def _write_word_data(
        address: int, register: int, value: int
    ) -> tuple[str, bool, Callable[[SMBusLike], None]]:
        return (
            f"write_word_data(0x{address:02x}, 0x{register:02x})",
            True,
            lambda bus: bus.write_word_data(address, register, value),
        )

    def probe(self, address: int) -> bool:
        """True if a device acknowledges *address* (an SMBus quick write)."""
        try:
            description, write, function = self._probe(address)
            self.call(function, description=description, write=write)
        except NoAcknowledge:
            return False
        return True

    async def probe_async(self, address: int) -> bool:
        """Like :meth:`probe`, awaiting the worker."""
        try:
            await self._operate_async(self._probe(address))
        except NoAcknowledge:
            return False
        return True

    def read_byte_data(self, address: int, register: int) -> int:
        """Read the byte at *register* of the device at *address*."""
        description, write, function = self._read_byte_data(address, register)
        return self.call(function, description=description, write=write)

    async def read_byte_data_async(self, address: int, register: int) -> int:
        """Like :meth:`read_byte_data`, awaiting the worker."""
        return await self._operate_async(self._read_byte_data(address, register))

    def write_byte_data(self, address: int, register: int, value: int) -> None:
        """Write the byte *value* to *register*."""
        description, write, function = self._write_byte_data(address, register, value)
        self.call(function, description=description, write=write)

    async def write_byte_data_async(self, address: int, register: int, value: int) -> None:
        """Like :meth:`write_byte_data`, awaiting the worker."""
        await self._operate_async(self._write_byte_data(address, register, value))

    def read_word_data(self, address: int, register: int) -> int:
        """Read the SMBus (little-endian) 16-bit word at *register*."""
        description, write, function = self._read_word_data(address, register)
        return self.call(function, description=description, write=write)

    async def read_word_data_async(self, address: int, register: int) -> int:
        """Like :meth:`read_word_data`, awaiting the worker."""
        return await self._operate_async(self._read_word_data(address, register))

    def write_word_data(self, address: int, register: int, value: int) -> None:
        """Write the SMBus (little-endian) 16-bit word *value* to *register*."""
        description, write, function = self._write_word_data(address, register, value)
        self.call(function, description=description, write=write)

    async def write_word_data_async(self, address: int, register: int, value: int) -> None:
        """Like :meth:`write_word_data`, awaiting the worker."""
        await self._operate_async(self._write_word_data(address, register, value))

    def write_then_read(self, address: int, data: Buffer, length: int) -> bytes:
        """Write *data*, then (repeated start) read *length* bytes; no size limit.

        Either side may be empty: ``write_then_read(a, b"", 6)`` is a plain
        read, ``write_then_read(a, b"\\x01\\x02", 0)`` a plain write.
        """
        return self._transfer_sync(address, data, length)

    async def write_then_read_async(self, address: int, data: Buffer, length: int) -> bytes:
        """Like :meth:`write_then_read`, awaiting the worker."""
        return await self._transfer_async(address, data, length)

    def read_block(self, address: int, register: int, length: int) -> bytes:
        """Read *length* bytes from *register* on (the device auto-increments)."""
        return self.write_then_read(address, bytes([register]), length)

    async def read_block_async(self, address: int, register: int, length: int) -> bytes:
        """Like :meth:`read_block`, awaiting the worker."""
        return await self._transfer_async(address, bytes((register,)), length)

    def write_block(self, address: int, register: int, data: Buffer) -> None:
        """Write *data* to *register* on, in one transfer; no size limit."""
        self.write_then_read(address, bytes([register]) + bytes(data), 0)

    async def write_block_async(self, address: int, register: int, data: Buffer) -> None:
        """Like :meth:`write_block`, awaiting the worker."""
        await self.write_then_read_async(address, bytes([register]) + bytes(data), 0)

    # Several transfers in one worker job: one thread hand-off for them all.

    def transfers(
        self,
        address: int,
        requests: Sequence[tuple[Buffer, int]],
        *,
        timeout: float | None = None,
    ) -> list[bytes | HardwareError]:
        """Run the write-then-read transfers *requests* (``(data, length)`` each) back to back.

        They are separate transfers (each with its own stop), run on the
        worker as one job, so the calling thread and the worker meet once
        for all of them. Each item of the result is the bytes read (``b""``
        for a plain write) or, if that transfer failed, its
        :class:`~caioc.hw.HardwareError` (a NACK ...): the transfers after a
        failed one still run. Each counts as one call in :attr:`stats`.
        *timeout* (default: the bus timeout) bounds them all together;
        past it, or if the bus is closed, the call raises for all of them.
        """
        return self.transfers_to(
            [(address, data, length) for data, length in requests], timeout=timeout
        )

    async def transfers_async(
        self,
        address: int,
        requests: Sequence[tuple[Buffer, int]],
        *,
        timeout: float | None = None,
    ) -> list[bytes | HardwareError]:
        """Like :meth:`transfers`, awaiting the worker."""
        triples = [(address, data, length) for data, length in requests]
        return await self.transfers_to_async(triples, timeout=timeout)

    def transfers_to(
        self, requests: Sequence[tuple[int, Buffer, int]], *, timeout: float | None = None
    ) -> list[bytes | HardwareError]:
        """:meth:`transfers` with an address for each: ``(address, data, length)`` items.

        For the transfers of several devices on the bus in one job (the
        register readings of a shared poll schedule).
        """
        description, job = self._transfers(requests)
        if self._worker.closed:
            raise DeviceClosed(f"{self.name} is closed", source=self.name)
        limit = self.timeout if timeout is None else timeout
        try:
            results = self._worker.call(job, description, limit, count=False)
        except Exception as error:
            self._count(error, len(requests))
            raise
        self._count(results, 0)
        return results

    async def transfers_to_async(
        self, requests: Sequence[tuple[int, Buffer, int]], *, timeout: float | None = None
    ) -> list[bytes | HardwareError]:
        """Like :meth:`transfers_to`, awaiting the worker."""
        description, job = self._transfers(requests)
        if self._worker.closed:
            raise DeviceClosed(f"{self.name} is closed", source=self.name)
        limit = self.timeout if timeout is None else timeout
        try:
            results = await self._worker.call_async(job, description, limit, count=False)
        except asyncio.CancelledError:
            raise  # the caller gave up: no outcome, counted nowhere
        except Exception as error:
            self._count(error, len(requests))
            raise
        self._count(results, 0)
        return results

    def _transfers(
        self, requests: Sequence[tuple[int, Buffer, int]]
    ) -> tuple[str, Callable[[], list[bytes | HardwareError]]]:
        """(description, job) of :meth:`transfers_to`: the prepared transfers run in turn."""
        if not requests:
            raise ValueError("no transfers to run")
        jobs = [self._transfer(address, data, length)[1] for address, data, length in requests]

        def run() -> list[bytes | HardwareError]:
            results: list[bytes | HardwareError] = []
            append = results.append
            for job in jobs:
                try:
                    append(job())
                except HardwareError as error:  # translated by the job: this transfer's outcome
                    append(error)
            return results

        addresses = {address for address, _, _ in requests}
        where = f"0x{requests[0][0]:02x}" if len(addresses) == 1 else f"{len(addresses)} addresses"
        return f"{len(jobs)} transfers at {where}", run

    def _count(self, outcome: list[bytes | HardwareError] | BaseException, calls: int) -> None:
        """Count the transfers of one :meth:`transfers` call in :attr:`stats`.

        *outcome* is the list of results (each counted by itself) or the
        error that ended all *calls* of them.
        """
        stats = self._worker.stats
        if isinstance(outcome, BaseException):
            for _ in range(calls):
                stats.record_failure(outcome)
            return
        for result in outcome:
            if isinstance(result, HardwareError):
                stats.record_failure(result)
            else:
                stats.record_success()


def _register_requests(requests: Sequence[tuple[int | bytes, int]]) -> list[tuple[bytes, int]]:
    """``(register, length)`` pairs as ``(bytes written, length)`` transfers."""
    return [
        (register if isinstance(register, bytes) else bytes((register,)), length)
        for register, length in requests
    ]


@functools.lru_cache(maxsize=256)
def _describe_transfer(address: int, written: int, read: int) -> str:
    """What a write-then-read transfer is called in errors (the same few, built once)."""
    if written and read:
        return f"write {written} then read {read} bytes at 0x{address:02x}"
    if written:
        return f"write {written} bytes at 0x{address:02x}"
    return f"read {read} bytes at 0x{address:02x}"


def _window(buffer: Buffer, start: int, end: int | None) -> memoryview:
    view = memoryview(buffer)
    if view.itemsize != 1:
        view = view.cast("B")
    return view[start:end]


class I2CDevice(BusDevice):
    """One device on an :class:`I2CBus`: the bus plus an address.

    With *probe* the constructor checks that something acknowledges the
    address and raises :class:`~caioc.hw.NoAcknowledge` if not. Closing a
    device does not close the bus, which other devices share.
    """

    def __init__(self, bus: I2CBus, address: int, *, probe: bool = False) -> None:
        if not 0 <= address <= 0x7F:
            raise ValueError(f"I2C address {address!r} is not 7-bit")
        self.bus = bus
        self.address = address
        self.name = f"{bus.name} 0x{address:02x}"
        self._closed = False
        if probe and not bus.probe(address):
            raise NoAcknowledge(f"{self.name}: no device answers", source=self.name)

    def readinto(self, buffer: WritableBuffer, *, start: int = 0, end: int | None = None) -> None:
        """Fill ``buffer[start:end]`` with bytes read from the device."""
        self._check()
        window = _window(buffer, start, end)
        window[:] = self.bus.write_then_read(self.address, b"", len(window))

    async def readinto_async(
        self, buffer: WritableBuffer, *, start: int = 0, end: int | None = None
    ) -> None:
        """Like :meth:`readinto`, awaiting the bus worker."""
        self._check()
        window = _window(buffer, start, end)
        window[:] = await self.bus.write_then_read_async(self.address, b"", len(window))

    def write(self, buffer: Buffer, *, start: int = 0, end: int | None = None) -> None:
        """Write ``buffer[start:end]`` to the device."""
        self._check()
        self.bus.write_then_read(self.address, _window(buffer, start, end), 0)

    async def write_async(self, buffer: Buffer, *, start: int = 0, end: int | None = None) -> None:
        """Like :meth:`write`, awaiting the bus worker."""
        self._check()
        await self.bus.write_then_read_async(self.address, _window(buffer, start, end), 0)

    def write_then_readinto(
        self,
        out_buffer: Buffer,
        in_buffer: WritableBuffer,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
    ) -> None:
        """Write ``out_buffer[out_start:out_end]``, then read into ``in_buffer[in_start:in_end]``.

        One transfer with a repeated start between the two halves, as most
        register-addressed sensors expect.
        """
        self._check()
        out = _window(out_buffer, out_start, out_end)
        window = _window(in_buffer, in_start, in_end)
        window[:] = self.bus.write_then_read(self.address, out, len(window))

    async def write_then_readinto_async(
        self,
        out_buffer: Buffer,
        in_buffer: WritableBuffer,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
    ) -> None:
        """Like :meth:`write_then_readinto`, awaiting the bus worker."""
        self._check()
        out = _window(out_buffer, out_start, out_end)
        window = _window(in_buffer, in_start, in_end)
        window[:] = await self.bus.write_then_read_async(self.address, out, len(window))

    def read_register(self, register: int) -> int:
        """Read the byte at *register*."""
        self._check()
        return self.bus.read_byte_data(self.address, register)

    async def read_register_async(self, register: int) -> int:
        """Like :meth:`read_register`, awaiting the bus worker."""
        self._check()
        return await self.bus.read_byte_data_async(self.address, register)

    def write_register(self, register: int, value: int) -> None:
        """Write the byte *value* to *register*."""
        self._check()
        self.bus.write_byte_data(self.address, register, value)

    async def write_register_async(self, register: int, value: int) -> None:
        """Like :meth:`write_register`, awaiting the bus worker."""
        self._check()
        await self.bus.write_byte_data_async(self.address, register, value)

    def read_registers(self, register: int, length: int) -> bytes:
        """Read *length* bytes from *register* on, in one transfer."""
        self._check()
        return self.bus.read_block(self.address, register, length)

    async def read_registers_async(self, register: int, length: int) -> bytes:
        """Like :meth:`read_registers`, awaiting the bus worker."""
        self._check()
        # The bus's read_block_async, one coroutine less: polls come through here.
        return await self.bus._transfer_async(self.address, bytes((register,)), length)

    def read_registers_batch(
        self, requests: Sequence[tuple[int | bytes, int]], *, timeout: float | None = None
    ) -> list[bytes | HardwareError]:
        """Read several registers, each ``(register, length)`` its own transfer, in one worker job.

        A register is a byte (an int) or, for chips with wider register
        addresses, the bytes to write. Each item of the result is the bytes
        read or that read's :class:`~caioc.hw.HardwareError`; see
        :meth:`I2CBus.transfers`.
        """
        self._check()
        return self.bus.transfers(self.address, _register_requests(requests), timeout=timeout)

    async def read_registers_batch_async(
        self, requests: Sequence[tuple[int | bytes, int]], *, timeout: float | None = None
    ) -> list[bytes | HardwareError]:
        """Like :meth:`read_registers_batch`, awaiting the bus worker."""
        self._check()
        return await self.bus.transfers_async(
            self.address, _register_requests(requests), timeout=timeout
        )

    def _shared_batch(
        self, requests: Sequence[tuple[int | bytes, int]]
    ) -> tuple[I2CBus, list[tuple[int, bytes, int]]] | None:
        """(bus, transfers for :meth:`I2CBus.transfers_to`) of a batch that may join others'.

        The shared poll schedule reads the register readings of every
        device on a bus in one worker job; a subclass that reads its
        batches its own way (it overrides :meth:`read_registers_batch_async`)
        is left to do so (None), and a closed device reads nothing.
        """
        if self._closed or (
            type(self).read_registers_batch_async is not I2CDevice.read_registers_batch_async
        ):
            return None
        address = self.address
        return self.bus, [(address, data, n) for data, n in _register_requests(requests)]

    def write_registers(self, register: int, data: Buffer) -> None:
        """Write *data* to *register* on, in one transfer."""
        self._check()
        self.bus.write_block(self.address, register, data)

    async def write_registers_async(self, register: int, data: Buffer) -> None:
        """Like :meth:`write_registers`, awaiting the bus worker."""
        self._check()
        await self.bus.write_block_async(self.address, register, data)

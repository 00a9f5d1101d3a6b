"""SPI: a bus (spidev on its own worker thread) and the devices on its chip selects.

:class:`SPIBus` is one SPI controller (``/dev/spidev0.*`` is bus 0); every
transfer on it, whatever the chip select, runs on the bus's one worker
thread, in order, with the bus timeout, exactly as for I2C. The library
underneath is `spidev <https://pypi.org/project/spidev/>`_, imported only
when a real bus is opened (``pip install caioc[spi]``); pass
*spidev_factory* to use something with the same API instead, such as
:meth:`caioc.hw.sim.SimulatedSPIBus.spidev`.

:class:`SPIDevice` is one chip select with its own mode and speed, in the
style of Adafruit BusDevice's ``SPIDevice``: full-duplex
:meth:`~SPIDevice.write_readinto`, :meth:`~SPIDevice.readinto` and
:meth:`~SPIDevice.write` on caller buffers, ``..._async`` twins,
idempotent ``close()``, context manager, :class:`~caioc.hw.DeviceClosed`
after close.

SPI has no acknowledge: a missing chip reads as constant bytes, and only
the driver can tell (a wrong chip id, a bad CRC). What the kernel does
report is translated: a missing ``/dev/spidevB.C`` or a vanished adapter
is :class:`~caioc.hw.DeviceUnplugged`, ETIMEDOUT is
:class:`~caioc.hw.BusTimeout`, any other ``OSError``
:class:`~caioc.hw.HardwareError`.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
from collections.abc import Callable
from typing import Any, Protocol

from caioc.ca import AlarmStatus

from ._clock import REAL_CLOCK, Clock
from ._errors import BackendUnavailable, BusTimeout, DeviceClosed, DeviceUnplugged, HardwareError
from ._worker import BusDevice, BusWorker, WorkerBus

__all__ = ["SPIBus", "SPIDevice", "SpiDevLike"]

_GONE_ERRNOS = frozenset({errno.ENODEV, errno.ENOENT, errno.EBADF, errno.ESHUTDOWN})

Buffer = bytes | bytearray | memoryview
WritableBuffer = bytearray | memoryview


class SpiDevLike(Protocol):
    """The part of :class:`spidev.SpiDev` that :class:`SPIBus` uses."""

    mode: int
    max_speed_hz: int
    bits_per_word: int

    def open(self, bus: int, device: int, /) -> None:
        """Open ``/dev/spidev<bus>.<device>``."""
        ...

    def close(self) -> None:
        """Release the device node."""
        ...

    def xfer2(self, values: list[int], /) -> list[int]:
        """Full-duplex transfer with chip select held for the whole block."""
        ...


def _spidev_class() -> Callable[[], SpiDevLike]:
    try:
        spidev = importlib.import_module("spidev")
    except ImportError as exc:
        raise BackendUnavailable(
            "SPI needs the spidev library: pip install caioc[spi]", source="spi"
        ) from exc
    factory: Callable[[], SpiDevLike] = spidev.SpiDev
    return factory


def _translate(exc: OSError, description: str, source: str) -> HardwareError:
    message = f"{source}: {description}: {exc.strerror or exc}"
    if exc.errno == errno.ETIMEDOUT:
        return BusTimeout(message, source=source)
    if exc.errno in _GONE_ERRNOS:
        return DeviceUnplugged(message, source=source)
    return HardwareError(message, kind=AlarmStatus.READ, source=source)


class SPIBus(WorkerBus):
    """An SPI controller whose transfers run serialised on one worker thread.

    *bus* is the controller number (0 for ``/dev/spidev0.*``). *timeout*
    bounds every transfer, including time queued behind others; *clock*
    measures it (by default the factory's ``clock`` attribute if it has
    one, else real time).
    """

    def __init__(
        self,
        bus: int = 0,
        *,
        timeout: float = 1.0,
        clock: Clock | None = None,
        spidev_factory: Callable[[], SpiDevLike] | None = None,
        name: str | None = None,
    ) -> None:
        self.bus = bus
        self.name = name or f"spi-{bus}"
        self.timeout = timeout
        # Imported here, not at module import, and not on first transfer:
        # a missing library is a configuration error to report at once.
        self._factory = spidev_factory or _spidev_class()
        self.clock: Clock = clock or getattr(spidev_factory, "clock", None) or REAL_CLOCK
        self._handles: dict[int, SpiDevLike] = {}  # by chip select; worker only
        self._worker = BusWorker(self.name, clock=self.clock)

    def close(self) -> None:
        """Close every chip select's device node and stop the worker; idempotent."""
        if self._worker.closed:
            return
        # A wedged bus: its handles go with the abandoned worker.
        with contextlib.suppress(HardwareError):
            self._worker.call(self._close_handles, "close", self.timeout)
        self._worker.close()

    def device(
        self, chip_select: int, *, mode: int = 0, max_speed_hz: int = 1_000_000
    ) -> SPIDevice:
        """An :class:`SPIDevice` on *chip_select* of this bus."""
        return SPIDevice(self, chip_select, mode=mode, max_speed_hz=max_speed_hz)

    def transfer(
        self,
        chip_select: int,
        data: Buffer,
        *,
        mode: int = 0,
        max_speed_hz: int = 1_000_000,
        bits_per_word: int = 8,
    ) -> bytes:
        """Clock *data* out on *chip_select*; return the bytes clocked in."""
        job, description = self._job(chip_select, data, mode, max_speed_hz, bits_per_word)
        return self._worker.call(job, description, self.timeout)

    async def transfer_async(
        self,
        chip_select: int,
        data: Buffer,
        *,
        mode: int = 0,
        max_speed_hz: int = 1_000_000,
        bits_per_word: int = 8,
    ) -> bytes:
        """Like :meth:`transfer`, awaiting the worker without blocking the loop."""
        job, description = self._job(chip_select, data, mode, max_speed_hz, bits_per_word)
        return await self._worker.call_async(job, description, self.timeout)

    def _job(
        self, chip_select: int, data: Buffer, mode: int, speed: int, bits: int
    ) -> tuple[Callable[[], bytes], str]:
        if self._worker.closed:
            raise DeviceClosed(f"{self.name} is closed", source=self.name)
        out = list(bytes(data))  # copied now: the caller may reuse its buffer
        description = f"transfer {len(out)} bytes on CS{chip_select}"
        source = f"{self.name}.{chip_select}"

        def job() -> bytes:
            try:
                handle = self._handle(chip_select)
                # spidev applies these per ioctl; setting them costs nothing
                # when unchanged, and devices on one bus may differ.
                if handle.mode != mode:
                    handle.mode = mode
                if handle.max_speed_hz != speed:
                    handle.max_speed_hz = speed
                if handle.bits_per_word != bits:
                    handle.bits_per_word = bits
                return bytes(handle.xfer2(out)) if out else b""
            except OSError as exc:
                if isinstance(exc, HardwareError):
                    raise
                self._drop(chip_select)
                raise _translate(exc, description, source) from exc

        return job, description

    # These run on the worker only.

    def _handle(self, chip_select: int) -> SpiDevLike:
        handle = self._handles.get(chip_select)
        if handle is None:
            handle = self._factory()
            handle.open(self.bus, chip_select)
            self._handles[chip_select] = handle
        return handle

    def _drop(self, chip_select: int) -> None:
        handle = self._handles.pop(chip_select, None)
        if handle is not None:
            with contextlib.suppress(OSError):  # it failed already; closing is all we want
                handle.close()

    def _close_handles(self) -> None:
        for chip_select in list(self._handles):
            self._drop(chip_select)


def _window(buffer: Buffer, start: int, end: int | None) -> memoryview:
    view = memoryview(buffer)
    if view.itemsize != 1:
        view = view.cast("B")
    return view[start:end]


class SPIDevice(BusDevice):
    """One chip select on an :class:`SPIBus`, with its own mode and speed.

    Closing a device does not close the bus, which other devices share.
    """

    def __init__(
        self,
        bus: SPIBus,
        chip_select: int,
        *,
        mode: int = 0,
        max_speed_hz: int = 1_000_000,
        bits_per_word: int = 8,
    ) -> None:
        if mode not in (0, 1, 2, 3):
            raise ValueError(f"SPI mode {mode!r} is not 0 to 3")
        self.bus = bus
        self.chip_select = chip_select
        self.mode = mode
        self.max_speed_hz = max_speed_hz
        self.bits_per_word = bits_per_word
        self.name = f"{bus.name}.{chip_select}"
        self._closed = False

    def _settings(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "max_speed_hz": self.max_speed_hz,
            "bits_per_word": self.bits_per_word,
        }

    def transfer(self, data: Buffer) -> bytes:
        """Clock *data* out; return the same number of bytes clocked in."""
        self._check()
        return self.bus.transfer(self.chip_select, data, **self._settings())

    async def transfer_async(self, data: Buffer) -> bytes:
        """Like :meth:`transfer`, awaiting the bus worker."""
        self._check()
        return await self.bus.transfer_async(self.chip_select, data, **self._settings())

    def write(self, buffer: Buffer, *, start: int = 0, end: int | None = None) -> None:
        """Clock out ``buffer[start:end]``, ignoring what comes back."""
        self.transfer(_window(buffer, start, end))

    async def write_async(self, buffer: Buffer, *, start: int = 0, end: int | None = None) -> None:
        """Like :meth:`write`, awaiting the bus worker."""
        await self.transfer_async(_window(buffer, start, end))

    def readinto(
        self,
        buffer: WritableBuffer,
        *,
        start: int = 0,
        end: int | None = None,
        write_value: int = 0,
    ) -> None:
        """Fill ``buffer[start:end]`` while clocking out *write_value* bytes."""
        window = _window(buffer, start, end)
        window[:] = self.transfer(bytes([write_value]) * len(window))

    async def readinto_async(
        self,
        buffer: WritableBuffer,
        *,
        start: int = 0,
        end: int | None = None,
        write_value: int = 0,
    ) -> None:
        """Like :meth:`readinto`, awaiting the bus worker."""
        window = _window(buffer, start, end)
        window[:] = await self.transfer_async(bytes([write_value]) * len(window))

    def write_readinto(
        self,
        out_buffer: Buffer,
        in_buffer: WritableBuffer,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
    ) -> None:
        """Clock out ``out_buffer[out_start:out_end]`` and read into the same-length window."""
        out = _window(out_buffer, out_start, out_end)
        window = _window(in_buffer, in_start, in_end)
        if len(out) != len(window):
            raise ValueError("SPI is full duplex: out and in windows must be the same length")
        window[:] = self.transfer(out)

    async def write_readinto_async(
        self,
        out_buffer: Buffer,
        in_buffer: WritableBuffer,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
    ) -> None:
        """Like :meth:`write_readinto`, awaiting the bus worker."""
        out = _window(out_buffer, out_start, out_end)
        window = _window(in_buffer, in_start, in_end)
        if len(out) != len(window):
            raise ValueError("SPI is full duplex: out and in windows must be the same length")
        window[:] = await self.transfer_async(out)

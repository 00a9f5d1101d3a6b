"""A simulated SPI bus with the spidev ``SpiDev`` API, and chips on its chip selects.

A :class:`SimulatedSPIBus` is itself a ``SpiDev`` factory: pass it to
:class:`caioc.hw.SPIBus` as *spidev_factory* and the real transport code
runs over it unchanged::

    clock = VirtualClock()
    sim = SimulatedSPIBus(0, clock=clock)
    chip = sim.attach(SimulatedSPIDevice(registers={0x00: 0x58}), chip_select=0)
    bus = SPIBus(0, spidev_factory=sim)

Every ``xfer2`` is one *transfer*: checked once against the chip's faults,
then handed to :meth:`SimulatedSPIDevice.handle_transfer`, which sees the
bytes clocked out and returns the bytes clocked back (override it for
chips with other framing). The default framing is the common one: the
first byte is a register number, with bit 7 set for a read; the rest are
data, auto-incrementing through a :class:`~caioc.hw.sim.RegisterMap`.

SPI has no acknowledge, so faults look as they do on real wires: nothing
on a chip select (or an unplugged chip) reads as *idle_level* bytes (MISO
pulled high); a host mode or speed the chip cannot follow shifts the reply
by one bit; a garbled transfer (:attr:`SimulatedSPIDevice.faults`)
corrupts it; a hung one blocks, then fails with ETIMEDOUT.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import deque
from collections.abc import Mapping, Sequence

from .._clock import REAL_CLOCK, Clock
from ._faults import BusFaults
from ._registers import BusRegisterDevice

__all__ = ["SimulatedSPIBus", "SimulatedSPIDevice", "SimulatedSpiDev"]


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _shift_one_bit(data: bytes) -> bytes:
    """The reply as a receiver one clock edge late sees it (idle-high MISO)."""
    if not data:
        return data
    value = (int.from_bytes(data, "big") >> 1) | (1 << (8 * len(data) - 1))
    return value.to_bytes(len(data), "big")


class SimulatedSPIDevice(BusRegisterDevice):
    """A chip on a :class:`SimulatedSPIBus`; by default a register map.

    *mode* and *max_speed_hz* are what the chip can follow; *read_flag*
    is the bit of the first byte that asks for a read (0x80 on most
    sensors). See :class:`~caioc.hw.sim.RegisterMap` for *registers*, the
    rules, hooks and timed actions.
    """

    def __init__(
        self,
        *,
        name: str = "spi device",
        mode: int = 0,
        max_speed_hz: int = 10_000_000,
        read_flag: int = 0x80,
        size: int = 128,
        registers: Mapping[int, int] | bytes | None = None,
        auto_increment: bool = True,
    ) -> None:
        super().__init__(size=size, registers=registers, auto_increment=auto_increment)
        self.name = name
        self.mode = mode
        self.max_speed_hz = max_speed_hz
        self.read_flag = read_flag
        self.faults = BusFaults()
        self.transactions: deque[tuple[bytes, bytes]] = deque(maxlen=1000)
        """The latest transfers, oldest first: (bytes out, bytes back)."""
        self.bus: SimulatedSPIBus | None = None

    def __repr__(self) -> str:
        return f"<SimulatedSPIDevice {self.name}{'' if self.plugged else ' unplugged'}>"

    def handle_transfer(self, data: bytes) -> bytes:
        """One transfer with chip select held: *data* in, the reply out.

        Register framing: byte 0 is the register (with :attr:`read_flag`
        for a read), answered with 0x00; a read then returns registers from
        there on, a write stores the remaining bytes from there on.
        """
        if not data:
            return b""
        command = data[0]
        self.pointer = (command & ~self.read_flag & 0xFF) % len(self.registers)
        if command & self.read_flag:
            return b"\x00" + self.read_registers(len(data) - 1)
        self.write_registers(data[1:])
        return bytes(len(data))


class SimulatedSpiDev:
    """One open chip select of a :class:`SimulatedSPIBus`, with the spidev API."""

    def __init__(self, sim: SimulatedSPIBus) -> None:
        self._sim = sim
        self.chip_select: int | None = None
        self.mode = 0
        self.max_speed_hz = 500_000
        self.bits_per_word = 8
        self.cshigh = False
        self.lsbfirst = False
        self.threewire = False
        self.loop = False
        self.no_cs = False

    def __repr__(self) -> str:
        return f"<SimulatedSpiDev {self._sim.bus}.{self.chip_select}>"

    def open(self, bus: int, device: int) -> None:
        """Open ``/dev/spidev<bus>.<device>`` (which must be this bus)."""
        if bus != self._sim.bus or not self._sim.plugged:
            raise FileNotFoundError(
                errno.ENOENT, os.strerror(errno.ENOENT), f"/dev/spidev{bus}.{device}"
            )
        self.chip_select = device

    def close(self) -> None:
        """Close the chip select."""
        self.chip_select = None

    def xfer2(self, values: Sequence[int]) -> list[int]:
        """Full-duplex transfer with chip select held throughout."""
        if self.chip_select is None:
            raise _oserror(errno.EBADF)
        return list(self._sim._transfer(self, bytes(values)))

    def xfer(self, values: Sequence[int]) -> list[int]:
        """Like :meth:`xfer2` (chip select handling is not simulated)."""
        return self.xfer2(values)

    def xfer3(self, values: Sequence[int]) -> list[int]:
        """Like :meth:`xfer2` (no buffer size limit is simulated)."""
        return self.xfer2(values)

    def readbytes(self, length: int) -> list[int]:
        """Clock in *length* bytes while clocking out zeros."""
        return self.xfer2([0] * length)

    def writebytes(self, values: Sequence[int]) -> None:
        """Clock out *values*, ignoring what comes back."""
        self.xfer2(values)

    def writebytes2(self, values: Sequence[int] | bytes) -> None:
        """Like :meth:`writebytes`, for any buffer."""
        self.xfer2(list(values))


class SimulatedSPIBus:
    """A simulated SPI controller; call it to get a ``SpiDev``-like handle.

    *bus* is the controller number handles must open; *clock* times the
    chips' conversions and hangs (a :class:`~caioc.hw.VirtualClock` in
    tests); *idle_level* is what an empty chip select reads. :meth:`unplug`
    removes the whole controller (opening and transfers fail with ENODEV /
    ENOENT). ``max_concurrency`` records the most transfers ever in
    progress at once: 1 for a correctly serialised user.
    """

    def __init__(self, bus: int = 0, *, clock: Clock | None = None, idle_level: int = 0xFF) -> None:
        self.bus = bus
        self.clock: Clock = clock or REAL_CLOCK
        self.idle_level = idle_level
        self.devices: dict[int, SimulatedSPIDevice] = {}
        self.plugged = True
        self.transfers = 0
        self.max_concurrency = 0
        self._active = 0
        self._count_lock = threading.Lock()
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<SimulatedSPIBus spi-{self.bus} chip selects={sorted(self.devices)}>"

    def __call__(self) -> SimulatedSpiDev:
        """A new, unopened handle: what ``spidev.SpiDev()`` returns."""
        return SimulatedSpiDev(self)

    def attach(self, device: SimulatedSPIDevice, chip_select: int = 0) -> SimulatedSPIDevice:
        """Connect *device* to *chip_select*; returns it for convenience."""
        with self._lock:
            if chip_select in self.devices:
                raise ValueError(f"spi-{self.bus}: chip select {chip_select} already in use")
            device.bus = self
            self.devices[chip_select] = device
        return device

    def detach(self, chip_select: int) -> SimulatedSPIDevice:
        """Remove the device on *chip_select* and return it."""
        with self._lock:
            device = self.devices.pop(chip_select)
            device.bus = None
        return device

    def unplug(self) -> None:
        """Remove the controller until :meth:`replug`."""
        self.plugged = False

    def replug(self) -> None:
        """Bring the controller back."""
        self.plugged = True

    def close(self) -> None:
        """Release every hung transfer (they then fail)."""
        for device in list(self.devices.values()):
            device.faults.release_hangs()

    def _transfer(self, handle: SimulatedSpiDev, data: bytes) -> bytes:
        with self._count_lock:
            self._active += 1
            self.transfers += 1
            self.max_concurrency = max(self.max_concurrency, self._active)
        try:
            return self._transfer_checked(handle, data)
        finally:
            with self._count_lock:
                self._active -= 1

    def _transfer_checked(self, handle: SimulatedSpiDev, data: bytes) -> bytes:
        if not self.plugged:
            raise _oserror(errno.ENODEV)
        device = self.devices.get(handle.chip_select if handle.chip_select is not None else -1)
        if device is None or not device.plugged:
            return bytes([self.idle_level]) * len(data)
        fault, detail = device.faults._take()
        if fault == "hang":
            seconds, release = detail
            self.clock.wait(release, seconds)  # outside every lock
            raise _oserror(errno.ETIMEDOUT)
        with self._lock, device._lock:
            device.update()
            reply = device.handle_transfer(data)
            if handle.mode != device.mode or handle.max_speed_hz > device.max_speed_hz:
                reply = _shift_one_bit(reply)
            if fault == "garble":
                reply = detail(reply)
            device.transactions.append((data, reply))
        return reply

"""A simulated I2C bus with the smbus2 ``SMBus`` API, and devices on it.

:class:`SimulatedI2CBus` has the methods and attributes of
:class:`smbus2.SMBus` (``read_byte_data``, ``write_i2c_block_data``,
``i2c_rdwr`` with real :class:`smbus2.i2c_msg` objects, ``close`` ...) and
raises what the kernel would (``OSError`` with errno ``EREMOTEIO`` for a
NACK, ``ETIMEDOUT`` for a hung transfer), so :class:`caioc.hw.I2CBus` and
any driver written against smbus2 run over it unchanged::

    clock = VirtualClock()
    sim = SimulatedI2CBus(1, clock=clock)
    sensor = sim.attach(SimulatedI2CDevice(0x48))
    bus = I2CBus(sim)                     # the real code path

Every SMBus call and every ``i2c_rdwr`` is one *access*: it is checked
against the device's faults once, then carried out as the I2C messages a
kernel would send (a register write is a write of ``[register, value]``,
a register read a write of ``[register]`` then a read). The device sees
only those messages, through :meth:`SimulatedI2CDevice.handle_write` and
:meth:`SimulatedI2CDevice.handle_read`; subclasses override these two for
devices that are not plain 8-bit register maps.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from smbus2 import I2cFunc, i2c_msg

from .._clock import REAL_CLOCK, Clock
from ._faults import BusFaults
from ._registers import BusRegisterDevice, RegisterMap

__all__ = ["I2CFaults", "SimulatedI2CBus", "SimulatedI2CDevice"]

_I2C_M_RD = 0x0001
_SMBUS_BLOCK_MAX = 32
_NO_FAULT: tuple[str, Any] = ("ok", None)


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class I2CFaults(BusFaults):
    """Faults injected into one simulated I2C device's next accesses.

    An access is one SMBus call or one ``i2c_rdwr``. Besides the hangs and
    garbling of :class:`BusFaults`, a device can stop acknowledging: for
    the next *count* accesses (:meth:`nack_next`) or while :attr:`nack`
    is true.
    """

    def __init__(self) -> None:
        super().__init__()
        self.nack = False
        """While true, every access is not acknowledged (errno EREMOTEIO)."""
        self._nacks = 0

    def nack_next(self, count: int = 1) -> None:
        """NACK the next *count* accesses."""
        with self._lock:
            self._nacks += count

    @property
    def pending(self) -> bool:
        """True while any fault is set or still counted down."""
        return bool(self.nack or self._nacks or super().pending)

    def _clear_locked(self) -> None:
        super()._clear_locked()
        self.nack = False
        self._nacks = 0

    def _take_locked(self) -> tuple[str, Any]:
        if self.nack:
            return "nack", None
        if self._nacks:
            self._nacks -= 1
            return "nack", None
        return super()._take_locked()


class SimulatedI2CDevice(BusRegisterDevice):
    """A device on a :class:`SimulatedI2CBus`: by default an 8-bit register map.

    The first byte of a write message sets the register pointer; further
    bytes are stored from there on, and a read message returns bytes from
    the pointer on (see :class:`~caioc.hw.sim.RegisterMap` for the rules,
    hooks and timed actions). Devices that are not register maps override
    :meth:`handle_write` and :meth:`handle_read`.
    """

    def __init__(
        self,
        address: int,
        *,
        name: str | None = None,
        size: int = 256,
        registers: Mapping[int, int] | bytes | None = None,
        auto_increment: bool = True,
    ) -> None:
        if not 0 <= address <= 0x7F:
            raise ValueError(f"I2C address {address!r} is not 7-bit")
        super().__init__(size=size, registers=registers, auto_increment=auto_increment)
        self.address = address
        self.name = name or f"device 0x{address:02x}"
        self.faults = I2CFaults()
        self.transactions: deque[tuple[str, bytes]] = deque(maxlen=1000)
        """The latest messages seen, oldest first: ("write"|"read", bytes)."""
        self.bus: SimulatedI2CBus | None = None

    def __repr__(self) -> str:
        return f"<SimulatedI2CDevice {self.name}{'' if self.plugged else ' unplugged'}>"

    # The protocol: override these two for devices that are not register maps.

    def handle_write(self, data: bytes) -> None:
        """A write message arrived: set the pointer, then store the bytes."""
        if not data:
            return  # a quick write or an address probe
        self.pointer = data[0] % len(self.registers)
        self.write_registers(data[1:])

    def handle_read(self, length: int) -> bytes:
        """A read message of *length* bytes: the registers from the pointer on."""
        return self.read_registers(length)


class SimulatedI2CBus:
    """A stand-in for :class:`smbus2.SMBus` with simulated devices attached.

    *bus* only names the bus (``i2c-1``); *clock* times conversions and
    hangs (give a :class:`~caioc.hw.VirtualClock` in tests). Attach
    devices with :meth:`attach`. :meth:`unplug` removes the whole adapter
    (a USB-I2C bridge pulled out: every call fails with ENODEV).

    ``max_concurrency`` records the most accesses ever in progress at once;
    a correctly serialised user keeps it at 1.
    """

    def __init__(
        self,
        bus: int | str | None = 1,
        force: bool = False,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock or REAL_CLOCK
        self.devices: dict[int, SimulatedI2CDevice] = {}
        self.fd: int | None = None
        self.funcs = I2cFunc.I2C | I2cFunc.SMBUS_EMUL
        self.address: int | None = None
        self.force = force
        self.pec = 0
        self.name = "i2c-sim"
        self.plugged = True
        self.max_concurrency = 0
        self.accesses = 0
        self._active = 0
        self._count_lock = threading.Lock()
        self._lock = threading.RLock()
        if bus is not None:
            self.open(bus)

    def __repr__(self) -> str:
        return f"<SimulatedI2CBus {self.name} devices={sorted(self.devices)}>"

    def __enter__(self) -> SimulatedI2CBus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Simulation controls.

    def attach(self, device: SimulatedI2CDevice) -> SimulatedI2CDevice:
        """Connect *device* at its address; returns it for convenience."""
        with self._lock:
            if device.address in self.devices:
                raise ValueError(f"{self.name}: address 0x{device.address:02x} already in use")
            device.bus = self
            self.devices[device.address] = device
        return device

    def detach(self, address: int) -> SimulatedI2CDevice:
        """Remove the device at *address* from the bus and return it."""
        with self._lock:
            device = self.devices.pop(address)
            device.bus = None
        return device

    def unplug(self) -> None:
        """Remove the adapter: every call fails with ENODEV until :meth:`replug`."""
        self.plugged = False

    def replug(self) -> None:
        """Bring the adapter back."""
        self.plugged = True

    # The smbus2.SMBus API.

    def open(self, bus: int | str) -> None:
        """Open the (simulated) adapter *bus*."""
        if not isinstance(bus, int | str):
            raise TypeError(f"Unexpected type(bus)={type(bus)}")
        self.name = f"i2c-{bus}" if isinstance(bus, int) else bus
        self.fd = -1  # not a real descriptor; None means closed, as in smbus2

    def close(self) -> None:
        """Close the adapter; hung accesses are released (and then fail)."""
        self.fd = None
        self.address = None
        self.pec = 0
        for device in list(self.devices.values()):
            device.faults.release_hangs()

    def enable_pec(self, enable: bool = True) -> None:
        """Accepted for API compatibility; packet error checking is not simulated."""
        self.pec = int(enable)

    def write_quick(self, i2c_addr: int, force: bool | None = None) -> None:
        """Address the device with no data (a presence probe)."""
        self._access(i2c_addr, [("w", b"")])

    def read_byte(self, i2c_addr: int, force: bool | None = None) -> int:
        """Read one byte at the device's current pointer."""
        return self._access(i2c_addr, [("r", 1)])[0][0]

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None:
        """Write one byte (for a register map: set the pointer)."""
        self._access(i2c_addr, [("w", bytes([value]))])

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        """Read the byte at *register*."""
        return self._access(i2c_addr, [("w", bytes([register])), ("r", 1)])[0][0]

    def write_byte_data(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> None:
        """Write *value* to *register*."""
        self._access(i2c_addr, [("w", bytes([register, value]))])

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        """Read a little-endian word from *register* on."""
        data = self._access(i2c_addr, [("w", bytes([register])), ("r", 2)])[0]
        return int.from_bytes(data, "little")

    def write_word_data(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> None:
        """Write a little-endian word to *register* on."""
        self._access(i2c_addr, [("w", bytes([register]) + (value & 0xFFFF).to_bytes(2, "little"))])

    def process_call(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> int:
        """Write a word to *register*, then read a word back."""
        out = bytes([register]) + (value & 0xFFFF).to_bytes(2, "little")
        return int.from_bytes(self._access(i2c_addr, [("w", out), ("r", 2)])[0], "little")

    def read_block_data(self, i2c_addr: int, register: int, force: bool | None = None) -> list[int]:
        """SMBus block read: the device sends a count byte, then that many bytes."""
        data = self._access(i2c_addr, [("w", bytes([register])), ("block", 0)])[0]
        return list(data)

    def write_block_data(
        self, i2c_addr: int, register: int, data: Sequence[int], force: bool | None = None
    ) -> None:
        """SMBus block write: a count byte, then *data* (at most 32 bytes)."""
        if len(data) > _SMBUS_BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {_SMBUS_BLOCK_MAX} bytes")
        self._access(i2c_addr, [("w", bytes([register, len(data), *data]))])

    def block_process_call(
        self, i2c_addr: int, register: int, data: Sequence[int], force: bool | None = None
    ) -> list[int]:
        """SMBus block write, then block read, in one transfer."""
        if len(data) > _SMBUS_BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {_SMBUS_BLOCK_MAX} bytes")
        steps: list[tuple[str, Any]] = [("w", bytes([register, len(data), *data])), ("block", 0)]
        return list(self._access(i2c_addr, steps)[0])

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]:
        """Read *length* (at most 32) bytes from *register* on."""
        if length > _SMBUS_BLOCK_MAX:
            raise ValueError(f"Desired block length over {_SMBUS_BLOCK_MAX} bytes")
        return list(self._access(i2c_addr, [("w", bytes([register])), ("r", length)])[0])

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: Sequence[int], force: bool | None = None
    ) -> None:
        """Write *data* (at most 32 bytes) from *register* on."""
        if len(data) > _SMBUS_BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {_SMBUS_BLOCK_MAX} bytes")
        self._access(i2c_addr, [("w", bytes([register, *data]))])

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None:
        """Carry out *i2c_msgs* as one transfer; read messages are filled in place."""
        messages: tuple[Any, ...] = i2c_msgs
        if not messages:
            return
        address = messages[0].addr
        for message in messages:
            if message.addr != address:
                # Legal on a real bus, but no device here needs it; say so plainly.
                raise NotImplementedError("simulated i2c_rdwr addresses one device per transfer")
        # Slicing a message's ``buf`` (a ctypes char pointer) copies its bytes
        # out about six times faster than ctypes.string_at, whose foreign
        # call costs a microsecond: this runs for every simulated transfer.
        steps: list[tuple[str, Any]] = [
            ("r", message.len) if message.flags & _I2C_M_RD else ("w", message.buf[: message.len])
            for message in messages
        ]
        results = iter(self._access(address, steps))
        for message in messages:
            if message.flags & _I2C_M_RD:
                data = next(results)
                ctypes.memmove(message.buf, data, len(data))

    # One access: checks, faults, then the messages.

    def _access(self, address: int, steps: list[tuple[str, Any]]) -> list[bytes]:
        """Carry out *steps* on the device at *address*: the bytes each read step returned.

        Every simulated transfer passes here, once per poll of every
        reading, so it is written for speed: one frame, the faults looked
        at without their lock unless some are pending.
        """
        with self._count_lock:
            self._active += 1
            self.accesses += 1
            if self._active > self.max_concurrency:
                self.max_concurrency = self._active
        try:
            if self.fd is None:
                raise _oserror(errno.EBADF)
            if not self.plugged:
                raise _oserror(errno.ENODEV)
            self.address = address
            device = self.devices.get(address)
            if device is None or not device.plugged:
                raise _oserror(errno.EREMOTEIO)
            faults = device.faults
            fault, detail = faults._take() if faults.pending else _NO_FAULT
            if fault == "nack":
                raise _oserror(errno.EREMOTEIO)
            if fault == "hang":
                seconds, release = detail
                # Waits outside every lock, so the test can clear the fault.
                self.clock.wait(release, seconds)
                raise _oserror(errno.ETIMEDOUT)
            reads = []
            log = device.transactions.append
            with self._lock, device._lock:
                if (
                    getattr(device, "_scheduled", True)
                    or type(device).update is not RegisterMap.update
                ):
                    device.update()  # timed actions to run (or a device's own update)
                for kind, argument in steps:
                    if kind == "w":
                        log(("write", argument))
                        device.handle_write(argument)
                        continue
                    if kind == "block":
                        count = min(device.handle_read(1)[0], _SMBUS_BLOCK_MAX)
                        data = device.handle_read(count)
                    else:
                        data = device.handle_read(argument)
                    log(("read", data))
                    reads.append(data)
            if fault == "garble":
                return [detail(data) for data in reads]
            return reads
        finally:
            with self._count_lock:
                self._active -= 1

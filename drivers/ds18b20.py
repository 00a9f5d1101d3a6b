"""Maxim DS18B20 1-Wire digital thermometer, through the Linux w1 sysfs interface.

The kernel does the 1-Wire timing (``dtoverlay=w1-gpio``, driver
``w1_therm``); this driver reads what it shows under
``/sys/bus/w1/devices/28-XXXXXXXXXXXX/`` and checks it against the
DS18B20 datasheet (19-7487):

* ``w1_slave`` (every kernel): a read starts a conversion, waits for it
  and prints the nine scratchpad bytes with the kernel's CRC verdict, then
  ``t=<millidegrees>``. The driver checks the CRC itself too (Dallas/Maxim
  CRC-8, x^8 + x^5 + x^4 + 1, over bytes 0 .. 7, "CRC generation"), and
  the reserved bytes (byte 5 reads 0xFF, byte 7 0x10, figure 9), so an
  all-zero scratchpad from a shorted bus, whose CRC is 0 and "valid", is
  not taken for 0 degC. The temperature comes from bytes 0 and 1 (table 1:
  two's complement, 0.0625 degC per LSB) with the bits the resolution
  leaves undefined masked off (figure 4). ``temperature`` (newer kernels,
  millidegrees, EIO when the CRC fails) is used when there is no
  ``w1_slave``;
* a CRC failure (the kernel's NO, or ours) is retried up to ``retries``
  times, then is a :class:`~caioc.hw.BadReply`: CALC alarm;
* +85 degC (0x0550) is the temperature register's power-on value: read
  before any conversion completed (a brown-out, or parasite power too weak
  for the conversion) it is not a measurement. It is retried, and accepted
  only when the previous good reading was within 2 degC of it; otherwise
  the read fails with a READ alarm;
* a missing device directory (the part dropped off the bus; the kernel
  removes it after a few searches) is :class:`~caioc.hw.DeviceUnplugged`:
  COMM, and the device reconnects when the directory is back;
* ``resolution`` 9 .. 12 bits (configuration register R1 R0, table 2):
  0.5, 0.25, 0.125, 0.0625 degC steps, converting in at most 93.75, 187.5,
  375 and 750 ms. ``initialise`` writes it to the kernel's ``resolution``
  file (or, on older kernels, to ``w1_slave``) when the part differs; the
  kernel needs root for that, so a refused write is logged and the part
  keeps its own resolution, which the ``resolution`` PV shows.

PVs: ``temperature`` (degC, polled every ``period`` s), ``resolution``
(bits, as read from the part) and ``device_id``.

Factory: ``make_ds18b20(*, prefix, bus, address=None, period=2.0,
resolution=12, retries=2)``; ``bus`` a :class:`~caioc.hw.w1.W1Bus`, a
simulated tree (:class:`~caioc.hw.sim.SimulatedW1Bus`) or a root directory;
``address`` the device id (``"28-0316a2791aff"``) or None for the first
DS18B20 found. Simulator: ``simulate_ds18b20(*, address=None,
temperature=None, resolution=12, **driver_options)`` returning a
:class:`~._sim_ds18b20.SimulatedDS18B20`.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import re
from typing import Any, NamedTuple

from caioc.ca import AlarmStatus
from caioc.hw import BadReply, Device, DeviceClosed, DeviceUnplugged, HardwareError, reading
from caioc.hw._sysfs import SimulatedKernel
from caioc.hw.w1 import W1Bus, parse_slave_id
from caioc.ioc import pvproperty

from ._registry import DriverInfo, register
from ._sim_ds18b20 import SimulatedDS18B20, simulate

__all__ = [
    "CONVERSION_TIME",
    "DS18B20",
    "Scratchpad",
    "check_address",
    "crc8",
    "decode_temperature",
    "make_ds18b20",
    "parse_w1_slave",
    "simulate_ds18b20",
]

log = logging.getLogger("caioc.drivers.ds18b20")

FAMILY = 0x28
#: Resolution (bits) -> the longest a conversion takes (table 2), seconds.
CONVERSION_TIME = {9: 0.09375, 10: 0.1875, 11: 0.375, 12: 0.75}
#: The temperature register's power-on value: +85 degC.
POWER_ON_RAW = 0x0550
#: A reading of 85 degC is believed when the previous one was this close.
POWER_ON_PLAUSIBLE = 2.0
#: Time the kernel adds to a conversion (bus reset, ROM match, 9 bytes), seconds.
KERNEL_OVERHEAD = 0.25

_HEX_BYTES = re.compile(r"((?:[0-9a-f]{2} ){9})")

#: What the factory accepts as its ``bus``.
BusSpec = W1Bus | SimulatedKernel | str | os.PathLike[str]


def crc8(data: bytes) -> int:
    """The Dallas/Maxim CRC-8 (x^8 + x^5 + x^4 + 1, LSB first, initial 0) of *data*."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 0x01 else crc >> 1
    return crc


def decode_temperature(raw: int, resolution: int = 12) -> float:
    """degC from the 16-bit temperature register (table 1), undefined bits masked."""
    raw = raw - 0x10000 if raw & 0x8000 else raw
    return (raw & ~((1 << (12 - resolution)) - 1)) / 16


def check_address(address: object) -> str | None:
    """A board file's ``address``: a DS18B20's id (lower case) or None; ValueError if not."""
    if address is None:
        return None
    if not isinstance(address, str):
        raise ValueError(f"a DS18B20 address is its id '28-...', not {address!r}")
    family, _ = parse_slave_id(address)
    if family != FAMILY:
        raise ValueError(f"{address} is family {family:02x}, not a DS18B20 (28)")
    return address.lower()


class Scratchpad(NamedTuple):
    """The nine bytes of a ``w1_slave`` read and what they say."""

    data: bytes
    #: The kernel's CRC verdict (YES).
    kernel_crc_ok: bool
    #: The kernel's ``t=`` (millidegrees), None if absent.
    millidegrees: int | None

    @property
    def raw(self) -> int:
        """The temperature register (bytes 0 and 1)."""
        return self.data[0] | self.data[1] << 8

    @property
    def resolution(self) -> int:
        """Bits, from the configuration register R1 R0 (byte 4)."""
        return 9 + (self.data[4] >> 5 & 0x03)

    @property
    def crc_ok(self) -> bool:
        """Our own check: byte 8 is the CRC of bytes 0 .. 7."""
        return crc8(self.data[:8]) == self.data[8]

    @property
    def temperature(self) -> float:
        """degC, at the configured resolution."""
        return decode_temperature(self.raw, self.resolution)


def parse_w1_slave(text: str) -> Scratchpad:
    """The kernel's two ``w1_slave`` lines; BadReply if they are not that."""
    lines = text.strip().splitlines()
    if not lines:
        raise BadReply("w1_slave is empty: the kernel read nothing", data=text.encode())
    match = _HEX_BYTES.match(lines[0].lower() + " ")
    verdict = lines[0].rstrip().rpartition(" ")[2]
    if match is None or "crc=" not in lines[0] or verdict not in ("YES", "NO"):
        raise BadReply(f"w1_slave line {lines[0]!r} is not a scratchpad", data=text.encode())
    data = bytes.fromhex(match.group(1))
    millidegrees = None
    if len(lines) > 1 and "t=" in lines[1]:
        try:
            millidegrees = int(lines[1].rpartition("t=")[2])
        except ValueError:
            raise BadReply(
                f"w1_slave line {lines[1]!r}: no temperature", data=text.encode()
            ) from None
    return Scratchpad(data, verdict == "YES", millidegrees)


class DS18B20(Device):
    """A DS18B20 on the kernel's w1 bus (see the module doc)."""

    temperature = reading(
        0.0,
        units="degC",
        precision=4,
        lower_disp_limit=-55.0,
        upper_disp_limit=125.0,
        period=2.0,
        timeout=5.0,
        doc="Temperature",
    )
    resolution = pvproperty(12, units="bits", read_only=True, doc="Conversion resolution")
    device_id = pvproperty("", read_only=True, doc="1-Wire ROM id")

    def __init__(
        self,
        prefix: str = "",
        *,
        bus: BusSpec,
        address: str | None = None,
        resolution: int = 12,
        retries: int = 2,
    ) -> None:
        if resolution not in CONVERSION_TIME:
            raise ValueError(f"resolution must be 9, 10, 11 or 12 bits, not {resolution!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, not {retries!r}")
        self.address = check_address(address)
        self.wanted_resolution = resolution
        self.retries = retries
        self.bus_spec = bus
        self._bus: W1Bus | None = None
        self._owns_bus = False
        self.slave_id: str | None = address
        self.bits = resolution
        self._last_good: float | None = None
        self._interface = "w1_slave"
        super().__init__(prefix)
        self.temperature.precision = max(0, resolution - 8)

    @property
    def bus(self) -> W1Bus:
        """The w1 tree; :class:`~caioc.hw.DeviceClosed` when not open."""
        if self._bus is None:
            raise DeviceClosed(f"DS18B20 {self.address or '(first)'} is not open")
        return self._bus

    def _timeout(self) -> float:
        return CONVERSION_TIME[12] + KERNEL_OVERHEAD + 0.5

    async def open(self) -> None:
        """Get the w1 tree and find the part (the first DS18B20 if no id was given)."""
        if self._bus is None:
            if isinstance(self.bus_spec, W1Bus):
                self._bus, self._owns_bus = self.bus_spec, False
            else:
                self._bus = W1Bus(self.bus_spec, timeout=self._timeout())
                self._owns_bus = True
        if self.address is None:
            found = await self.bus.slaves_async(FAMILY)
            if not found:
                raise DeviceUnplugged(f"no DS18B20 under {self.bus.root}", source=self.bus.name)
            self.slave_id = found[0]

    async def close(self) -> None:
        """Let the tree go (its worker stops if this driver opened it); idempotent."""
        bus, self._bus = self._bus, None
        if bus is not None and self._owns_bus:
            bus.close()

    async def probe(self) -> None:
        """The directory is there and names a DS18B20; which files the kernel offers."""
        slave = self.slave_id
        assert slave is not None
        name = (await self.bus.read_async(f"{slave}/name")).strip()
        if name != slave:
            raise BadReply(f"{slave}/name says {name!r}", data=name.encode())
        if self.bus.exists(f"{slave}/w1_slave"):
            self._interface = "w1_slave"
        elif self.bus.exists(f"{slave}/temperature"):
            self._interface = "temperature"
        else:
            raise BadReply(f"{slave} has no w1_slave or temperature: is w1_therm loaded?")
        await self.device_id.set(slave)

    async def initialise(self) -> None:
        """Set the resolution if the part has another one (logged if the kernel refuses)."""
        slave = self.slave_id
        assert slave is not None
        current = await self._current_resolution()
        if current != self.wanted_resolution:
            target = "resolution" if self.bus.exists(f"{slave}/resolution") else "w1_slave"
            try:
                await self.bus.write_async(f"{slave}/{target}", f"{self.wanted_resolution}\n")
            except HardwareError as error:
                log.warning(
                    "%s: cannot set %d-bit resolution (%s); keeping %d bits",
                    slave,
                    self.wanted_resolution,
                    error,
                    current,
                )
            current = await self._current_resolution()
        await self._resolution_is(current)

    async def _current_resolution(self) -> int:
        slave = self.slave_id
        if self.bus.exists(f"{slave}/resolution"):
            text = (await self.bus.read_async(f"{slave}/resolution")).strip()
            try:
                bits = int(text)
            except ValueError:
                raise BadReply(f"{slave}/resolution says {text!r}", data=text.encode()) from None
            if bits not in CONVERSION_TIME:
                raise BadReply(f"{slave}/resolution says {bits} bits", data=text.encode())
            return bits
        if self._interface == "w1_slave":
            return (await self._read_scratchpad()).resolution
        return self.bits  # the temperature file alone cannot tell

    async def _resolution_is(self, bits: int) -> None:
        self.bits = bits
        self.temperature.precision = max(0, bits - 8)
        await self.resolution.set(bits)

    async def _read_scratchpad(self) -> Scratchpad:
        return parse_w1_slave(await self.bus.read_async(f"{self.slave_id}/w1_slave"))

    async def _read_once(self) -> float:
        """One conversion and read; BadReply for a CRC failure or a wrong scratchpad."""
        if self._interface == "temperature":
            text = (await self.bus.read_async(f"{self.slave_id}/temperature")).strip()
            try:
                return int(text) / 1000
            except ValueError:
                raise BadReply(f"temperature says {text!r}", data=text.encode()) from None
        pad = await self._read_scratchpad()
        if not pad.kernel_crc_ok or not pad.crc_ok:
            raise BadReply(
                f"CRC error: {pad.data.hex(' ')} (kernel: {'YES' if pad.kernel_crc_ok else 'NO'})",
                data=pad.data,
            )
        if pad.data[5] != 0xFF or pad.data[7] != 0x10:
            raise BadReply(f"not a DS18B20 scratchpad: {pad.data.hex(' ')}", data=pad.data)
        if pad.resolution != self.bits:
            await self._resolution_is(pad.resolution)
        return pad.temperature

    async def measure(self) -> float:
        """A temperature in degC, with the retries and checks of the module doc."""
        failure: Exception | None = None
        for _ in range(self.retries + 1):
            try:
                value = await self._read_once()
            except BadReply as error:
                failure = error  # a CRC error: try again
                continue
            except HardwareError as error:
                if isinstance(error, DeviceUnplugged) or getattr(error, "errno", None) is None:
                    raise
                failure = error  # EIO from the temperature file: the CRC failed
                continue
            if value == POWER_ON_RAW / 16 and not self._plausible_85():
                failure = HardwareError(
                    "85 degC is the power-on value: no conversion ran (check the supply)",
                    kind=AlarmStatus.READ,
                    source=self.slave_id,
                )
                continue
            self._last_good = value
            return value
        assert failure is not None
        raise failure

    def _plausible_85(self) -> bool:
        last = self._last_good
        return last is not None and abs(last - POWER_ON_RAW / 16) <= POWER_ON_PLAUSIBLE

    @temperature.reader  # type: ignore[no-redef]
    async def temperature(self) -> float:
        return await self.measure()


@functools.cache
def _device_class(period: float, retries: int) -> type[DS18B20]:
    """The DS18B20 subclass polled every *period* s, its read timeout fit for *retries*."""
    if not period > 0:
        raise ValueError(f"a poll period must be positive, not {period!r}")
    polled = copy.copy(DS18B20._declared_map()["temperature"])
    polled.period = float(period)
    polled.timeout = (retries + 1) * (CONVERSION_TIME[12] + KERNEL_OVERHEAD) + 1.0
    return type("DS18B20", (DS18B20,), {"temperature": polled})


def make_ds18b20(
    *,
    prefix: str,
    bus: BusSpec,
    address: str | None = None,
    period: float = 2.0,
    resolution: int = 12,
    retries: int = 2,
) -> DS18B20:
    """A :class:`DS18B20` polled every *period* seconds (see the module doc)."""
    device_class = _device_class(float(period), int(retries))
    return device_class(prefix, bus=bus, address=address, resolution=resolution, retries=retries)


def simulate_ds18b20(*, address: str | None = None, **options: Any) -> SimulatedDS18B20:
    """A simulated DS18B20 (``temperature`` degC, ``resolution``)."""
    options.pop("period", None)
    options.pop("retries", None)
    return simulate(check_address(address), **options)


register(
    DriverInfo(
        name="ds18b20",
        summary="Maxim DS18B20 1-Wire thermometer (degC) through the Linux w1 sysfs interface",
        bus="w1",
        factory=make_ds18b20,
        simulator=simulate_ds18b20,
        default_address=None,
        options={"period": 2.0, "resolution": 12, "retries": 2},
    )
)

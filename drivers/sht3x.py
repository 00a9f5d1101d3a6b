"""Sensirion SHT3x (SHT30, SHT31, SHT35) humidity and temperature sensor on I2C.

Follows the SHT3x-DIS datasheet:

* single-shot measurements without clock stretching (0x2400 high, 0x240B
  medium, 0x2416 low repeatability): send the command, wait the *maximum*
  measurement duration of table 4 (15, 6 or 4 ms), then read six bytes:
  temperature MSB, LSB, CRC, humidity MSB, LSB, CRC. The part does not
  acknowledge a read before its measurement is done (section 4.4), so the
  driver never tries one early; a NACK after the full duration is a real
  fault (READ alarm);
* every 16-bit word carries a CRC-8 (polynomial 0x31, initial value 0xFF;
  CRC of 0xBEEF is 0x92, section 4.12); a mismatch is a
  :class:`~caioc.hw.BadReply` (CALC alarm);
* conversions (section 4.13): ``T = -45 + 175 * S_T / 65535`` degC and
  ``RH = 100 * S_RH / 65535`` %RH;
* at least 1 ms between two commands (section 4.1);
* probe: read the status register (0xF32D) and the serial number (0x3780),
  both CRC-checked; initialise: soft reset (0x30A2, 1.5 ms), clear status
  (0x3041), heater as set.

PVs: ``temperature`` (degC, polled every ``period`` s), ``humidity`` (%RH,
posted with it and sharing its alarms), ``heater`` (Off/On setting: the
built-in heater, for checking the sensor or driving off condensation) and
``serial_number`` (hex text).

Factory: ``make_sht3x(*, prefix, bus, address=None, period=1.0,
repeatability="high")``; ``bus`` an :class:`~caioc.hw.I2CBus`, an
smbus2-compatible object or an adapter number (see :mod:`._i2c_sensor`),
``address`` 0x44 by default (0x45 with ADDR high). Simulator:
``simulate_sht3x(*, address=None, temperature=21.0, humidity=45.0,
serial_number=0x1234ABCD, **driver_options)`` returning a
:class:`~._sim_sht3x.SimulatedSHT3x`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from caioc.hw import BadReply, reading, setting
from caioc.ioc import pvproperty

from ._i2c_sensor import BusSpec, I2CSensor, with_period
from ._registry import DriverInfo, register
from ._sim_sht3x import SimulatedSHT3x, simulate

__all__ = ["Measurement", "SHT3x", "crc8", "make_sht3x", "simulate_sht3x"]

CMD_SOFT_RESET = 0x30A2
CMD_READ_STATUS = 0xF32D
CMD_CLEAR_STATUS = 0x3041
CMD_READ_SERIAL = 0x3780
CMD_HEATER_ON = 0x306D
CMD_HEATER_OFF = 0x3066
#: Repeatability -> (single-shot command without clock stretching, maximum duration in s).
SINGLE_SHOT = {"high": (0x2400, 0.015), "medium": (0x240B, 0.006), "low": (0x2416, 0.004)}
#: Soft reset time (datasheet table 4: 1.5 ms maximum).
SOFT_RESET_TIME = 0.0015
#: The minimum time between two commands (section 4.1).
COMMAND_SPACING = 0.001


def crc8(data: bytes) -> int:
    """CRC-8 of *data* as the SHT3x computes it (poly 0x31, init 0xFF, section 4.12)."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc << 1) ^ 0x31 if crc & 0x80 else crc << 1
        crc &= 0xFF
    return crc


def decode_words(data: bytes) -> list[int]:
    """The 16-bit words of a reply, each checked against its CRC byte."""
    if len(data) % 3:
        raise BadReply(f"a reply of {len(data)} bytes is not whole words", data=data)
    words = []
    for offset in range(0, len(data), 3):
        pair, crc = data[offset : offset + 2], data[offset + 2]
        if crc8(pair) != crc:
            raise BadReply(
                f"CRC mismatch: word 0x{pair.hex()} came with CRC 0x{crc:02x}, "
                f"expected 0x{crc8(pair):02x}",
                data=data,
            )
        words.append(int.from_bytes(pair, "big"))
    return words


class Measurement(NamedTuple):
    """One converted measurement."""

    temperature: float  # degC
    humidity: float  # %RH


def convert(raw_temperature: int, raw_humidity: int) -> Measurement:
    """The datasheet's conversion (section 4.13) of the raw words."""
    return Measurement(-45.0 + 175.0 * raw_temperature / 65535.0, 100.0 * raw_humidity / 65535.0)


class SHT3x(I2CSensor):
    """A Sensirion SHT3x (see the module doc)."""

    default_address = 0x44

    temperature = reading(
        0.0,
        units="degC",
        precision=2,
        lower_disp_limit=-40.0,
        upper_disp_limit=125.0,
        period=1.0,
        doc="Air temperature",
    )
    humidity = reading(
        0.0,
        units="%RH",
        precision=2,
        lower_disp_limit=0.0,
        upper_disp_limit=100.0,
        period=None,
        doc="Relative humidity",
    )
    heater = setting(0, enum_strings=["Off", "On"], doc="The built-in heater")
    serial_number = pvproperty("", read_only=True, doc="The sensor's serial number")

    def __init__(
        self,
        prefix: str = "",
        *,
        bus: BusSpec,
        address: int | None = None,
        repeatability: str = "high",
    ) -> None:
        if repeatability not in SINGLE_SHOT:
            raise ValueError(f"repeatability must be one of {list(SINGLE_SHOT)}")
        self.command, self.duration = SINGLE_SHOT[repeatability]
        self._last_command = -1.0
        self._heater_on = False
        super().__init__(prefix, bus=bus, address=address)

    async def _send(self, command: int) -> None:
        """Send a command, at least :data:`COMMAND_SPACING` after the previous one."""
        wait = self._last_command + COMMAND_SPACING - self.clock.monotonic()
        await self.sleep(wait)
        try:
            await self.chip.write_async(command.to_bytes(2, "big"))
        finally:
            self._last_command = self.clock.monotonic()

    async def _read_words(self, count: int) -> list[int]:
        reply = bytearray(3 * count)
        await self.chip.readinto_async(reply)
        return decode_words(bytes(reply))

    async def probe(self) -> None:
        """Read the status register and the serial number, both CRC-checked."""
        async with self.lock:
            await self._send(CMD_READ_STATUS)
            await self._read_words(1)
            await self._send(CMD_READ_SERIAL)
            high, low = await self._read_words(2)
        await self.serial_number.set(f"{high << 16 | low:08X}")

    async def initialise(self) -> None:
        """Soft reset, clear the status flags, set the heater as asked."""
        async with self.lock:
            await self._send(CMD_SOFT_RESET)
            await self.sleep(SOFT_RESET_TIME)
            await self._send(CMD_CLEAR_STATUS)
            await self._send(CMD_HEATER_ON if self._heater_on else CMD_HEATER_OFF)

    async def measure(self) -> Measurement:
        """One single-shot measurement (command, wait the maximum duration, read)."""
        async with self.lock:
            await self._send(self.command)
            await self.sleep(self.duration)
            raw_temperature, raw_humidity = await self._read_words(2)
        return convert(raw_temperature, raw_humidity)

    @temperature.reader  # type: ignore[no-redef]
    async def temperature(self) -> float:
        measurement = await self.measured(self.measure, "humidity")
        await self.post("humidity", measurement.humidity)
        return measurement.temperature

    @heater.writer  # type: ignore[no-redef]
    async def heater(self, value: Any) -> None:
        on = value in (1, "On")
        async with self.lock:
            await self._send(CMD_HEATER_ON if on else CMD_HEATER_OFF)
        self._heater_on = on


def make_sht3x(
    *, prefix: str, bus: BusSpec, address: int | None = None, period: float = 1.0, **options: Any
) -> SHT3x:
    """An :class:`SHT3x` polled every *period* seconds (option: ``repeatability``)."""
    return with_period(SHT3x, "temperature", period)(prefix, bus=bus, address=address, **options)


def simulate_sht3x(*, address: int | None = None, **options: Any) -> SimulatedSHT3x:
    """A simulated SHT3x (``temperature``, ``humidity``, ``serial_number``)."""
    return simulate(address, **options)


register(
    DriverInfo(
        name="sht3x",
        summary="Sensirion SHT3x temperature (degC) and humidity (%RH)",
        bus="i2c",
        factory=make_sht3x,
        simulator=simulate_sht3x,
        default_address=0x44,
        options={"period": 1.0, "repeatability": "high"},
    )
)

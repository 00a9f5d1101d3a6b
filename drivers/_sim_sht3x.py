"""A simulated Sensirion SHT3x (SHT30/31/35) humidity and temperature sensor.

Not a register map: the part takes 16-bit commands and answers reads with
16-bit words, each followed by its CRC-8 (polynomial 0x31, init 0xFF).
Set :attr:`~SimulatedSHT3x.temperature` (degC) and
:attr:`~SimulatedSHT3x.humidity` (%RH); a measurement turns them into the
raw words the datasheet's conversion formulas (section 4.13) map back:
``S_T = (T + 45) * 65535 / 175`` and ``S_RH = RH * 65535 / 100``, rounded
and limited to 16 bits.

Modelled from the datasheet (SHT3x-DIS):

* single-shot commands without clock stretching (0x2400 high, 0x240B
  medium, 0x2416 low repeatability): while measuring (the *maximum*
  duration of table 4 times :attr:`~SimulatedSHT3x.time_factor`) the part
  does not acknowledge any access, as it does not when a read finds no
  data (section 4.4); the results can be read once;
* soft reset 0x30A2 (not answering for 1.5 ms), status 0xF32D, clear status
  0x3041, heater 0x306D / 0x3066, serial number 0x3780;
* the minimum 1 ms between two commands (section 4.1): a command sooner
  is not acknowledged;
* unknown commands are not acknowledged and set status bit 1.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from caioc.hw.sim import SimulatedI2CDevice

__all__ = ["SimulatedSHT3x", "crc8"]


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


_CRC_TABLE = _table()


def crc8(data: bytes) -> int:
    """Sensirion's CRC-8: polynomial 0x31, initial value 0xFF, no reflection."""
    crc = 0xFF
    for byte in data:
        crc = _CRC_TABLE[crc ^ byte]
    return crc


#: Single-shot commands (no clock stretching) -> maximum duration (table 4), seconds.
_SINGLE_SHOT = {0x2400: 0.015, 0x240B: 0.006, 0x2416: 0.004}
_SOFT_RESET_TIME = 0.0015
_COMMAND_SPACING = 0.001
_STATUS_AFTER_RESET = 0x8010  # alert pending, system reset detected


def _nack() -> OSError:
    return OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))


def _words(*words: int) -> bytes:
    out = bytearray()
    for word in words:
        pair = word.to_bytes(2, "big")
        out += pair + bytes([crc8(pair)])
    return bytes(out)


class SimulatedSHT3x(SimulatedI2CDevice):
    """An SHT3x on a simulated I2C bus (address 0x44, or 0x45 with ADDR high)."""

    def __init__(
        self,
        address: int = 0x44,
        *,
        temperature: float = 21.0,
        humidity: float = 45.0,
        serial_number: int = 0x1234ABCD,
        name: str | None = None,
    ) -> None:
        super().__init__(address, name=name or "sht3x")
        #: The air around the sensor: degC and %RH.
        self.temperature = temperature
        self.humidity = humidity
        self.serial_number = serial_number & 0xFFFFFFFF
        #: Measurements take the datasheet's maximum duration times this.
        self.time_factor = 1.0
        #: Commands seen, accesses refused while busy, completed measurements.
        self.commands: list[int] = []
        self.busy_refusals = 0
        self.measurements = 0
        self.heater = False
        self._power_on()

    def _power_on(self) -> None:
        self.status = _STATUS_AFTER_RESET
        self.heater = False
        self._busy_until = -1.0
        self._last_command = -1.0
        self._reply = b""

    def reset(self) -> None:
        """Power-on reset."""
        super().reset()
        self._power_on()

    def raw_values(self) -> tuple[int, int]:
        """``(S_T, S_RH)`` for the present air (datasheet 4.13, inverted)."""
        raw_t = round((self.temperature + 45.0) * 65535.0 / 175.0)
        raw_rh = round(self.humidity * 65535.0 / 100.0)
        return min(max(raw_t, 0), 0xFFFF), min(max(raw_rh, 0), 0xFFFF)

    # -- the bus side ----------------------------------------------------------------

    def _check_ready(self) -> float:
        now = self.clock.monotonic()
        if now < self._busy_until:
            self.busy_refusals += 1
            raise _nack()
        return now

    def handle_write(self, data: bytes) -> None:
        """A command (two bytes, MSB first)."""
        now = self._check_ready()
        if not data:
            return  # an address probe
        if len(data) != 2 or now < self._last_command + _COMMAND_SPACING:
            self.status |= 0x0002
            raise _nack()
        command = int.from_bytes(data, "big")
        self.commands.append(command)
        self._last_command = now
        self._reply = b""
        if command in _SINGLE_SHOT:
            duration = _SINGLE_SHOT[command] * self.time_factor
            self._busy_until = now + duration
            self.after(duration, SimulatedSHT3x._measured)
        elif command == 0x30A2:
            self._power_on()
            self._busy_until = now + _SOFT_RESET_TIME
            self._last_command = now
        elif command == 0xF32D:
            self._reply = _words(self.status)
        elif command == 0x3041:
            self.status &= ~0x8C10  # alert, tracking alerts, reset detected
        elif command == 0x3780:
            self._reply = _words(self.serial_number >> 16, self.serial_number & 0xFFFF)
        elif command in (0x306D, 0x3066):
            self.heater = command == 0x306D
            self.status = self.status | 0x2000 if self.heater else self.status & ~0x2000
        else:
            self.status |= 0x0002
            raise _nack()
        self.status &= ~0x0002

    def handle_read(self, length: int) -> bytes:
        """The pending reply (a second read finds none and is not acknowledged)."""
        self._check_ready()
        if not self._reply:
            raise _nack()
        reply, self._reply = self._reply, b""
        return (reply + b"\xff" * length)[:length]

    def _measured(self) -> None:
        self._reply = _words(*self.raw_values())
        self.measurements += 1


def simulate(address: int | None, **options: Any) -> SimulatedSHT3x:
    """The simulated part for the registry entry; driver options are ignored."""
    known = {"temperature", "humidity", "serial_number", "name"}
    return SimulatedSHT3x(
        0x44 if address is None else address,
        **{key: value for key, value in options.items() if key in known},
    )

"""A simulated Maxim DS18B20 1-Wire thermometer, as the Linux ``w1_therm`` driver shows it.

Set :attr:`~SimulatedDS18B20.temperature` (degC, the part's range is -55 to
+125); a read of ``w1_slave`` runs a conversion (taking the datasheet's
maximum conversion time for the resolution on the bus's clock, as the
kernel blocks for it) and writes what the kernel would print: the nine
scratchpad bytes with the CRC-8 the kernel computed over the first eight
and its verdict, then the same bytes and the temperature in millidegrees::

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125

Modelled from the DS18B20 datasheet (19-7487):

* the temperature register (figure 4, table 1): sign-extended two's
  complement, 0.0625 degC per LSB; at 11, 10 or 9 bits the lowest 1, 2 or
  3 bits are undefined: the simulation converts to 12 bits, drops the
  lower ones (rounding towards minus infinity, as cutting two's complement
  bits does) and fills them with ones, so a driver that does not mask them
  is caught;
* the scratchpad (figure 9): temperature LSB, MSB, TH, TL, configuration
  (``0 R1 R0 1 1 1 1 1``: 0x1F, 0x3F, 0x5F, 0x7F for 9 .. 12 bits), the
  reserved bytes 5 (0xFF), 6 (``0x10 - (LSB & 0x0F)``, as real parts show)
  and 7 (0x10), then the CRC (x^8 + x^5 + x^4 + 1) of bytes 0 .. 7;
* conversion time (table 2, tCONV maximum): 93.75, 187.5, 375 and 750 ms;
* the power-on value of the temperature register, +85 degC (0x0550),
  which a read shows when no conversion ran (:meth:`power_on_reset`, what
  a brown-out or too weak a parasite supply does).

The newer ``temperature`` file (millidegrees; EIO when the CRC fails) and
``resolution`` (read, or write 9 .. 12) are there too. Faults:
:meth:`corrupt_next` (reads whose CRC fails: the kernel says NO),
:meth:`~caioc.hw.sim.SimulatedSysfsDevice.fail_next` (EIO),
:meth:`~caioc.hw.sim.SimulatedSysfsDevice.unplug` (the directory goes).
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

from caioc.hw.sim.w1 import SimulatedW1Slave, crc8_maxim

__all__ = ["CONVERSION_TIME", "SimulatedDS18B20", "scratchpad", "simulate"]

#: Resolution (bits) -> maximum conversion time (table 2), seconds.
CONVERSION_TIME = {9: 0.09375, 10: 0.1875, 11: 0.375, 12: 0.75}
_POWER_ON_RAW = 0x0550  # +85 degC
_TH, _TL = 75, 70  # the factory's alarm thresholds in EEPROM


def raw_temperature(temperature: float, resolution: int = 12) -> int:
    """The 16-bit temperature register for *temperature* at *resolution* bits."""
    undefined = 12 - resolution
    steps = round(min(max(temperature, -55.0), 125.0) * 16) >> undefined << undefined
    return (steps | ((1 << undefined) - 1)) & 0xFFFF


def scratchpad(raw: int, resolution: int = 12) -> bytes:
    """The nine scratchpad bytes (figure 9) holding temperature register *raw*."""
    lsb, msb = raw & 0xFF, raw >> 8
    body = bytes(
        [lsb, msb, _TH, _TL, 0x1F | (resolution - 9) << 5, 0xFF, 0x10 - (lsb & 0x0F), 0x10]
    )
    return body + bytes([crc8_maxim(body)])


def _kernel_millidegrees(data: bytes) -> int:
    """What newer kernels print as ``t=``: the register, undefined bits masked."""
    raw = int.from_bytes(data[:2], "little", signed=True)
    resolution = 9 + (data[4] >> 5 & 0x03)
    raw &= ~((1 << (12 - resolution)) - 1)
    return raw * 1000 // 16


class SimulatedDS18B20(SimulatedW1Slave):
    """A DS18B20 (family 0x28) on a :class:`~caioc.hw.sim.SimulatedW1Bus`."""

    def __init__(
        self, slave_id: str = "28-000000000001", *, temperature: float = 21.5, resolution: int = 12
    ) -> None:
        super().__init__(slave_id)
        if self.family != 0x28:
            raise ValueError(f"a DS18B20's family code is 28, not {self.family:02x}")
        if resolution not in CONVERSION_TIME:
            raise ValueError(f"resolution {resolution!r} is not 9 to 12 bits")
        #: The temperature of the part, degC.
        self.temperature = temperature
        #: Bits per conversion (the configuration register; 12 at power-on).
        self.resolution = resolution
        #: Conversions take the datasheet's maximum times this.
        self.time_factor = 1.0
        #: Completed conversions.
        self.conversions = 0
        self._raw = _POWER_ON_RAW
        self._corrupt = 0
        self._no_conversion = 0
        self._state_lock = threading.Lock()

    def power_on_reset(self, reads: int = 1) -> None:
        """The next *reads* reads find no conversion done: the register holds +85 degC."""
        with self._state_lock:
            self._no_conversion += reads

    def corrupt_next(self, reads: int = 1) -> None:
        """The next *reads* reads arrive with a flipped bit: the kernel's CRC says NO."""
        with self._state_lock:
            self._corrupt += reads

    def attributes(self) -> dict[str, str]:
        """The w1_therm files as they are now (no conversion runs here)."""
        data = scratchpad(self._raw, self.resolution)
        return {
            **super().attributes(),
            "w1_slave": self._w1_slave(data),
            "temperature": f"{_kernel_millidegrees(data)}\n",
            "resolution": f"{self.resolution}\n",
        }

    @staticmethod
    def _w1_slave(data: bytes) -> str:
        """The kernel's two lines for the scratchpad *data* as received."""
        crc = crc8_maxim(data[:8])
        verdict = "YES" if crc == data[8] else "NO"
        hexes = " ".join(f"{byte:02x}" for byte in data)
        return f"{hexes} : crc={crc:02x} {verdict}\n{hexes} t={_kernel_millidegrees(data)}\n"

    def _convert(self) -> tuple[bytes, bool]:
        """One conversion (on the clock); the scratchpad read after it, and whether
        it arrived intact."""
        self.clock.sleep(CONVERSION_TIME[self.resolution] * self.time_factor)
        with self._state_lock:
            skipped = self._no_conversion > 0
            self._no_conversion -= skipped
            corrupt = self._corrupt > 0
            self._corrupt -= corrupt
        if not skipped:
            self._raw = raw_temperature(self.temperature, self.resolution)
            self.conversions += 1
        else:
            self._raw = _POWER_ON_RAW
        data = scratchpad(self._raw, self.resolution)
        if corrupt:
            data = bytes([data[0] ^ 0x04]) + data[1:]  # one bit flipped on the wire
        return data, not corrupt

    def on_read(self, attribute: str) -> str | None:
        """``w1_slave`` and ``temperature`` convert, as ``w1_therm`` does."""
        if attribute == "w1_slave":
            data, _ = self._convert()
            return self._w1_slave(data)
        if attribute == "temperature":
            data, intact = self._convert()
            if not intact:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return f"{_kernel_millidegrees(data)}\n"
        if attribute == "resolution":
            return f"{self.resolution}\n"
        return None

    def on_write(self, attribute: str, text: str) -> None:
        """``resolution`` (or, as older kernels take it, ``w1_slave``): 9 .. 12 bits."""
        if attribute in ("resolution", "w1_slave"):
            try:
                bits = int(text.strip())
            except ValueError:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL)) from None
            if bits not in CONVERSION_TIME:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            self.resolution = bits


def simulate(
    address: int | str | None = None,
    *,
    temperature: float | None = None,
    resolution: int = 12,
    **driver_options: Any,
) -> SimulatedDS18B20:
    """A simulated DS18B20 with id *address* (default ``28-000000000001``).

    Without *temperature*, each id gets its own plausible one (18 .. 25
    degC), so a ``--sim`` board with several probes shows distinct values.
    """
    slave_id = "28-000000000001" if address is None else str(address)
    if temperature is None:
        temperature = 18.0 + (int(slave_id[3:], 16) % 57) / 8  # multiples of 1/8 degC
    return SimulatedDS18B20(slave_id, temperature=temperature, resolution=resolution)

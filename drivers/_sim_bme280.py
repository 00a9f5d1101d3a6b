"""A simulated Bosch BME280 / BMP280 that turns physical values into raw ADC codes.

Set :attr:`~SimulatedBME280.temperature` (degC), :attr:`~SimulatedBME280.pressure`
(hPa) and :attr:`~SimulatedBME280.humidity` (%RH); each conversion finds the
raw ``adc_T``, ``adc_P`` and ``adc_H`` that the part's calibration turns
back into those values. It does so by running the datasheet's
*double-precision* compensation formulas (BME280 datasheet, appendix 8.1;
BMP280 datasheet, section 8.1) backwards, searching each monotonic formula
by bisection. The driver uses the *integer* formulas (section 4.2.3), so the
two are independent implementations of the datasheet and a round trip
through them tests the driver's arithmetic rather than its mirror image.

Modelled from the datasheets:

* chip id (0xD0: 0x60 BME280, 0x58 BMP280), calibration NVM (0x88..0xA1,
  0xE1..0xE7 with the split dig_H4/dig_H5 nibbles), read-only registers;
* soft reset (0xB6 to 0xE0): registers back to power-on values; the chip
  does not answer for the 2 ms start-up time, then ``im_update`` (status
  bit 0) stays set while the NVM is copied (:attr:`nvm_copy_time`);
* ctrl_hum (0xF2) only takes effect at the next write of ctrl_meas (0xF4);
* forced mode: ``measuring`` (status bit 3) is set for the measurement time
  (the typical time of datasheet section 9.1 times :attr:`time_factor`),
  then the data registers are updated and the chip returns to sleep;
* normal mode: measurement, standby (config ``t_sb``), repeat;
* resolution: with the IIR filter off, temperature and pressure have
  ``16 + (osrs - 1)`` bits (the low bits of the 20-bit value read 0); with
  it on, 20 bits, filtered as ``(old * (c - 1) + new) / c`` on the raw
  values; humidity is 16 bits and never filtered;
* skipped measurements (oversampling 0) read 0x80000 (0x8000 for humidity),
  as do the data registers after reset.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable, Mapping
from typing import Any

from caioc.hw.sim import SimulatedI2CDevice

__all__ = ["DATASHEET_CALIBRATION", "SimulatedBME280"]

#: The BMP280 datasheet's worked example (section 3.12) for temperature and
#: pressure, with a typical BME280 humidity calibration.
DATASHEET_CALIBRATION: dict[str, int] = {
    "T1": 27504, "T2": 26435, "T3": -1000,
    "P1": 36477, "P2": -10685, "P3": 3024, "P4": 2855, "P5": 140,
    "P6": -7, "P7": 15500, "P8": -14600, "P9": 6000,
    "H1": 75, "H2": 362, "H3": 0, "H4": 313, "H5": 50, "H6": 30,
}  # fmt: skip

_CHIP_IDS = {"bme280": 0x60, "bmp280": 0x58}
_OVERSAMPLING = (0, 1, 2, 4, 8, 16, 16, 16)  # osrs code -> oversampling factor
_FILTER = (1, 2, 4, 8, 16, 16, 16, 16)  # filter code -> IIR coefficient (1: off)
_STANDBY_MS = {
    "bme280": (0.5, 62.5, 125.0, 250.0, 500.0, 1000.0, 10.0, 20.0),
    "bmp280": (0.5, 62.5, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0),
}
_SKIPPED_20 = 0x80000
_SKIPPED_16 = 0x8000
_STARTUP_TIME = 0.002


def _nack() -> OSError:
    return OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))


def closest_code(function: Callable[[int], float], target: float, bits: int) -> int:
    """The code in ``0 .. 2**bits - 1`` whose monotonic *function* is nearest *target*."""
    low, high = 0, (1 << bits) - 1
    increasing = function(high) >= function(low)
    sign = 1.0 if increasing else -1.0
    while low < high:  # the first code at or past the target
        middle = (low + high) // 2
        if sign * function(middle) < sign * target:
            low = middle + 1
        else:
            high = middle
    if low > 0 and abs(function(low - 1) - target) <= abs(function(low) - target):
        return low - 1
    return low


class SimulatedBME280(SimulatedI2CDevice):
    """A BME280 (or, with ``chip="bmp280"``, a BMP280) on a simulated I2C bus.

    *calibration* overrides entries of :data:`DATASHEET_CALIBRATION`
    (keys ``"T1"`` .. ``"H6"``).
    """

    def __init__(
        self,
        address: int = 0x76,
        *,
        chip: str = "bme280",
        calibration: Mapping[str, int] | None = None,
        temperature: float = 21.0,
        pressure: float = 1013.25,
        humidity: float = 45.0,
        name: str | None = None,
    ) -> None:
        if chip not in _CHIP_IDS:
            raise ValueError(f"chip must be one of {sorted(_CHIP_IDS)}, not {chip!r}")
        super().__init__(address, name=name or chip)
        self.chip = chip
        self.calibration = {**DATASHEET_CALIBRATION, **(calibration or {})}
        #: The air around the sensor: degC, hPa and %RH.
        self.temperature = temperature
        self.pressure = pressure
        self.humidity = humidity
        #: Conversions take the datasheet's typical time times this.
        self.time_factor = 1.0
        #: How long ``im_update`` stays set after the start-up time (seconds).
        self.nvm_copy_time = 0.0005
        #: Completed conversions, and data reads made while one was running.
        self.conversions = 0
        self.reads_while_measuring = 0
        self._define_power_on_registers()
        self.on_write(0xE0, SimulatedBME280._reset_written)
        self.on_write(0xF4, SimulatedBME280._ctrl_meas_written)
        self.on_write(0xF5, SimulatedBME280._config_written)
        self.on_read(0xF3, SimulatedBME280._status_read)
        self.on_read(0xF7, SimulatedBME280._data_read)
        self._clear_state()

    # -- power-on contents ---------------------------------------------------------

    def _define_power_on_registers(self) -> None:
        c = self.calibration
        block = struct.pack(
            "<HhhHhhhhhhhh", c["T1"], c["T2"], c["T3"],
            *(c[f"P{i}"] for i in range(1, 10)),
        ) + bytes([0x00, c["H1"] & 0xFF])  # fmt: skip
        humidity_block = bytes(7)
        if self.chip == "bme280":
            h4, h5 = c["H4"], c["H5"]
            humidity_block = struct.pack("<hB", c["H2"], c["H3"]) + bytes(
                [
                    (h4 >> 4) & 0xFF,
                    ((h5 & 0x0F) << 4) | (h4 & 0x0F),
                    (h5 >> 4) & 0xFF,
                    c["H6"] & 0xFF,
                ]
            )
        for offset, value in enumerate(block):
            self.define_register(0x88 + offset, value, read_only=True)
        for offset, value in enumerate(humidity_block):
            self.define_register(0xE1 + offset, value, read_only=True)
        self.define_register(0xD0, _CHIP_IDS[self.chip], read_only=True)
        self.define_register(0xE0, 0x00)
        self.define_register(0xF2, 0x00, read_only=self.chip == "bmp280")
        self.define_register(0xF3, 0x00, read_only=True)
        for offset, value in enumerate([0x80, 0, 0, 0x80, 0, 0, 0x80, 0]):
            self.define_register(0xF7 + offset, value, read_only=True)

    def _clear_state(self) -> None:
        self._booting_until = -1.0
        self._nvm_until = -1.0
        self._measuring_until = -1.0
        self._normal_start: float | None = None
        self._normal_done = 0
        self._latched = (0, 0, 0)  # osrs codes t, p, h in effect
        self._filtered: dict[str, float] = {}

    def reset(self) -> None:
        """Power-on reset: registers, pending conversions and the filter."""
        super().reset()
        self._clear_state()

    # -- the bus side ----------------------------------------------------------------

    def handle_write(self, data: bytes) -> None:
        """Not answered during start-up; otherwise a register write."""
        if self.clock.monotonic() < self._booting_until:
            raise _nack()
        super().handle_write(data)

    def handle_read(self, length: int) -> bytes:
        """Not answered during start-up; otherwise a register read."""
        if self.clock.monotonic() < self._booting_until:
            raise _nack()
        return super().handle_read(length)

    def update(self) -> None:
        """Finish due conversions (forced and normal mode) before each access."""
        super().update()
        if self._normal_start is not None:
            self._run_normal_mode(self.clock.monotonic())

    def status(self) -> int:
        """The status register now: bit 3 ``measuring``, bit 0 ``im_update``."""
        now = self.clock.monotonic()
        status = 0
        if now < self._booting_until + self.nvm_copy_time:
            status |= 0x01
        if now < self._measuring_until or self._normal_measuring(now):
            status |= 0x08
        return status

    def _status_read(self, register: int) -> None:
        self.registers[0xF3] = self.status()

    def _reset_written(self, register: int, value: int) -> None:
        if value == 0xB6:
            self.reset()
            self._booting_until = self.clock.monotonic() + _STARTUP_TIME

    def _config_written(self, register: int, value: int) -> None:
        self._filtered.clear()  # a new filter setting starts afresh

    def _ctrl_meas_written(self, register: int, value: int) -> None:
        now = self.clock.monotonic()
        humidity_code = self.registers[0xF2] & 0x07 if self.chip == "bme280" else 0
        self._latched = ((value >> 5) & 0x07, (value >> 2) & 0x07, humidity_code)
        mode = value & 0x03
        self._normal_start = None
        if mode == 0x03:
            self._normal_start, self._normal_done = now, 0
        elif mode and now >= self._measuring_until:
            self._measuring_until = now + self.measurement_time()
            self.after(self.measurement_time(), SimulatedBME280._forced_done)

    def _forced_done(self) -> None:
        self._convert()
        self.registers[0xF4] &= ~0x03  # back to sleep mode

    def _data_read(self, register: int) -> None:
        # In normal mode the chip's shadow registers make any read consistent.
        if self.status() & 0x08 and self._normal_start is None:
            self.reads_while_measuring += 1

    # -- timing ------------------------------------------------------------------------

    def measurement_time(self) -> float:
        """Seconds a conversion takes: typical time (datasheet 9.1) times :attr:`time_factor`."""
        t, p, h = (_OVERSAMPLING[code] for code in self._latched)
        milliseconds = 1.0 + 2.0 * t + (2.0 * p + 0.5 if p else 0.0) + (2.0 * h + 0.5 if h else 0.0)
        return milliseconds * self.time_factor / 1000.0

    def _cycle(self) -> float:
        standby = _STANDBY_MS[self.chip][self.registers[0xF5] >> 5] / 1000.0
        return self.measurement_time() + standby

    def _run_normal_mode(self, now: float) -> None:
        assert self._normal_start is not None
        elapsed = now - self._normal_start - self.measurement_time()
        if elapsed < 0:
            return
        done = int(elapsed // self._cycle()) + 1
        for _ in range(min(done - self._normal_done, 64)):
            self._convert()
        self._normal_done = done

    def _normal_measuring(self, now: float) -> bool:
        if self._normal_start is None:
            return False
        return (now - self._normal_start) % self._cycle() < self.measurement_time()

    # -- the physics, backwards ----------------------------------------------------------

    def _temperature(self, adc_t: int) -> tuple[float, int]:
        """Datasheet 8.1 (double): degC and t_fine for a raw temperature."""
        c = self.calibration
        var1 = (adc_t / 16384.0 - c["T1"] / 1024.0) * c["T2"]
        var2 = (adc_t / 131072.0 - c["T1"] / 8192.0) ** 2 * c["T3"]
        return (var1 + var2) / 5120.0, int(var1 + var2)

    def _pressure(self, adc_p: int, t_fine: int) -> float:
        """Datasheet 8.1 (double): Pa for a raw pressure."""
        c = self.calibration
        var1 = t_fine / 2.0 - 64000.0
        var2 = var1 * var1 * c["P6"] / 32768.0
        var2 = var2 + var1 * c["P5"] * 2.0
        var2 = var2 / 4.0 + c["P4"] * 65536.0
        var1 = (c["P3"] * var1 * var1 / 524288.0 + c["P2"] * var1) / 524288.0
        var1 = (1.0 + var1 / 32768.0) * c["P1"]
        if var1 == 0.0:
            return 0.0
        p = 1048576.0 - adc_p
        p = (p - var2 / 4096.0) * 6250.0 / var1
        var1 = c["P9"] * p * p / 2147483648.0
        var2 = p * c["P8"] / 32768.0
        return p + (var1 + var2 + c["P7"]) / 16.0

    def _humidity(self, adc_h: int, t_fine: int) -> float:
        """Datasheet 8.1 (double): %RH for a raw humidity."""
        c = self.calibration
        var_h = t_fine - 76800.0
        var_h = (adc_h - (c["H4"] * 64.0 + c["H5"] / 16384.0 * var_h)) * (
            c["H2"]
            / 65536.0
            * (1.0 + c["H6"] / 67108864.0 * var_h * (1.0 + c["H3"] / 67108864.0 * var_h))
        )
        var_h = var_h * (1.0 - c["H1"] * var_h / 524288.0)
        return min(100.0, max(0.0, var_h))

    def _raw_20(self, key: str, code: int, function: Callable[[int], float], target: float) -> int:
        """A 20-bit raw value for *target*, at the resolution the settings give, filtered."""
        coefficient = _FILTER[(self.registers[0xF5] >> 2) & 0x07]
        bits = 20 if coefficient > 1 else 15 + min(code, 5)
        shift = 20 - bits
        raw = closest_code(lambda k: function(k << shift), target, bits) << shift
        if coefficient == 1:
            return raw
        old = self._filtered.get(key, float(raw))
        self._filtered[key] = (old * (coefficient - 1) + raw) / coefficient
        return int(self._filtered[key])

    def raw_values(self) -> tuple[int, int, int]:
        """``(adc_T, adc_P, adc_H)`` for the present air and settings."""
        t_code, p_code, h_code = self._latched
        adc_t = adc_p = _SKIPPED_20
        adc_h = _SKIPPED_16
        t_fine = self._temperature(adc_t)[1]
        if t_code:
            adc_t = self._raw_20(
                "T", t_code, lambda raw: self._temperature(raw)[0], self.temperature
            )
            t_fine = self._temperature(adc_t)[1]
        if p_code:
            adc_p = self._raw_20(
                "P", p_code, lambda raw: self._pressure(raw, t_fine), self.pressure * 100.0
            )
        if h_code:
            adc_h = closest_code(lambda raw: self._humidity(raw, t_fine), self.humidity, 16)
        return adc_t, adc_p, adc_h

    def _convert(self) -> None:
        adc_t, adc_p, adc_h = self.raw_values()
        data = [adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4]
        data += [adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4]
        if self.chip == "bme280":
            data += [adc_h >> 8, adc_h & 0xFF]
        self.poke(0xF7, data)
        self.conversions += 1


def simulate(chip: str, address: int | None, **options: Any) -> SimulatedBME280:
    """The simulated part for a registry entry; driver options are ignored."""
    known = {"calibration", "temperature", "pressure", "humidity", "name"}
    return SimulatedBME280(
        0x76 if address is None else address,
        chip=chip,
        **{key: value for key, value in options.items() if key in known},
    )

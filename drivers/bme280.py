"""Bosch BME280 (temperature, pressure, humidity) and BMP280 (no humidity) on I2C.

Follows the Bosch datasheets (BME280 BST-BME280-DS002, BMP280
BST-BMP280-DS001):

* probe: chip id at 0xD0 (0x60 BME280; 0x58 BMP280, 0x56/0x57 its samples);
  another id is a :class:`~caioc.hw.BadReply` (CALC alarm) naming the part;
* initialise: soft reset (0xB6 to 0xE0), the 2 ms start-up time, wait for
  ``im_update`` (status bit 0) to clear, read the calibration (0x88..0xA1
  and, on a BME280, 0xE1..0xE7 with dig_H4/dig_H5 packed in nibbles), then
  ctrl_hum (0xF2; it takes effect at the next ctrl_meas write), config
  (0xF5: standby time and IIR filter, written in sleep mode) and ctrl_meas
  (0xF4: oversampling and mode);
* forced mode (the default; the datasheet's choice for slow monitoring):
  each poll starts one conversion, waits the *maximum* measurement time
  of datasheet section 9.1 (appendix B), then checks that ``measuring``
  (status bit 3) is clear before the burst read of 0xF7..0xFE, so the
  results are never read mid-conversion; normal mode: the part converts
  on its own every ``measurement time + standby``, each poll is a burst read;
* the integer compensation formulas of section 4.2.3 ("Compensation
  formulas"): int32 temperature with t_fine, int64 pressure, int32
  humidity, with C's truncating division where the datasheet divides.

PVs (the prefix is the board file's): ``temperature`` (degC, 0.01 degC
resolution), ``pressure`` (hPa: EPICS weather users expect hPa; the part's
Pa /100) and, for a BME280, ``humidity`` (%RH). One burst read gives all
three: ``temperature`` is polled every ``period`` seconds and posts the
others, which share its alarms.

Factory (what a board file's options become)::

    make_bme280(*, prefix, bus, address=None, period=1.0, mode="forced",
                oversampling_temperature=1, oversampling_pressure=1,
                oversampling_humidity=1, iir_filter=0, standby_ms=1000.0)
    make_bmp280(... the same without oversampling_humidity)

``bus`` is an :class:`~caioc.hw.I2CBus`, an smbus2-compatible object or an
adapter number (see :mod:`._i2c_sensor`); ``address`` defaults to 0x76
(SDO to GND; 0x77 with SDO high). Oversampling is 1, 2, 4, 8 or 16,
``iir_filter`` 0 (off), 2, 4, 8 or 16, ``standby_ms`` (normal mode only)
0.5, 62.5, 125, 250, 500, 1000 and 10 or 20 (BME280) / 2000 or 4000
(BMP280). Simulators: ``simulate_bme280(*, address=None, temperature=21.0,
pressure=1013.25, humidity=45.0, calibration=None, **driver_options)``
and ``simulate_bmp280`` likewise, returning a
:class:`~._sim_bme280.SimulatedBME280`.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

from caioc.hw import BadReply, reading

from ._i2c_sensor import BusSpec, I2CSensor, with_period
from ._registry import DriverInfo, register
from ._sim_bme280 import SimulatedBME280, simulate

__all__ = [
    "BME280",
    "BMP280",
    "Calibration",
    "Measurement",
    "compensate_humidity",
    "compensate_pressure",
    "compensate_temperature",
    "make_bme280",
    "make_bmp280",
    "measurement_time",
    "simulate_bme280",
    "simulate_bmp280",
]

REG_CALIBRATION_TP = 0x88  # 0x88..0xA1: dig_T1..dig_P9, reserved, dig_H1
REG_CHIP_ID = 0xD0
REG_RESET = 0xE0
REG_CALIBRATION_H = 0xE1  # 0xE1..0xE7: dig_H2..dig_H6
REG_CTRL_HUM = 0xF2
REG_STATUS = 0xF3
REG_CTRL_MEAS = 0xF4
REG_CONFIG = 0xF5
REG_DATA = 0xF7  # press msb, lsb, xlsb, temp msb, lsb, xlsb, hum msb, lsb

RESET_COMMAND = 0xB6
STATUS_MEASURING = 0x08
STATUS_IM_UPDATE = 0x01
MODE_SLEEP, MODE_FORCED, MODE_NORMAL = 0x00, 0x01, 0x03
CHIP_ID_BME280 = 0x60
CHIP_IDS_BMP280 = frozenset({0x56, 0x57, 0x58})

#: Start-up time after power-on or soft reset (datasheet table 1), seconds.
STARTUP_TIME = 0.002
#: Oversampling factor -> osrs code (datasheet tables 20, 22 and 23).
OVERSAMPLING = {1: 0b001, 2: 0b010, 4: 0b011, 8: 0b100, 16: 0b101}
#: IIR filter coefficient (0: off) -> filter code (table 28).
IIR_FILTER = {0: 0b000, 2: 0b001, 4: 0b010, 8: 0b011, 16: 0b100}
_STANDBY_COMMON = {0.5: 0, 62.5: 1, 125.0: 2, 250.0: 3, 500.0: 4, 1000.0: 5}
#: Normal-mode standby time in ms -> t_sb code (BME280 table 27, BMP280 table 11).
STANDBY_BME280 = {**_STANDBY_COMMON, 10.0: 6, 20.0: 7}
STANDBY_BMP280 = {**_STANDBY_COMMON, 2000.0: 6, 4000.0: 7}


@dataclass(frozen=True)
class Calibration:
    """The trimming parameters from the part's NVM (datasheet table 16 / 18)."""

    dig_T1: int
    dig_T2: int
    dig_T3: int
    dig_P1: int
    dig_P2: int
    dig_P3: int
    dig_P4: int
    dig_P5: int
    dig_P6: int
    dig_P7: int
    dig_P8: int
    dig_P9: int
    dig_H1: int = 0
    dig_H2: int = 0
    dig_H3: int = 0
    dig_H4: int = 0
    dig_H5: int = 0
    dig_H6: int = 0

    @classmethod
    def from_registers(cls, block_tp: bytes, block_h: bytes | None = None) -> Calibration:
        """Decode 0x88..0xA1 (26 bytes) and, for a BME280, 0xE1..0xE7 (7 bytes)."""
        if len(block_tp) != 26 or (block_h is not None and len(block_h) != 7):
            raise BadReply("calibration blocks have the wrong length", data=block_tp)
        names = ["dig_T1", "dig_T2", "dig_T3", *(f"dig_P{n}" for n in range(1, 10))]
        values = dict(zip(names, struct.unpack_from("<HhhHhhhhhhhh", block_tp), strict=True))
        if block_h is not None:
            e4, e5, e6 = block_h[3], block_h[4], block_h[5]
            values["dig_H1"] = block_tp[25]
            values["dig_H2"] = int.from_bytes(block_h[0:2], "little", signed=True)
            values["dig_H3"] = block_h[2]
            # 0xE4 / 0xE5[3:0] and 0xE5[7:4] / 0xE6: two 12-bit signed values
            values["dig_H4"] = (e4 - ((e4 & 0x80) << 1)) * 16 | (e5 & 0x0F)
            values["dig_H5"] = (e6 - ((e6 & 0x80) << 1)) * 16 | (e5 >> 4)
            values["dig_H6"] = block_h[6] - ((block_h[6] & 0x80) << 1)
        calibration = cls(**values)
        calibration.check(block_tp)
        return calibration

    def check(self, raw: bytes = b"") -> None:
        """Refuse NVM contents no part ships with (all 0x00 or 0xFF: a bus fault)."""
        if self.dig_T1 in (0, 0xFFFF) or self.dig_P1 in (0, 0xFFFF):
            raise BadReply(
                f"implausible calibration (dig_T1={self.dig_T1}, dig_P1={self.dig_P1})", data=raw
            )


def _c_div(numerator: int, denominator: int) -> int:
    """C's integer division, which truncates toward zero (Python's ``//`` floors)."""
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator >= 0) == (denominator >= 0) else -quotient


def compensate_temperature(adc_t: int, cal: Calibration) -> tuple[int, int]:
    """``(temperature in 0.01 degC, t_fine)``: BME280_compensate_T_int32 (4.2.3)."""
    var1 = (((adc_t >> 3) - (cal.dig_T1 << 1)) * cal.dig_T2) >> 11
    var2 = (((((adc_t >> 4) - cal.dig_T1) * ((adc_t >> 4) - cal.dig_T1)) >> 12) * cal.dig_T3) >> 14
    t_fine = var1 + var2
    return (t_fine * 5 + 128) >> 8, t_fine


def compensate_pressure(adc_p: int, t_fine: int, cal: Calibration) -> int:
    """Pressure in Pa as Q24.8 (value / 256 = Pa): BME280_compensate_P_int64 (4.2.3)."""
    var1 = t_fine - 128000
    var2 = var1 * var1 * cal.dig_P6
    var2 = var2 + ((var1 * cal.dig_P5) << 17)
    var2 = var2 + (cal.dig_P4 << 35)
    var1 = ((var1 * var1 * cal.dig_P3) >> 8) + ((var1 * cal.dig_P2) << 12)
    var1 = (((1 << 47) + var1) * cal.dig_P1) >> 33
    if var1 == 0:
        return 0  # the datasheet's guard against dividing by zero
    p = 1048576 - adc_p
    p = _c_div(((p << 31) - var2) * 3125, var1)
    var1 = (cal.dig_P9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (cal.dig_P8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (cal.dig_P7 << 4)


def compensate_humidity(adc_h: int, t_fine: int, cal: Calibration) -> int:
    """Humidity in %RH as Q22.10 (value / 1024 = %RH): bme280_compensate_H_int32 (4.2.3)."""
    v = t_fine - 76800
    humidity = (((adc_h << 14) - (cal.dig_H4 << 20) - (cal.dig_H5 * v)) + 16384) >> 15
    temperature_factor = (((v * cal.dig_H6) >> 10) * (((v * cal.dig_H3) >> 11) + 32768)) >> 10
    v = humidity * (((temperature_factor + 2097152) * cal.dig_H2 + 8192) >> 14)
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * cal.dig_H1) >> 4)
    v = min(max(v, 0), 419430400)
    return v >> 12


def measurement_time(
    temperature: int, pressure: int, humidity: int = 0, *, maximum: bool = True
) -> float:
    """Seconds one measurement takes (datasheet 9.1), from the oversampling factors.

    A factor of 0 is a skipped measurement. *maximum* gives the maximum
    time, which a driver must wait; otherwise the typical time.
    """
    if maximum:
        ms = 1.25 + 2.3 * temperature
        ms += (2.3 * pressure + 0.575) if pressure else 0.0
        ms += (2.3 * humidity + 0.575) if humidity else 0.0
    else:
        ms = 1.0 + 2.0 * temperature
        ms += (2.0 * pressure + 0.5) if pressure else 0.0
        ms += (2.0 * humidity + 0.5) if humidity else 0.0
    return ms / 1000.0


class Measurement(NamedTuple):
    """One compensated measurement (humidity NaN on a BMP280)."""

    temperature: float  # degC
    pressure: float  # hPa
    humidity: float  # %RH


def _code(table: dict[Any, int], value: Any, what: str) -> int:
    try:
        return table[value]
    except (KeyError, TypeError):
        choices = ", ".join(str(key) for key in table)
        raise ValueError(f"{what} must be one of {choices}, not {value!r}") from None


class BMP280(I2CSensor):
    """A Bosch BMP280: temperature and pressure (see the module doc)."""

    default_address = 0x76
    #: The part's name in messages, and the ids it answers with.
    part = "BMP280"
    chip_ids: frozenset[int] = CHIP_IDS_BMP280
    standby_table = STANDBY_BMP280
    #: Readings posted with the temperature (their alarms follow its reads).
    companions: tuple[str, ...] = ("pressure",)

    temperature = reading(
        0.0,
        units="degC",
        precision=2,
        lower_disp_limit=-40.0,
        upper_disp_limit=85.0,
        period=1.0,
        doc="Air temperature",
    )
    pressure = reading(
        0.0,
        units="hPa",
        precision=2,
        lower_disp_limit=300.0,
        upper_disp_limit=1100.0,
        period=None,
        doc="Barometric pressure",
    )

    def __init__(
        self,
        prefix: str = "",
        *,
        bus: BusSpec,
        address: int | None = None,
        mode: str = "forced",
        oversampling_temperature: int = 1,
        oversampling_pressure: int = 1,
        iir_filter: int = 0,
        standby_ms: float = 1000.0,
    ) -> None:
        if mode not in ("forced", "normal"):
            raise ValueError(f"mode must be 'forced' or 'normal', not {mode!r}")
        self.mode = mode
        #: Oversampling factors: temperature, pressure (and humidity).
        self.oversampling: tuple[int, ...] = (oversampling_temperature, oversampling_pressure)
        self._ctrl_meas = (
            _code(OVERSAMPLING, oversampling_temperature, "oversampling_temperature") << 5
            | _code(OVERSAMPLING, oversampling_pressure, "oversampling_pressure") << 2
        )
        standby = _code(self.standby_table, float(standby_ms), f"{self.part} standby_ms")
        self._config = standby << 5 | _code(IIR_FILTER, iir_filter, "iir_filter") << 2
        #: The part's calibration, read by :meth:`initialise`.
        self.calibration: Calibration | None = None
        super().__init__(prefix, bus=bus, address=address)

    @property
    def measurement_time(self) -> float:
        """The maximum time of one measurement with these settings (seconds)."""
        return measurement_time(*self.oversampling)

    async def probe(self) -> None:
        """Check the chip id (0xD0)."""
        chip_id = await self.chip.read_register_async(REG_CHIP_ID)
        if chip_id not in self.chip_ids:
            raise BadReply(f"chip id 0x{chip_id:02x} is {_part_name(chip_id)}, not a {self.part}")

    async def initialise(self) -> None:
        """Soft reset, read the calibration, configure (see the module doc)."""
        chip = self.chip
        await chip.write_register_async(REG_RESET, RESET_COMMAND)
        await self.sleep(STARTUP_TIME)

        async def copied() -> bool:
            return not await chip.read_register_async(REG_STATUS) & STATUS_IM_UPDATE

        await self.poll(copied, 0.01, 0.001, "the NVM copy (im_update) did not finish")
        self.calibration = await self._read_calibration()
        await self._configure()
        await chip.write_register_async(REG_CONFIG, self._config)
        if self.mode == "normal":
            await chip.write_register_async(REG_CTRL_MEAS, self._ctrl_meas | MODE_NORMAL)
            await self.sleep(self.measurement_time)  # the first results are in
        else:
            await chip.write_register_async(REG_CTRL_MEAS, self._ctrl_meas | MODE_SLEEP)

    async def _read_calibration(self) -> Calibration:
        return Calibration.from_registers(
            await self.chip.read_registers_async(REG_CALIBRATION_TP, 26)
        )

    async def _configure(self) -> None:
        """Settings written before config and ctrl_meas (a BME280's ctrl_hum)."""

    async def _wait_for_conversion(self) -> None:
        """Wait the maximum measurement time, then until ``measuring`` clears."""
        await self.sleep(self.measurement_time)

        async def idle() -> bool:
            return not await self.chip.read_register_async(REG_STATUS) & STATUS_MEASURING

        await self.poll(idle, self.measurement_time, 0.001, "the conversion did not finish")

    async def measure(self) -> Measurement:
        """One measurement: trigger and wait in forced mode, then a burst read."""
        length = 8 if "humidity" in self.companions else 6
        async with self.lock:
            if self.mode == "forced":
                await self.chip.write_register_async(REG_CTRL_MEAS, self._ctrl_meas | MODE_FORCED)
                await self._wait_for_conversion()
            data = await self.chip.read_registers_async(REG_DATA, length)
        return self.convert(data)

    def convert(self, data: bytes) -> Measurement:
        """Compensate a burst read of 0xF7.. (6 or 8 bytes)."""
        if self.calibration is None:
            raise BadReply("no calibration read yet")
        adc_p = data[0] << 12 | data[1] << 4 | data[2] >> 4
        adc_t = data[3] << 12 | data[4] << 4 | data[5] >> 4
        centi_celsius, t_fine = compensate_temperature(adc_t, self.calibration)
        pascal_q24_8 = compensate_pressure(adc_p, t_fine, self.calibration)
        humidity = math.nan
        if len(data) >= 8:
            adc_h = data[6] << 8 | data[7]
            humidity = compensate_humidity(adc_h, t_fine, self.calibration) / 1024
        return Measurement(centi_celsius / 100, pascal_q24_8 / 256 / 100, humidity)

    async def _publish(self, measurement: Measurement) -> None:
        await self.post("pressure", measurement.pressure)

    @temperature.reader  # type: ignore[no-redef]
    async def temperature(self) -> float:
        measurement = await self.measured(self.measure, *self.companions)
        await self._publish(measurement)
        return measurement.temperature


class BME280(BMP280):
    """A Bosch BME280: temperature, pressure and humidity (see the module doc)."""

    part = "BME280"
    chip_ids = frozenset({CHIP_ID_BME280})
    standby_table = STANDBY_BME280
    companions = ("pressure", "humidity")

    humidity = reading(
        0.0,
        units="%RH",
        precision=2,
        lower_disp_limit=0.0,
        upper_disp_limit=100.0,
        period=None,
        doc="Relative humidity",
    )

    def __init__(
        self,
        prefix: str = "",
        *,
        bus: BusSpec,
        address: int | None = None,
        mode: str = "forced",
        oversampling_temperature: int = 1,
        oversampling_pressure: int = 1,
        oversampling_humidity: int = 1,
        iir_filter: int = 0,
        standby_ms: float = 1000.0,
    ) -> None:
        self._ctrl_hum = _code(OVERSAMPLING, oversampling_humidity, "oversampling_humidity")
        super().__init__(
            prefix,
            bus=bus,
            address=address,
            mode=mode,
            oversampling_temperature=oversampling_temperature,
            oversampling_pressure=oversampling_pressure,
            iir_filter=iir_filter,
            standby_ms=standby_ms,
        )
        self.oversampling = (*self.oversampling, oversampling_humidity)

    async def _read_calibration(self) -> Calibration:
        block_tp = await self.chip.read_registers_async(REG_CALIBRATION_TP, 26)
        block_h = await self.chip.read_registers_async(REG_CALIBRATION_H, 7)
        return Calibration.from_registers(block_tp, block_h)

    async def _configure(self) -> None:
        # ctrl_hum takes effect only at the next write of ctrl_meas (5.4.3).
        await self.chip.write_register_async(REG_CTRL_HUM, self._ctrl_hum)

    async def _publish(self, measurement: Measurement) -> None:
        await super()._publish(measurement)
        await self.post("humidity", measurement.humidity)


def _part_name(chip_id: int) -> str:
    if chip_id == CHIP_ID_BME280:
        return "a BME280 (use driver 'bme280')"
    if chip_id in CHIP_IDS_BMP280:
        return "a BMP280 (use driver 'bmp280')"
    return "unknown"


def make_bme280(
    *, prefix: str, bus: BusSpec, address: int | None = None, period: float = 1.0, **options: Any
) -> BME280:
    """A :class:`BME280` polled every *period* seconds; *options* as :class:`BME280` takes."""
    return with_period(BME280, "temperature", period)(prefix, bus=bus, address=address, **options)


def make_bmp280(
    *, prefix: str, bus: BusSpec, address: int | None = None, period: float = 1.0, **options: Any
) -> BMP280:
    """A :class:`BMP280` polled every *period* seconds; *options* as :class:`BMP280` takes."""
    return with_period(BMP280, "temperature", period)(prefix, bus=bus, address=address, **options)


def simulate_bme280(*, address: int | None = None, **options: Any) -> SimulatedBME280:
    """A simulated BME280 (``temperature``, ``pressure``, ``humidity``, ``calibration``)."""
    return simulate("bme280", address, **options)


def simulate_bmp280(*, address: int | None = None, **options: Any) -> SimulatedBME280:
    """A simulated BMP280 (``temperature``, ``pressure``, ``calibration``)."""
    return simulate("bmp280", address, **options)


_COMMON_OPTIONS: dict[str, Any] = {
    "period": 1.0,
    "mode": "forced",
    "oversampling_temperature": 1,
    "oversampling_pressure": 1,
    "iir_filter": 0,
    "standby_ms": 1000.0,
}

register(
    DriverInfo(
        name="bme280",
        summary="Bosch BME280 temperature (degC), pressure (hPa) and humidity (%RH)",
        bus="i2c",
        factory=make_bme280,
        simulator=simulate_bme280,
        default_address=0x76,
        options={**_COMMON_OPTIONS, "oversampling_humidity": 1},
    )
)
register(
    DriverInfo(
        name="bmp280",
        summary="Bosch BMP280 temperature (degC) and pressure (hPa)",
        bus="i2c",
        factory=make_bmp280,
        simulator=simulate_bmp280,
        default_address=0x76,
        options=dict(_COMMON_OPTIONS),
    )
)

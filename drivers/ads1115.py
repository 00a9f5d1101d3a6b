"""Texas Instruments ADS1115: a 16-bit, 4-input delta-sigma ADC on I2C.

Follows the ADS1115 datasheet (SBAS444):

* registers (8.6): conversion 0x00 (signed 16-bit, MSB first), config 0x01
  (OS[15], MUX[14:12], PGA[11:9], MODE[8], DR[7:5], comparator[4:0]);
* each reading is one single-shot conversion: write the config with OS=1,
  MODE=1 (single-shot), the channel's MUX, the PGA and data rate and the
  comparator disabled (COMP_QUE=11); wait the conversion time ``1 / DR``
  plus the oscillator's tolerance (+-10 %, table 7.5) and a little for the
  wake-up; then check OS reads 1 (poll a little longer if not) before
  reading the conversion register, so a result is never read early;
* volts = code * full scale / 32768 (table 3); a code of 0x7FFF or 0x8000
  means the input is at or beyond the full scale, so the value is only a
  bound: the PV gets a HWLIMIT/INVALID alarm (as EPICS device support does
  for a clipped ADC).

Channels are the MUX choices: ``"0"`` .. ``"3"`` (AINx against GND) and
``"0-1"``, ``"0-3"``, ``"1-3"``, ``"2-3"`` (differential). The option
``channels`` lists them (PVs ``ain0``, ``ain0_1`` ...) or maps PV names to
them (``{"battery": "0", "bridge": "0-1"}``); each is a reading in volts,
polled every ``period`` seconds, one conversion at a time. The settings
PVs ``full_scale`` (the PGA: 6.144 .. 0.256 V) and ``data_rate`` (8 .. 860
SPS) apply from the next conversion.

Factory: ``make_ads1115(*, prefix, bus, address=None, period=1.0,
channels=("0", "1", "2", "3"), full_scale=4.096, data_rate=128)``; ``bus``
an :class:`~caioc.hw.I2CBus`, an smbus2-compatible object or an adapter
number (see :mod:`._i2c_sensor`); ``address`` 0x48 by default (0x49..0x4B
by the ADDR pin). Simulator: ``simulate_ads1115(*, address=None,
inputs=(0.0, 0.0, 0.0, 0.0), **driver_options)`` returning a
:class:`~._sim_ads1115.SimulatedADS1115` (set ``sim.inputs[pin]`` in volts).
No chip id exists: the probe writes the config and reads it back (an
ADS1015, the 12-bit sibling, would pass too).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from caioc.hw import BadReply, reading, setting

from ._adc import ClippedReadings
from ._i2c_sensor import BusSpec, I2CSensor
from ._registry import DriverInfo, register
from ._sim_ads1115 import SimulatedADS1115, simulate

__all__ = ["ADS1115", "make_ads1115", "parse_channels", "simulate_ads1115"]

REG_CONVERSION = 0x00
REG_CONFIG = 0x01
CONFIG_OS = 0x8000
CONFIG_SINGLE_SHOT = 0x0100
CONFIG_COMPARATOR_OFF = 0x0003
#: Channel -> MUX code (table 8).
MUX = {"0-1": 0, "0-3": 1, "1-3": 2, "2-3": 3, "0": 4, "1": 5, "2": 6, "3": 7}
#: Full-scale range in volts -> PGA code (table 8).
FULL_SCALE = {6.144: 0, 4.096: 1, 2.048: 2, 1.024: 3, 0.512: 4, 0.256: 5}
#: Data rate in samples per second -> DR code (table 8).
DATA_RATE = {8: 0, 16: 1, 32: 2, 64: 3, 128: 4, 250: 5, 475: 6, 860: 7}
#: The oscillator's tolerance: a conversion takes up to 1.1 / DR (table 7.5).
RATE_TOLERANCE = 0.1
#: Wake-up from power-down before a single-shot conversion starts (8.4.2), seconds.
WAKE_UP = 0.0001

_FULL_SCALES = list(FULL_SCALE)
_DATA_RATES = list(DATA_RATE)


def conversion_time(data_rate: int) -> float:
    """The longest a single-shot conversion at *data_rate* SPS can take (seconds)."""
    return (1.0 + RATE_TOLERANCE) / data_rate + WAKE_UP


def parse_channels(channels: Sequence[str] | Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    """``((pv_name, mux_code), ...)`` from the ``channels`` option."""
    if isinstance(channels, str):
        channels = [channels]
    if isinstance(channels, Mapping):
        pairs = [(str(name), str(spec)) for name, spec in channels.items()]
    else:
        pairs = [(f"ain{str(spec).replace('-', '_')}", str(spec)) for spec in channels]
    if not pairs:
        raise ValueError("an ADS1115 needs at least one channel")
    parsed = []
    for name, spec in pairs:
        if spec not in MUX:
            raise ValueError(f"channel {spec!r} is not one of {', '.join(MUX)}")
        if not name.isidentifier() or hasattr(ADS1115, name):
            raise ValueError(f"{name!r} cannot name a channel PV")
        parsed.append((name, MUX[spec]))
    if len({name for name, _ in parsed}) != len(parsed):
        raise ValueError("two channels have the same name")
    return tuple(parsed)


def _lookup(table: dict[Any, int], value: Any, what: str) -> Any:
    for key in table:
        if math.isclose(float(key), float(value)):
            return key
    raise ValueError(f"{what} must be one of {', '.join(map(str, table))}, not {value!r}")


class ADS1115(ClippedReadings, I2CSensor):
    """A TI ADS1115; :func:`make_ads1115` builds one with its channel PVs."""

    default_address = 0x48
    #: ``((pv_name, mux_code), ...)``: set by the subclass :func:`make_ads1115` builds.
    channels: tuple[tuple[str, int], ...] = ()

    full_scale = setting(
        1, enum_strings=[f"{volts} V" for volts in FULL_SCALE], doc="PGA full scale"
    )
    data_rate = setting(
        4, enum_strings=[f"{rate} SPS" for rate in DATA_RATE], doc="Conversions per second"
    )

    def __init__(
        self,
        prefix: str = "",
        *,
        bus: BusSpec,
        address: int | None = None,
        full_scale: float = 4.096,
        data_rate: int = 128,
    ) -> None:
        self.volts = _lookup(FULL_SCALE, full_scale, "full_scale")
        self.rate = _lookup(DATA_RATE, data_rate, "data_rate")
        super().__init__(prefix, bus=bus, address=address)
        self.full_scale.set_nowait(_FULL_SCALES.index(self.volts))
        self.data_rate.set_nowait(_DATA_RATES.index(self.rate))
        self._describe_channels()

    def _describe_channels(self) -> None:
        """Display limits and precision to suit the full scale."""
        lsb = self.volts / 32768
        for name, _ in self.channels:
            channel = getattr(self, name)
            channel.upper_disp_limit = self.volts
            channel.lower_disp_limit = -self.volts
            channel.precision = max(0, math.ceil(-math.log10(lsb)))

    def config(self, mux: int) -> int:
        """The config word that starts a single-shot conversion of *mux*."""
        return (
            CONFIG_OS
            | mux << 12
            | FULL_SCALE[self.volts] << 9
            | CONFIG_SINGLE_SHOT
            | DATA_RATE[self.rate] << 5
            | CONFIG_COMPARATOR_OFF
        )

    async def _read(self, register: int) -> int:
        return int.from_bytes(await self.chip.read_registers_async(register, 2), "big")

    async def probe(self) -> None:
        """Write the config (powered down) and read it back."""
        idle = self.config(MUX["0"]) & ~CONFIG_OS
        async with self.lock:
            await self.chip.write_registers_async(REG_CONFIG, idle.to_bytes(2, "big"))
            back = await self._read(REG_CONFIG)
        if back & ~CONFIG_OS != idle:
            raise BadReply(f"config 0x{idle:04x} read back as 0x{back:04x}: not an ADS1115")

    async def convert(self, mux: int) -> tuple[int, float]:
        """One single-shot conversion of *mux*: ``(code, volts)``."""
        async with self.lock:
            volts, rate = self.volts, self.rate
            config = self.config(mux)
            await self.chip.write_registers_async(REG_CONFIG, config.to_bytes(2, "big"))
            await self.sleep(conversion_time(rate))

            async def done() -> bool:
                return bool(await self._read(REG_CONFIG) & CONFIG_OS)

            # A part slower than its datasheet gets another 1 / DR.
            await self.poll(done, 1.0 / rate, 0.05 / rate, "the conversion did not finish")
            code = await self._read(REG_CONVERSION)
        code -= (code & 0x8000) << 1
        return code, code * volts / 32768

    @full_scale.writer  # type: ignore[no-redef]
    async def full_scale(self, value: Any) -> None:
        index = value if isinstance(value, int) else _choice(self.full_scale, value)
        self.volts = _FULL_SCALES[index]
        self._describe_channels()

    @data_rate.writer  # type: ignore[no-redef]
    async def data_rate(self, value: Any) -> None:
        index = value if isinstance(value, int) else _choice(self.data_rate, value)
        self.rate = _DATA_RATES[index]


def _channel_reader(name: str, mux: int) -> Callable[[ADS1115], Awaitable[float]]:
    """The read function of the channel PV *name*."""

    async def read(self: ADS1115) -> float:
        code, volts = await self.measured(lambda: self.convert(mux))
        if code in (32767, -32768):
            self.mark_clipped(name)
        return volts

    return read


def _choice(channel: Any, value: Any) -> int:
    return list(channel.enum_strings).index(str(value))


@functools.cache
def _device_class(channels: tuple[tuple[str, int], ...], period: float) -> type[ADS1115]:
    """The ADS1115 subclass with one reading per channel, polled every *period* s."""
    if not period > 0:
        raise ValueError(f"a poll period must be positive, not {period!r}")
    names = {code: spec for spec, code in MUX.items()}
    namespace: dict[str, Any] = {"channels": channels}
    for name, mux in channels:
        pair = names[mux].split("-")
        what = f"AIN{pair[0]} - AIN{pair[1]}" if len(pair) == 2 else f"AIN{pair[0]}"
        declared = reading(0.0, units="V", precision=4, period=period, doc=f"{what} (V)")
        namespace[name] = declared.reader(_channel_reader(name, mux))
    return type("ADS1115", (ADS1115,), namespace)


def make_ads1115(
    *,
    prefix: str,
    bus: BusSpec,
    address: int | None = None,
    period: float = 1.0,
    channels: Sequence[str] | Mapping[str, str] = ("0", "1", "2", "3"),
    full_scale: float = 4.096,
    data_rate: int = 128,
) -> ADS1115:
    """An :class:`ADS1115` with a reading per channel (see the module doc)."""
    device_class = _device_class(parse_channels(channels), float(period))
    return device_class(
        prefix, bus=bus, address=address, full_scale=full_scale, data_rate=data_rate
    )


def simulate_ads1115(*, address: int | None = None, **options: Any) -> SimulatedADS1115:
    """A simulated ADS1115 (``inputs``: volts on AIN0..AIN3)."""
    return simulate(address, **options)


register(
    DriverInfo(
        name="ads1115",
        summary="TI ADS1115 16-bit ADC: single-ended and differential inputs (V)",
        bus="i2c",
        factory=make_ads1115,
        simulator=simulate_ads1115,
        default_address=0x48,
        options={
            "period": 1.0,
            "channels": ("0", "1", "2", "3"),
            "full_scale": 4.096,
            "data_rate": 128,
        },
    )
)

"""Microchip MCP3008: an 8-channel, 10-bit SAR ADC on SPI.

Follows the MCP3004/3008 datasheet (DS21295):

* SPI mode 0,0 (section 6.1; 1,1 works too), one conversion per 3-byte
  transaction with chip select held (figure 6-1): out ``0x01`` (seven
  leading zeros and the start bit), ``SGL/DIFF D2 D1 D0`` in the top nibble
  of the second byte, then a don't-care byte; back, the low two bits of
  the second byte are B9 B8 and the third byte B7 .. B0. The bit above B9
  is the null bit, which the part drives low; everything above it is high
  impedance and is masked off. A null bit of 1 means no MCP3008 drives
  DOUT (a missing chip, a pulled-up MISO): :class:`~caioc.hw.BadReply`,
  CALC alarm;
* channels (table 5-2): ``"0"`` .. ``"7"`` single-ended against AGND, and
  the pseudo-differential pairs ``"0-1"``, ``"1-0"``, ``"2-3"``, ``"3-2"``,
  ``"4-5"``, ``"5-4"``, ``"6-7"``, ``"7-6"`` (IN+ - IN-; the part is
  unipolar, so IN- above IN+ reads 0);
* ``code = 1024 * VIN / VREF`` (section 4.0, equation 4-1), so
  ``volts = code * VREF / 1024``; a code of 1023 means the input is at or
  above ``VREF * 1023 / 1024``, so the value is only a bound: the volts PV
  gets HWLIMIT/INVALID as the ADS1115 driver does for a clipped input;
* the clock (``clock_hz``) between 10 kHz, below which the sample
  capacitor droops (section 6.2), and 3.6 MHz, the limit at VDD = 5 V
  (1.35 MHz at 2.7 V): a part on 3.3 V is safe at the default 1 MHz.

PVs: per channel a reading in volts (``ch0``, ``ch0_1`` ... or the names
the ``channels`` mapping gives, polled every ``period`` s) and its code
(``ch0_raw``, counts, posted with it and sharing its alarms).

Factory: ``make_mcp3008(*, prefix, bus, address=None, period=1.0,
channels=("0", ..., "7"), vref=3.3, clock_hz=1_000_000)``. ``bus`` is an
:class:`~caioc.hw.SPIDevice` (a chip select: ``address`` must then be
None or the same chip select), an :class:`~caioc.hw.SPIBus`, a
spidev-compatible factory (a :class:`~caioc.hw.sim.SimulatedSPIBus`), a
controller number, or ``"spi-B.C"`` / ``"/dev/spidevB.C"``; ``address``
is the chip select (0 by default). Simulator: ``simulate_mcp3008(*,
address=None, inputs=None, vref=3.3, **driver_options)`` returning a
:class:`~._sim_mcp3008.SimulatedMCP3008` (set ``sim.inputs[n]`` in volts).
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from caioc.ca import AlarmSeverity
from caioc.hw import (
    BadReply,
    DeviceClosed,
    SPIBus,
    SPIDevice,
    SpiDevLike,
    reading,
)
from caioc.hw._device import classify

from ._adc import ClippedReadings
from ._registry import DriverInfo, register
from ._sim_mcp3008 import DIFFERENTIAL_PAIRS, SimulatedMCP3008, simulate

__all__ = [
    "CHANNELS",
    "MCP3008",
    "command",
    "decode",
    "make_mcp3008",
    "parse_channels",
    "simulate_mcp3008",
]

#: Channel -> (SGL/DIFF, D2 D1 D0), table 5-2.
CHANNELS: dict[str, tuple[bool, int]] = {
    **{str(channel): (True, channel) for channel in range(8)},
    **{f"{p}-{n}": (False, bits) for bits, (p, n) in enumerate(DIFFERENTIAL_PAIRS)},
}
#: The clock range (Hz): sample droop below, the 5 V limit above.
MIN_CLOCK_HZ = 10_000
MAX_CLOCK_HZ = 3_600_000
#: Bus timeout (seconds) of an SPIBus the driver opens itself.
BUS_TIMEOUT = 0.5
FULL_CODE = 1023

_SPI_NAME = re.compile(r"(?:spi-|/dev/spidev)(\d+)\.(\d+)")

#: What the factory accepts as its ``bus``.
BusSpec = SPIDevice | SPIBus | Callable[[], SpiDevLike] | int | str


def command(single_ended: bool, channel: int) -> bytes:
    """The three bytes that start a conversion (figure 6-1)."""
    if not 0 <= channel <= 7:
        raise ValueError(f"channel bits {channel!r} are not 0 to 7")
    return bytes([0x01, (single_ended << 7) | channel << 4, 0x00])


def decode(reply: bytes) -> int:
    """The 10-bit code of a 3-byte reply; BadReply if nothing drove the null bit."""
    if len(reply) != 3:
        raise BadReply(f"a reply of {len(reply)} bytes, not 3", data=reply)
    if reply[1] & 0x04:
        raise BadReply(
            f"null bit high in reply 0x{reply.hex()}: no MCP3008 answers", data=bytes(reply)
        )
    return (reply[1] & 0x03) << 8 | reply[2]


def parse_channels(channels: Sequence[str] | Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``((pv_name, channel), ...)`` from the ``channels`` option."""
    if isinstance(channels, str):
        channels = [channels]
    if isinstance(channels, Mapping):
        pairs = [(str(name), str(spec)) for name, spec in channels.items()]
    else:
        pairs = [(f"ch{str(spec).replace('-', '_')}", str(spec)) for spec in channels]
    if not pairs:
        raise ValueError("an MCP3008 needs at least one channel")
    for name, spec in pairs:
        if spec not in CHANNELS:
            raise ValueError(f"channel {spec!r} is not one of {', '.join(CHANNELS)}")
        if not name.isidentifier() or hasattr(MCP3008, name) or hasattr(MCP3008, f"{name}_raw"):
            raise ValueError(f"{name!r} cannot name a channel PV")
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("two channels have the same name")
    return tuple(pairs)


def _split_name(spec: str) -> tuple[int, int]:
    match = _SPI_NAME.fullmatch(spec)
    if match is None:
        raise ValueError(f"an SPI device is spi-B.C or /dev/spidevB.C, not {spec!r}")
    return int(match.group(1)), int(match.group(2))


class MCP3008(ClippedReadings):
    """A Microchip MCP3008; :func:`make_mcp3008` builds one with its channel PVs."""

    #: ``((pv_name, channel), ...)``: set by the subclass :func:`make_mcp3008` builds.
    channels: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        prefix: str = "",
        *,
        bus: BusSpec,
        address: int | None = None,
        vref: float = 3.3,
        clock_hz: int = 1_000_000,
    ) -> None:
        if not vref > 0:
            raise ValueError(f"vref must be a positive voltage, not {vref!r}")
        if not MIN_CLOCK_HZ <= clock_hz <= MAX_CLOCK_HZ:
            raise ValueError(
                f"clock_hz {clock_hz!r} is outside {MIN_CLOCK_HZ} .. {MAX_CLOCK_HZ} Hz"
            )
        self.vref = float(vref)
        self.clock_hz = int(clock_hz)
        self.bus_spec = bus
        self.controller, self.chip_select = self._where(bus, address)
        self._bus: SPIBus | None = None
        self._owns_bus = False
        self._chip: SPIDevice | None = None
        #: One conversion at a time (the part has one converter).
        self.lock = asyncio.Lock()
        super().__init__(prefix)
        self._describe_channels()

    @staticmethod
    def _where(bus: BusSpec, address: int | str | None) -> tuple[int, int]:
        """(controller, chip select) from the bus and address given."""
        if isinstance(address, str):
            address = int(address, 0)
        if isinstance(bus, SPIDevice):
            if address is not None and address != bus.chip_select:
                raise ValueError(
                    f"{bus.name} is chip select {bus.chip_select}, "
                    f"so the address must be omitted, not {address!r}"
                )
            return bus.bus.bus, bus.chip_select
        if isinstance(bus, str):
            controller, chip_select = _split_name(bus)
            if address is not None and address != chip_select:
                raise ValueError(f"{bus} is chip select {chip_select}, not {address!r}")
            return controller, chip_select
        chip_select = 0 if address is None else int(address)
        if not 0 <= chip_select <= 255:
            raise ValueError(f"chip select {chip_select!r} is not 0 to 255")
        if isinstance(bus, SPIBus):
            return bus.bus, chip_select
        if isinstance(bus, int):
            return bus, chip_select
        return int(getattr(bus, "bus", 0)), chip_select

    def _describe_channels(self) -> None:
        """Display limits and precision to suit VREF."""
        precision = max(0, math.ceil(-math.log10(self.vref / 1024)))
        for name, _ in self.channels:
            channel = getattr(self, name)
            channel.upper_disp_limit = self.vref
            channel.lower_disp_limit = 0.0
            channel.precision = precision

    @property
    def chip(self) -> SPIDevice:
        """The chip select; :class:`~caioc.hw.DeviceClosed` when not open."""
        if self._chip is None:
            raise DeviceClosed(f"MCP3008 on spi-{self.controller}.{self.chip_select} is not open")
        return self._chip

    async def open(self) -> None:
        """Get the bus (an SPIBus is opened here only when given a number or name)."""
        if self._bus is None:
            spec = self.bus_spec
            if isinstance(spec, SPIDevice):
                self._bus, self._owns_bus = spec.bus, False
            elif isinstance(spec, SPIBus):
                self._bus, self._owns_bus = spec, False
            elif isinstance(spec, int | str):
                self._bus, self._owns_bus = SPIBus(self.controller, timeout=BUS_TIMEOUT), True
            else:
                self._bus = SPIBus(self.controller, timeout=BUS_TIMEOUT, spidev_factory=spec)
                self._owns_bus = True
            self._chip = self._bus.device(self.chip_select, mode=0, max_speed_hz=self.clock_hz)

    async def close(self) -> None:
        """Let the chip select go; close the bus only if it was opened here (idempotent)."""
        bus, self._bus = self._bus, None
        if self._chip is not None:
            self._chip.close()
            self._chip = None
        if bus is not None and self._owns_bus:
            bus.close()

    async def probe(self) -> None:
        """One conversion: a chip that does not drive the null bit low is not there."""
        _, channel = self.channels[0] if self.channels else ("", "0")
        await self.convert(channel)

    async def convert(self, channel: str) -> tuple[int, float]:
        """One conversion of *channel*: ``(code, volts)``."""
        single_ended, bits = CHANNELS[channel]
        async with self.lock:
            vref = self.vref
            reply = await self.chip.transfer_async(command(single_ended, bits))
        code = decode(reply)
        return code, code * vref / 1024


def _channel_reader(name: str, channel: str) -> Callable[[MCP3008], Awaitable[float]]:
    """The read function of the channel PV *name* (its code goes to ``name_raw``)."""

    async def read(self: MCP3008) -> float:
        try:
            code, volts = await self.convert(channel)
        except Exception as error:
            status = classify(error)
            await getattr(self, f"{name}_raw").set_alarm(status, AlarmSeverity.INVALID)
            raise
        await self.post(f"{name}_raw", code)
        if code == FULL_CODE:
            self.mark_clipped(name)
        return volts

    return read


@functools.cache
def _device_class(channels: tuple[tuple[str, str], ...], period: float) -> type[MCP3008]:
    """The MCP3008 subclass with two PVs per channel, polled every *period* s."""
    if not period > 0:
        raise ValueError(f"a poll period must be positive, not {period!r}")
    namespace: dict[str, Any] = {"channels": channels}
    for name, channel in channels:
        pins = channel.split("-")
        what = f"CH{pins[0]} - CH{pins[1]}" if len(pins) == 2 else f"CH{pins[0]}"
        declared = reading(0.0, units="V", precision=4, period=period, doc=f"{what} (V)")
        namespace[name] = declared.reader(_channel_reader(name, channel))
        namespace[f"{name}_raw"] = reading(
            0,
            units="counts",
            lower_disp_limit=0,
            upper_disp_limit=FULL_CODE,
            period=None,
            doc=f"{what} code",
        )
    return type("MCP3008", (MCP3008,), namespace)


def make_mcp3008(
    *,
    prefix: str,
    bus: BusSpec,
    address: int | None = None,
    period: float = 1.0,
    channels: Sequence[str] | Mapping[str, str] = ("0", "1", "2", "3", "4", "5", "6", "7"),
    vref: float = 3.3,
    clock_hz: int = 1_000_000,
) -> MCP3008:
    """An :class:`MCP3008` with two PVs per channel (see the module doc)."""
    device_class = _device_class(parse_channels(channels), float(period))
    return device_class(prefix, bus=bus, address=address, vref=vref, clock_hz=clock_hz)


def simulate_mcp3008(*, address: int | str | None = None, **options: Any) -> SimulatedMCP3008:
    """A simulated MCP3008 (``inputs``: volts on CH0..CH7; ``vref``)."""
    options.pop("channels", None)
    options.pop("period", None)
    options.pop("clock_hz", None)
    return simulate(address, **options)


register(
    DriverInfo(
        name="mcp3008",
        summary="Microchip MCP3008 10-bit ADC on SPI: single-ended and differential inputs (V)",
        bus="spi",
        factory=make_mcp3008,
        simulator=simulate_mcp3008,
        default_address=None,
        options={
            "period": 1.0,
            "channels": ("0", "1", "2", "3", "4", "5", "6", "7"),
            "vref": 3.3,
            "clock_hz": 1_000_000,
        },
    )
)

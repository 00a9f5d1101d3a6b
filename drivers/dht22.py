"""Aosong DHT22 (AM2302) humidity and temperature sensor, through the Linux IIO dht11 driver.

The DHT22's one-wire protocol needs microsecond timing, which Python on a
busy Linux cannot give; the kernel's ``dht11`` IIO driver does it with
interrupts (on a Raspberry Pi: ``dtoverlay=dht11,gpiopin=N`` in
``config.txt``; it serves DHT11 and DHT22 alike). This driver reads what
it shows under ``/sys/bus/iio/devices/iio:deviceN/``:

* ``in_temp_input`` in milli-degC and ``in_humidityrelative_input`` in
  milli-%RH (the IIO ABI's units; the kernel multiplies the sensor's 0.1
  units by 100). The driver caches a result for 2 s, so reading the
  temperature then the humidity gives one measurement;
* the sensor needs 2 s between measurements (AM2302 datasheet: collecting
  period 2 s): the driver never starts reads closer together than that
  (plus 0.1 s, so that each read is a new measurement rather than the
  kernel's cached one), whatever ``period`` asks, retries included;
* reads fail often on real wiring: EIO when the checksum is wrong or the
  bits cannot be decoded, ETIMEDOUT when the sensor did not answer. Each
  poll tries up to ``1 + retries`` times (2 s apart); when all fail the
  PVs keep their last good values and get READ (EIO) or TIMEOUT
  (ETIMEDOUT), INVALID. After ``comm_failures`` polls in a row fail the
  device counts as disconnected (COMM) and is reopened;
* a value outside the sensor's range (-40 .. 80 degC, 0 .. 100 %RH,
  datasheet section 5), as when the kernel takes a DHT22 frame for a DHT11
  one, is a :class:`~caioc.hw.BadReply`: CALC;
* a missing device directory (the overlay is not loaded, or another
  ``iio:deviceN`` number after a reboot) is
  :class:`~caioc.hw.DeviceUnplugged`: COMM.

PVs: ``temperature`` (degC, polled every ``period`` s) and ``humidity``
(%RH, posted with it and sharing its alarms).

Factory: ``make_dht22(*, prefix, bus, address=None, period=3.0,
retries=2)``; ``bus`` an :class:`~caioc.hw.iio.IIOBus`, a simulated tree
(:class:`~caioc.hw.sim.SimulatedIIOBus`) or a root directory; ``address``
the device directory (``"iio:device0"``) or the kernel driver's name in
its ``name`` file (``"dht11"``, the default: the first such device).
Simulator: ``simulate_dht22(*, address=None, temperature=22.0,
humidity=55.0, **driver_options)`` returning a
:class:`~._sim_dht22.SimulatedDHT22`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import functools
import os
from typing import Any, NamedTuple

from caioc.ca import AlarmSeverity
from caioc.hw import BadReply, BusTimeout, Device, DeviceClosed, HardwareError, reading
from caioc.hw._device import classify
from caioc.hw._sysfs import SimulatedKernel
from caioc.hw.iio import IIOBus

from ._registry import DriverInfo, register
from ._sim_dht22 import SimulatedDHT22, simulate

__all__ = ["DHT22", "Measurement", "make_dht22", "parse_millis", "simulate_dht22"]

#: The kernel driver that serves DHT11 and DHT22 sensors.
KERNEL_DRIVER = "dht11"
#: The sensor's minimum time between measurements (collecting period), seconds.
MIN_INTERVAL = 2.0
#: Waited on top of MIN_INTERVAL: the kernel caches a result for 2 s from the end of
#: its transmission, so a read 2 s after the previous *start* could get the old one.
CACHE_MARGIN = 0.1
#: The longest one kernel read can take: its 1 s wait for the sensor, and the start signal.
READ_TIME = 1.1
TEMPERATURE_RANGE = (-40.0, 80.0)
HUMIDITY_RANGE = (0.0, 100.0)

#: What the factory accepts as its ``bus``.
BusSpec = IIOBus | SimulatedKernel | str | os.PathLike[str]


class Measurement(NamedTuple):
    """One measurement."""

    temperature: float  # degC
    humidity: float  # %RH


def parse_millis(text: str, what: str) -> float:
    """A sysfs value in thousandths (``"23100\\n"``) as a float (23.1); BadReply if not one."""
    try:
        return int(text.strip()) / 1000
    except ValueError:
        raise BadReply(f"{what} says {text.strip()!r}", data=text.encode()) from None


class DHT22(Device):
    """A DHT22 behind the kernel's IIO dht11 driver (see the module doc)."""

    temperature = reading(
        0.0,
        units="degC",
        precision=1,
        lower_disp_limit=-40.0,
        upper_disp_limit=80.0,
        period=3.0,
        timeout=3 * (MIN_INTERVAL + CACHE_MARGIN + READ_TIME) + 1.0,
        doc="Air temperature",
    )
    humidity = reading(
        0.0,
        units="%RH",
        precision=1,
        lower_disp_limit=0.0,
        upper_disp_limit=100.0,
        period=None,
        doc="Relative humidity",
    )

    def __init__(
        self, prefix: str = "", *, bus: BusSpec, address: str | None = None, retries: int = 2
    ) -> None:
        if address is not None and not isinstance(address, str):
            raise ValueError(f"a DHT22 address is 'iio:deviceN' or a driver name, not {address!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, not {retries!r}")
        self.address = address or KERNEL_DRIVER
        self.retries = retries
        self.bus_spec = bus
        self._bus: IIOBus | None = None
        self._owns_bus = False
        self.directory: str | None = None
        self._last_start = float("-inf")
        #: One exchange with the sensor at a time.
        self.lock = asyncio.Lock()
        super().__init__(prefix)

    @property
    def bus(self) -> IIOBus:
        """The IIO tree; :class:`~caioc.hw.DeviceClosed` when not open."""
        if self._bus is None:
            raise DeviceClosed(f"DHT22 {self.address} is not open")
        return self._bus

    async def open(self) -> None:
        """Get the IIO tree and find the device directory."""
        if self._bus is None:
            if isinstance(self.bus_spec, IIOBus):
                self._bus, self._owns_bus = self.bus_spec, False
            else:
                self._bus = IIOBus(self.bus_spec, timeout=READ_TIME + 0.5)
                self._owns_bus = True
        self.directory = await self.bus.find_async(self.address)

    async def close(self) -> None:
        """Let the tree go (its worker stops if this driver opened it); idempotent."""
        bus, self._bus = self._bus, None
        if bus is not None and self._owns_bus:
            bus.close()

    async def probe(self) -> None:
        """The device is served by the dht11 driver."""
        name = (await self.bus.read_async(f"{self.directory}/name")).strip()
        if name != KERNEL_DRIVER:
            raise BadReply(f"{self.directory} is a {name!r}, not a {KERNEL_DRIVER}")

    async def _wait_interval(self) -> None:
        """Wait until :data:`MIN_INTERVAL` (and the margin) passed since the previous read began."""
        clock = self.bus.clock
        wait = self._last_start + MIN_INTERVAL + CACHE_MARGIN - clock.monotonic()
        if wait > 0:
            never: concurrent.futures.Future[None] = concurrent.futures.Future()
            await clock.wait_async(never, wait)
        self._last_start = clock.monotonic()

    async def _read_once(self) -> Measurement:
        await self._wait_interval()
        temperature = parse_millis(
            await self.bus.read_async(f"{self.directory}/in_temp_input"), "in_temp_input"
        )
        humidity = parse_millis(
            await self.bus.read_async(f"{self.directory}/in_humidityrelative_input"),
            "in_humidityrelative_input",
        )
        low, high = TEMPERATURE_RANGE
        if not low <= temperature <= high:
            raise BadReply(f"{temperature} degC is outside the DHT22's {low} .. {high}")
        low, high = HUMIDITY_RANGE
        if not low <= humidity <= high:
            raise BadReply(f"{humidity} %RH is outside the DHT22's {low} .. {high}")
        return Measurement(temperature, humidity)

    async def measure(self) -> Measurement:
        """One measurement, retried on EIO and ETIMEDOUT (see the module doc)."""
        async with self.lock:
            failure: HardwareError | None = None
            for _ in range(self.retries + 1):
                try:
                    return await self._read_once()
                except BusTimeout as error:
                    failure = error
                except HardwareError as error:
                    if getattr(error, "errno", None) is None:
                        raise  # gone (COMM), or nonsense (CALC): retrying will not help
                    failure = error
            assert failure is not None
            raise failure

    @temperature.reader  # type: ignore[no-redef]
    async def temperature(self) -> float:
        try:
            measurement = await self.measure()
        except Exception as error:
            await self.humidity.set_alarm(classify(error), AlarmSeverity.INVALID)
            raise
        await self.post("humidity", measurement.humidity)
        return measurement.temperature


@functools.cache
def _device_class(period: float, retries: int) -> type[DHT22]:
    """The DHT22 subclass polled every *period* s, its read timeout fit for *retries*."""
    if not period > 0:
        raise ValueError(f"a poll period must be positive, not {period!r}")
    polled = copy.copy(DHT22._declared_map()["temperature"])
    polled.period = float(period)
    polled.timeout = (retries + 1) * (MIN_INTERVAL + CACHE_MARGIN + READ_TIME) + 1.0
    return type("DHT22", (DHT22,), {"temperature": polled})


def make_dht22(
    *,
    prefix: str,
    bus: BusSpec,
    address: str | None = None,
    period: float = 3.0,
    retries: int = 2,
) -> DHT22:
    """A :class:`DHT22` polled every *period* seconds (at least 2 s apart)."""
    device_class = _device_class(float(period), int(retries))
    return device_class(prefix, bus=bus, address=address, retries=retries)


def simulate_dht22(*, address: str | None = None, **options: Any) -> SimulatedDHT22:
    """A simulated DHT22 (``temperature`` degC, ``humidity`` %RH)."""
    options.pop("period", None)
    options.pop("retries", None)
    return simulate(address, **options)


register(
    DriverInfo(
        name="dht22",
        summary="Aosong DHT22/AM2302 temperature (degC) and humidity (%RH) via Linux IIO (dht11)",
        bus="iio",
        factory=make_dht22,
        simulator=simulate_dht22,
        default_address=None,
        options={"period": 3.0, "retries": 2},
    )
)

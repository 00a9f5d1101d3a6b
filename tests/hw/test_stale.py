"""The stale-value alarm of ``reading(stale_after=...)``, on simulated I2C.

A reading that has had no good value for ``stale_after`` seconds must say
so (TIMEOUT/INVALID), keep its last good value and that value's
timestamp, and clear on the next good value; an alarm that already says
more (COMM, CALC, READ ... at INVALID) is left as it is.

The device here measures two quantities in one transfer, as an SHT3x does:
``temperature`` is polled, and its reader posts ``humidity`` (a reading
with no poll of its own) when the humidity half of the reply is valid. So
humidity can go stale while the device is online and answering, which is
exactly what the alarm is for.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

from waiting import run, until

from caioc.ca import AlarmSeverity, AlarmStatus
from caioc.hw import BadReply, Device, reading
from caioc.hw.sim import SimulatedI2CBus, SimulatedI2CDevice

from .test_device import OnSimulatedI2C

CHIP_ID = 0x5C
MARKER = 0xA5  # a constant byte in every reply: garbled replies are caught
STALE = 0.15  # seconds; a few poll periods, far below any wait's bound


def make_chip() -> SimulatedI2CDevice:
    chip = SimulatedI2CDevice(0x44, name="hygrometer")
    chip.poke(0xD0, CHIP_ID)
    set_measurement(chip, 21.5, 40.0)
    return chip


def set_measurement(
    chip: SimulatedI2CDevice, celsius: float, humidity: float, *, humidity_valid: bool = True
) -> None:
    """Registers 0-4: temperature (int16, 1/256 degC), humidity (1/2 %), valid flag, marker."""
    data = struct.pack(">hBBB", round(celsius * 256), round(humidity * 2), humidity_valid, MARKER)
    chip.poke(0x00, data)


class Hygrometer(OnSimulatedI2C, Device):
    """Temperature and humidity in one 5-byte read; humidity is posted, not polled."""

    comm_failures = 3
    reconnect_delays = (0.02, 2.0, 0.05)

    temperature = reading(0.0, units="degC", period=0.01, timeout=0.5, stale_after=STALE)
    humidity = reading(0.0, units="%", period=None, stale_after=STALE)

    address = 0x44
    chip_id = CHIP_ID

    def __init__(self, sim: SimulatedI2CBus) -> None:
        self.sim_bus = sim
        self.bus = None
        super().__init__("hyg:")

    @temperature.reader
    async def temperature(self) -> float:  # type: ignore[no-redef]
        raw = await self.chip.read_registers_async(0x00, 5)
        celsius, humidity, valid, marker = struct.unpack(">hBBB", raw)
        if marker != MARKER:
            raise BadReply(f"garbled reply {raw.hex()}")
        if valid:
            await self.post("humidity", humidity / 2)
        return celsius / 256


@contextlib.asynccontextmanager
async def started_hygrometer() -> AsyncIterator[
    tuple[SimulatedI2CBus, SimulatedI2CDevice, Hygrometer]
]:
    """A started Hygrometer on a simulated bus with its chip; shut down after."""
    sim = SimulatedI2CBus()
    chip = sim.attach(make_chip())
    device = Hygrometer(sim)
    await device.startup()
    try:
        yield sim, chip, device
    finally:
        await device.shutdown()


def alarm(channel: Any) -> tuple[AlarmStatus, AlarmSeverity]:
    return channel.alarm_status, channel.alarm_severity


GOOD = (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)
STALE_ALARM = (AlarmStatus.TIMEOUT, AlarmSeverity.INVALID)


def test_a_reading_with_no_good_value_for_stale_after_goes_timeout_and_recovers() -> None:
    async def scenario() -> None:
        async with started_hygrometer() as (_sim, chip, device):
            await until(lambda: device.humidity.value == 40.0, "the first humidity")
            assert alarm(device.humidity) == GOOD
            # The humidity half turns invalid; the device stays online and
            # temperature keeps arriving, but humidity has no new value.
            set_measurement(chip, 22.0, 55.0, humidity_valid=False)
            await until(lambda: device.temperature.value == 22.0, "the next temperature")
            stamp = device.humidity.timestamp
            stopped = time.monotonic()
            await until(
                lambda: alarm(device.humidity) == STALE_ALARM, "the stale alarm", timeout=2.0
            )
            assert time.monotonic() - stopped >= STALE * 0.9  # not before it was due
            # the last good value and its time, flagged; the device is fine
            assert device.humidity.value == 40.0
            assert device.humidity.timestamp == stamp
            assert device.connected.value == 1
            assert alarm(device.temperature) == GOOD
            # the next good value clears it
            set_measurement(chip, 22.0, 55.0)
            await until(lambda: device.humidity.value == 55.0, "a fresh humidity")
            assert alarm(device.humidity) == GOOD
            assert device.humidity.timestamp > stamp

    run(scenario)


def test_a_fresh_reading_is_never_flagged_stale() -> None:
    async def scenario() -> None:
        async with started_hygrometer() as (_sim, chip, device):
            await until(lambda: device.humidity.value == 40.0, "the first humidity")
            # Values keep coming, each within stale_after of the last: over
            # several stale_after periods no alarm may appear on either.
            start = time.monotonic()
            step = 0
            while time.monotonic() - start < 3 * STALE:
                step += 1
                expected = 20.0 + step / 256
                set_measurement(chip, expected, 40.0)
                await until(
                    lambda expected=expected: device.temperature.value == expected, "a reading"
                )
                assert alarm(device.temperature) == GOOD
                assert alarm(device.humidity) == GOOD

    run(scenario)


def test_an_offline_reading_keeps_its_comm_alarm_value_and_time_past_stale_after() -> None:
    async def scenario() -> None:
        async with started_hygrometer() as (sim, chip, device):
            await until(lambda: device.temperature.value == 21.5, "the first reading")
            chip.unplug()
            await until(lambda: device.connected.value == 0, "disconnection")
            stamp = device.temperature.timestamp
            gone = time.monotonic()
            assert alarm(device.temperature) == (AlarmStatus.COMM, AlarmSeverity.INVALID)
            # Well past stale_after, with the poll loop and reconnects running:
            # COMM says more than TIMEOUT would, so it stays.
            attempts = sim.accesses
            await until(
                lambda: time.monotonic() - gone > 3 * STALE and sim.accesses > attempts + 2,
                "stale_after to pass, with reconnect attempts",
            )
            assert alarm(device.temperature) == (AlarmStatus.COMM, AlarmSeverity.INVALID)
            assert device.temperature.value == 21.5
            assert device.temperature.timestamp == stamp
            chip.replug(reset=False)
            await until(lambda: alarm(device.temperature) == GOOD, "recovery")
            assert device.temperature.timestamp > stamp

    run(scenario)


def test_an_offline_reading_keeps_its_calc_alarm_past_stale_after() -> None:
    async def scenario() -> None:
        async with started_hygrometer() as (sim, chip, device):
            await until(lambda: device.temperature.value == 21.5, "the first reading")
            chip.faults.garble_next(10**6)  # every reply garbled: CALC, then offline
            await until(lambda: device.connected.value == 0, "disconnection")
            gone = time.monotonic()
            assert alarm(device.temperature) == (AlarmStatus.CALC, AlarmSeverity.INVALID)
            attempts = sim.accesses
            await until(
                lambda: time.monotonic() - gone > 3 * STALE and sim.accesses > attempts + 2,
                "stale_after to pass, with reconnect attempts",
            )
            assert alarm(device.temperature) == (AlarmStatus.CALC, AlarmSeverity.INVALID)
            assert device.temperature.value == 21.5

    run(scenario)

"""DHT22 through the IIO dht11 driver: the frame, IIO units, the 2 s rule, faults as alarms."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from waiting import background, on_virtual_time, run, until

from caioc.ca import AlarmSeverity, AlarmStatus
from caioc.drivers import lookup
from caioc.drivers._sim_dht22 import frame, kernel_decode
from caioc.drivers.dht22 import MIN_INTERVAL, make_dht22, parse_millis, simulate_dht22
from caioc.hw import BadReply, BusTimeout, DeviceUnplugged, HardwareError, VirtualClock
from caioc.hw.iio import IIOBus
from caioc.hw.sim import SimulatedIIOBus, SimulatedIIODevice


def alarm(pv: Any) -> tuple[AlarmStatus, AlarmSeverity]:
    return pv.alarm_status, pv.alarm_severity


@contextlib.asynccontextmanager
async def time_runs(clock: VirtualClock, step: float = 0.02) -> AsyncIterator[None]:
    """Virtual time runs on by *step* every millisecond or so (2 s in about 0.1 s)."""

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.001)  # the pace of virtual time, not a wait
            clock.advance(step)

    async with background(tick()):
        yield


# -- the datasheet and the kernel's units ----------------------------------------------------------


def test_the_datasheet_frame() -> None:
    # AM2302 datasheet, section 7: 0x028C = 65.2 %RH, 0x015F = 35.1 degC, checksum 0xEE
    assert frame(35.1, 65.2) == bytes([0x02, 0x8C, 0x01, 0x5F, 0xEE])
    assert kernel_decode(frame(35.1, 65.2)) == (35100, 65200)
    # below zero the top bit is a sign: 0x8065 = -10.1 degC
    assert frame(-10.1, 65.2)[2:4] == bytes([0x80, 0x65])
    assert kernel_decode(frame(-10.1, 65.2)) == (-10100, 65200)
    with pytest.raises(OSError):
        kernel_decode(bytes([0x02, 0x8C, 0x01, 0x5F, 0xEF]))  # checksum: EIO


def test_iio_values_are_thousandths() -> None:
    assert parse_millis("23100\n", "t") == 23.1
    assert parse_millis("-10100", "t") == -10.1
    with pytest.raises(BadReply):
        parse_millis("\n", "t")


def test_readings_in_iio_units_from_one_cached_measurement() -> None:
    async def scenario() -> None:
        clock = VirtualClock(stall_timeout=5.0)
        sim = SimulatedIIOBus(clock=clock)
        part = sim.attach(simulate_dht22(temperature=23.44, humidity=48.66))
        assert part.name == "iio:device0"
        device = make_dht22(prefix="g:", bus=sim)
        try:
            await on_virtual_time(clock, device.open(), 0.01)
            await on_virtual_time(clock, device.probe(), 0.01)
            value = await on_virtual_time(clock, device.measure(), 0.01)
            assert value == (23.4, 48.7)  # 0.1 degC and 0.1 %RH steps
            assert (sim.root / "iio:device0" / "in_temp_input").read_text() == "23400\n"
            assert (sim.root / "iio:device0" / "in_humidityrelative_input").read_text() == "48700\n"
            assert part.measurements == 1  # the second file came from the kernel's cache
            part.temperature = -5.0
            start = clock.monotonic()
            assert await on_virtual_time(clock, device.measure(), 0.01) == (-5.0, 48.7)
            assert clock.monotonic() - start >= MIN_INTERVAL - 0.05  # never sooner than 2 s
            assert part.too_soon == 0 and part.measurements == 2
        finally:
            await device.close()
            sim.close()

    run(scenario)


def test_retries_keep_two_seconds_apart() -> None:
    async def scenario() -> None:
        clock = VirtualClock(stall_timeout=5.0)
        sim = SimulatedIIOBus(clock=clock)
        part = sim.attach(simulate_dht22(temperature=20.0, humidity=40.0))
        device = make_dht22(prefix="g:", bus=sim, retries=2)
        try:
            await on_virtual_time(clock, device.open(), 0.01)
            part.noisy_next(1)
            part.silent_next(1)
            start = clock.monotonic()
            assert await on_virtual_time(clock, device.measure(), 0.05) == (20.0, 40.0)
            assert clock.monotonic() - start >= 2 * MIN_INTERVAL  # the third try, 4 s on
            assert part.too_soon == 0
            device.retries = 1  # each failing measure below stays within 10 virtual s
            part.noisy_next(2)
            with pytest.raises(HardwareError) as error:
                await on_virtual_time(clock, device.measure(), 0.05)
            assert error.value.kind == AlarmStatus.READ
            part.silent_next(2)
            with pytest.raises(BusTimeout):
                await on_virtual_time(clock, device.measure(), 0.05)
            assert part.too_soon == 0
        finally:
            await device.close()
            sim.close()

    run(scenario)


def test_a_sensor_polled_too_fast_does_not_answer() -> None:
    async def scenario() -> None:
        clock = VirtualClock(stall_timeout=5.0)
        sim = SimulatedIIOBus(clock=clock)
        part = sim.attach(simulate_dht22())
        bus = IIOBus(sim)
        try:
            await on_virtual_time(clock, bus.read_async("iio:device0/in_temp_input"), 0.01)
            await on_virtual_time(clock, bus.read_async("iio:device0/in_temp_input"), 0.01)
            assert part.measurements == 1  # within 2 s: the kernel's cache
            part.noisy_next(1)
            clock.advance(2.5)
            with pytest.raises(HardwareError):
                await on_virtual_time(clock, bus.read_async("iio:device0/in_temp_input"), 0.01)
            with pytest.raises(BusTimeout):  # straight after a failure: too soon
                await on_virtual_time(clock, bus.read_async("iio:device0/in_temp_input"), 0.01)
            assert part.too_soon == 1
        finally:
            bus.close()
            sim.close()

    run(scenario)


# -- alarms on the PVs -----------------------------------------------------------------------------


def test_failed_reads_become_alarms_and_recover() -> None:
    async def scenario() -> None:
        clock = VirtualClock(stall_timeout=5.0)
        sim = SimulatedIIOBus(clock=clock)
        part = sim.attach(simulate_dht22(temperature=18.5, humidity=61.0))
        # Virtual time runs fast here: a generous bus timeout, so that a worker
        # thread the OS holds up for a while is not taken for a sensor timeout.
        bus = IIOBus(sim, timeout=30.0)
        device = make_dht22(prefix="g:", bus=bus, period=0.05, retries=1)
        device.reconnect_delays = (0.02, 2.0, 0.1)
        assert device.temperature.units == "degC" and device.humidity.units == "%RH"
        async with time_runs(clock):
            await device.startup()
            try:
                both = (device.temperature, device.humidity)
                await until(lambda: device.humidity.value == 61.0, "a reading")
                assert {alarm(pv) for pv in both} == {(0, 0)}
                part.noisy_next(2)  # both tries of one poll: READ
                await until(lambda: both[0].alarm_status == AlarmStatus.READ, "READ")
                assert both[1].alarm_status == AlarmStatus.READ
                assert (device.temperature.value, device.humidity.value) == (18.5, 61.0)
                part.humidity = 62.0
                await until(lambda: device.humidity.value == 62.0, "recovery")
                assert {alarm(pv) for pv in both} == {(0, 0)}
                part.silent_next(2)  # no answer: TIMEOUT
                await until(lambda: both[1].alarm_status == AlarmStatus.TIMEOUT, "TIMEOUT")
                assert both[0].alarm_severity == AlarmSeverity.INVALID
                await until(lambda: {alarm(pv) for pv in both} == {(0, 0)}, "recovery")
                part.unplug()  # the overlay went away
                await until(lambda: device.connected.value == 0, "disconnected")
                assert {alarm(pv) for pv in both} == {(AlarmStatus.COMM, AlarmSeverity.INVALID)}
                part.temperature = 19.0
                part.replug()
                await until(lambda: device.temperature.value == 19.0, "reconnected")
                assert part.too_soon == 0
            finally:
                await device.shutdown()
                bus.close()
                sim.close()

    run(scenario)


def test_out_of_range_values_are_calc() -> None:
    async def scenario() -> None:
        clock = VirtualClock(stall_timeout=5.0)
        sim = SimulatedIIOBus(clock=clock)
        part = sim.attach(simulate_dht22(temperature=95.0))
        device = make_dht22(prefix="g:", bus=sim)
        try:
            await on_virtual_time(clock, device.open(), 0.01)
            with pytest.raises(BadReply, match="outside"):
                await on_virtual_time(clock, device.measure(), 0.01)
            assert part.measurements == 1  # not retried: the answer was clear
        finally:
            await device.close()
            sim.close()

    run(scenario)


def test_the_device_is_found_by_directory_or_driver_name() -> None:
    async def scenario() -> None:
        sim = SimulatedIIOBus()
        sim.attach(SimulatedIIODevice("bmp280"))  # iio:device0
        sim.attach(simulate_dht22())  # iio:device1
        devices = [
            make_dht22(prefix="a:", bus=sim),
            make_dht22(prefix="b:", bus=sim, address="iio:device1"),
            make_dht22(prefix="c:", bus=sim, address="iio:device0"),
            make_dht22(prefix="d:", bus=sim, address="iio:device7"),
        ]
        try:
            for device in devices[:3]:
                await device.open()
            assert [d.directory for d in devices[:3]] == ["iio:device1"] * 2 + ["iio:device0"]
            await devices[0].probe()
            with pytest.raises(BadReply, match="bmp280"):
                await devices[2].probe()
            with pytest.raises(DeviceUnplugged):
                await devices[3].open()
        finally:
            for device in devices:
                await device.close()
            sim.close()

    run(scenario)


def test_options_and_the_catalogue() -> None:
    with pytest.raises(ValueError, match="retries"):
        make_dht22(prefix="g:", bus="/x", retries=-1)
    with pytest.raises(ValueError, match="address"):
        make_dht22(prefix="g:", bus="/x", address=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period"):
        make_dht22(prefix="g:", bus="/x", period=0)
    info = lookup("dht22")
    assert info.bus == "iio" and info.options == {"period": 3.0, "retries": 2}
    part = info.simulator(address="iio:device3", **info.options)
    assert part.name == "iio:device3" and part.driver == "dht11"

"""SHT3x: CRC and conversions from the datasheet, the simulated part, timing, faults as alarms."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smbus2 import i2c_msg
from waiting import on_virtual_time, run, until

from caioc.ca import AlarmSeverity, AlarmStatus
from caioc.drivers import _sim_sht3x as sim_sht3x
from caioc.drivers import lookup
from caioc.drivers.sht3x import (
    SHT3x,
    convert,
    crc8,
    decode_words,
    make_sht3x,
    simulate_sht3x,
)
from caioc.hw import BadReply, NoAcknowledge, VirtualClock
from caioc.hw.sim import SimulatedI2CBus, SimulatedI2CDevice

T = TypeVar("T")

# Half a raw step of the 16-bit words (datasheet 4.13), and a little for floats.
TOLERANCE_T = 175 / 65535 / 2 + 1e-9
TOLERANCE_RH = 100 / 65535 / 2 + 1e-9


def alarms(device: SHT3x) -> set[tuple[AlarmStatus, AlarmSeverity]]:
    return {(pv.alarm_status, pv.alarm_severity) for pv in (device.temperature, device.humidity)}


def flip_one_bit(data: bytes) -> bytes:
    """Corrupt a reply the way a glitch on SDA does: one bit of the first word."""
    return bytes([data[0] ^ 0x04]) + data[1:]


# -- the datasheet --------------------------------------------------------------------------------


def test_crc_of_the_datasheet_example() -> None:
    assert crc8(b"\xbe\xef") == 0x92  # section 4.12
    assert decode_words(b"\xbe\xef\x92") == [0xBEEF]
    with pytest.raises(BadReply, match="CRC") as caught:
        decode_words(b"\xbe\xef\x93")
    assert caught.value.kind == AlarmStatus.CALC


@given(st.binary(min_size=2, max_size=2))
def test_the_driver_and_simulator_crcs_agree(word: bytes) -> None:
    # Two implementations: bitwise (driver) and table-driven (simulator).
    assert crc8(word) == sim_sht3x.crc8(word)


def test_conversion_formulas() -> None:
    assert convert(0, 0) == (-45.0, 0.0)
    assert convert(0xFFFF, 0xFFFF) == (130.0, 100.0)
    assert convert(0x6666, 0x8000).temperature == pytest.approx(-45 + 175 * 0.4)
    assert convert(0x6666, 0x8000).humidity == pytest.approx(50.0, abs=0.001)


# -- round trips ----------------------------------------------------------------------------------


def test_round_trip_over_the_operating_range() -> None:
    loop = asyncio.new_event_loop()
    sim = SimulatedI2CBus(1)
    chip = simulate_sht3x()
    sim.attach(chip)
    device = make_sht3x(prefix="s:", bus=sim, repeatability="low")

    def on_loop(work: Awaitable[T]) -> T:
        return loop.run_until_complete(asyncio.wait_for(work, 5))

    @settings(max_examples=40, deadline=None)
    @given(st.floats(-40.0, 125.0), st.floats(0.0, 100.0))
    def check(temperature: float, humidity: float) -> None:
        chip.temperature, chip.humidity = temperature, humidity
        measured = on_loop(device.measure())
        assert measured.temperature == pytest.approx(temperature, abs=TOLERANCE_T)
        assert measured.humidity == pytest.approx(humidity, abs=TOLERANCE_RH)

    try:
        on_loop(device.open())
        on_loop(device.probe())
        on_loop(device.initialise())
        check()
        assert chip.busy_refusals == 0
    finally:
        on_loop(device.close())
        loop.close()
        sim.close()


# -- timing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repeatability", "duration"), [("high", 0.015), ("medium", 0.006), ("low", 0.004)]
)
def test_the_driver_waits_the_maximum_duration(repeatability: str, duration: float) -> None:
    async def scenario() -> None:
        clock = VirtualClock(stall_timeout=5.0)
        sim = SimulatedI2CBus(1, clock=clock)
        # The simulated part takes the datasheet's maximum time and refuses
        # (NACKs) every access until it is done, like the real one.
        chip = simulate_sht3x(temperature=-5.0, humidity=80.0)
        sim.attach(chip)
        device = make_sht3x(prefix="s:", bus=sim, repeatability=repeatability)
        try:
            await on_virtual_time(clock, device.open())
            await on_virtual_time(clock, device.probe())
            await on_virtual_time(clock, device.initialise())  # a reset: 1.5 ms busy
            start = clock.monotonic()
            measured = await on_virtual_time(clock, device.measure())
            assert clock.monotonic() - start >= duration
            assert measured.temperature == pytest.approx(-5.0, abs=TOLERANCE_T)
            assert measured.humidity == pytest.approx(80.0, abs=TOLERANCE_RH)
            # never refused: no read too early, no command within 1 ms of another
            assert chip.busy_refusals == 0 and not chip.status & 0x0002
            # a part slower than its datasheet: the read is refused, a READ fault
            chip.time_factor = 1.3
            with pytest.raises(NoAcknowledge):
                await on_virtual_time(clock, device.measure())
            chip.time_factor = 1.0
            await on_virtual_time(clock, device.sleep(0.01))  # it finishes meanwhile
            assert (await on_virtual_time(clock, device.measure())).humidity > 79.9
        finally:
            await device.close()
            sim.close()

    run(scenario)


def test_the_simulator_refuses_an_early_read_and_close_commands() -> None:
    clock = VirtualClock(stall_timeout=5.0)
    with SimulatedI2CBus(1, clock=clock) as sim:
        chip = simulate_sht3x(temperature=-45.0, humidity=100.0)
        sim.attach(chip)
        sim.i2c_rdwr(i2c_msg.write(0x44, [0x24, 0x00]))  # high repeatability, no stretching
        with pytest.raises(OSError):
            sim.i2c_rdwr(i2c_msg.read(0x44, 6))  # not ready: NACK
        clock.advance(0.015)
        reply = i2c_msg.read(0x44, 6)
        sim.i2c_rdwr(reply)
        assert decode_words(bytes(reply)) == [0, 0xFFFF]
        with pytest.raises(OSError):
            sim.i2c_rdwr(i2c_msg.read(0x44, 6))  # read once only
        sim.i2c_rdwr(i2c_msg.write(0x44, [0xF3, 0x2D]))  # status
        with pytest.raises(OSError):
            sim.i2c_rdwr(i2c_msg.write(0x44, [0x30, 0x41]))  # within 1 ms of the last command
        assert chip.status & 0x0002


# -- faults become alarms -------------------------------------------------------------------------


def test_crc_failure_is_calc_and_nack_is_read_then_recovery() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus(1)
        chip = simulate_sht3x(temperature=21.0, humidity=45.0)
        sim.attach(chip)
        device = make_sht3x(prefix="s:", bus=sim, period=0.02, repeatability="low")
        device.reconnect_delays = (0.02, 2.0, 0.1)
        await device.startup()
        try:
            await until(lambda: abs(device.humidity.value - 45.0) < 0.01, "a reading")
            assert alarms(device) == {(AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)}
            stamp = device.humidity.timestamp
            # Faults count accesses: a command write and then its read; two
            # garbles corrupt exactly one reply whenever they are set.
            chip.faults.garble_next(2, flip_one_bit)
            await until(lambda: device.temperature.alarm_status == AlarmStatus.CALC, "CALC")
            assert alarms(device) == {(AlarmStatus.CALC, AlarmSeverity.INVALID)}
            assert device.humidity.timestamp == stamp and "CRC" in device.last_error.value
            await until(lambda: alarms(device) == {(0, 0)}, "recovery from CALC")
            chip.faults.nack_next(1)
            await until(lambda: device.temperature.alarm_status == AlarmStatus.READ, "READ")
            assert alarms(device) == {(AlarmStatus.READ, AlarmSeverity.INVALID)}
            chip.temperature = 30.0
            await until(lambda: abs(device.temperature.value - 30.0) < 0.01, "new values")
            assert alarms(device) == {(0, 0)}
            # unplugged: COMM on both; back (and reset again) by itself
            chip.unplug()
            await until(lambda: device.connected.value == 0, "disconnection")
            assert alarms(device) == {(AlarmStatus.COMM, AlarmSeverity.INVALID)}
            chip.replug()
            await until(lambda: device.connected.value == 1, "reconnection")
            await until(lambda: alarms(device) == {(0, 0)}, "readings again")
        finally:
            await device.shutdown()
            sim.close()

    run(scenario)


def test_probe_reads_the_serial_and_refuses_a_part_without_crcs() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus(1)
        sim.attach(simulate_sht3x(serial_number=0x0BADCAFE))
        device = make_sht3x(prefix="s:", bus=sim)
        await device.open()
        await device.probe()
        assert device.serial_number.value == "0BADCAFE"
        await device.close()
        sim.detach(0x44)
        # a register-map chip at 0x44 answers, but not with CRC-protected words
        sim.attach(SimulatedI2CDevice(0x44, registers=bytes(range(256))))
        await device.open()
        with pytest.raises(BadReply) as caught:
            await device.probe()
        assert caught.value.kind == AlarmStatus.CALC
        await device.close()
        sim.close()

    run(scenario)


def test_the_heater_setting_reaches_the_part() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus(1)
        chip = simulate_sht3x()
        sim.attach(chip)
        device = make_sht3x(prefix="s:", bus=sim, period=0.02, repeatability="low")
        device.reconnect_delays = (0.02, 2.0, 0.1)
        await device.startup()
        try:
            await until(lambda: device.connected.value == 1, "connection")
            hook: Any = device.heater.put_hook
            await hook(device.heater, 1)
            assert chip.heater and chip.commands[-1] == 0x306D
            await hook(device.heater, 0)
            assert not chip.heater
            await hook(device.heater, 1)
            chip.unplug()  # a power cycle: the heater comes back as set
            await until(lambda: device.connected.value == 0, "disconnection")
            chip.replug()
            assert not chip.heater
            await until(lambda: chip.heater, "the heater set again after reconnecting")
        finally:
            await device.shutdown()
            sim.close()

    run(scenario)


def test_registry_entry() -> None:
    info = lookup("sht3x")
    assert info.default_address == 0x44 and info.bus == "i2c"
    part = info.simulator(address=0x45, **info.options)
    assert part.address == 0x45
    sim = SimulatedI2CBus(1)
    device = info.factory(prefix="r:", bus=sim, address=0x45, **info.options)
    assert isinstance(device, SHT3x) and device.address == 0x45
    assert type(device)._declared_map()["temperature"].period == info.options["period"]
    sim.close()
    with pytest.raises(ValueError, match="repeatability"):
        make_sht3x(prefix="x:", bus=1, repeatability="best")

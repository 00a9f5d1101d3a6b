"""BME280 / BMP280: datasheet arithmetic, the simulated part, timing, faults as alarms."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from waiting import on_virtual_time, run, until

from caioc.ca import AlarmSeverity, AlarmStatus
from caioc.drivers import lookup
from caioc.drivers._sim_bme280 import SimulatedBME280
from caioc.drivers.bme280 import (
    BME280,
    BMP280,
    Calibration,
    compensate_humidity,
    compensate_pressure,
    compensate_temperature,
    make_bme280,
    make_bmp280,
    measurement_time,
    simulate_bme280,
    simulate_bmp280,
)
from caioc.hw import BadReply, BusTimeout, NoAcknowledge, VirtualClock
from caioc.hw.sim import SimulatedI2CBus

T = TypeVar("T")

# BMP280 datasheet section 3.12, the worked example.
EXAMPLE = Calibration(
    27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
    75, 362, 0, 315, 50, 30,
)  # fmt: skip
# Round-trip tolerances: half a raw step (16-bit at oversampling x1: 2.6 Pa
# and 0.005 degC) plus the difference between the datasheet's integer
# formulas (the driver) and its double-precision ones (the simulator).
TOLERANCE_T = 0.01  # degC, the integer formula's resolution
TOLERANCE_P = 0.02  # hPa
TOLERANCE_H = 0.012  # %RH


def pvs(device: BMP280) -> list[Any]:
    return [getattr(device, name) for name in (*device.companions, "temperature")]


def alarms(device: BMP280) -> set[tuple[AlarmStatus, AlarmSeverity]]:
    return {(pv.alarm_status, pv.alarm_severity) for pv in pvs(device)}


class Rig:
    """A connected driver and its simulated part, on a loop of its own (for hypothesis)."""

    def __init__(self, make: Callable[..., BMP280] = make_bme280, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.sim = SimulatedI2CBus(1)
        chip = "bmp280" if make is make_bmp280 else "bme280"
        self.chip = SimulatedBME280(chip=chip)
        self.sim.attach(self.chip)
        self.device = make(prefix="rig:", bus=self.sim, **options)
        self.run(self.device.open())
        self.run(self.device.probe())
        self.run(self.device.initialise())

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(work, 5))

    def close(self) -> None:
        self.run(self.device.close())
        self.loop.close()
        self.sim.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    yield rig
    rig.close()


# -- the datasheet's arithmetic -------------------------------------------------------------------


def test_the_datasheet_worked_example() -> None:
    centi_celsius, t_fine = compensate_temperature(519888, EXAMPLE)
    assert (centi_celsius, t_fine) == (2508, 128422)  # 25.08 degC
    pressure = compensate_pressure(415148, t_fine, EXAMPLE)
    # The int64 formula gives 25767233 / 256 = 100653.254 Pa; the datasheet's
    # table (double precision) prints 100653.27 Pa.
    assert pressure == 25767233
    assert pressure / 256 == pytest.approx(100653.27, abs=0.02)


def test_humidity_agrees_with_the_double_precision_formula() -> None:
    # No datasheet example for humidity: the int32 result for a typical
    # calibration, checked against the datasheet's double formula (appendix 8.1).
    assert compensate_humidity(32768, 128422, EXAMPLE) == 71319  # 69.647 %RH
    double = SimulatedBME280(calibration={"H4": 315})._humidity(32768, 128422)
    assert double == pytest.approx(71319 / 1024, abs=0.01)
    assert compensate_humidity(0, 128422, EXAMPLE) == 0  # limited to 0 .. 100 %RH
    assert compensate_humidity(65535, 128422, EXAMPLE) == 100 * 1024


def test_the_worked_example_through_the_bus(rig: Rig) -> None:
    rig.chip.poke(0x88, _tp_block(EXAMPLE))
    rig.run(rig.device.initialise())  # reads the calibration again
    data = bytes([0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x80, 0x00])  # adc_P 415148, adc_T 519888
    measurement = rig.device.convert(data)
    assert measurement.temperature == 25.08
    assert measurement.pressure == pytest.approx(1006.5327, abs=0.0002)


def test_measurement_times_follow_section_9_1() -> None:
    assert measurement_time(1, 1, 0, maximum=False) == pytest.approx(0.0055)  # BMP280 table 13
    assert measurement_time(1, 1, 0) == pytest.approx(0.006425)
    assert measurement_time(16, 16, 16) == pytest.approx(0.1128)
    assert measurement_time(1, 0, 0) == pytest.approx(0.00355)


def _tp_block(cal: Calibration) -> bytes:
    return SimulatedBME280(calibration=_as_sim(cal)).peek(0x88, 26)


def _as_sim(cal: Calibration) -> dict[str, int]:
    return {name.removeprefix("dig_"): value for name, value in vars(cal).items()}


int16 = st.integers(-32768, 32767)
int12 = st.integers(-2048, 2047)


@given(
    t1=st.integers(1, 65534), t2=int16, p1=st.integers(1, 65534), p9=int16,
    h1=st.integers(0, 255), h2=int16, h3=st.integers(0, 255), h4=int12, h5=int12,
    h6=st.integers(-128, 127),
)  # fmt: skip
def test_calibration_registers_decode_as_the_simulator_packs_them(**values: int) -> None:
    part = SimulatedBME280(calibration={name.upper(): value for name, value in values.items()})
    cal = Calibration.from_registers(part.peek(0x88, 26), part.peek(0xE1, 7))
    assert {name: getattr(cal, f"dig_{name.upper()}") for name in values} == values


def test_implausible_calibration_is_a_bad_reply() -> None:
    with pytest.raises(BadReply) as caught:
        Calibration.from_registers(bytes(26), bytes(7))
    assert caught.value.kind == AlarmStatus.CALC


# -- round trips: physical -> simulated raw -> driver -> physical ---------------------------------


@pytest.mark.parametrize(
    ("options", "examples"),
    [
        ({}, 40),
        (
            {
                "oversampling_temperature": 2,
                "oversampling_pressure": 16,
                "oversampling_humidity": 2,
            },
            15,
        ),
    ],
    ids=["x1", "x16"],
)
def test_round_trip_over_the_operating_range(options: dict[str, Any], examples: int) -> None:
    rig = Rig(**options)  # x16: 20-bit pressure (48 ms a conversion, so fewer examples)
    try:

        @settings(max_examples=examples, deadline=None)
        @given(
            temperature=st.floats(-40.0, 85.0),
            pressure=st.floats(300.0, 1100.0),
            humidity=st.floats(0.0, 100.0),
        )
        def check(temperature: float, pressure: float, humidity: float) -> None:
            rig.chip.temperature, rig.chip.pressure = temperature, pressure
            rig.chip.humidity = humidity
            measured = rig.run(rig.device.measure())
            assert measured.temperature == pytest.approx(temperature, abs=TOLERANCE_T)
            assert measured.pressure == pytest.approx(pressure, abs=TOLERANCE_P)
            assert measured.humidity == pytest.approx(humidity, abs=TOLERANCE_H)

        check()
        assert rig.chip.reads_while_measuring == 0
    finally:
        rig.close()


def test_bmp280_has_no_humidity() -> None:
    rig = Rig(make_bmp280)
    try:
        assert not any(name.endswith(":humidity") for name in rig.device.pv_names)
        rig.chip.temperature, rig.chip.pressure = -12.5, 850.0
        measured = rig.run(rig.device.measure())
        assert measured.temperature == pytest.approx(-12.5, abs=TOLERANCE_T)
        assert measured.pressure == pytest.approx(850.0, abs=TOLERANCE_P)
    finally:
        rig.close()


def test_normal_mode_reads_without_triggering() -> None:
    rig = Rig(mode="normal", standby_ms=0.5)
    try:
        rig.chip.temperature = 30.0
        before = rig.chip.conversions
        writes = sum(kind == "write" and len(data) > 1 for kind, data in rig.chip.transactions)
        # Time passing is the behaviour: in normal mode the part converts on
        # its own schedule (well under 20 ms a cycle here), never on request.
        rig.run(asyncio.sleep(0.02))
        measured = rig.run(rig.device.measure())
        assert measured.temperature == pytest.approx(30.0, abs=TOLERANCE_T)
        assert rig.chip.conversions > before
        after = sum(kind == "write" and len(data) > 1 for kind, data in rig.chip.transactions)
        assert after == writes  # no register written: only the pointer
    finally:
        rig.close()


def test_the_iir_filter_smooths_a_step() -> None:
    filtered = Rig(iir_filter=4)
    try:
        filtered.chip.temperature = 20.0
        assert filtered.run(filtered.device.measure()).temperature == pytest.approx(20.0, abs=0.01)
        filtered.chip.temperature = 30.0
        first = filtered.run(filtered.device.measure()).temperature
        assert first == pytest.approx(22.5, abs=0.05)  # a quarter of the step
        for _ in range(30):
            last = filtered.run(filtered.device.measure()).temperature
        assert last == pytest.approx(30.0, abs=0.01)
    finally:
        filtered.close()


# -- timing on the bus clock ----------------------------------------------------------------------


def test_conversions_are_never_read_early_on_a_virtual_clock() -> None:
    async def scenario() -> None:
        clock = VirtualClock(stall_timeout=5.0)
        sim = SimulatedI2CBus(1, clock=clock)
        chip = simulate_bme280(temperature=18.0, pressure=950.0, humidity=60.0)
        sim.attach(chip)
        device = make_bme280(prefix="v:", bus=sim, oversampling_pressure=4)
        await on_virtual_time(clock, device.open())
        await on_virtual_time(clock, device.probe())
        # The part does not answer during its 2 ms start-up: initialise waits.
        await on_virtual_time(clock, device.initialise())
        try:
            for factor in (1.0, 1.16, 1.8):  # typical, near the maximum, out of spec
                chip.time_factor = factor
                start = clock.monotonic()
                measured = await on_virtual_time(clock, device.measure())
                assert clock.monotonic() - start >= device.measurement_time
                assert measured.temperature == pytest.approx(18.0, abs=TOLERANCE_T)
                assert measured.pressure == pytest.approx(950.0, abs=TOLERANCE_P)
            assert chip.reads_while_measuring == 0
            chip.time_factor = 5.0  # never finishes in time: TIMEOUT, not a stale value
            with pytest.raises(BusTimeout):
                await on_virtual_time(clock, device.measure())
        finally:
            await device.close()
            sim.close()

    run(scenario)


def test_the_simulator_refuses_access_during_start_up() -> None:
    clock = VirtualClock(stall_timeout=5.0)
    with SimulatedI2CBus(1, clock=clock) as sim:
        chip = simulate_bme280()
        sim.attach(chip)
        sim.write_byte_data(0x76, 0xE0, 0xB6)
        with pytest.raises(OSError):
            sim.read_byte_data(0x76, 0xD0)
        clock.advance(0.002)
        assert sim.read_byte_data(0x76, 0xF3) & 0x01  # NVM still copying
        clock.advance(0.001)
        assert sim.read_byte_data(0x76, 0xF3) == 0
        assert sim.read_byte_data(0x76, 0xD0) == 0x60 and chip.conversions == 0


# -- faults become alarms, through the Device machinery -------------------------------------------


def test_nack_is_a_read_alarm_on_every_pv_then_recovery() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus(1)
        chip = simulate_bme280(temperature=22.5, pressure=1000.0, humidity=40.0)
        sim.attach(chip)
        device = make_bme280(prefix="b:", bus=sim, period=0.02)
        device.reconnect_delays = (0.02, 2.0, 0.1)
        assert alarms(device) == {(AlarmStatus.UDF, AlarmSeverity.INVALID)}
        await device.startup()
        try:
            await until(lambda: abs(device.temperature.value - 22.5) < 0.011, "a reading")
            await until(lambda: abs(device.humidity.value - 40.0) < 0.02, "the humidity")
            assert abs(device.pressure.value - 1000.0) < TOLERANCE_P
            assert alarms(device) == {(AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)}
            stamp = device.pressure.timestamp
            chip.faults.nack_next(1)  # the trigger write is refused: still a READ alarm
            await until(lambda: device.temperature.alarm_status == AlarmStatus.READ, "READ")
            assert alarms(device) == {(AlarmStatus.READ, AlarmSeverity.INVALID)}
            assert device.pressure.timestamp == stamp  # the last good value kept
            chip.temperature = 25.0
            await until(lambda: abs(device.temperature.value - 25.0) < 0.011, "recovery")
            await until(lambda: alarms(device) == {(0, 0)}, "no alarm on any PV")
            # a part that stops answering: COMM, then back by itself (a new reset)
            chip.faults.nack = True
            await until(lambda: device.connected.value == 0, "disconnection")
            assert alarms(device) == {(AlarmStatus.COMM, AlarmSeverity.INVALID)}
            chip.faults.clear()
            chip.humidity = 55.0
            await until(lambda: device.connected.value == 1, "reconnection")
            await until(lambda: abs(device.humidity.value - 55.0) < 0.02, "new readings")
            await until(lambda: alarms(device) == {(0, 0)}, "no alarm after reconnecting")
        finally:
            await device.shutdown()
        assert sim.fd is not None  # the bus belongs to whoever gave it
        sim.close()

    run(scenario)


def test_a_wrong_chip_id_fails_the_probe_with_calc() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus(1)
        sim.attach(simulate_bmp280())  # a BMP280 where a BME280 was expected
        device = make_bme280(prefix="w:", bus=sim, period=0.02)
        device.reconnect_delays = (0.02, 2.0, 0.1)
        await device.open()
        with pytest.raises(BadReply, match="0x58 is a BMP280") as caught:
            await device.probe()
        assert caught.value.kind == AlarmStatus.CALC
        await device.close()
        await device.startup()
        try:
            await until(lambda: "BadReply" in device.last_error.value, "the probe failure")
            assert device.connected.value == 0
            assert {severity for _, severity in alarms(device)} == {AlarmSeverity.INVALID}
            sim.detach(0x76)
            sim.attach(simulate_bme280(temperature=19.0))  # the right part is fitted
            await until(lambda: device.connected.value == 1, "the retry")
            await until(lambda: abs(device.temperature.value - 19.0) < 0.011, "a reading")
        finally:
            await device.shutdown()
            sim.close()

    run(scenario)


def test_two_sensors_share_one_bus_worker() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus(1)
        near = simulate_bme280(address=0x76, temperature=10.0)
        sim.attach(near)
        sim.attach(simulate_bme280(address=0x77, temperature=20.0))
        first = make_bme280(prefix="a:", bus=sim, period=0.01)
        second = make_bme280(prefix="b:", bus=sim, address=0x77, period=0.01)
        await first.startup()
        await second.startup()
        try:
            await until(lambda: first.temperature.value == 10.0, "the first sensor")
            await until(lambda: second.temperature.value == 20.0, "the second sensor")
            await first.shutdown()  # the other one carries on
            near.temperature = 11.0
            second_chip = sim.devices[0x77]
            assert isinstance(second_chip, SimulatedBME280)
            second_chip.temperature = 21.0
            await until(lambda: second.temperature.value == 21.0, "the second sensor alone")
            assert first.temperature.value == 10.0
        finally:
            await first.shutdown()
            await second.shutdown()
        assert sim.max_concurrency == 1  # every call on the one worker, in turn
        sim.close()

    run(scenario)


# -- the catalogue --------------------------------------------------------------------------------


def test_registry_entries_build_devices_and_simulators() -> None:
    for name, device_class, chip_id in (("bme280", BME280, 0x60), ("bmp280", BMP280, 0x58)):
        info = lookup(name)
        assert info.bus == "i2c" and info.default_address == 0x76
        part = info.simulator(address=0x77, **info.options)
        assert part.address == 0x77 and part.peek(0xD0) == bytes([chip_id])
        sim = SimulatedI2CBus(1)
        device = info.factory(prefix="r:", bus=sim, address=0x77, **info.options)
        assert isinstance(device, device_class) and device.address == 0x77
        assert type(device)._declared_map()["temperature"].period == info.options["period"]
        sim.close()
    slow = make_bme280(prefix="s:", bus=1, period=60.0)
    assert type(slow)._declared_map()["temperature"].period == 60.0
    with pytest.raises(ValueError, match="oversampling_pressure"):
        make_bme280(prefix="x:", bus=1, oversampling_pressure=3)
    with pytest.raises(ValueError, match="standby_ms"):
        make_bmp280(prefix="x:", bus=1, standby_ms=10)
    with pytest.raises(TypeError):
        make_bmp280(prefix="x:", bus=1, oversampling_humidity=1)


def test_a_missing_adapter_is_an_alarm_not_a_crash() -> None:
    async def scenario() -> None:
        device = make_bme280(prefix="m:", bus=99, period=0.02)  # no /dev/i2c-99
        await device.startup()
        try:
            await until(lambda: device.error_count.value >= 1, "the failure")
            assert device.connected.value == 0
            assert alarms(device) == {(AlarmStatus.COMM, AlarmSeverity.INVALID)}
        finally:
            await device.shutdown()

    run(scenario)


def test_a_nack_outside_the_device_is_no_acknowledge(rig: Rig) -> None:
    rig.chip.faults.nack_next(1)
    with pytest.raises(NoAcknowledge) as caught:
        rig.run(rig.device.measured(rig.device.measure, "pressure"))
    assert caught.value.kind == AlarmStatus.READ
    assert rig.device.pressure.alarm_status == AlarmStatus.READ

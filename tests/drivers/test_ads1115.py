"""ADS1115: config words and scaling from the datasheet, the simulated part, timing, alarms."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from waiting import on_virtual_time, run, until

from caioc.ca import AlarmSeverity, AlarmStatus
from caioc.drivers import lookup
from caioc.drivers.ads1115 import (
    ADS1115,
    FULL_SCALE,
    MUX,
    conversion_time,
    make_ads1115,
    parse_channels,
    simulate_ads1115,
)
from caioc.hw import BadReply, BusTimeout, VirtualClock
from caioc.hw.sim import SimulatedI2CBus, SimulatedI2CDevice

T = TypeVar("T")


def alarm(pv: Any) -> tuple[AlarmStatus, AlarmSeverity]:
    return pv.alarm_status, pv.alarm_severity


# -- the datasheet -----------------------------------------------------------------------------


def test_config_words() -> None:
    device = make_ads1115(prefix="a:", bus=1, full_scale=2.048, data_rate=128)
    # Reset value 0x8583 is MUX 000 (AIN0-AIN1): the same word starts a conversion.
    assert device.config(MUX["0-1"]) == 0x8583
    assert device.config(MUX["0"]) == 0xC583  # OS | MUX 100 | PGA 010 | MODE | DR 100 | 11
    fast = make_ads1115(prefix="b:", bus=1, full_scale=0.256, data_rate=860)
    assert fast.config(MUX["3"]) == 0xFBE3  # MUX 111, PGA 101, DR 111


def test_conversion_time_has_the_oscillator_margin() -> None:
    assert conversion_time(8) == pytest.approx(1.1 / 8 + 0.0001)
    assert conversion_time(860) == pytest.approx(1.1 / 860 + 0.0001)


def test_codes_scale_by_the_full_scale() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus(1)
        part = simulate_ads1115()
        sim.attach(part)
        device = make_ads1115(prefix="a:", bus=sim, full_scale=2.048, data_rate=860)
        await device.open()
        await device.probe()
        try:
            lsb = 2.048 / 32768  # 62.5 uV (table 3)
            for volts, code in [(0.0, 0), (lsb, 1), (-lsb, -1), (1.0, 16000), (-2.048, -32768)]:
                part.inputs[0] = volts
                assert await device.convert(MUX["0"]) == (code, pytest.approx(volts))
            part.inputs[0] = 2.048  # +FS itself reads 0x7FFF: (2^15 - 1) / 2^15 of the range
            assert await device.convert(MUX["0"]) == (32767, pytest.approx(2.048 - lsb))
            part.inputs[:] = [0.5, 0.2, 0.0, 1.0]
            assert (await device.convert(MUX["0-1"]))[1] == pytest.approx(0.3)
            assert (await device.convert(MUX["1-3"]))[1] == pytest.approx(-0.8)
            assert part.reads_while_converting == 0
        finally:
            await device.close()
            sim.close()

    run(scenario)


# -- round trips: volts -> simulated code -> driver -> volts ------------------------------------


def test_round_trip_over_channels_and_gains() -> None:
    loop = asyncio.new_event_loop()
    sim = SimulatedI2CBus(1)
    part = simulate_ads1115()
    sim.attach(part)
    device = make_ads1115(prefix="a:", bus=sim, data_rate=860)

    def on_loop(work: Awaitable[T]) -> T:
        return loop.run_until_complete(asyncio.wait_for(work, 5))

    @settings(max_examples=60, deadline=None)
    @given(
        channel=st.sampled_from(list(MUX)),
        full_scale=st.sampled_from(list(FULL_SCALE)),
        data=st.data(),
    )
    def check(channel: str, full_scale: float, data: st.DataObject) -> None:
        volts = data.draw(st.floats(-full_scale, full_scale * 32767 / 32768), label="volts")
        device.volts = full_scale
        part.inputs[:] = [0.0] * 4
        pins = channel.split("-")
        part.inputs[int(pins[0])] = volts  # the negative input, if any, at 0 V
        code, measured = on_loop(device.convert(MUX[channel]))
        lsb = full_scale / 32768
        assert measured == pytest.approx(volts, abs=lsb / 2 + 1e-12)
        assert measured == code * lsb

    try:
        on_loop(device.open())
        on_loop(device.probe())
        check()
        assert part.reads_while_converting == 0
    finally:
        on_loop(device.close())
        loop.close()
        sim.close()


# -- timing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_rate", [8, 128, 860])
def test_the_result_is_never_read_before_the_conversion_ends(data_rate: int) -> None:
    async def scenario() -> None:
        clock = VirtualClock(stall_timeout=5.0)
        sim = SimulatedI2CBus(1, clock=clock)
        part = simulate_ads1115(inputs=(1.25, 0.0, 0.0, 0.0))
        sim.attach(part)
        device = make_ads1115(prefix="a:", bus=sim, data_rate=data_rate)
        step = 0.02 / data_rate
        try:
            await on_virtual_time(clock, device.open(), step)
            await on_virtual_time(clock, device.probe(), step)
            # the oscillator at both ends of its +-10 %, then slower than specified
            for error in (-0.1, 0.0, 0.1, 0.5):
                part.rate_error = error
                part.inputs[0] += 0.25
                start = clock.monotonic()
                _, volts = await on_virtual_time(clock, device.convert(MUX["0"]), step)
                assert clock.monotonic() - start >= (1 + error) / data_rate
                assert volts == pytest.approx(part.inputs[0], abs=0.000125)
            assert part.reads_while_converting == 0
            part.rate_error = 2.0  # never done in time: TIMEOUT, not the previous result
            with pytest.raises(BusTimeout):
                await on_virtual_time(clock, device.convert(MUX["0"]), step)
        finally:
            await device.close()
            sim.close()

    run(scenario)


# -- alarms, settings, the catalogue ------------------------------------------------------------


def test_saturation_nack_and_recovery_as_alarms() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus(1)
        part = simulate_ads1115(inputs=(1.0, 2.0, 0.0, 0.0))
        sim.attach(part)
        device = make_ads1115(
            prefix="a:", bus=sim, period=0.02, channels=["0", "0-1"], data_rate=860
        )
        device.reconnect_delays = (0.02, 2.0, 0.1)
        assert [name for name, _ in device.channels] == ["ain0", "ain0_1"]
        await device.startup()
        try:
            ain0: Any = device.ain0
            await until(lambda: ain0.value == 1.0, "a reading")
            await until(lambda: device.ain0_1.value == -1.0, "the differential reading")
            assert alarm(ain0) == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)
            part.inputs[0] = 5.0  # beyond +4.096 V: clipped at 0x7FFF
            await until(lambda: alarm(ain0)[0] == AlarmStatus.HWLIMIT, "HWLIMIT")
            assert alarm(ain0) == (AlarmStatus.HWLIMIT, AlarmSeverity.INVALID)
            assert ain0.value == pytest.approx(4.096 * 32767 / 32768)
            part.inputs[0] = 2.0
            await until(lambda: alarm(ain0) == (0, 0) and ain0.value == 2.0, "in range again")
            part.inputs[1] = 7.0  # AIN0 - AIN1 far below -FS: 0x8000
            await until(lambda: alarm(device.ain0_1)[0] == AlarmStatus.HWLIMIT, "low clip")
            assert device.ain0_1.value == -4.096
            part.inputs[1] = 1.5
            await until(lambda: alarm(device.ain0_1) == (0, 0), "in range again")
            # the write that starts a conversion is refused: a READ fault on that channel
            part.faults.nack_next(1)
            both = (ain0, device.ain0_1)
            await until(lambda: AlarmStatus.READ in {pv.alarm_status for pv in both}, "READ")
            await until(lambda: {alarm(pv) for pv in both} == {(0, 0)}, "recovery")
            assert device.ain0_1.value == 0.5
        finally:
            await device.shutdown()
            sim.close()

    run(scenario)


def test_gain_and_rate_settings_apply_to_the_next_conversion() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus(1)
        part = simulate_ads1115(inputs=(0.2, 0.0, 0.0, 0.0))
        sim.attach(part)
        device = make_ads1115(prefix="a:", bus=sim, channels=["0"], data_rate=860, period=60)
        await device.startup()
        try:
            await until(lambda: device.connected.value == 1, "connection")
            assert device.full_scale.value == 1 and device.data_rate.value == 7
            full_scale: Any = device.full_scale
            data_rate: Any = device.data_rate
            await full_scale.put_hook(full_scale, 5)  # "0.256 V"
            await data_rate.put_hook(data_rate, 6)  # "475 SPS"
            code, volts = await device.convert(MUX["0"])
            assert code == round(0.2 / 0.256 * 32768) and volts == pytest.approx(0.2, abs=4e-6)
            assert (part.values[0x01] >> 9) & 0x07 == 5 and (part.values[0x01] >> 5) & 0x07 == 6
            assert device.ain0.precision == 6 and device.ain0.upper_disp_limit == 0.256
        finally:
            await device.shutdown()
            sim.close()

    run(scenario)


def test_probe_refuses_a_part_that_does_not_keep_the_config() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus(1)
        other = SimulatedI2CDevice(0x48)  # another chip: its 0x01..0x02 are fixed
        sim.attach(other)
        other.define_register(0x01, 0x12, read_only=True)
        other.define_register(0x02, 0x34, read_only=True)
        device = make_ads1115(prefix="a:", bus=sim)
        await device.open()
        with pytest.raises(BadReply, match="not an ADS1115") as caught:
            await device.probe()
        assert caught.value.kind == AlarmStatus.CALC
        await device.close()
        sim.close()

    run(scenario)


def test_channel_options() -> None:
    assert parse_channels(["0", "2-3"]) == (("ain0", 4), ("ain2_3", 3))
    assert parse_channels({"battery": "1", "bridge": "0-1"}) == (("battery", 5), ("bridge", 0))
    for bad in (["4"], ["1-2"], [], {"close": "0"}, {"connected": "0"}, {"a": "0", "b-c": "1"}):
        with pytest.raises(ValueError):
            parse_channels(bad)
    with pytest.raises(ValueError, match="full_scale"):
        make_ads1115(prefix="a:", bus=1, full_scale=5.0)
    with pytest.raises(ValueError, match="data_rate"):
        make_ads1115(prefix="a:", bus=1, data_rate=100)
    named = make_ads1115(prefix="x:", bus=1, channels={"battery": "3"}, period=0.5)
    assert "x:battery" in named.pv_names and "x:ain0" not in named.pv_names
    assert type(named)._declared_map()["battery"].period == 0.5


def test_registry_entry() -> None:
    info = lookup("ads1115")
    assert info.default_address == 0x48 and info.bus == "i2c"
    part = info.simulator(address=0x49, **info.options)
    assert part.address == 0x49 and part.values[0x01] == 0x8583  # the reset value
    sim = SimulatedI2CBus(1)
    device = info.factory(prefix="r:", bus=sim, address=0x49, **info.options)
    assert isinstance(device, ADS1115) and device.address == 0x49
    assert [name for name, _ in device.channels] == ["ain0", "ain1", "ain2", "ain3"]
    sim.close()

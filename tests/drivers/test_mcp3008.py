"""MCP3008: the SPI framing and code formula of the datasheet, the simulated part, alarms."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from waiting import run, until

from caioc.ca import AlarmSeverity, AlarmStatus
from caioc.drivers import lookup
from caioc.drivers.mcp3008 import (
    CHANNELS,
    command,
    decode,
    make_mcp3008,
    parse_channels,
    simulate_mcp3008,
)
from caioc.hw import BadReply, SPIBus
from caioc.hw.sim import SimulatedSPIBus

T = TypeVar("T")


def alarm(pv: Any) -> tuple[AlarmStatus, AlarmSeverity]:
    return pv.alarm_status, pv.alarm_severity


# -- the datasheet -----------------------------------------------------------------------------


def test_the_three_byte_command_of_figure_6_1() -> None:
    # 0000 0001 (start bit), then SGL/DIFF D2 D1 D0 xxxx, then a don't-care byte
    assert command(True, 0) == bytes([0x01, 0x80, 0x00])
    assert command(True, 5) == bytes([0x01, 0xD0, 0x00])
    assert command(False, 1) == bytes([0x01, 0x10, 0x00])  # CH0 = IN-, CH1 = IN+
    assert CHANNELS["1-0"] == (False, 1) and CHANNELS["6-7"] == (False, 6)
    assert CHANNELS["7"] == (True, 7) and len(CHANNELS) == 16
    with pytest.raises(ValueError):
        command(True, 8)


def test_the_reply_is_masked_to_ten_bits() -> None:
    # "?" bits are high impedance: only the null bit (0) and B9..B0 count
    assert decode(bytes([0xFF, 0xF8 | 0b10, 0x5A])) == 0x25A
    assert decode(bytes([0x00, 0x03, 0xFF])) == 1023
    assert decode(bytes([0xAA, 0xF8, 0x00])) == 0
    with pytest.raises(BadReply, match="null bit"):
        decode(bytes([0xFF, 0xFF, 0xFF]))  # nobody drives DOUT
    with pytest.raises(BadReply):
        decode(bytes([0x00, 0x00]))


def test_the_simulator_answers_any_start_bit_alignment() -> None:
    part = simulate_mcp3008(inputs=[0.0, 1.5, 0, 0, 0, 0, 0, 0], vref=2.048)
    assert part.code(True, 1) == 750  # 1024 * 1.5 / 2.048
    # The start bit first: 1 SGL D2 D1 D0 (sample) (null) B9 | B8..B1 | B0 ...
    reply = part.handle_transfer(bytes([0b1100_1000, 0x00, 0x00]))
    assert reply[0] & 0x03 == 0b01  # the null bit, then B9
    code = (reply[0] & 0x01) << 9 | reply[1] << 1 | reply[2] >> 7
    assert code == 750
    # Clocking on after B0 gives the result LSB first (figure 5-2), then zeros.
    long = part.handle_transfer(command(True, 1) + bytes(2))
    bits = "".join(f"{byte:08b}" for byte in long)
    assert bits[14:24] == f"{750:010b}"
    assert bits[24:33] == f"{750:010b}"[-2::-1] and set(bits[33:]) == {"0"}
    assert part.handle_transfer(bytes(3)) == b"\xff\xff\xff"  # no start bit, no answer


@pytest.mark.parametrize(
    ("vref", "volts", "code"),
    [
        (5.0, 0.0, 0),
        (5.0, 5.0 / 1024, 1),
        (5.0, 2.5, 512),
        (5.0, 5.0 * 1023 / 1024, 1023),
        (5.0, 5.0, 1023),  # at VREF: still the largest code
        (3.3, 1.65, 512),
        (3.3, 3.3 / 1024 * 999.5, 999),
        (2.5, -0.2, 0),  # below AGND
    ],
)
def test_code_is_1024_vin_over_vref(vref: float, volts: float, code: int) -> None:
    async def scenario() -> None:
        sim = SimulatedSPIBus(0)
        part = sim.attach(simulate_mcp3008(vref=vref), chip_select=0)
        device = make_mcp3008(prefix="a:", bus=sim, vref=vref, channels=["3"])
        await device.open()
        try:
            part.inputs[3] = volts
            assert await device.convert("3") == (code, pytest.approx(code * vref / 1024))
            assert part.conversions[-1] == (True, 3)
        finally:
            await device.close()

    run(scenario)


def test_round_trip_over_channels_and_references() -> None:
    loop = asyncio.new_event_loop()
    sim = SimulatedSPIBus(0)
    part = sim.attach(simulate_mcp3008(), chip_select=0)
    device = make_mcp3008(prefix="a:", bus=sim)

    def on_loop(work: Awaitable[T]) -> T:
        return loop.run_until_complete(asyncio.wait_for(work, 5))

    @settings(max_examples=80, deadline=None)
    @given(
        channel=st.sampled_from(list(CHANNELS)),
        vref=st.sampled_from([1.0, 2.5, 3.3, 4.096, 5.0]),
        data=st.data(),
    )
    def check(channel: str, vref: float, data: st.DataObject) -> None:
        volts = data.draw(st.floats(0.0, vref * 1023 / 1024), label="volts")
        device.vref = part.vref = vref
        part.inputs[:] = [0.0] * 8
        pins = channel.split("-")
        part.inputs[int(pins[0])] = volts  # IN- (if any) at 0 V
        code, measured = on_loop(device.convert(channel))
        assert code == math.floor(1024 * volts / vref)
        lsb = vref / 1024
        assert measured <= volts + 1e-12 and volts - measured < lsb + 1e-12

    try:
        on_loop(device.open())
        check()
    finally:
        on_loop(device.close())
        loop.close()


# -- PVs, clipping, faults -------------------------------------------------------------------------


def test_channels_give_volts_and_codes_and_clip_at_full_scale() -> None:
    async def scenario() -> None:
        sim = SimulatedSPIBus(0)
        part = sim.attach(simulate_mcp3008(vref=3.3), chip_select=1)
        part.inputs[:] = [1.65, 0.0, 2.0, 0.5, 0, 0, 0, 0]
        device = make_mcp3008(
            prefix="adc:",
            bus=SPIBus(0, spidev_factory=sim),
            address=1,
            period=0.02,
            channels={"pot": "0", "bridge": "2-3", "reverse": "3-2"},
        )
        assert {"adc:pot", "adc:pot_raw", "adc:bridge", "adc:bridge_raw"} <= set(device.pvdb)
        assert device.pot.units == "V" and device.pot_raw.units == "counts"
        assert device.pot.upper_disp_limit == 3.3
        await device.startup()
        try:
            await until(lambda: device.pot_raw.value == 512, "CH0 at VREF / 2")
            assert device.pot.value == pytest.approx(1.65)
            await until(lambda: device.bridge_raw.value == 465, "CH2 - CH3")  # 1.5 V
            await until(lambda: device.reverse.value == 0.0, "CH3 - CH2 < 0")
            assert alarm(device.pot) == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)
            part.inputs[0] = 4.0  # beyond VREF: the largest code is only a bound
            await until(lambda: alarm(device.pot)[0] == AlarmStatus.HWLIMIT, "HWLIMIT")
            assert device.pot_raw.value == 1023
            assert device.pot.alarm_severity == AlarmSeverity.INVALID
            part.inputs[0] = 1.0
            await until(lambda: alarm(device.pot) == (0, 0), "in range again")
            assert device.pot_raw.value == 310
        finally:
            await device.shutdown()

    run(scenario)


def test_a_missing_chip_is_calc_and_recovers() -> None:
    async def scenario() -> None:
        sim = SimulatedSPIBus(0)
        part = sim.attach(simulate_mcp3008(vref=5.0), chip_select=0)
        part.inputs[0] = 2.5
        # polled once at start; the test reads when it wants, so no state is missed
        device = make_mcp3008(prefix="a:", bus=sim, vref=5.0, period=1000.0, channels=["0"])
        device.reconnect_delays = (0.02, 2.0, 0.1)
        await device.startup()
        try:
            await until(lambda: device.ch0_raw.value == 512, "the first reading")
            part.faults.garble_next(1, lambda reply: b"\xff" * len(reply))
            both = (device.ch0, device.ch0_raw)
            assert await device.read_now("ch0") is None
            assert {alarm(pv) for pv in both} == {(AlarmStatus.CALC, AlarmSeverity.INVALID)}
            assert device.ch0.value == pytest.approx(2.5)  # the last good value stays
            assert await device.read_now("ch0") == pytest.approx(2.5)
            assert {alarm(pv) for pv in both} == {(0, 0)}
            part.unplug()  # MISO pulled up: the null bit reads 1
            for _ in range(device.comm_failures):
                await device.read_now("ch0")
            assert device.connected.value == 0
            assert alarm(device.ch0) == (AlarmStatus.CALC, AlarmSeverity.INVALID)
            assert "null bit" in device.last_error.value
            part.inputs[0] = 1.25
            part.replug()
            await until(lambda: device.connected.value == 1, "reconnected")
            assert await device.read_now("ch0") == pytest.approx(1.25)
            assert device.ch0_raw.value == 256 and {alarm(pv) for pv in both} == {(0, 0)}
        finally:
            await device.shutdown()

    run(scenario)


def test_a_clock_faster_than_the_part_garbles_the_reply() -> None:
    async def scenario() -> None:
        sim = SimulatedSPIBus(0)
        slow = simulate_mcp3008()
        slow.max_speed_hz = 1_350_000  # VDD = 2.7 V
        sim.attach(slow, chip_select=0)
        device = make_mcp3008(prefix="a:", bus=sim, clock_hz=3_600_000, channels=["0"])
        await device.open()
        try:
            with pytest.raises(BadReply):
                await device.convert("0")
        finally:
            await device.close()
        device = make_mcp3008(prefix="b:", bus=sim, clock_hz=1_350_000, channels=["0"])
        await device.open()
        try:
            assert (await device.convert("0"))[0] == slow.code(True, 0)
        finally:
            await device.close()

    run(scenario)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="clock_hz"):
        make_mcp3008(prefix="a:", bus=0, clock_hz=5_000)
    with pytest.raises(ValueError, match="clock_hz"):
        make_mcp3008(prefix="a:", bus=0, clock_hz=4_000_000)
    with pytest.raises(ValueError, match="vref"):
        make_mcp3008(prefix="a:", bus=0, vref=0)
    with pytest.raises(ValueError, match="not one of"):
        parse_channels(["8"])
    with pytest.raises(ValueError, match="not one of"):
        parse_channels(["0-2"])  # not a pair of table 5-2
    with pytest.raises(ValueError, match="same name"):
        parse_channels(["0", "0"])
    with pytest.raises(ValueError, match=r"spi-B\.C"):
        make_mcp3008(prefix="a:", bus="spi0")
    device = make_mcp3008(prefix="a:", bus="/dev/spidev1.2")
    assert (device.controller, device.chip_select) == (1, 2)
    assert parse_channels(["0", "1-0"]) == (("ch0", "0"), ("ch1_0", "1-0"))


def test_the_catalogue_entry() -> None:
    info = lookup("mcp3008")
    assert info.bus == "spi" and info.options["vref"] == 3.3
    part = info.simulator(address=None, **info.options)
    assert part.vref == 3.3 and len({part.code(True, n) for n in range(8)}) == 8

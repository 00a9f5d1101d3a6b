"""DS18B20 through w1 sysfs: the datasheet's table, the kernel's format, faults as alarms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from waiting import on_virtual_time, run, until

from caioc.ca import AlarmSeverity, AlarmStatus
from caioc.drivers import lookup
from caioc.drivers._sim_ds18b20 import raw_temperature, scratchpad
from caioc.drivers.ds18b20 import (
    CONVERSION_TIME,
    crc8,
    decode_temperature,
    make_ds18b20,
    parse_w1_slave,
    simulate_ds18b20,
)
from caioc.hw import BadReply, DeviceUnplugged, HardwareError, VirtualClock
from caioc.hw.sim import SimulatedW1Bus
from caioc.hw.sim.w1 import SimulatedW1Slave
from caioc.hw.w1 import W1Bus, parse_slave_id

PROBE = "28-0316a2791aff"

#: The datasheet's temperature/data relationship (table 1), 12 bits.
TABLE_1 = [
    (125.0, 0x07D0),
    (85.0, 0x0550),
    (25.0625, 0x0191),
    (10.125, 0x00A2),
    (0.5, 0x0008),
    (0.0, 0x0000),
    (-0.5, 0xFFF8),
    (-10.125, 0xFF5E),
    (-25.0625, 0xFE6F),
    (-55.0, 0xFC90),
]


def alarm(pv: Any) -> tuple[AlarmStatus, AlarmSeverity]:
    return pv.alarm_status, pv.alarm_severity


# -- the datasheet and the kernel's format --------------------------------------------------------


@pytest.mark.parametrize(("temperature", "raw"), TABLE_1)
def test_the_temperature_data_relationship_of_table_1(temperature: float, raw: int) -> None:
    assert decode_temperature(raw) == temperature
    assert raw_temperature(temperature) == raw  # the simulator, written on its own


def test_undefined_low_bits_are_masked_at_lower_resolutions() -> None:
    # +25.0625 degC is 0x0191; at 9 bits (0.5 degC steps) bits 2..0 are undefined
    assert decode_temperature(0x0197, 9) == 25.0
    assert decode_temperature(0x0191, 10) == 25.0
    assert decode_temperature(0x0193, 11) == 25.125
    assert decode_temperature(0xFF5F, 11) == -10.125
    assert raw_temperature(25.0625, 9) == 0x0197  # the simulator fills them with ones


def test_crc8_is_the_dallas_maxim_one() -> None:
    # Application note 27's example ROM: family 02, serial 00000001B81C -> CRC A2
    assert crc8(bytes([0x02, 0x1C, 0xB8, 0x01, 0x00, 0x00, 0x00])) == 0xA2
    assert crc8(bytes([0x02, 0x1C, 0xB8, 0x01, 0x00, 0x00, 0x00, 0xA2])) == 0


def test_a_kernel_w1_slave_read_parses() -> None:
    # as printed by w1_therm for a part at 23.125 degC
    text = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
    pad = parse_w1_slave(text)
    assert pad.kernel_crc_ok and pad.crc_ok and pad.millidegrees == 23125
    assert pad.resolution == 12 and pad.temperature == 23.125
    assert scratchpad(pad.raw) == pad.data  # the simulator makes the same nine bytes
    bad = parse_w1_slave(text.replace("YES", "NO").replace("72 01", "76 01"))
    assert not bad.kernel_crc_ok and not bad.crc_ok
    for garbage in ["", "hello\n", "72 01 : crc=57 YES\n", "72 01 4b 46 7f ff 0e 10 57 t=1\n"]:
        with pytest.raises(BadReply):
            parse_w1_slave(garbage)


def test_the_simulated_tree_looks_like_the_kernels() -> None:
    async def scenario() -> None:
        sim = SimulatedW1Bus()
        part = sim.attach(simulate_ds18b20(address=PROBE, temperature=23.125))
        part.time_factor = 0.05  # real time here: no need to wait 750 ms
        sim.attach(SimulatedW1Slave("10-000802b4b1b1"))  # a DS18S20 on the same bus
        bus = W1Bus(sim)
        try:
            text = await bus.read_async(f"{PROBE}/w1_slave")
            assert text == (
                "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
            )
            assert (await bus.read_async(f"{PROBE}/temperature")) == "23125\n"
            assert await bus.slaves_async() == ["10-000802b4b1b1", PROBE]
            assert await bus.slaves_async(0x28) == [PROBE]
            slaves = await bus.read_async("w1_bus_master1/w1_master_slaves")
            assert slaves.split() == ["10-000802b4b1b1", PROBE]
        finally:
            bus.close()
            sim.close()
        assert not sim.root.exists()

    run(scenario)


@pytest.mark.parametrize("resolution", [9, 10, 11, 12])
def test_resolution_sets_the_step_and_the_conversion_time(resolution: int) -> None:
    async def scenario() -> None:
        clock = VirtualClock(stall_timeout=5.0)
        sim = SimulatedW1Bus(clock=clock)
        part = sim.attach(simulate_ds18b20(address=PROBE, temperature=-10.2, resolution=12))
        device = make_ds18b20(prefix="t:", bus=sim, address=PROBE, resolution=resolution)
        try:
            for step in (device.open(), device.probe(), device.initialise()):
                await on_virtual_time(clock, step, 0.01)
            assert part.resolution == resolution  # written to the kernel's resolution file
            assert device.resolution.value == resolution
            start = clock.monotonic()
            value = await on_virtual_time(clock, device.measure(), 0.005)
            assert clock.monotonic() - start >= CONVERSION_TIME[resolution]
            # the 12-bit result (-163 LSB) with the bits below the resolution dropped
            step = 0.0625 * 2 ** (12 - resolution)
            assert value == {12: -10.1875, 11: -10.25, 10: -10.25, 9: -10.5}[resolution]
            assert value / step == int(value / step)
        finally:
            await device.close()
            sim.close()

    run(scenario)


# -- faults --------------------------------------------------------------------------------------


def test_crc_errors_are_retried_then_calc() -> None:
    async def scenario() -> None:
        sim = SimulatedW1Bus()
        part = sim.attach(simulate_ds18b20(address=PROBE, temperature=19.5, resolution=9))
        device = make_ds18b20(prefix="t:", bus=sim, resolution=9, period=0.02, retries=2)
        await device.startup()
        try:
            await until(lambda: device.temperature.value == 19.5, "a reading")
            assert device.device_id.value == PROBE
            part.corrupt_next(2)  # two bad reads: the third try is good
            part.temperature = 20.0
            await until(lambda: device.temperature.value == 20.0, "the retried reading")
            assert alarm(device.temperature) == (0, 0) and part.reads.count("w1_slave") >= 3
            part.corrupt_next(3)  # every try fails
            await until(lambda: alarm(device.temperature)[0] == AlarmStatus.CALC, "CALC")
            assert device.temperature.alarm_severity == AlarmSeverity.INVALID
            assert device.temperature.value == 20.0  # the last good value stays
            assert "CRC" in device.last_error.value
            await until(lambda: alarm(device.temperature) == (0, 0), "recovery")
        finally:
            await device.shutdown()
            sim.close()

    run(scenario)


def test_85_degrees_at_power_on_is_not_a_reading() -> None:
    async def scenario() -> None:
        sim = SimulatedW1Bus()
        part = sim.attach(simulate_ds18b20(address=PROBE, temperature=21.0, resolution=9))
        device = make_ds18b20(prefix="t:", bus=sim, address=PROBE, resolution=9, retries=1)
        await device.open()
        await device.probe()
        try:
            part.power_on_reset(1)  # the first read finds no conversion: retried
            assert await device.measure() == 21.0
            part.power_on_reset(2)
            with pytest.raises(HardwareError, match="power-on") as error:
                await device.measure()
            assert error.value.kind == AlarmStatus.READ
            # a real 85 degC, reached from 84.5, is believed
            part.temperature = 84.5
            assert await device.measure() == 84.5
            part.temperature = 85.0
            assert await device.measure() == 85.0
        finally:
            await device.close()
            sim.close()

    run(scenario)


def test_a_shorted_bus_is_not_zero_degrees(tmp_path: Path) -> None:
    # All zeros have a "valid" CRC of 0; bytes 5 and 7 are fixed (0xFF, 0x10).
    directory = tmp_path / PROBE
    directory.mkdir()
    (directory / "name").write_text(f"{PROBE}\n")
    zeros = "00 " * 9
    (directory / "w1_slave").write_text(f"{zeros}: crc=00 YES\n{zeros}t=0\n")

    async def scenario() -> None:
        device = make_ds18b20(prefix="t:", bus=tmp_path, address=PROBE, retries=0)
        await device.open()
        await device.probe()
        try:
            with pytest.raises(BadReply, match="not a DS18B20 scratchpad"):
                await device.measure()
        finally:
            await device.close()

    run(scenario)


def test_an_unplugged_probe_is_comm_and_comes_back() -> None:
    async def scenario() -> None:
        sim = SimulatedW1Bus()
        part = sim.attach(simulate_ds18b20(address=PROBE, temperature=4.5, resolution=9))
        device = make_ds18b20(prefix="t:", bus=sim, address=PROBE, resolution=9, period=0.02)
        device.reconnect_delays = (0.02, 2.0, 0.1)
        await device.startup()
        try:
            await until(lambda: device.temperature.value == 4.5, "a reading")
            part.unplug()
            assert not (sim.root / PROBE).exists()
            await until(lambda: device.connected.value == 0, "disconnected")
            assert alarm(device.temperature) == (AlarmStatus.COMM, AlarmSeverity.INVALID)
            assert device.temperature.value == 4.5
            part.temperature = 5.0
            part.replug()
            await until(lambda: device.temperature.value == 5.0, "reconnected")
            assert alarm(device.temperature) == (0, 0)
        finally:
            await device.shutdown()
            sim.close()

    run(scenario)


def test_the_first_ds18b20_is_found_when_no_id_is_given() -> None:
    async def scenario() -> None:
        sim = SimulatedW1Bus()
        sim.attach(SimulatedW1Slave("10-000802b4b1b1"))
        device = make_ds18b20(prefix="t:", bus=sim)
        try:
            with pytest.raises(DeviceUnplugged, match="no DS18B20"):
                await device.open()
            sim.attach(simulate_ds18b20(address="28-00000000000b", resolution=9))
            sim.attach(simulate_ds18b20(address="28-00000000000a", resolution=9))
            await device.open()
            await device.probe()
            assert device.slave_id == "28-00000000000a"
        finally:
            await device.close()
            sim.close()

    run(scenario)


def test_the_newer_temperature_file_alone() -> None:
    async def scenario() -> None:
        sim = SimulatedW1Bus()
        part = sim.attach(simulate_ds18b20(address=PROBE, temperature=-3.25, resolution=9))
        (sim.root / PROBE / "w1_slave").unlink()  # a kernel that offers only `temperature`
        device = make_ds18b20(prefix="t:", bus=sim, resolution=9, retries=1)
        await device.open()
        await device.probe()
        try:
            assert await device.measure() == -3.5  # 9 bits: 0.5 degC steps
            part.corrupt_next(1)  # EIO from the kernel, retried
            assert await device.measure() == -3.5
            part.corrupt_next(2)
            with pytest.raises(HardwareError) as error:
                await device.measure()
            assert error.value.kind == AlarmStatus.READ
        finally:
            await device.close()
            sim.close()

    run(scenario)


def test_options_and_the_catalogue() -> None:
    with pytest.raises(ValueError, match="resolution"):
        make_ds18b20(prefix="t:", bus="/x", resolution=8)
    with pytest.raises(ValueError, match="FF-SSSSSSSSSSSS"):
        make_ds18b20(prefix="t:", bus="/x", address="28-xyz")
    with pytest.raises(ValueError, match="not a DS18B20"):
        make_ds18b20(prefix="t:", bus="/x", address="10-000802b4b1b1")
    with pytest.raises(ValueError, match="id"):
        make_ds18b20(prefix="t:", bus="/x", address=0x28)  # type: ignore[arg-type]
    assert parse_slave_id("28-0316A2791AFF") == (0x28, 0x0316A2791AFF)
    info = lookup("ds18b20")
    assert info.bus == "w1" and info.default_address is None
    part = info.simulator(address=PROBE, **info.options)
    assert part.name == PROBE and -55 <= part.temperature <= 125

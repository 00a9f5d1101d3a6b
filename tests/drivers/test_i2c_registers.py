"""The i2c-registers driver: a register-mapped chip's registers as PVs, from options alone."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from peers import ca_environment, free_port, run_pyepics, serving_board
from waiting import run, until

from caioc.ca import AlarmSeverity, AlarmStatus
from caioc.drivers.i2c_registers import make_i2c_registers, simulate_i2c_registers
from caioc.hw.sim import SimulatedI2CBus

REGISTERS = {
    "temperature": {"register": 0x00, "format": ">h", "scale": 0.0078125, "units": "degC"},
    "raw": {"register": 0x02},  # ">H" by default: the number itself
    "volts": {"register": 0x04, "format": ">H", "scale": 0.001, "offset": -1.0, "period": 0.05},
    "tiny": {"register": 0x06, "format": "b", "scale": 1.0, "sim_value": 1000.0},
}
CHIP_ID = {"register": 0x0F, "format": ">H", "value": 0x0117}


def test_the_simulated_chip_holds_plausible_values_in_range() -> None:
    sim = simulate_i2c_registers(address=0x48, registers=REGISTERS, chip_id=CHIP_ID)
    assert struct.unpack(">h", sim.values[0x00])[0] * 0.0078125 == 20.0
    assert struct.unpack(">H", sim.values[0x02])[0] == 25
    assert struct.unpack(">H", sim.values[0x04])[0] == 31000  # (30 - -1) / 0.001
    assert struct.unpack("b", sim.values[0x06])[0] == 127  # 1000 does not fit: clamped
    assert sim.values[0x0F] == b"\x01\x17"


def test_the_simulated_chip_keeps_each_register_at_its_own_address() -> None:
    sim_bus = SimulatedI2CBus()
    sim_bus.attach(simulate_i2c_registers(address=0x40, registers={}))
    sim_bus.write_i2c_block_data(0x40, 0x01, [0x12, 0x34])  # 16-bit registers 1 and 2
    sim_bus.write_i2c_block_data(0x40, 0x02, [0x56, 0x78])
    assert sim_bus.read_i2c_block_data(0x40, 0x01, 2) == [0x12, 0x34]
    assert sim_bus.read_i2c_block_data(0x40, 0x02, 3) == [0x56, 0x78, 0]
    assert sim_bus.read_i2c_block_data(0x40, 0x09, 1) == [0]


def test_registers_become_pvs_and_a_wrong_chip_is_calc_until_it_is_right() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus()
        chip = sim.attach(simulate_i2c_registers(address=0x48, registers=REGISTERS))
        chip.set_register(0x0F, b"\x01\x18")  # not the expected part
        device = make_i2c_registers(
            prefix="r:", bus=sim, address=0x48, period=0.02, registers=REGISTERS, chip_id=CHIP_ID
        )
        assert type(device).volts.period == 0.05  # type: ignore[attr-defined]
        await device.startup()
        try:
            await until(lambda: device.error_count.value > 0, "the probe to fail")
            temperature: Any = device.temperature
            assert (temperature.alarm_status, temperature.alarm_severity) == (
                AlarmStatus.CALC,
                AlarmSeverity.INVALID,
            )
            assert "chip id 0x118" in device.last_error.value
            chip.set_register(0x0F, b"\x01\x17")
            await until(lambda: device.connected.value == 1, "the right chip")
            await until(lambda: temperature.alarm_status == AlarmStatus.NO_ALARM, "values")
            await until(lambda: device.volts.value == 30.0, "the slower register")
            assert temperature.value == 20.0 and temperature.units == "degC"
            assert device.raw.value == 25 and isinstance(device.raw.value, int)
            chip.set_register(0x00, struct.pack(">h", -1280))
            await until(lambda: temperature.value == -10.0, "a new temperature")
        finally:
            await device.shutdown()

    run(scenario)


@pytest.mark.parametrize(
    ("registers", "chip_id", "message"),
    [
        ({}, None, "no registers"),
        ({"t": {"format": ">h"}}, None, "at least its 'register'"),
        ({"t": 5}, None, "at least its 'register'"),
        ({"t": {"register": 0, "fromat": ">h"}}, None, r"unknown \['fromat'\]"),
        ({"t": {"register": 0, "format": ">Z"}}, None, "format '>Z'"),
        ({"t": {"register": 0x1FF}}, None, "not a byte"),
        ({"t-1": {"register": 0}}, None, "letters, digits and _"),
        ({"connected": {"register": 0}}, None, "taken by the RegisterChip driver"),
        ({"t": {"register": 0}}, {"register": 0x0F}, "chip_id: give register, value"),
    ],
)
def test_bad_options_are_refused(registers: Any, chip_id: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_i2c_registers(
            prefix="r:", bus=SimulatedI2CBus(), address=0x48, registers=registers, chip_id=chip_id
        )


def test_the_shipped_board_file_runs_under_check() -> None:
    from caioc.cli.main import main

    assert main(["check", "register-sensors", "--sim"]) == 0


def test_the_shipped_board_file_serves_the_c_client() -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    env = ca_environment(free_port(), free_port())
    with serving_board("register-sensors", env):
        result = run_pyepics(
            """
            names = ["bench:tmp117:temperature", "bench:ina219:shunt",
                     "bench:ina219:bus_voltage"]
            result = {}
            for name in names:
                pv = epics.PV(name, form="ctrl")
                data = read_until(
                    lambda: pv.get_with_metadata(form="ctrl", timeout=5),
                    lambda d: d is not None and d["severity"] == 0,
                    name,
                )
                result[name] = [data["value"], data["units"], data["precision"]]
            """,
            env,
        )
    assert result["bench:tmp117:temperature"] == [20.0, "degC", 3]
    shunt, units, _ = result["bench:ina219:shunt"]
    assert units == "V" and shunt == pytest.approx(0.0123)
    volts, units, _ = result["bench:ina219:bus_voltage"]
    assert units == "V" and volts == pytest.approx(5.02)

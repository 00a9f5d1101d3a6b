"""SPI, 1-Wire and IIO buses in board files: names, --sim, errors with lines, the C client."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from peers import ca_environment, free_port, run_pyepics, serving_board
from waiting import run, until

import caioc.boards
from caioc.boards import BoardFileError, build, load
from caioc.boards._buses import open_bus
from caioc.hw import SPIDevice
from caioc.hw.sim import SimulatedIIOBus, SimulatedSPIBus, SimulatedW1Bus
from caioc.hw.w1 import W1Bus

FILES = Path(caioc.boards.__file__).parent / "files"


def board_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "board.toml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def device_table(driver: str, bus: str, address: str | None = None) -> str:
    lines = [f'[[device]]\ndriver = "{driver}"\nname = "x"\nbus = "{bus}"\n']
    if address is not None:
        lines.append(f"address = {address}\n")
    return "".join(lines)


# -- opening the buses -----------------------------------------------------------------------------


def test_bus_names_open_the_right_simulators() -> None:
    spi = open_bus("spi-1.2", sim=True)
    assert isinstance(spi, SPIDevice) and (spi.bus.bus, spi.chip_select) == (1, 2)
    assert isinstance(spi.simulator, SimulatedSPIBus)
    w1 = open_bus("w1", sim=True)
    assert isinstance(w1, W1Bus) and isinstance(w1.kernel, SimulatedW1Bus)
    assert (w1.root / "w1_bus_master1" / "w1_master_slave_count").read_text() == "0\n"
    iio = open_bus("iio", sim=True)
    assert isinstance(iio.kernel, SimulatedIIOBus) and iio.root.is_dir()
    for bus in (spi.bus, w1, iio):
        bus.close()


def test_real_sysfs_roots_can_be_chosen(tmp_path: Path) -> None:
    w1 = open_bus(f"w1-{tmp_path}", sim=False)
    iio = open_bus("iio", sim=False)
    try:
        assert w1.root == tmp_path and w1.kernel is None
        assert str(iio.root) == "/sys/bus/iio/devices"
        with pytest.raises(NotImplementedError, match="real hardware"):
            w1.attach(object())
    finally:
        w1.close()
        iio.close()


@pytest.mark.parametrize(
    ("driver", "bus", "message"),
    [
        ("mcp3008", "spi-0", "spi-B.C"),
        ("mcp3008", "spi-a.1", "spi-B.C"),
        ("ds18b20", "w1-1", "w1 (or w1-/path"),
        ("dht22", "iio-0", "iio (or iio-/path"),
    ],
)
def test_bad_bus_names_give_the_line(tmp_path: Path, driver: str, bus: str, message: str) -> None:
    path = board_file(tmp_path, "[board]\nprefix = 'b:'\n\n" + device_table(driver, bus))
    loaded = load(path)
    with pytest.raises(BoardFileError) as error:
        build(loaded, sim=True)
    assert error.value.line == 4 and message in error.value.message
    assert str(error.value).startswith(f"{path}:4: ")


def test_real_spi_without_spidev_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "spidev", None)  # as if not installed
    path = board_file(tmp_path, device_table("mcp3008", "spi-0.0"))
    with pytest.raises(BoardFileError, match=r"caioc\[spi\]") as error:
        build(load(path), sim=False)
    assert error.value.line == 1


@pytest.mark.parametrize(
    ("driver", "bus", "address", "message"),
    [
        ("ds18b20", "w1", '"28-xyz"', "FF-SSSSSSSSSSSS"),
        ("ds18b20", "w1", '"10-000802b4b1b1"', "not a DS18B20"),
        ("ds18b20", "w1", "0x28", "id"),
        ("mcp3008", "spi-0.0", "1", "chip select"),
        ("dht22", "iio", "4", "iio:deviceN"),
    ],
)
def test_bad_addresses_give_the_line(
    tmp_path: Path, driver: str, bus: str, address: str, message: str
) -> None:
    path = board_file(tmp_path, '[board]\nprefix = "t:"\n\n' + device_table(driver, bus, address))
    with pytest.raises(BoardFileError) as error:
        build(load(path), sim=True)
    assert error.value.line == 4 and message in error.value.message  # the [[device]] line


@pytest.mark.parametrize(
    ("driver", "bus", "address", "message"),
    [
        ("ds18b20", "w1", '"28-xyz"', "FF-SSSSSSSSSSSS"),
        ("ds18b20", "w1", '"10-000802b4b1b1"', "not a DS18B20"),
        ("mcp3008", "spi-0.0", "1", "chip select 0"),
        ("dht22", "iio", "4", "iio:deviceN"),
    ],
)
def test_bad_addresses_are_refused_before_anything_runs(
    tmp_path: Path, driver: str, bus: str, address: str, message: str
) -> None:
    path = board_file(tmp_path, device_table(driver, bus, address))
    with pytest.raises(ValueError, match=message):  # a BoardFileError once build() wraps it
        build(load(path), sim=True)


# -- running on simulated hardware -----------------------------------------------------------------


def test_a_board_with_every_new_bus_runs_on_simulated_hardware(tmp_path: Path) -> None:
    path = board_file(
        tmp_path,
        """
        [board]
        prefix = "sim:"

        [[device]]
        driver = "mcp3008"
        name = "adc0"
        bus = "spi-0.0"
        [device.options]
        period = 0.05
        channels = ["0", "2-3"]
        vref = 5.0

        [[device]]
        driver = "mcp3008"
        name = "adc1"
        bus = "spi-0.1"
        [device.options]
        period = 0.05
        channels = { level = "7" }

        [[device]]
        driver = "ds18b20"
        name = "probe"
        bus = "w1"
        [device.options]
        period = 0.2
        resolution = 9

        [[device]]
        driver = "dht22"
        name = "air"
        bus = "iio"
        address = "iio:device0"
        [device.options]
        period = 0.2
        """,
    )
    devices = build(load(path), sim=True)
    adc0, adc1, probe, air = devices
    assert adc0.chip_select == 0 and adc1.chip_select == 1

    async def scenario() -> None:
        for device in devices:
            await device.startup()
        try:
            await until(lambda: adc0.ch0_raw.value == 819, "CH0 = 4.0 V of 5.0 V")  # floor
            await until(lambda: adc0.ch2_3_raw.value == 102, "CH2 - CH3 = 0.5 V")
            await until(lambda: adc1.level.value == pytest.approx(0.33, abs=0.004), "CH7")
            await until(lambda: probe.device_id.value == "28-000000000001", "the probe")
            await until(lambda: 18 <= probe.temperature.value <= 25, "a temperature")
            await until(lambda: air.humidity.value == 55.0, "the DHT22")
            for device in devices:
                for name, channel in device.pvdb.items():
                    if "." not in name:
                        assert channel.alarm_severity == 0, name
        finally:
            for device in devices:
                await device.shutdown()

    run(scenario)


# -- the shipped board files, read by the C client -------------------------------------------------

EXPECTED: dict[str, dict[str, tuple[str, float, float]]] = {
    "analog-inputs": {
        "lab:adc:pot": ("V", 0.0, 3.3),
        "lab:adc:pot_raw": ("counts", 0, 1023),
        "lab:adc:bridge": ("V", 0.0, 3.3),
        "lab:adc:thermistor": ("V", 0.0, 3.3),
    },
    "temperature-probes": {
        "cold:fridge:temperature": ("degC", -55, 125),
        "cold:freezer:temperature": ("degC", -55, 125),
        "cold:room:temperature": ("degC", -55, 125),
        "cold:room:resolution": ("bits", 9, 9),
    },
    "greenhouse": {
        "greenhouse:air:temperature": ("degC", -40, 80),
        "greenhouse:air:humidity": ("%RH", 0, 100),
        "greenhouse:outside:pressure": ("hPa", 300, 1100),
    },
}


def test_every_new_board_file_is_checked_here() -> None:
    assert set(EXPECTED) <= {path.stem for path in FILES.glob("*.toml")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_board_file_serves_the_c_client(name: str) -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    env = ca_environment(free_port(), free_port())
    names = sorted(EXPECTED[name])
    with serving_board(name, env):
        result: dict[str, Any] = run_pyepics(
            f"""
            import time
            names = {names!r}
            pvs = {{name: epics.PV(name, form="ctrl") for name in names}}
            deadline = time.monotonic() + 15
            result = {{}}
            while time.monotonic() < deadline:
                result = {{}}
                for name, pv in pvs.items():
                    pv.wait_for_connection(timeout=5)
                    data = pv.get_with_metadata(form="ctrl", timeout=5) or {{}}
                    result[name] = [data.get("value"), data.get("units"), data.get("severity")]
                if all(v[2] == 0 for v in result.values()):
                    break
                time.sleep(0.1)  # the first conversions are still on their way
            """,
            env,
        )
    for pv, (units, low, high) in EXPECTED[name].items():
        value, got_units, severity = result[pv]
        assert (got_units, severity) == (units, 0), pv
        assert low <= value <= high, pv


def test_the_new_board_files_run_under_check() -> None:
    from caioc.cli.main import main

    for name in EXPECTED:
        assert main(["check", name, "--sim"]) == 0, name

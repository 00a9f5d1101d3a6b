"""Every shipped board file loads, runs on simulated hardware, and libca reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
from peers import ca_environment, free_port, run_pyepics, serving_board

import caioc.boards
from caioc.boards import load

FILES = sorted((Path(caioc.boards.__file__).parent / "files").glob("*.toml"))


def test_board_files_are_shipped() -> None:
    assert {"weather-station", "gpio-demo"} <= {path.stem for path in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_board_file_loads(path: Path) -> None:
    board_file = load(path)
    assert board_file.devices


def test_weather_station_serves_sensible_values_to_the_c_client() -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    env = ca_environment(free_port(), free_port())
    # the README's main command, on loopback
    with serving_board("weather-station", env):
        result = run_pyepics(
            """
            import time
            names = ["weather:outside:temperature", "weather:outside:pressure",
                     "weather:outside:humidity", "weather:inside:temperature",
                     "weather:inside:humidity", "weather:analog:ain0"]
            pvs = {name: epics.PV(name, form="ctrl") for name in names}
            deadline = time.monotonic() + 10
            result = {}
            while time.monotonic() < deadline:
                result = {}
                for name, pv in pvs.items():
                    pv.wait_for_connection(timeout=5)
                    data = pv.get_with_metadata(form="ctrl", timeout=5) or {}
                    result[name] = [data.get("value"), data.get("units"), data.get("severity")]
                if all(v[2] == 0 for v in result.values()):
                    break
                time.sleep(0.1)  # the first polls are still on their way
            """,
            env,
        )
    temperature, units, severity = result["weather:outside:temperature"]
    assert units == "degC" and severity == 0 and -40 < temperature < 85
    pressure, units, _ = result["weather:outside:pressure"]
    assert units == "hPa" and 300 < pressure < 1100
    humidity, units, _ = result["weather:outside:humidity"]
    assert units == "%RH" and 0 <= humidity <= 100
    assert result["weather:inside:humidity"][1] == "%RH"
    assert result["weather:analog:ain0"][1] == "V"

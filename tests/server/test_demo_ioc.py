"""The README's main job: the demo IOC, read and written by libca."""

from __future__ import annotations

import sys

import pytest
from peers import ca_environment, free_port, process_until_ready, run_pyepics

from caioc.cli.demo import Thermostat


def test_thermostat_heats_towards_the_setpoint_and_cycles() -> None:
    model = Thermostat(seed=1)
    readings = [model.step(22.0, 30.0) for _ in range(400)]
    assert readings[0] < 20.0 < readings[-1]
    assert abs(readings[-1] - 22.0) < 1.5  # held near the setpoint
    states = set()
    for _ in range(200):
        model.step(22.0, 30.0)
        states.add(model.heater_on)
    assert states == {True, False}  # the relay cycles once the room is warm


def test_demo_ioc_serves_the_c_client() -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    env = ca_environment(free_port(), free_port())
    argv = [sys.executable, "-m", "caioc.cli.main", "--prefix", "D:"]
    with process_until_ready("", env, ready="caioc demo IOC serving", argv=argv):
        result = run_pyepics(
            """
            seen = []
            temperature = epics.PV("D:temperature", form="ctrl",
                                   callback=lambda value=None, **kw: seen.append(value))
            assert temperature.wait_for_connection(timeout=5)
            put = epics.caput("D:setpoint", 25.5, wait=True, timeout=5)
            until(lambda: len(seen) >= 3, "three temperature updates")
            result = {
                "put": put,
                "setpoint": epics.caget("D:setpoint", timeout=5),
                "units": temperature.units,
                "updates": len(seen),
                "heater": epics.caget("D:heater", as_string=True, timeout=5),
                "history": len(epics.caget("D:history", timeout=5)),
                "writable": epics.ca.write_access(temperature.chid),
            }
            """,
            env,
        )
    assert result["put"] == 1 and result["setpoint"] == 25.5
    assert result["units"] == "degC"
    assert result["updates"] >= 3  # the model keeps the sensor moving
    assert result["heater"] in ("Off", "On")
    assert result["history"] == 60
    assert not result["writable"]  # the sensor reading is read-only

"""The serial-stream driver: I/O-interrupt PVs from lines an instrument sends unasked."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from peers import ca_environment, free_port, run_pyepics, serving_board
from waiting import run, until

from caioc.ca import AlarmSeverity, AlarmStatus
from caioc.drivers.serial_stream import (
    SimulatedStreamingInstrument,
    StreamingInstrument,
    key_pattern,
    make_serial_stream,
)
from caioc.hw import SerialPort

QUANTITIES = {
    "temperature": {"key": "T", "units": "degC", "precision": 2, "stale_after": 0.4},
    "count": {"key": "N", "type": "int"},
    "alarm": {"key": "ALARM", "type": "string"},
    "flow": {"pattern": r"F:([-+.0-9]+) l/min", "units": "l/min"},
}


@pytest.fixture
def instrument() -> Iterator[SimulatedStreamingInstrument]:
    sim = SimulatedStreamingInstrument(read_terminator="\n", write_terminator="\r\n")
    with sim:
        yield sim


def make_device(path: str, **options: Any) -> StreamingInstrument:
    return make_serial_stream(
        prefix="s:",
        bus=path,
        quantities=QUANTITIES,
        stale_after=None,
        read_terminator="\r\n",
        **options,
    )


def test_key_pattern() -> None:
    pattern = re.compile(key_pattern("T"))
    for line in ("T=23.5", "T: 23.5", "T 23.5", "T = 23.5 "):
        match = pattern.match(line)
        assert match is not None and match.group(1) == "23.5", line
    assert pattern.match("TEMP=23.5") is None


def test_lines_update_the_pvs_as_they_arrive(instrument: SimulatedStreamingInstrument) -> None:
    async def body() -> None:
        device = make_device(instrument.path)
        assert device.temperature.alarm_status == AlarmStatus.UDF
        await device.startup()
        try:
            instrument.send("T=21.50")
            instrument.send("N=3")
            instrument.send("ALARM OVERTEMP")
            instrument.send("F:1.25 l/min")
            await until(lambda: device.flow.value == 1.25, "the flow line")
            assert device.temperature.value == 21.5
            assert device.count.value == 3
            assert device.alarm.value == "OVERTEMP"
            assert device.temperature.alarm_severity == AlarmSeverity.NO_ALARM
            instrument.send("T=--.--")  # the sensor's "no value": CALC, value kept
            await until(
                lambda: device.temperature.alarm_status == AlarmStatus.CALC, "the CALC alarm"
            )
            assert device.temperature.value == 21.5
            # No more lines: the quantity with stale_after goes TIMEOUT, the others not.
            instrument.send("T=22.0")
            await until(lambda: device.temperature.value == 22.0, "recovery")
            await until(
                lambda: device.temperature.alarm_status == AlarmStatus.TIMEOUT, "the stale alarm"
            )
            assert device.count.alarm_severity == AlarmSeverity.NO_ALARM
        finally:
            await device.shutdown()

    run(body, timeout=20)


def test_a_streaming_simulation_and_a_start_command(
    instrument: SimulatedStreamingInstrument,
) -> None:
    instrument.period = 0.02
    instrument.drift = 0.0
    instrument.add_line("T={value}", 19.5)

    async def body() -> None:
        device = make_device(instrument.path, start_command="STREAM ON")
        await device.startup()
        try:
            await until(lambda: device.temperature.value == 19.5, "a streamed line")
            assert instrument.wait_for_commands(1)[0] == "STREAM ON"
            first = device.temperature.timestamp
            await until(lambda: device.temperature.timestamp > first, "the next line")
        finally:
            await device.shutdown()

    run(body, timeout=20)


def test_a_shared_port_is_left_open(instrument: SimulatedStreamingInstrument) -> None:
    async def body() -> None:
        with SerialPort(instrument.path, read_terminator="\r\n") as port:
            device = make_serial_stream(
                prefix="s:", bus=port, quantities={"t": {"key": "T"}}, stale_after=None
            )
            await device.startup()
            instrument.send("T=1")
            await until(lambda: device.t.value == 1.0, "the line")
            await device.shutdown()
            assert not port.closed and not port.listening

    run(body, timeout=20)


@pytest.mark.parametrize(
    ("quantities", "message"),
    [
        ({"t": {"key": "T", "colour": "red"}}, "unknown keys"),
        ({"t": {"key": "T", "pattern": "T=(.*)"}}, "exactly one"),
        ({"t": {"units": "V"}}, "exactly one"),
        ({"t": "T"}, "a table"),
        ({"2t": {"key": "T"}}, "letters, digits"),
        ({"prefix": {"key": "T"}}, "taken"),
        ({"connected": {"key": "T"}}, "taken"),
        ({"t": {"key": "T", "type": "complex"}}, "type is one of"),
        ({"t": {"pattern": "T=("}}, "pattern"),
    ],
)
def test_bad_quantities_are_refused(quantities: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamingInstrument.configured(quantities=quantities)


def test_the_shipped_board_file_serves_the_c_client() -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    env = ca_environment(free_port(), free_port())
    with serving_board("serial-thermometer", env):
        result = run_pyepics(
            """
            import time
            names = ["sensor:probe:temperature", "sensor:probe:humidity",
                     "sensor:probe:alarm", "sensor:bus:serial:probe:connected"]
            pvs = {name: epics.PV(name, form="ctrl") for name in names}
            deadline = time.monotonic() + 15
            result = {}
            while time.monotonic() < deadline:
                result = {}
                for name, pv in pvs.items():
                    pv.wait_for_connection(timeout=5)
                    data = pv.get_with_metadata(form="ctrl", timeout=5) or {}
                    result[name] = [data.get("value"), data.get("units"), data.get("severity")]
                connected = result["sensor:bus:serial:probe:connected"][0] == 1
                if connected and all(v[2] == 0 for v in result.values()):
                    break
                # The first lines are on their way; the port status follows
                # the port within its interval (a second).
                time.sleep(0.1)
            """,
            env,
        )
    temperature, units, severity = result["sensor:probe:temperature"]
    assert (units, severity) == ("degC", 0) and 19 < temperature < 21
    humidity, units, severity = result["sensor:probe:humidity"]
    assert (units, severity) == ("%RH", 0) and 24 < humidity < 26
    assert result["sensor:probe:alarm"] == ["OK", None, 0]
    assert result["sensor:bus:serial:probe:connected"][0] == 1


def test_the_shipped_board_file_runs_under_check() -> None:
    from caioc.cli.main import main

    assert main(["check", "serial-thermometer", "--sim"]) == 0

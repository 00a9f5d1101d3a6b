"""Board files serve the status PVs of every bus they open."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from peers import ca_environment, free_port, run_pyepics, serving_board
from waiting import run, until

from caioc.boards import BoardFileError, build, load
from caioc.cli.board import board_file_path

STATUS_PVS = ("connected", "transactions", "error_count", "timeout_count", "last_error")


def board_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "board.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_caioc_run_serves_and_lists_the_bus_status_to_the_c_client() -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    env = ca_environment(free_port(), free_port())
    with serving_board("weather-station", env) as process:
        assert process.stdout is not None
        listed = []
        # The list, then the "IOC ready" log line (stderr shares the pipe).
        while (line := process.stdout.readline()) and "IOC ready" not in line:
            if line.startswith("    "):
                listed.append(line.strip())
        assert "weather:bus:i2c-1:connected" in listed
        assert "weather:bus:i2c-1:last_error" in listed
        result = run_pyepics(
            """
            import time
            connected = epics.PV("weather:bus:i2c-1:connected")
            transactions = epics.PV("weather:bus:i2c-1:transactions")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                count = transactions.get(timeout=5)
                state = connected.get(as_string=True, timeout=5)
                if state == "Connected" and count and count > 0:
                    break
                time.sleep(0.1)  # the bus status follows the polls once a second
            errors = epics.caget("weather:bus:i2c-1:error_count", timeout=5)
            result = [state, count, errors]
            """,
            env,
        )
    state, count, errors = result
    assert state == "Connected"
    assert count > 0
    assert errors == 0


def test_every_bus_kind_with_a_worker_gets_status_pvs_that_follow_it() -> None:
    names = {
        "weather-station": "weather:bus:i2c-1:",
        "scpi-instrument": "bench:bus:serial:psu:",
        "analog-inputs": "lab:bus:spi-0.0:",
        "temperature-probes": "cold:bus:w1:",
        "greenhouse": "greenhouse:bus:iio:",
    }
    boards = {board: build(load(board_file_path(board)), sim=True) for board in names}
    pvdb = {
        name: device.pvdb[name]
        for devices in boards.values()
        for device in devices
        for name in device.pv_names
    }
    for prefix in names.values():
        for suffix in STATUS_PVS:
            assert f"{prefix}{suffix}" in pvdb, prefix + suffix

    async def body() -> None:
        everything = [device for devices in boards.values() for device in devices]
        for device in everything:
            await device.startup()
        try:
            for prefix in names.values():

                def busy(prefix: str = prefix) -> bool:
                    connected = pvdb[f"{prefix}connected"].value == 1
                    return connected and pvdb[f"{prefix}transactions"].value > 0

                await until(busy, f"{prefix} to show traffic", timeout=10)
                assert pvdb[f"{prefix}error_count"].value == 0, prefix
        finally:
            for device in everything:
                await device.shutdown()

    run(body, timeout=40)


def test_a_serial_port_status_follows_the_instrument_across_a_replug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import caioc.boards._boardfile as boardfile

    opened: dict[str, Any] = {}

    def recording_open_bus(name: str, **options: Any) -> Any:
        opened[name] = boardfile_open_bus(name, **options)
        return opened[name]

    boardfile_open_bus = boardfile.open_bus
    monkeypatch.setattr(boardfile, "open_bus", recording_open_bus)
    (psu,) = build(load(board_file_path("scpi-instrument")), sim=True)
    part = opened["serial"].part("usb:0403:6001")  # the simulated supply
    connected = psu.pvdb["bench:bus:serial:psu:connected"]
    transactions = psu.pvdb["bench:bus:serial:psu:transactions"]
    errors = psu.pvdb["bench:bus:serial:psu:error_count"]

    async def body() -> None:
        await psu.startup()
        try:
            await until(lambda: connected.value == 1, "the port to connect", timeout=10)
            await until(lambda: transactions.value > 0, "traffic", timeout=10)
            part.unplug()
            await until(lambda: connected.value == 0, "the unplug to show", timeout=10)
            assert errors.value > 0
            part.replug()
            await until(lambda: connected.value == 1, "the replug to show", timeout=10)
            await until(lambda: psu.connected.value == 1, "the device to reconnect", timeout=15)
        finally:
            await psu.shutdown()
            opened["serial"].close()

    run(body, timeout=40)


def test_bus_status_can_be_turned_off(tmp_path: Path) -> None:
    text = """
        [board]
        model = "raspberry-pi-4"
        prefix = "x:"
        bus_status = false

        [[device]]
        driver = "sht3x"
        name = "air"
        bus = "i2c-1"
        """
    loaded = load(board_file(tmp_path, text))
    assert loaded.bus_status is False
    (device,) = build(loaded, sim=True)
    assert not [name for name in device.pvdb if ":bus:" in name]
    assert load(board_file(tmp_path, text.replace("bus_status = false\n", ""))).bus_status


def test_bus_status_must_be_a_boolean(tmp_path: Path) -> None:
    path = board_file(
        tmp_path,
        """
        [board]
        model = "raspberry-pi-4"
        bus_status = "yes"
        """,
    )
    with pytest.raises(BoardFileError, match="bus_status must be true or false") as caught:
        load(path)
    assert caught.value.line == 4

"""Board definitions and board files: detection, pins, errors with lines, --sim."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest
from waiting import until

from caioc.boards import BOARDS, BoardFileError, build, detect_board, load, resolve_pin
from caioc.drivers import DriverInfo, register
from caioc.hw.sim import SimulatedI2CDevice
from tests.hw.test_device import Thermometer, make_chip


def _thermometer(*, prefix: str, bus: Any, address: int | None, **options: Any) -> Thermometer:
    return Thermometer(bus, prefix=prefix)


def _simulated(*, address: int | None, **options: Any) -> SimulatedI2CDevice:
    return make_chip()


register(
    DriverInfo(
        name="test-thermometer",
        summary="the thermometer of tests/hw",
        bus="i2c",
        factory=_thermometer,
        simulator=_simulated,
        default_address=0x48,
        options={"period": 1.0},
    )
)


def board_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "board.toml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_models_and_pins() -> None:
    pi4 = BOARDS["raspberry-pi-4"]
    gpios = [pin for pin in pi4.header if pin.bcm is not None]
    assert len(pi4.header) == 40 and len(gpios) == 28
    assert sorted(pin.bcm for pin in gpios) == list(range(28))  # type: ignore[type-var]
    assert [pin.name for pin in pi4.header[:6]] == ["3V3", "5V", "GPIO2", "5V", "GPIO3", "GND"]
    assert resolve_pin(pi4, 17) == resolve_pin(pi4, "GPIO17") == resolve_pin(pi4, "BOARD11") == 17
    assert resolve_pin(pi4, "J8:3") == 2 and resolve_pin(pi4, "bcm4") == 4
    with pytest.raises(ValueError, match="GND"):
        resolve_pin(pi4, "BOARD6")
    assert BOARDS["raspberry-pi-5"].gpio_chip_label == "pinctrl-rp1"
    assert detect_board({"CAIOC_BOARD": "raspberry-pi-3"}) is BOARDS["raspberry-pi-3"]
    with pytest.raises(ValueError, match="known boards"):
        detect_board({"CAIOC_BOARD": "banana-pi"})


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("[board\nprefix = 'x'\n", 1, "Expected"),
        ("[board]\nmodel = 'raspberry-pi-9'\n", 2, "unknown model"),
        ("[[device]]\ndriver = 'nope'\nname = 'a'\nbus = 'i2c-1'\n", 2, "no driver called 'nope'"),
        ("[[device]]\ndriver = 'test-thermometer'\nbus = 'i2c-1'\n", 1, "needs name"),
        (
            "[[device]]\ndriver = 'test-thermometer'\nname = 'a'\nbus = 'spi0.0'\n",
            4,
            "on a i2c bus",
        ),
        (
            "[[device]]\ndriver = 'test-thermometer'\nname = 'a'\nbus = 'i2c-1'\n"
            "[device.options]\ngain = 2\n",
            6,
            "no option 'gain'",
        ),
        (
            "[[device]]\ndriver = 'test-thermometer'\nname = 'a'\nbus = 'i2c-1'\n\n"
            "[[device]]\ndriver = 'test-thermometer'\nname = 'a'\nbus = 'i2c-1'\n",
            8,
            "two devices",
        ),
        ("[[device]]\ndriver = 'test-thermometer'\nname = 'a b'\nbus = 'i2c-1'\n", 3, "may hold"),
    ],
)
def test_errors_name_the_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = board_file(tmp_path, text)
    with pytest.raises(BoardFileError) as error:
        load(path)
    assert error.value.line == line
    assert message in error.value.message
    assert str(error.value).startswith(f"{path}:{line}: ")


def test_a_board_file_runs_on_simulated_hardware(tmp_path: Path) -> None:
    path = board_file(
        tmp_path,
        """
        [board]
        model = "raspberry-pi-4"
        prefix = "lab:"

        [[device]]
        driver = "test-thermometer"
        name = "bench"
        bus = "i2c-1"
        """,
    )
    loaded = load(path)
    assert loaded.board is BOARDS["raspberry-pi-4"]
    assert [(d.name, d.address) for d in loaded.devices] == [("bench", 0x48)]
    (device,) = build(loaded, sim=True)
    assert "lab:bench:temperature" in device.pvdb

    async def scenario() -> None:
        await device.startup()
        try:
            await until(lambda: device.temperature.value == 21.5, "the first reading")
        finally:
            await device.shutdown()

    asyncio.run(scenario())


def test_caioc_check_probes_the_devices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from caioc.cli.main import main

    path = board_file(
        tmp_path,
        """
        [[device]]
        driver = "test-thermometer"
        name = "bench"
        bus = "i2c-1"
        """,
    )
    assert main(["check", str(path), "--sim"]) == 0
    assert "bench:" in capsys.readouterr().out
    broken = board_file(tmp_path, "[[device]]\ndriver = 'nope'\nname = 'a'\nbus = 'i2c-1'\n")
    assert main(["check", str(broken)]) == 2
    assert f"{broken}:2:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error",
    [
        ImportError("spidev is not installed"),
        FileNotFoundError(2, "No such file or directory: '/dev/i2c-7'"),
        NotImplementedError("board files cannot use w1 buses yet"),
    ],
)
def test_a_bus_that_cannot_open_is_reported_at_its_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    import caioc.boards._boardfile as boardfile

    def refuse(name: str, **options: Any) -> Any:
        raise error

    monkeypatch.setattr(boardfile, "open_bus", refuse)
    path = tmp_path / "board.toml"
    path.write_text(
        textwrap.dedent(
            """\
            [board]
            model = "raspberry-pi-4"

            [[device]]
            driver = "sht3x"
            name = "inside"
            bus = "i2c-7"
            """
        )
    )
    with pytest.raises(BoardFileError) as caught:
        build(load(path))
    assert caught.value.line == 4
    assert str(error) in caught.value.message

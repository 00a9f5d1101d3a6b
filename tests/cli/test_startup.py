"""What starting an IOC loads and makes: what its board file needs, no more.

Start-up time and memory of a small IOC go mostly to imports and to the
~25 field channels of each PV. The ``caioc`` command must not import the
drivers a board file does not name, nor their buses and libraries (the
GPIO backends, pyserial, spidev); a PV's field channels are made when a
client first looks one up. These tests check that in fresh interpreters
(imports) and on groups (fields), and that the lists of everything
(``caioc drivers``, ``len(group.pvdb)``) stay complete. How fast start-up
is lives in benchmarks/bench_ioc.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from peers import ROOT

from caioc.ca import AlarmSeverity
from caioc.cli.main import BLAS_DEFAULTS, main
from caioc.drivers import _registry
from caioc.ioc import FIELDS, PVDatabase, PVGroup, SubGroup, _group, pvproperty, serve

#: Driver modules and the names each registers.
DRIVER_MODULES = _registry._MODULES
#: Hardware libraries and caioc modules a simulated I2C board never needs.
NOT_FOR_AN_I2C_BOARD = (
    "serial",  # pyserial
    "spidev",
    "gpiod",
    "lgpio",
    "RPi",
    "caioc.hw.serial",
    "caioc.hw.spi",
    "caioc.hw.w1",
    "caioc.hw.iio",
    "caioc.hw.gpio_gpiod",
    "caioc.hw.gpio_lgpio",
    "caioc.hw.gpio_rpigpio",
)


def run_python(code: str, env: dict[str, str] | None = None) -> Any:
    """Run ``code`` in a fresh interpreter; the JSON it prints last."""
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


def modules_after(code: str) -> set[str]:
    """The modules imported once ``code`` has run in a fresh interpreter."""
    loaded = run_python(
        textwrap.dedent(code) + "\nimport sys\nnames = sorted(sys.modules)\n"
        "import json\nprint(json.dumps(names))\n"
    )
    return set(loaded)


def loaded(modules: set[str], *names: str) -> list[str]:
    """Which of ``names`` (or their submodules) are in ``modules``."""
    return sorted(m for m in modules for n in names if m == n or m.startswith(n + "."))


# -- imports ---------------------------------------------------------------------------------


def test_the_caioc_command_imports_no_driver_hardware_or_server_module() -> None:
    modules = modules_after("import caioc.cli.main")
    assert "caioc.cli.main" in modules
    assert (
        loaded(
            modules,
            "caioc.drivers",
            "caioc.boards",
            "caioc.hw",
            "caioc.ioc",
            "caioc.server",
            "caioc.client",
            # caioc.ca loads numpy: main() sets the OpenBLAS default first.
            "caioc.ca",
            "numpy",
            "getpass",
            "json",
            *NOT_FOR_AN_I2C_BOARD,
        )
        == []
    )


BLAS_CHECK = """
    import contextlib, io, json, os, sys
    {before}
    from caioc.cli.main import main

    with contextlib.redirect_stdout(io.StringIO()):
        main(["--list-pvs"])  # the demo IOC's PVs: imports numpy
    print(json.dumps([os.environ.get("OPENBLAS_THREAD_TIMEOUT"), "numpy" in sys.modules]))
"""


def blas_setting(before: str = "", **environment: str) -> Any:
    """OPENBLAS_THREAD_TIMEOUT after ``caioc --list-pvs`` ran in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    return run_python(BLAS_CHECK.format(before=before), {**env, **environment})


def test_the_caioc_command_lets_openblas_workers_sleep_unless_told_otherwise() -> None:
    assert blas_setting() == [BLAS_DEFAULTS["OPENBLAS_THREAD_TIMEOUT"], True]
    assert blas_setting(OPENBLAS_THREAD_TIMEOUT="20") == ["20", True]
    # Once numpy is loaded OpenBLAS has read its environment: nothing is set.
    assert blas_setting("import numpy") == [None, True]


def test_a_board_file_imports_only_the_drivers_it_names() -> None:
    modules = modules_after(
        """
        from caioc.boards import build
        from caioc.cli.board import _load

        build(_load("weather-station"), sim=True)
        """
    )
    drivers = {m.partition("caioc.drivers.")[2] for m in modules}
    assert {name for name in drivers if name and not name.startswith("_")} == {
        "bme280",
        "sht3x",
        "ads1115",
    }
    assert loaded(modules, *NOT_FOR_AN_I2C_BOARD) == []


def test_the_hardware_layer_imports_a_module_when_a_name_of_it_is_used() -> None:
    modules = modules_after("from caioc.hw import BadReply, HardwareError")
    assert "caioc.hw._errors" in modules
    assert loaded(modules, "caioc.hw.gpio", "caioc.hw.i2c", "caioc.ioc", "smbus2") == []
    assert loaded(modules, *NOT_FOR_AN_I2C_BOARD) == []


def test_every_name_of_the_hardware_layer_is_there() -> None:
    import caioc.hw

    for name in caioc.hw.__all__:
        assert getattr(caioc.hw, name) is not None, name
    assert set(caioc.hw.__all__) <= set(dir(caioc.hw))
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        caioc.hw.Nothing  # noqa: B018


def test_the_registry_says_which_module_registers_each_driver() -> None:
    registered = run_python(
        """
        import importlib, json
        from caioc.drivers import _registry

        found = {}
        for module in _registry._MODULES:
            before = set(_registry._DRIVERS)
            importlib.import_module(f"caioc.drivers.{module}")
            found[module] = sorted(set(_registry._DRIVERS) - before)
        print(json.dumps({"found": found, "table": _registry._MODULES}))
        """
    )
    assert registered["found"] == {m: sorted(n) for m, n in registered["table"].items()}


def test_a_lookup_imports_one_driver_module_and_an_unknown_name_lists_them_all() -> None:
    result = run_python(
        """
        import json, sys
        from caioc.drivers import lookup

        lookup("sht3x")
        after_one = sorted(m for m in sys.modules if m.startswith("caioc.drivers."))
        try:
            lookup("no-such-part")
        except KeyError as error:
            message = str(error.args[0])
        print(json.dumps({"after_one": after_one, "message": message}))
        """
    )
    public = [m for m in result["after_one"] if not m.rpartition(".")[2].startswith("_")]
    assert public == ["caioc.drivers.sht3x"]
    for names in DRIVER_MODULES.values():
        for name in names:
            assert name in result["message"]


def test_caioc_drivers_still_lists_every_driver(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drivers"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line[:1] != " "}
    # (and any a test or a user registered besides)
    assert listed >= {name for names in DRIVER_MODULES.values() for name in names}


# -- field channels, made when first looked up ----------------------------------------------


class Tank(PVGroup):
    """Two PVs, one with alarm limits."""

    level = pvproperty(1.0, units="m", upper_alarm_limit=5.0, doc="Fill level")
    valve = pvproperty(0, doc="Valve position")


class Plant(PVGroup):
    """A sub-group and a PV of its own."""

    tank = SubGroup(Tank, prefix="tank:")
    pump = pvproperty(0.0, doc="Pump speed")


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The PVs whose field channels have been made, in order."""
    names: list[str] = []
    add_fields = _group.add_fields

    def counting(name: str, *args: Any, **kwargs: Any) -> Any:
        names.append(name)
        return add_fields(name, *args, **kwargs)

    monkeypatch.setattr(_group, "add_fields", counting)
    return names


def test_fields_are_made_at_the_first_lookup_of_one_of_them(made: list[str]) -> None:
    tank = Tank("t:")
    assert isinstance(tank.pvdb, PVDatabase)
    assert len(tank.pvdb) == 2 * (1 + len(FIELDS))
    assert "t:level.HHSV" in tank.pvdb and "t:level.NOPE" not in tank.pvdb
    assert tank.pvdb["t:level"] is tank.level
    assert tank.pvdb.get("t:level.NOPE") is None
    assert made == []
    assert tank.pvdb["t:level.EGU"].value == "m"
    assert tank.pvdb.get("t:level.VAL") is tank.level
    assert made == ["t:level"]  # the other PV's fields are still not made
    assert tank.pvdb.get("t:valve.DESC").value == "Valve position"
    assert tank.pvdb["t:level.DESC"].value == "Fill level"
    assert made == ["t:level", "t:valve"]


def test_a_field_made_late_shows_the_state_of_its_pv_then(made: list[str]) -> None:
    async def scenario() -> None:
        tank = Tank("t:")
        await tank.level.set(7.0)  # above HIHI: MAJOR
        tank.level.units = "cm"
        assert made == []
        assert tank.pvdb["t:level.SEVR"].value == int(AlarmSeverity.MAJOR)
        assert tank.pvdb["t:level.EGU"].value == "cm"
        assert tank.pvdb["t:level.HIHI"].value == 5.0
        # ... and follows it from then on, as fields made with the group do.
        await tank.level.set(1.0)
        assert tank.pvdb["t:level.SEVR"].value == int(AlarmSeverity.NO_ALARM)

    asyncio.run(scenario())


def test_the_names_are_the_fields_that_are_made(made: list[str]) -> None:
    plant = Plant("p:")
    names = list(plant.pvdb)
    assert len(names) == len(set(names)) == len(plant.pvdb) == 3 * (1 + len(FIELDS))
    assert made == []  # a sub-group's fields wait too
    channels = dict(plant.pvdb.items())  # makes them all
    assert sorted(made) == ["p:pump", "p:tank:level", "p:tank:valve"]
    assert list(channels) == names
    for pv in plant.pv_names:
        assert channels[pv] is channels[f"{pv}.VAL"]


def test_merged_databases_share_the_field_channels(made: list[str]) -> None:
    plant = Plant("p:")
    served = PVDatabase()
    served.merge(plant.pvdb)  # as serve() does
    egu = served["p:tank:level.EGU"]
    assert plant.pvdb["p:tank:level.EGU"] is egu
    assert plant.tank.pvdb["p:tank:level.EGU"] is egu
    assert made == ["p:tank:level"]  # made once, for all three


def test_a_pvdb_can_be_changed_by_hand(made: list[str]) -> None:
    tank = Tank("t:")
    replacement = tank.pvdb["t:valve"]
    tank.pvdb["t:level.DESC"] = replacement
    assert tank.pvdb["t:level.DESC"] is replacement
    assert tank.pvdb["t:level.EGU"].value == "m"  # the others were made
    del tank.pvdb["t:level.PROC"]
    assert "t:level.PROC" not in tank.pvdb
    assert len(tank.pvdb) == 2 * (1 + len(FIELDS)) - 1


def test_names_used_twice_are_refused() -> None:
    plant = PVDatabase()
    plant.merge(Tank("a:").pvdb)
    with pytest.raises(ValueError, match="PV names used twice"):
        plant.merge(Tank("a:").pvdb)
    with pytest.raises(ValueError, match="PV names used twice"):
        plant.merge({"a:valve.DESC": Tank("b:").valve})
    plant.merge({"other": Tank("b:").valve})
    assert "other" in plant


def test_serving_two_groups_with_the_same_names_is_refused() -> None:
    async def scenario() -> None:
        await serve(Tank("t:"), Tank("t:"))

    with pytest.raises(ValueError, match="PV names used twice"):
        asyncio.run(scenario())

"""Board files: one TOML file that wires devices to PVs.

::

    [board]
    model = "raspberry-pi-4"      # or "auto" (detect) — optional
    prefix = "weather:"           # put before every PV name

    [[device]]
    driver = "bme280"             # see `caioc drivers`
    name = "outside"              # PVs are weather:outside:temperature ...
    bus = "i2c-1"
    address = 0x76                # default: the driver's
    [device.options]              # driver options, see `caioc drivers`
    period = 2.0

Every mistake is reported with the file, the line and what is wrong,
before anything starts (:class:`BoardFileError`). With ``sim=True`` each
bus is a simulator and each device's simulated part is attached to it, so
any board file runs on a laptop.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._buses import bus_kind, open_bus
from ._models import BOARDS, Board, detect_board

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = ["BoardFile", "BoardFileError", "DeviceSpec", "build", "load"]

log = logging.getLogger("caioc.boards")

_NAME = re.compile(r"[A-Za-z0-9_\-:]+")
_DEVICE_KEYS = {"driver", "name", "bus", "address", "options"}
_BOARD_KEYS = {"model", "prefix"}


class BoardFileError(ValueError):
    """A board file that cannot run, with where and why."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
        self.message = message


@dataclass
class DeviceSpec:
    """One ``[[device]]`` table, checked."""

    driver: str
    name: str
    bus: str
    #: An I2C address or chip select (int), or a pin, port or device id
    #: (str) as the driver's bus names them; None: the driver's default.
    address: int | str | None
    options: dict[str, Any]
    line: int


@dataclass
class BoardFile:
    """A loaded and checked board file."""

    path: Path
    board: Board | None
    prefix: str
    devices: list[DeviceSpec] = field(default_factory=list)


def _device_lines(text: str) -> list[int]:
    return [
        number
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip().startswith("[[device]]")
    ]


def _key_line(text: str, start: int, key: str) -> int:
    lines = text.splitlines()
    for number in range(start, len(lines) + 1):
        line = lines[number - 1].strip()
        if number > start and line.startswith("[["):
            break
        if re.match(rf"{re.escape(key)}\s*=", line):
            return number
    return start


def load(path: str | Path) -> BoardFile:
    """Read and check a board file (drivers are looked up, nothing is opened)."""
    from caioc.drivers import lookup

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise BoardFileError(path, None, f"cannot read it: {error.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        match = re.search(r"line (\d+)", str(error))
        raise BoardFileError(path, int(match.group(1)) if match else None, str(error)) from None
    unknown = set(data) - {"board", "device"}
    if unknown:
        raise BoardFileError(
            path, None, f"unknown tables {sorted(unknown)}: use [board] and [[device]]"
        )
    board_table = data.get("board", {})
    extra = set(board_table) - _BOARD_KEYS
    if extra:
        line = _key_line(text, 1, sorted(extra)[0])
        raise BoardFileError(path, line, f"[board] has no key {sorted(extra)[0]!r}")
    model = board_table.get("model", "auto")
    if model == "auto":
        board = detect_board()
    elif model in BOARDS:
        board = BOARDS[model]
    else:
        line = _key_line(text, 1, "model")
        raise BoardFileError(path, line, f"unknown model {model!r}; known: {sorted(BOARDS)}")
    prefix = board_table.get("prefix", "")
    if not isinstance(prefix, str):
        raise BoardFileError(path, _key_line(text, 1, "prefix"), "prefix must be a string")
    result = BoardFile(path, board, prefix)
    lines = _device_lines(text)
    devices = data.get("device", [])
    if not isinstance(devices, list):
        raise BoardFileError(path, None, "devices are [[device]] tables (note the double brackets)")
    names: set[str] = set()
    for index, table in enumerate(devices):
        start = lines[index] if index < len(lines) else 1

        def fail(key: str | None, message: str, start: int = start) -> BoardFileError:
            line = _key_line(text, start, key) if key else start
            return BoardFileError(path, line, message)

        extra = set(table) - _DEVICE_KEYS
        if extra:
            key = sorted(extra)[0]
            raise fail(key, f"a device has no key {key!r} (keys: {sorted(_DEVICE_KEYS)})")
        for key in ("driver", "name", "bus"):
            if not isinstance(table.get(key), str) or not table[key]:
                raise fail(None, f'this device needs {key} = "..."')
        try:
            info = lookup(table["driver"])
        except KeyError as error:
            raise fail("driver", str(error.args[0])) from None
        name = table["name"]
        if not _NAME.fullmatch(name):
            raise fail("name", f"name {name!r} may hold only letters, digits, _ - :")
        if name in names:
            raise fail("name", f"two devices are called {name!r}")
        names.add(name)
        bus = table["bus"]
        if bus_kind(bus) != info.bus:
            raise fail("bus", f"{info.name} is on a {info.bus} bus, not {bus!r}")
        address = table.get("address", info.default_address)
        if address is not None and (
            isinstance(address, bool) or not isinstance(address, (int, str))
        ):
            raise fail("address", f"address must be a number or a string, not {address!r}")
        options = table.get("options", {})
        unknown_options = set(options) - set(info.options)
        if unknown_options:
            key = sorted(unknown_options)[0]
            known = ", ".join(sorted(info.options)) or "none"
            raise fail(key, f"{info.name} has no option {key!r} (options: {known})")
        result.devices.append(
            DeviceSpec(info.name, name, bus, address, {**info.options, **options}, start)
        )
    return result


def build(board_file: BoardFile, *, sim: bool = False, prefix: str | None = None) -> list[Any]:
    """The devices of ``board_file``, on real or simulated buses."""
    from caioc.drivers import lookup
    from caioc.hw import HardwareError

    prefix = board_file.prefix if prefix is None else prefix
    buses: dict[str, Any] = {}
    devices = []
    for spec in board_file.devices:
        info = lookup(spec.driver)
        try:
            if spec.bus not in buses:
                buses[spec.bus] = open_bus(spec.bus, sim=sim, board=board_file.board)
            bus = buses[spec.bus]
        except (NotImplementedError, OSError, ImportError, HardwareError) as error:
            # A bus that cannot open (no such device, no library, no
            # permission) is the board file's line, not a traceback.
            raise BoardFileError(board_file.path, spec.line, str(error)) from error
        if sim:
            bus.attach(info.simulator(address=spec.address, **spec.options))
        devices.append(
            info.factory(
                prefix=f"{prefix}{spec.name}:", bus=bus, address=spec.address, **spec.options
            )
        )
    return devices

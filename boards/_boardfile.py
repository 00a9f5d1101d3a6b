"""Board files: one TOML file that wires devices to PVs.

::

    [board]
    model = "raspberry-pi-4"      # or "auto" (detect) — optional
    prefix = "weather:"           # put before every PV name
    bus_status = true             # status PVs for every bus (the default)
    access_security = "rules.acf" # EPICS access security, next to this file

    [[device]]
    driver = "bme280"             # see `caioc drivers`
    name = "outside"              # PVs are weather:outside:temperature ...
    bus = "i2c-1"
    address = 0x76                # default: the driver's
    access_group = "DEFAULT"      # its PVs' ASG in the .acf (the default)
    access_level = 0              # and their ASL, 0 or 1 (the default: 0)
    [device.options]              # driver options, see `caioc drivers`
    period = 2.0

Every mistake is reported with the file, the line and what is wrong,
before anything starts (:class:`BoardFileError`). With ``sim=True`` each
bus is a simulator and each device's simulated part is attached to it, so
any board file runs on a laptop.

Every bus a board file opens also gets the status PVs of
:class:`~caioc.hw.PortStatus` (``connected``, ``transactions``,
``error_count``, ``timeout_count``, ``last_error``), so a wiring fault
(every device on the bus failing) shows apart from a device fault:
``<prefix>bus:i2c-1:connected``, ``<prefix>bus:spi-0.1:...``,
``<prefix>bus:w1:...``; a serial instrument has a port of its own,
``<prefix>bus:serial:<device name>:...``. GPIO has no bus worker and no
status PVs. ``bus_status = false`` in ``[board]`` leaves them out. The
PVs are served with the first device on each bus (a sub-group of it), so
:func:`build` still returns exactly the board file's devices.

``access_security`` in ``[board]`` names an EPICS access security file
(.acf), relative to the board file's directory; :func:`load` checks that
it is there (``caioc run`` parses it before serving and re-reads it when
it changes).
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._buses import bus_kind, open_bus
from ._models import BOARDS, Board, detect_board

if TYPE_CHECKING:
    from caioc.hw import PortStats

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = ["BoardFile", "BoardFileError", "DeviceSpec", "build", "load"]

log = logging.getLogger("caioc.boards")

_NAME = re.compile(r"[A-Za-z0-9_\-:]+")
_DEVICE_KEYS = {"driver", "name", "bus", "address", "options", "access_group", "access_level"}
_BOARD_KEYS = {"model", "prefix", "bus_status", "access_security"}
#: Kinds of bus whose transport has a worker, and so status PVs.
_STATUS_KINDS = ("i2c", "spi", "serial", "w1", "iio")
#: Characters a bus name may keep in a PV name (w1-/sys/... has slashes).
_PV_UNSAFE = re.compile(r"[^A-Za-z0-9_\-:.]")


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
    #: The access security group (ASG) and level (ASL) of the device's PVs.
    access_group: str = "DEFAULT"
    access_level: int = 0


@dataclass
class BoardFile:
    """A loaded and checked board file."""

    path: Path
    board: Board | None
    prefix: str
    devices: list[DeviceSpec] = field(default_factory=list)
    #: Serve the status PVs of each bus (``bus_status`` in ``[board]``).
    bus_status: bool = True
    #: The access security file (``access_security`` in ``[board]``,
    #: relative to the board file's directory), checked to exist.
    access_security: Path | None = None


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


def _access_security_file(path: Path, text: str, board_table: dict[str, Any]) -> Path | None:
    """The ``access_security`` file of ``[board]``, next to the board file, if it names one."""
    if "access_security" not in board_table:
        return None
    value = board_table["access_security"]
    line = _key_line(text, 1, "access_security")
    if not isinstance(value, str) or not value.strip():
        raise BoardFileError(
            path, line, 'access_security must be the path of an .acf file: access_security = "..."'
        )
    acf = path.parent / value
    if not acf.is_file():
        reason = "is not a file" if acf.exists() else "does not exist"
        raise BoardFileError(path, line, f"access_security: {acf} {reason}")
    return acf


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
    bus_status = board_table.get("bus_status", True)
    if not isinstance(bus_status, bool):
        line = _key_line(text, 1, "bus_status")
        raise BoardFileError(path, line, "bus_status must be true or false")
    access_security = _access_security_file(path, text, board_table)
    result = BoardFile(path, board, prefix, bus_status=bus_status, access_security=access_security)
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
        group = table.get("access_group", "DEFAULT")
        if not isinstance(group, str) or not _NAME.fullmatch(group):
            raise fail("access_group", f"access_group must be an ASG name, not {group!r}")
        level = table.get("access_level", 0)
        if isinstance(level, bool) or level not in (0, 1):
            raise fail("access_level", f"access_level must be 0 or 1, not {level!r}")
        result.devices.append(
            DeviceSpec(
                info.name, name, bus, address, {**info.options, **options}, start, group, level
            )
        )
    return result


def build(board_file: BoardFile, *, sim: bool = False, prefix: str | None = None) -> list[Any]:
    """The devices of ``board_file``, on real or simulated buses."""
    from caioc.drivers import lookup
    from caioc.hw import HardwareError

    prefix = board_file.prefix if prefix is None else prefix
    buses: dict[str, Any] = {}
    users: dict[str, list[tuple[DeviceSpec, Any]]] = {}
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
        try:
            if sim:
                bus.attach(info.simulator(address=spec.address, **spec.options))
            device = info.factory(
                prefix=f"{prefix}{spec.name}:", bus=bus, address=spec.address, **spec.options
            )
        except (ValueError, TypeError) as error:
            # A driver refusing its address or options ("28-xyz" is no 1-Wire
            # id, chip select 1 on spi-0.0 ...) is this device's line too.
            raise BoardFileError(board_file.path, spec.line, f"{spec.name}: {error}") from error
        for pv in device.pv_names:  # their record fields follow when made
            channel = device.pvdb[pv]
            channel.access_group, channel.access_level = spec.access_group, spec.access_level
        devices.append(device)
        users.setdefault(spec.bus, []).append((spec, device))
    if board_file.bus_status:
        _add_bus_status(buses, users, prefix)
    return devices


class BusStats:
    """Where the :class:`~caioc.hw.PortStats` of one board-file bus live right now.

    The status source of a bus's :class:`~caioc.hw.PortStatus`. The
    counters belong to the worker that serves the bus, and who holds that
    worker depends on the kind of bus: the bus object itself (1-Wire,
    IIO), the SPI bus behind a chip select, or the transport a driver
    opens on connecting (the shared I2C bus of the I2C sensors, the serial
    port of an instrument), which may be a new one after a reconnection.
    So it is looked up at every refresh. Until a transport is first open
    the bus counts as disconnected; while none is open (a driver between
    reconnections) the last one's figures stay, with its error and its
    closed link; a new transport's figures start from zero.
    """

    def __init__(self, bus: Any, devices: list[Any]) -> None:
        from caioc.hw import PortStats

        self.bus = bus
        self.devices = devices
        self._last = PortStats(connected=False)

    @property
    def closed(self) -> bool:
        """Never: the bus lives as long as the IOC."""
        return False

    @property
    def stats(self) -> PortStats:
        """The counters of the worker serving the bus now."""
        found = _stats_of(self.bus)
        if found is not None:
            return found
        for device in self.devices:
            # The transport attribute names the drivers use (duck-typed:
            # a driver without one simply adds nothing).
            for attribute in ("_bus", "_port", "bus", "port"):
                try:
                    candidate = getattr(device, attribute, None)
                except Exception:  # a property that says "not open"
                    continue
                found = _stats_of(candidate)
                if found is not None:
                    self._last = found
                    return found
        return self._last


def _stats_of(thing: Any) -> PortStats | None:
    from caioc.hw import PortStats

    for candidate in (thing, getattr(thing, "bus", None)):
        stats = getattr(candidate, "stats", None)
        if isinstance(stats, PortStats):
            return stats
    return None


def _add_bus_status(
    buses: dict[str, Any], users: dict[str, list[tuple[DeviceSpec, Any]]], prefix: str
) -> None:
    from caioc.hw import PortStatus

    for name, bus in buses.items():
        kind = bus_kind(name)
        if kind not in _STATUS_KINDS:
            continue
        if kind == "serial":
            # One port per instrument: each device gets its own status.
            groups = [
                ([device], f"{prefix}bus:serial:{spec.name}:", device)
                for spec, device in users[name]
            ]
        else:
            devices = [device for _, device in users[name]]
            label = _PV_UNSAFE.sub("_", name)
            groups = [(devices, f"{prefix}bus:{label}:", devices[0])]
        for devices, status_prefix, host in groups:
            _attach(host, PortStatus(status_prefix, bus=BusStats(bus, devices)))


def _attach(host: Any, group: Any) -> None:
    """Serve *group* as a sub-group of *host* (started and stopped with it).

    What a ``SubGroup`` declaration does, for one instance: the caller
    serves the devices :func:`build` returns, and nothing else.
    """
    host.pvdb.merge(group.pvdb)  # ValueError if a name clashes
    host._groups[f"_bus_status_{len(host._groups)}"] = group
    host.pv_names += group.pv_names

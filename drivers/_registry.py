"""The catalogue of drivers: what a board file's ``driver = "..."`` names.

Each driver module registers a :class:`DriverInfo` at import time; board
files, ``caioc drivers`` and ``caioc check`` look drivers up here. A
lookup imports only the module of the driver it names (see ``_MODULES``),
so an IOC loads the drivers its board file uses and not the others (nor
their buses and libraries); ``available()`` imports them all.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DriverInfo", "available", "lookup", "register"]


@dataclass(frozen=True)
class DriverInfo:
    """How to make one kind of device, for real and simulated."""

    #: The name board files use, e.g. "bme280".
    name: str
    #: One line for ``caioc drivers``.
    summary: str
    #: "i2c", "spi", "serial", "gpio" or "w1" (1-Wire) ...
    bus: str
    #: Builds the Device: ``factory(prefix=..., transport=..., **options)``.
    factory: Callable[..., Any]
    #: Builds the simulated part for ``--sim``: ``simulator(**options)``,
    #: returning what the bus's simulator attaches (see each driver).
    simulator: Callable[..., Any]
    #: Default I2C address, chip select, baud rate ... (None: required).
    default_address: int | None = None
    #: Options a board file may give, with their defaults.
    options: dict[str, Any] = field(default_factory=dict)


_DRIVERS: dict[str, DriverInfo] = {}
#: Modules that register drivers -> the names each registers. A lookup
#: imports the one module that registers the name; a test checks that
#: this table says what the modules do.
_MODULES: dict[str, tuple[str, ...]] = {
    "bme280": ("bme280", "bmp280"),
    "sht3x": ("sht3x",),
    "ads1115": ("ads1115",),
    "gpio_devices": ("digital_input", "digital_output", "pwm_output"),
    "scpi": ("scpi", "scpi-psu"),
    "mcp3008": ("mcp3008",),
    "ds18b20": ("ds18b20",),
    "dht22": ("dht22",),
    "serial_stream": ("serial-stream",),
    "i2c_registers": ("i2c-registers",),
}


def register(info: DriverInfo) -> DriverInfo:
    """Add a driver to the catalogue (one per name)."""
    if info.name in _DRIVERS and _DRIVERS[info.name] != info:
        raise ValueError(f"two drivers are called {info.name!r}")
    _DRIVERS[info.name] = info
    return info


def _load(module: str) -> None:
    try:
        importlib.import_module(f"{__package__}.{module}")
    except ModuleNotFoundError as error:
        if error.name != f"{__package__}.{module}":
            raise  # a driver module that exists but is broken must say so


def _load_all() -> None:
    for module in _MODULES:
        _load(module)


def lookup(name: str) -> DriverInfo:
    """The driver called ``name``; KeyError listing the known ones if none."""
    if name not in _DRIVERS:
        for module, names in _MODULES.items():
            if name in names:
                _load(module)
                break
    if name not in _DRIVERS:
        _load_all()  # for the list of known names, and any name _MODULES misses
    try:
        return _DRIVERS[name]
    except KeyError:
        known = ", ".join(sorted(_DRIVERS)) or "none"
        raise KeyError(f"no driver called {name!r} (known: {known})") from None


def available() -> list[DriverInfo]:
    """Every registered driver, by name."""
    _load_all()
    return [_DRIVERS[name] for name in sorted(_DRIVERS)]

"""The catalogue of drivers: what a board file's ``driver = "..."`` names.

Each driver module registers a :class:`DriverInfo` at import time; board
files, ``caioc drivers`` and ``caioc check`` look drivers up here.
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
#: Modules that register drivers, imported on first lookup.
_MODULES = ("bme280", "sht3x", "ads1115", "gpio_devices", "scpi", "mcp3008", "ds18b20", "dht22")


def register(info: DriverInfo) -> DriverInfo:
    """Add a driver to the catalogue (one per name)."""
    if info.name in _DRIVERS and _DRIVERS[info.name] != info:
        raise ValueError(f"two drivers are called {info.name!r}")
    _DRIVERS[info.name] = info
    return info


def _load_all() -> None:
    for module in _MODULES:
        try:
            importlib.import_module(f"{__package__}.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"{__package__}.{module}":
                raise  # a driver module that exists but is broken must say so


def lookup(name: str) -> DriverInfo:
    """The driver called ``name``; KeyError listing the known ones if none."""
    _load_all()
    try:
        return _DRIVERS[name]
    except KeyError:
        known = ", ".join(sorted(_DRIVERS)) or "none"
        raise KeyError(f"no driver called {name!r} (known: {known})") from None


def available() -> list[DriverInfo]:
    """Every registered driver, by name."""
    _load_all()
    return [_DRIVERS[name] for name in sorted(_DRIVERS)]

"""Opening the bus a board file names: one module per kind of bus.

A board file says ``bus = "i2c-1"``, ``"spi-0.1"``, ``"w1"``, ``"gpio"``,
``"serial"`` (the port is the device's address) ... The part before the first ``-`` (or the whole
name) is the kind, and ``boards/_bus_<kind>.py`` opens it with::

    def open_bus(name: str, *, sim: bool, board: Board | None) -> Any

returning the object the kind's drivers take as ``bus=``. A simulated bus
also has ``attach(part)``, which plugs in the simulated part a driver's
``simulator(...)`` returns. Each bus is opened once per board file and
shared by every device on it.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._models import Board

__all__ = ["KINDS", "bus_kind", "open_bus"]

#: Every kind of bus a board file may name.
KINDS = ("i2c", "spi", "serial", "w1", "gpio", "iio")


def bus_kind(name: str) -> str | None:
    """The kind of bus ``name`` is ("i2c" for "i2c-1"), None if unknown."""
    for kind in KINDS:
        if name == kind or name.startswith(f"{kind}-"):
            return kind
    return None


def open_bus(name: str, *, sim: bool, board: Board | None = None) -> Any:
    """Open bus ``name``; NotImplementedError if caioc cannot open that kind."""
    kind = bus_kind(name)
    if kind is None:
        raise NotImplementedError(f"unknown bus {name!r}; kinds: {', '.join(KINDS)}")
    try:
        module = importlib.import_module(f"{__package__}._bus_{kind}")
    except ModuleNotFoundError as error:
        if error.name != f"{__package__}._bus_{kind}":
            raise  # a bus module that exists but is broken must say so
        raise NotImplementedError(f"board files cannot use {kind} buses yet") from None
    return module.open_bus(name, sim=sim, board=board)

"""I2C buses in board files: ``bus = "i2c-1"`` is /dev/i2c-1."""

from __future__ import annotations

import logging
from typing import Any

from ._models import Board

log = logging.getLogger("caioc.boards")


def open_bus(name: str, *, sim: bool, board: Board | None = None) -> Any:
    """A SimulatedI2CBus with ``sim``, else smbus2 on /dev/i2c-N."""
    number = name.partition("-")[2]
    if not number.isdigit():
        raise NotImplementedError(f"an I2C bus is named i2c-N (N a number), not {name!r}")
    if sim:
        from caioc.hw.sim import SimulatedI2CBus

        log.info("bus %s: simulated", name)
        return SimulatedI2CBus()
    import smbus2

    bus = smbus2.SMBus(int(number))
    log.info("bus %s: /dev/%s through smbus2", name, name)
    return bus

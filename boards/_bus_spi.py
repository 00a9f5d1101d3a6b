"""SPI buses in board files: ``bus = "spi-0.1"`` is chip select 1 of controller 0.

The name picks one chip select (``/dev/spidev0.1``), so a device on it
gives no ``address``. Real hardware goes through spidev (the ``spi``
extra); ``--sim`` gives a :class:`~caioc.hw.sim.SimulatedSPIBus` whose
:meth:`ChipSelect.attach` plugs the simulated part in at that chip select.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from caioc.hw import SPIBus, SPIDevice

from ._models import Board

log = logging.getLogger("caioc.boards")

_NAME = re.compile(r"spi-(\d+)\.(\d+)")
#: Bus timeout (seconds) of the SPIBus a board file opens.
BUS_TIMEOUT = 0.5


class ChipSelect(SPIDevice):
    """One chip select of a board file's SPI bus (a simulated one can attach parts)."""

    def __init__(self, bus: SPIBus, chip_select: int, simulator: Any = None) -> None:
        super().__init__(bus, chip_select)
        self.simulator = simulator

    def attach(self, part: Any) -> Any:
        """Plug a simulated part in at this chip select (``--sim`` only)."""
        if self.simulator is None:
            raise NotImplementedError(f"{self.name} is real hardware: nothing to attach")
        return self.simulator.attach(part, chip_select=self.chip_select)


def open_bus(name: str, *, sim: bool, board: Board | None = None) -> Any:
    """A :class:`ChipSelect` on a simulated bus with ``sim``, else on spidev."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise NotImplementedError(
            f"an SPI bus is named spi-B.C (controller B, chip select C), not {name!r}"
        )
    controller, chip_select = int(match.group(1)), int(match.group(2))
    if sim:
        from caioc.hw.sim import SimulatedSPIBus

        simulator = SimulatedSPIBus(controller)
        log.info("bus %s: simulated", name)
        bus = SPIBus(
            controller, timeout=BUS_TIMEOUT, spidev_factory=simulator, name=f"spi-{controller}"
        )
        return ChipSelect(bus, chip_select, simulator)
    # BackendUnavailable (an ImportError) names the extra: pip install caioc[spi]
    try:
        bus = SPIBus(controller, timeout=BUS_TIMEOUT, name=f"spi-{controller}")
    except ImportError as error:
        raise NotImplementedError(str(error)) from error
    log.info("bus %s: /dev/spidev%d.%d through spidev", name, controller, chip_select)
    return ChipSelect(bus, chip_select)

"""IIO buses in board files: ``bus = "iio"`` is the kernel's IIO sysfs tree.

``"iio"`` reads ``/sys/bus/iio/devices``; ``"iio-/some/dir"`` another
root. A device's ``address`` is its directory, ``"iio:device0"``, or the
kernel driver's name in its ``name`` file (``"dht11"``), or absent for the
driver's default. ``--sim`` gives a :class:`~caioc.hw.sim.SimulatedIIOBus`
in a temporary directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from caioc.hw.iio import DEFAULT_ROOT, IIOBus

from ._models import Board

log = logging.getLogger("caioc.boards")

#: Seconds one read may take on a board file's shared bus, queueing included.
BUS_TIMEOUT = 10.0


class IIOBoardBus(IIOBus):
    """A board file's IIO tree; a simulated one can attach parts."""

    def attach(self, part: Any) -> Any:
        """Plug a simulated device in (``--sim`` only)."""
        if self.kernel is None:
            raise NotImplementedError(f"{self.root} is real hardware: nothing to attach")
        return self.kernel.attach(part)  # type: ignore[attr-defined]


def open_bus(name: str, *, sim: bool, board: Board | None = None) -> Any:
    """An :class:`IIOBoardBus` on a simulated tree with ``sim``, else on sysfs."""
    if name == "iio":
        root = DEFAULT_ROOT
    elif name.startswith("iio-/"):
        root = name[4:]
    else:
        raise NotImplementedError(
            f"an IIO bus is named iio (or iio-/path/to/devices), not {name!r}"
        )
    if sim:
        from caioc.hw.sim import SimulatedIIOBus

        log.info("bus %s: simulated", name)
        return IIOBoardBus(SimulatedIIOBus(), timeout=BUS_TIMEOUT, name=name)
    if not Path(root).is_dir():
        # Not fatal: the devices show COMM alarms and connect once it appears.
        log.warning(
            "bus %s: %s does not exist: is the overlay loaded (dtoverlay=dht11,gpiopin=N)?",
            name,
            root,
        )
    log.info("bus %s: %s", name, root)
    return IIOBoardBus(root, timeout=BUS_TIMEOUT, name=name)

"""1-Wire buses in board files: ``bus = "w1"`` is the kernel's w1 sysfs tree.

``"w1"`` reads ``/sys/bus/w1/devices`` (``dtoverlay=w1-gpio`` on a
Raspberry Pi); ``"w1-/some/dir"`` reads another root (a copy of the tree,
a test). A device's ``address`` is its id string, ``"28-0316a2791aff"``,
or absent for the first device of the driver's family. All devices of a
board file share one :class:`W1BoardBus`, whose worker reads them one
at a time, as the kernel's bus master does anyway; its timeout allows
for a few 750 ms conversions queued behind each other. ``--sim`` gives a
:class:`~caioc.hw.sim.SimulatedW1Bus` in a temporary directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from caioc.hw.w1 import DEFAULT_ROOT, W1Bus

from ._models import Board

log = logging.getLogger("caioc.boards")

#: Seconds one read may take on a board file's shared bus, queueing included.
BUS_TIMEOUT = 10.0


class W1BoardBus(W1Bus):
    """A board file's w1 tree; a simulated one can attach parts."""

    def attach(self, part: Any) -> Any:
        """Plug a simulated slave in (``--sim`` only)."""
        if self.kernel is None:
            raise NotImplementedError(f"{self.root} is real hardware: nothing to attach")
        return self.kernel.attach(part)  # type: ignore[attr-defined]


def open_bus(name: str, *, sim: bool, board: Board | None = None) -> Any:
    """A :class:`W1BoardBus` on a simulated tree with ``sim``, else on sysfs."""
    if name == "w1":
        root = DEFAULT_ROOT
    elif name.startswith("w1-/"):
        root = name[3:]
    else:
        raise NotImplementedError(
            f"a 1-Wire bus is named w1 (or w1-/path/to/devices), not {name!r}"
        )
    if sim:
        from caioc.hw.sim import SimulatedW1Bus

        log.info("bus %s: simulated", name)
        return W1BoardBus(SimulatedW1Bus(), timeout=BUS_TIMEOUT, name=name)
    if not Path(root).is_dir():
        # Not fatal: the devices show COMM alarms and connect once it appears.
        log.warning(
            "bus %s: %s does not exist: is the w1-gpio overlay loaded (dtoverlay=w1-gpio)?",
            name,
            root,
        )
    log.info("bus %s: %s", name, root)
    return W1BoardBus(root, timeout=BUS_TIMEOUT, name=name)

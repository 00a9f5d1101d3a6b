"""GPIO in board files: ``bus = "gpio"``, or ``"gpio-<chip label>"`` for another chip.

The bus is a GPIO backend (:func:`caioc.hw.load_backend`): the one
``$CAIOC_GPIO_BACKEND`` names, else the one detected. gpiod and lgpio find
their chip by label: the label in the bus name, else the board model's
(``pinctrl-rp1`` on a Pi 5), else any Raspberry Pi's. With ``--sim`` the
bus is a :class:`~caioc.hw.sim.SimulatedGPIO`, whose ``attach(part)`` takes
the simulated button, relay or load a GPIO driver's simulator returns.

Either way the backend reads header positions (``"J8:11"``, ``"BOARD11"``)
through the board's header (:func:`~caioc.boards.resolve_pin`), set as its
``pin_resolver``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ._models import Board, resolve_pin

log = logging.getLogger("caioc.boards")

#: Backends that find their chip by label.
_LABELLED = ("gpiod", "lgpio")


def open_bus(name: str, *, sim: bool, board: Board | None = None) -> Any:
    """A GPIO backend for bus *name*: simulated with ``sim``, else the hardware's."""
    from caioc.hw import BackendUnavailable, gpio

    label = name.partition("-")[2] or None
    if sim:
        from caioc.hw.sim import SimulatedGPIO

        backend: gpio.GPIOBackend = SimulatedGPIO()
        log.info("bus %s: simulated", name)
    else:
        chosen = os.environ.get(gpio.ENVIRONMENT_VARIABLE, "").strip().lower()
        chosen = chosen or gpio.detect_backend()
        options: dict[str, Any] = {}
        if chosen in _LABELLED and (label or board is not None):
            options["label"] = label or board.gpio_chip_label  # type: ignore[union-attr]
        try:
            backend = gpio.load_backend(chosen, **options)
        except BackendUnavailable as error:
            # An OSError, so the board file reports it at the device's line.
            raise OSError(f"bus {name}: {error}") from error
        log.info("bus %s: %r", name, backend)
    backend.pin_resolver = lambda spec: resolve_pin(board, spec)
    return backend

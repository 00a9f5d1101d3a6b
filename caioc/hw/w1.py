"""1-Wire through the Linux w1 subsystem: ``/sys/bus/w1/devices``.

The kernel's w1 bus master (``w1-gpio`` on a Raspberry Pi:
``dtoverlay=w1-gpio,gpiopin=4`` in ``config.txt``) searches the bus and
shows every slave as a directory named by its ROM id, ``FF-SSSSSSSSSSSS``:
the family code (``28`` for a DS18B20), a dash, the 48-bit serial number,
in hex. The family's kernel driver (``w1_therm`` for thermometers) adds
its files there: ``w1_slave``, ``temperature``, ``resolution`` ...

:class:`W1Bus` is a :class:`~caioc.hw._sysfs.SysfsBus` over that root (any
root, for tests and simulated trees), with :meth:`W1Bus.slaves` to find
devices. A slave that drops off the bus loses its directory after a few
searches: reading it is then :class:`~caioc.hw.DeviceUnplugged`.
"""

from __future__ import annotations

import os
import re

from ._clock import Clock
from ._sysfs import SimulatedKernel, SysfsBus

__all__ = ["DEFAULT_ROOT", "W1Bus", "parse_slave_id"]

#: Where the kernel shows 1-Wire slaves.
DEFAULT_ROOT = "/sys/bus/w1/devices"

_SLAVE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{12})")


def parse_slave_id(text: str) -> tuple[int, int]:
    """``(family, serial)`` of a slave id like ``"28-0316a2791aff"``; ValueError if not one."""
    match = _SLAVE.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"a 1-Wire device id is FF-SSSSSSSSSSSS (hex), not {text!r}")
    return int(match.group(1), 16), int(match.group(2), 16)


class W1Bus(SysfsBus):
    """The w1 sysfs tree at *root* (default :data:`DEFAULT_ROOT`)."""

    def __init__(
        self,
        root: str | os.PathLike[str] | SimulatedKernel = DEFAULT_ROOT,
        *,
        timeout: float = 2.0,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(root, timeout=timeout, clock=clock, name=name or "w1")

    async def slaves_async(self, family: int | None = None) -> list[str]:
        """The slave ids present (of *family* only, if given), sorted."""
        found = []
        for entry in await self.listdir_async():
            try:
                code, _ = parse_slave_id(entry)
            except ValueError:
                continue  # w1_bus_master1 and the like
            if family is None or code == family:
                found.append(entry)
        return found

"""A simulated Linux IIO sysfs tree: ``/sys/bus/iio/devices`` in a temporary directory.

:class:`SimulatedIIOBus` holds ``iio:deviceN`` directories, each with the
``name`` file of the kernel driver behind it and its channel files (the
simulated part decides which: see :class:`SimulatedIIODevice`). A part
attached without a ``iio:deviceN`` name gets the next free number, as the
kernel numbers devices in the order they probe. Pass it to
:class:`caioc.hw.iio.IIOBus` as the root::

    sim = SimulatedIIOBus(clock=clock)
    sim.attach(part)            # e.g. a simulated DHT22 -> iio:device0
    bus = IIOBus(sim)
"""

from __future__ import annotations

import re

from ._sysfs import SimulatedSysfsBus, SimulatedSysfsDevice

__all__ = ["SimulatedIIOBus", "SimulatedIIODevice"]

_DEVICE = re.compile(r"iio:device(\d+)")


class SimulatedIIODevice(SimulatedSysfsDevice):
    """An IIO device served by the kernel driver *driver* (its ``name`` file).

    *name* is the directory (``iio:device0``); None numbers it on attach.
    """

    def __init__(self, driver: str, name: str | None = None) -> None:
        if name is not None and not _DEVICE.fullmatch(name):
            raise ValueError(f"an IIO device directory is iio:deviceN, not {name!r}")
        super().__init__(name or "")
        self.driver = driver

    def attributes(self) -> dict[str, str]:
        """``name``: the kernel driver's name."""
        return {"name": f"{self.driver}\n"}


class SimulatedIIOBus(SimulatedSysfsBus):
    """``/sys/bus/iio/devices``, in a temporary directory by default."""

    def attach(self, device: SimulatedSysfsDevice) -> SimulatedSysfsDevice:
        """Add *device*, numbering it ``iio:deviceN`` if it has no number yet."""
        if not _DEVICE.fullmatch(device.name):
            with self._lock:
                taken = {int(m.group(1)) for n in self.devices if (m := _DEVICE.fullmatch(n))}
                device.name = f"iio:device{min(set(range(len(taken) + 1)) - taken)}"
        return super().attach(device)

"""Industrial I/O (IIO) sensors through sysfs: ``/sys/bus/iio/devices``.

Many sensors have a Linux IIO driver (on a Raspberry Pi, the DHT11/DHT22
one comes with ``dtoverlay=dht11,gpiopin=N``). Each device is a directory
``iio:deviceN`` holding a ``name`` file (the driver's name, ``dht11``) and
one file per channel, in the ABI's units after scaling: ``in_temp_input``
in milli-degrees Celsius, ``in_humidityrelative_input`` in milli-percent
(Documentation/ABI/testing/sysfs-bus-iio).

:class:`IIOBus` is a :class:`~caioc.hw._sysfs.SysfsBus` over that root (any
root, for tests and simulated trees); :meth:`IIOBus.find_async` turns a
device name or a driver name into the directory.
"""

from __future__ import annotations

import os
import re

from ._clock import Clock
from ._errors import DeviceUnplugged
from ._sysfs import SimulatedKernel, SysfsBus

__all__ = ["DEFAULT_ROOT", "IIOBus"]

#: Where the kernel shows IIO devices.
DEFAULT_ROOT = "/sys/bus/iio/devices"

_DEVICE = re.compile(r"iio:device\d+")


class IIOBus(SysfsBus):
    """The IIO sysfs tree at *root* (default :data:`DEFAULT_ROOT`)."""

    def __init__(
        self,
        root: str | os.PathLike[str] | SimulatedKernel = DEFAULT_ROOT,
        *,
        timeout: float = 2.0,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(root, timeout=timeout, clock=clock, name=name or "iio")

    @staticmethod
    def is_device_name(text: str) -> bool:
        """Whether *text* names a directory (``iio:device0``) rather than a driver."""
        return _DEVICE.fullmatch(text) is not None

    async def find_async(self, device: str) -> str:
        """The directory of *device*: ``"iio:device0"`` itself, or the first whose
        ``name`` file says *device* (``"dht11"``); DeviceUnplugged if none does."""
        entries = [entry for entry in await self.listdir_async() if _DEVICE.fullmatch(entry)]
        if self.is_device_name(device):
            if device in entries:
                return device
        else:
            for entry in sorted(entries, key=lambda e: int(e.rpartition("device")[2])):
                try:
                    name = (await self.read_async(f"{entry}/name")).strip()
                except DeviceUnplugged:
                    continue  # went away while we looked
                if name == device:
                    return entry
        raise DeviceUnplugged(f"no IIO device {device!r} under {self.root}", source=self.name)

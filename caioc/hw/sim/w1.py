"""A simulated Linux w1 sysfs tree: ``/sys/bus/w1/devices`` in a temporary directory.

:class:`SimulatedW1Bus` lays out what the kernel's w1 core shows: a
``w1_bus_master1`` directory (``w1_master_slaves``,
``w1_master_slave_count``) and one directory per slave, named by its ROM
id (``28-0316a2791aff``), with a ``name`` file and whatever
the family's driver adds (the simulated part decides: see
:class:`~caioc.hw.sim.SimulatedSysfsDevice`). Pass it to
:class:`caioc.hw.w1.W1Bus` as the root::

    sim = SimulatedW1Bus(clock=clock)
    sim.attach(part)            # e.g. a simulated DS18B20
    bus = W1Bus(sim)
"""

from __future__ import annotations

import os

from .._clock import Clock
from ._sysfs import SimulatedSysfsBus, SimulatedSysfsDevice

__all__ = ["SimulatedW1Bus", "SimulatedW1Slave"]


class SimulatedW1Slave(SimulatedSysfsDevice):
    """A 1-Wire slave: a directory named by its ROM id, with a ``name`` file."""

    def __init__(self, slave_id: str) -> None:
        family, _, serial = slave_id.partition("-")
        if len(family) != 2 or len(serial) != 12:
            raise ValueError(f"a 1-Wire id is FF-SSSSSSSSSSSS, not {slave_id!r}")
        self.family = int(family, 16)
        self.serial = int(serial, 16)
        super().__init__(slave_id.lower())

    def attributes(self) -> dict[str, str]:
        """``name``: the id again, as the w1 core shows it."""
        return {"name": f"{self.name}\n"}


def crc8_maxim(data: bytes) -> int:
    """Dallas/Maxim CRC-8 (x^8 + x^5 + x^4 + 1, reflected, initial 0) of *data*."""
    crc = 0
    for byte in data:
        for _ in range(8):
            mix = (crc ^ byte) & 0x01
            crc >>= 1
            if mix:
                crc ^= 0x8C
            byte >>= 1
    return crc


class SimulatedW1Bus(SimulatedSysfsBus):
    """``/sys/bus/w1/devices`` with one bus master, in a temporary directory by default."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, clock: Clock | None = None):
        super().__init__(root, clock=clock)
        (self.root / "w1_bus_master1").mkdir(exist_ok=True)
        self.changed()

    def changed(self) -> None:
        """Keep the master's list of slaves up to date."""
        master = self.root / "w1_bus_master1"
        if not master.is_dir():
            return
        present = sorted(name for name, device in self.devices.items() if device.plugged)
        (master / "w1_master_slaves").write_text("".join(f"{name}\n" for name in present))
        (master / "w1_master_slave_count").write_text(f"{len(present)}\n")

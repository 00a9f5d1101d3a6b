"""Simulated hardware that ships with caioc: test drivers without a board.

Each simulator speaks the same API as the real library underneath the
matching transport (smbus2's ``SMBus``, spidev's ``SpiDev``, a pty that
pyserial opens by path, a GPIO backend), so the real transport code runs
unchanged over it, and each has behaviour (register maps, scripted
replies, timing on a :class:`~caioc.hw.VirtualClock`) and injectable
faults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

if TYPE_CHECKING:
    from ._faults import BusFaults
    from ._registers import RegisterMap
    from ._sysfs import SimulatedSysfsBus, SimulatedSysfsDevice
    from .gpio import SimulatedGPIO, SimulatedPart, SimulatedPin
    from .i2c import I2CFaults, SimulatedI2CBus, SimulatedI2CDevice
    from .iio import SimulatedIIOBus, SimulatedIIODevice
    from .serial import SerialFaults, SimulatedInstrument, SimulatedStream
    from .spi import SimulatedSPIBus, SimulatedSpiDev, SimulatedSPIDevice
    from .w1 import SimulatedW1Bus, SimulatedW1Slave

__all__ = [
    "BusFaults",
    "I2CFaults",
    "RegisterMap",
    "SerialFaults",
    "SimulatedGPIO",
    "SimulatedI2CBus",
    "SimulatedI2CDevice",
    "SimulatedIIOBus",
    "SimulatedIIODevice",
    "SimulatedInstrument",
    "SimulatedPart",
    "SimulatedPin",
    "SimulatedSPIBus",
    "SimulatedSPIDevice",
    "SimulatedSpiDev",
    "SimulatedStream",
    "SimulatedSysfsBus",
    "SimulatedSysfsDevice",
    "SimulatedW1Bus",
    "SimulatedW1Slave",
]

# Each simulator is imported when first used: an IOC on one simulated I2C
# bus does not load the SPI, serial, GPIO and sysfs simulators (start-up).
_MODULES: dict[str, tuple[str, ...]] = {
    "._faults": ("BusFaults",),
    "._registers": ("RegisterMap",),
    "._sysfs": (
        "SimulatedSysfsBus",
        "SimulatedSysfsDevice",
    ),
    ".gpio": (
        "SimulatedGPIO",
        "SimulatedPart",
        "SimulatedPin",
    ),
    ".i2c": (
        "I2CFaults",
        "SimulatedI2CBus",
        "SimulatedI2CDevice",
    ),
    ".iio": (
        "SimulatedIIOBus",
        "SimulatedIIODevice",
    ),
    ".serial": (
        "SerialFaults",
        "SimulatedInstrument",
        "SimulatedStream",
    ),
    ".spi": (
        "SimulatedSPIBus",
        "SimulatedSpiDev",
        "SimulatedSPIDevice",
    ),
    ".w1": (
        "SimulatedW1Bus",
        "SimulatedW1Slave",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _MODULES)

"""The hardware layer: transports, their simulators, and hardware errors.

Transports wrap the usual Linux libraries (smbus2 for I2C, spidev for
SPI, pyserial for serial ports, a GPIO backend) so that blocking calls
never run on the event loop, every call has a timeout, and faults arrive
as the exceptions of :mod:`caioc.hw._errors`, each naming the EPICS alarm
it maps to. Simulated backends live in :mod:`caioc.hw.sim`; time in them
runs on a :class:`VirtualClock` when a test wants it to.

Real and simulated, side by side:

* I2C: ``I2CBus(1)``, or ``I2CBus(SimulatedI2CBus(1, clock=clock))``
* SPI: ``SPIBus(0)``, or ``SPIBus(0, spidev_factory=SimulatedSPIBus(0))``
* serial: ``SerialPort("/dev/ttyUSB0")``, or ``SerialPort(instrument.path)``
  for a started :class:`~caioc.hw.sim.SimulatedInstrument`
* GPIO: ``load_backend("gpiod")``, or ``load_backend("sim")`` (the
  default on a machine without GPIO hardware)

Each bus or port owns one worker thread (:class:`BusWorker`); its calls
run there one at a time, from threads (``bus.read_byte_data(...)``) or
coroutines (``await bus.read_byte_data_async(...)``) alike, and are counted
in its :class:`PortStats` (``bus.stats``), which :class:`PortStatus`
serves as PVs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._clock import (
        REAL_CLOCK,
        Clock,
        RealClock,
        TimerHandle,
        VirtualClock,
        VirtualClockStalled,
    )
    from ._device import Device, reading, register_reading, setting
    from ._errors import (
        BackendUnavailable,
        BadReply,
        BusTimeout,
        DeviceClosed,
        DeviceUnplugged,
        HardwareError,
        NoAcknowledge,
        PartialReply,
        PinError,
        UnsupportedOperation,
    )
    from ._port_status import PortStatus
    from ._serial_lines import LineBinding, LineQueue, SerialLine, line_reading
    from ._worker import BusWorker, PortSnapshot, PortStats
    from .gpio import (
        BACKENDS,
        BackendInfo,
        Direction,
        Edge,
        EdgeEvent,
        GPIOBackend,
        Pin,
        Pull,
        detect_backend,
        load_backend,
        parse_pin,
    )
    from .i2c import I2CBus, I2CDevice, SMBusLike
    from .iio import IIOBus
    from .serial import SerialPort
    from .spi import SPIBus, SPIDevice, SpiDevLike
    from .w1 import W1Bus

__all__ = [
    "BACKENDS",
    "REAL_CLOCK",
    "BackendInfo",
    "BackendUnavailable",
    "BadReply",
    "BusTimeout",
    "BusWorker",
    "Clock",
    "Device",
    "DeviceClosed",
    "DeviceUnplugged",
    "Direction",
    "Edge",
    "EdgeEvent",
    "GPIOBackend",
    "HardwareError",
    "I2CBus",
    "I2CDevice",
    "IIOBus",
    "LineBinding",
    "LineQueue",
    "NoAcknowledge",
    "PartialReply",
    "Pin",
    "PinError",
    "PortSnapshot",
    "PortStats",
    "PortStatus",
    "Pull",
    "RealClock",
    "SMBusLike",
    "SPIBus",
    "SPIDevice",
    "SerialLine",
    "SerialPort",
    "SpiDevLike",
    "TimerHandle",
    "UnsupportedOperation",
    "VirtualClock",
    "VirtualClockStalled",
    "W1Bus",
    "detect_backend",
    "line_reading",
    "load_backend",
    "parse_pin",
    "reading",
    "register_reading",
    "setting",
]

# Each name is imported from its module when first used, so that a driver
# importing ``BadReply`` from here does not load pyserial, smbus2, the GPIO
# layer and the IOC toolkit with it (start-up time and memory of small IOCs).
_MODULES: dict[str, tuple[str, ...]] = {
    "._clock": (
        "REAL_CLOCK",
        "Clock",
        "RealClock",
        "TimerHandle",
        "VirtualClock",
        "VirtualClockStalled",
    ),
    "._device": ("Device", "reading", "register_reading", "setting"),
    "._errors": (
        "BackendUnavailable",
        "BadReply",
        "BusTimeout",
        "DeviceClosed",
        "DeviceUnplugged",
        "HardwareError",
        "NoAcknowledge",
        "PartialReply",
        "PinError",
        "UnsupportedOperation",
    ),
    "._port_status": ("PortStatus",),
    "._worker": ("BusWorker", "PortSnapshot", "PortStats"),
    ".gpio": (
        "BACKENDS",
        "BackendInfo",
        "Direction",
        "Edge",
        "EdgeEvent",
        "GPIOBackend",
        "Pin",
        "Pull",
        "detect_backend",
        "load_backend",
        "parse_pin",
    ),
    ".i2c": ("I2CBus", "I2CDevice", "SMBusLike"),
    "._serial_lines": ("LineBinding", "LineQueue", "SerialLine", "line_reading"),
    ".iio": ("IIOBus",),
    ".serial": ("SerialPort",),
    ".w1": ("W1Bus",),
    ".spi": ("SPIBus", "SPIDevice", "SpiDevLike"),
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _MODULES)

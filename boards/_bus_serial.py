"""Serial ports in board files: ``bus = "serial"``, the port is the address.

One convention for every serial instrument::

    [[device]]
    driver = "scpi"
    name = "psu"
    bus = "serial"
    address = "/dev/ttyUSB0"        # or a stable name:
    # address = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
    # address = "usb:0403:6001"             # the adapter's USB vendor:product id
    # address = "usb:0403:6001:A50285BI"    # ... and its serial number
    # address = "socket://10.0.0.5:5025"    # any pyserial URL
    [device.options]
    baudrate = 115200               # framing and terminators are device options
    read_terminator = "\\r\\n"

The bus is the machine's set of serial ports (:class:`SerialPorts`), so
devices on different ports share one board-file bus and each names its
port. A ``usb:`` address is looked up among the present ports each time
the driver opens the port: a USB adapter that comes back under another
``/dev/ttyUSBn`` after a replug is found again.

With ``--sim`` the bus is :class:`SimulatedSerialPorts`: ``attach(part)``
starts the driver's simulated instrument (a
:class:`~caioc.hw.sim.SimulatedInstrument` with an ``address`` attribute,
the board file's) on a pseudo-terminal, and opening that address opens
the pty with real pyserial, so the driver's whole serial path runs.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

from caioc.hw import DeviceUnplugged, SerialPort
from caioc.hw.serial import parse_usb_address, resolve_port

from ._models import Board

__all__ = ["SerialPorts", "SimulatedSerialPorts", "open_bus", "resolve_port"]

log = logging.getLogger("caioc.boards")


class SerialPorts:
    """``bus = "serial"``: the machine's serial ports, one per device address."""

    name = "serial"

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    def open_port(self, address: int | str, **options: Any) -> SerialPort:
        """A new :class:`~caioc.hw.SerialPort` on *address* with *options* (framing).

        A ``usb:`` address is checked here and looked up by the port each
        time it opens (see :func:`~caioc.hw.serial.resolve_port`).
        """
        if not isinstance(address, str) or not address:
            raise ValueError(
                f"a serial port address is a path, URL or usb:VID:PID, not {address!r}"
            )
        if address.startswith("usb:"):
            parse_usb_address(address)  # well formed; looked up at each open
        return SerialPort(address, name=address, **options)

    def close(self) -> None:
        """Nothing to release: each driver closes the ports it opened."""


class SimulatedSerialPorts(SerialPorts):
    """Simulated instruments on ptys, each at the address its part names."""

    def __init__(self) -> None:
        self._parts: dict[str, Any] = {}
        self._lock = threading.Lock()

    def attach(self, part: Any) -> Any:
        """Start *part* (a SimulatedInstrument with ``address``) on a pty; return it."""
        address = getattr(part, "address", None)
        if not isinstance(address, str) or not address:
            raise ValueError(f"{part!r} does not say which serial port (address) it is on")
        with self._lock:
            if address in self._parts:
                raise ValueError(f"two simulated instruments on serial port {address!r}")
            part.start()
            self._parts[address] = part
        log.info("serial port %s: simulated on %s", address, part.path)
        return part

    def part(self, address: str) -> Any:
        """The simulated instrument attached at *address* (for tests)."""
        return self._parts[address]

    def open_port(self, address: int | str, **options: Any) -> SerialPort:
        """A real :class:`~caioc.hw.SerialPort` on the pty of the part at *address*."""
        part = self._parts.get(str(address))
        if part is None:
            raise DeviceUnplugged(f"no simulated instrument on {address!r}", source=str(address))
        return SerialPort(part.path, name=str(address), **options)

    def close(self) -> None:
        """Stop every simulated instrument (idempotent)."""
        with self._lock:
            parts, self._parts = list(self._parts.values()), {}
        for part in parts:
            part.stop()


def open_bus(name: str, *, sim: bool, board: Board | None = None) -> SerialPorts:
    """The serial ports (simulated with ``sim``); only ``bus = "serial"`` is known."""
    if name != "serial":
        raise NotImplementedError(
            f'serial ports are bus = "serial" with the port as the address, not bus = {name!r}'
        )
    if not sim:
        return SerialPorts()
    ports = SimulatedSerialPorts()
    # The ptys and their folders must not outlive the process.
    atexit.register(ports.close)
    return ports

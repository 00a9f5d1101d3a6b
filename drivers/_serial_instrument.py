"""What the serial instrument drivers share: the port, how it is found, its framing.

A :class:`SerialInstrument` talks through a :class:`~caioc.hw.SerialPort`
given as a port (shared: never closed here), a device path or pyserial
URL (opened with the *framing* options and closed with the device), or a
callable returning a new port at each (re)connection, which is how a
board file's ``serial`` bus finds a USB adapter again under whatever name
it comes back. :func:`port_spec` turns a board file's ``bus`` and
``address`` into one of those; :func:`take_framing` picks the framing
options out of a board file's options.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from typing import Any

from caioc.hw import Device, DeviceClosed, SerialPort

__all__ = [
    "FRAMING",
    "PV_OPTIONS",
    "PortSpec",
    "SerialInstrument",
    "check_quantity_name",
    "port_spec",
    "take_framing",
]

#: Options SerialPort takes, as a board file may give them (a driver may add more).
#: The serial framing options every serial driver takes, with their defaults.
FRAMING_DEFAULTS: dict[str, Any] = {
    "baudrate": 9600,
    "bytesize": 8,
    "parity": "N",
    "stopbits": 1,
    "rtscts": False,
    "xonxoff": False,
    "read_terminator": "\n",
    "write_terminator": "\n",
    "encoding": "ascii",
    "inter_byte_timeout": 0.1,
}
FRAMING = tuple(FRAMING_DEFAULTS)

PortSpec = SerialPort | str | Callable[[], SerialPort]

#: The pvproperty options a board file's quantity table may give as they are.
PV_OPTIONS = {
    "units",
    "precision",
    "upper_alarm_limit",
    "upper_warning_limit",
    "lower_warning_limit",
    "lower_alarm_limit",
    "upper_disp_limit",
    "lower_disp_limit",
}
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def check_quantity_name(cls: type, name: str, taken: set[str]) -> None:
    """A board file's quantity *name* must be an identifier the driver *cls* does not use."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"a quantity name is letters, digits and _, not {name!r}")
    if name in taken:
        raise ValueError(f"{name!r} is taken by the {cls.__name__} driver itself")


def take_framing(options: dict[str, Any], keys: Iterable[str] = FRAMING) -> dict[str, Any]:
    """Remove the framing options *keys* from *options* and return them."""
    return {key: options.pop(key) for key in keys if key in options}


def port_spec(
    bus: Any, address: int | str | None, framing: dict[str, Any], *, what: str
) -> PortSpec:
    """The port of a board file's *bus* and *address* (*what* names the instrument in errors)."""
    if isinstance(bus, SerialPort):
        return bus
    if hasattr(bus, "open_port"):
        if not isinstance(address, str) or not address:
            raise ValueError(f"{what}'s address is its port, not {address!r}")
        return lambda: bus.open_port(address, **framing)
    if isinstance(address or bus, str):
        return str(address or bus)
    raise ValueError(f"no serial port for {what} in bus={bus!r}, address={address!r}")


class SerialInstrument(Device):
    """A device on a serial port (see the module doc for *port*)."""

    def __init__(self, prefix: str = "", *, port: PortSpec, **framing: Any) -> None:
        self.port_spec = port
        self.framing = framing
        self._port: SerialPort | None = None
        super().__init__(prefix)

    @property
    def port(self) -> SerialPort:
        """The open port; :class:`~caioc.hw.DeviceClosed` when the device is closed."""
        if self._port is None:
            raise DeviceClosed(f"{type(self).__name__} {self.prefix!r} is not open")
        return self._port

    def take_port(self) -> SerialPort:
        """Get the port (a new one at each connection unless one was given)."""
        if self._port is None:
            spec = self.port_spec
            if isinstance(spec, SerialPort):
                self._port = spec
            elif isinstance(spec, str):
                self._port = SerialPort(spec, **self.framing)
            else:
                self._port = spec()
        return self._port

    async def release_port(self) -> None:
        """Let the port go (closed unless it was given as a SerialPort; idempotent)."""
        port, self._port = self._port, None
        if port is not None and port is not self.port_spec:
            # Closing joins the port's worker: not on the event loop.
            await asyncio.to_thread(port.close)

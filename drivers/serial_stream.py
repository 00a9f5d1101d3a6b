"""Instruments that stream lines unasked: I/O-interrupt readings on a serial line.

Many serial sensors print a measurement every so often without being
asked: a thermometer module (``T=23.51``), a humidity probe, a scale, a
particle counter, a controller that reports ``ALARM OVERTEMP``. Polling
them makes no sense; each line they send updates a PV as it arrives, with
the time it arrived, the serial counterpart of an EPICS "I/O Intr" record.
:class:`StreamingInstrument` is the template, built on
:class:`~caioc.hw.serial.line_reading` and
:class:`~caioc.hw.serial.LineBinding`::

    class Thermometer(StreamingInstrument):
        temperature = line_reading(r"T=(\\S+)", units="degC", precision=2, stale_after=5.0)

A board file declares the quantities instead (driver ``serial-stream``)::

    [device.options.quantities]
    temperature = { key = "T", units = "degC", precision = 2 }   # "T=23.51"
    alarm = { key = "ALARM", type = "string" }                   # "ALARM OVERTEMP"
    flow = { pattern = "F:([-+.0-9]+) l/min", units = "l/min", sim_line = "F:{value:.2f} l/min" }

What happens when things go wrong: a line that matches but does not parse
(``T=--.-``) raises CALC on its PV and keeps the last good value; a line
cut off mid-way is dropped (the port counts it); lines that arrive faster
than the IOC takes them are dropped oldest first; an instrument that falls
silent or is unplugged shows as TIMEOUT on every quantity after
*stale_after* seconds, and the port's status PVs (the board file's
``bus:serial:<name>:``) say whether the port is there. The port reopens
by itself when the instrument comes back.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from typing import Any

from caioc.hw.serial import LineBinding, line_reading
from caioc.hw.sim import SimulatedInstrument

from ._registry import DriverInfo, register
from ._serial_instrument import (
    FRAMING_DEFAULTS,
    PV_OPTIONS,
    PortSpec,
    SerialInstrument,
    check_quantity_name,
    port_spec,
    take_framing,
)

__all__ = [
    "SimulatedStreamingInstrument",
    "StreamingInstrument",
    "key_pattern",
    "make_serial_stream",
    "simulate_serial_stream",
]

_INITIAL: dict[str, Any] = {"float": 0.0, "int": 0, "string": ""}


def key_pattern(key: str) -> str:
    """The pattern of a ``KEY=value`` line (also ``KEY: value``, ``KEY value``)."""
    return rf"{re.escape(key)}\s*[=:\s]\s*(.*?)\s*$"


class StreamingInstrument(SerialInstrument):
    """An instrument on a serial port that sends its readings unasked (see the module doc).

    *port* is a :class:`~caioc.hw.SerialPort` (shared: never closed here),
    a path or pyserial URL (opened with the *framing* options and closed
    with the device), or a callable returning a new port, as a board
    file's ``serial`` bus gives. *start_command* is sent after each
    connection (``"STREAM ON"``) for instruments that stream on request;
    *max_queued* bounds the lines waiting for the IOC.
    """

    def __init__(
        self,
        prefix: str = "",
        *,
        port: PortSpec,
        start_command: str = "",
        max_queued: int = 100,
        **framing: Any,
    ) -> None:
        self.start_command = start_command
        self.max_queued = max_queued
        self.binding: LineBinding | None = None
        super().__init__(prefix, port=port, **framing)

    async def open(self) -> None:
        """Get the port and listen to it."""
        port = self.take_port()
        if self.binding is None:
            self.binding = LineBinding(self, port, maxlen=self.max_queued)
            await self.binding.start()

    async def initialise(self) -> None:
        """Ask the instrument to stream, if it must be asked."""
        if self.start_command:
            await self.port.write_line_async(self.start_command)

    async def close(self) -> None:
        """Stop listening and let the port go (idempotent)."""
        binding, self.binding = self.binding, None
        if binding is not None:
            await binding.stop()
        await self.release_port()

    @classmethod
    def configured(
        cls, *, quantities: Mapping[str, Any] | None = None, stale_after: float | None = None
    ) -> type[StreamingInstrument]:
        """A subclass with the *quantities* a board file declares.

        *quantities* maps a PV name to a table with ``key`` (a ``KEY=value``
        line, see :func:`key_pattern`) or ``pattern`` (a regular expression
        whose first group is the value), and any of ``type`` ("float",
        "int", "string"), ``units``, ``precision``, ``low``/``high``
        (display limits), ``stale_after``, ``doc``, the pvproperty limit
        options, and ``sim_line`` (what ``--sim`` sends for a ``pattern``
        quantity, with ``{value}``). *stale_after* is every quantity's
        default (None: never stale).
        """
        attributes: dict[str, Any] = {}
        taken = {name for name, _ in cls._declared()} | set(dir(cls)) | set(cls.RESERVED)
        taken |= {"port_spec", "framing", "start_command", "max_queued", "binding"}
        for name, spec in (quantities or {}).items():
            check_quantity_name(cls, name, taken)
            attributes[name] = _quantity(name, spec, stale_after)
        return type(cls.__name__, (cls,), attributes)


def _quantity(name: str, spec: Any, stale_after: float | None) -> line_reading:
    if not isinstance(spec, Mapping):
        raise ValueError(f'{name}: give a table with key = "..." or pattern = "..."')
    known = PV_OPTIONS | {"key", "pattern", "type", "low", "high", "stale_after", "doc"}
    unknown = set(spec) - known - {"sim_line"}
    if unknown:
        raise ValueError(f"{name}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    options = {key: value for key, value in spec.items() if key in known}
    key, pattern = options.pop("key", None), options.pop("pattern", None)
    if (key is None) == (pattern is None):
        raise ValueError(f'{name}: give exactly one of key = "..." and pattern = "..."')
    if key is not None:
        pattern = key_pattern(str(key))
    try:
        compiled = re.compile(str(pattern))
    except re.error as error:
        raise ValueError(f"{name}: pattern {pattern!r}: {error}") from None
    kind = options.pop("type", "float")
    if kind not in _INITIAL:
        raise ValueError(f"{name}: type is one of {sorted(_INITIAL)}, not {kind!r}")
    if "low" in options:
        options["lower_disp_limit"] = options.pop("low")
    if "high" in options:
        options["upper_disp_limit"] = options.pop("high")
    # 0 (TOML has no null) means never stale, as None does.
    options["stale_after"] = options.get("stale_after", stale_after) or None
    options.setdefault("doc", f"{key or pattern} lines")
    return line_reading(compiled, _INITIAL[kind], **options)


# -- simulation ---------------------------------------------------------------------------------


class SimulatedStreamingInstrument(SimulatedInstrument):
    """A simulated instrument that streams one line per quantity every *period* seconds.

    :attr:`values` holds what each line reports (tests set them); numbers
    drift slowly around their starting value, as a real sensor's do,
    unless :attr:`drift` is zero. *address* is the serial port a board
    file puts it on.
    """

    def __init__(
        self,
        *,
        period: float = 0.2,
        address: str | None = None,
        name: str = "ttySTREAM0",
        **options: Any,
    ) -> None:
        super().__init__(name=name, **options)
        self.address = address
        self.period = period
        self.drift = 0.1
        #: Line template (with {value}) -> the value it reports.
        self.values: dict[str, Any] = {}
        self._start = time.monotonic()

    def add_line(self, template: str, value: Any) -> None:
        """Stream ``template.format(value=...)`` every period, starting at *value*."""
        self.values[template] = value
        self.every(self.period, lambda sim: self._line(template))

    def _line(self, template: str) -> str:
        value = self.values[template]
        if isinstance(value, float) and self.drift:
            age = time.monotonic() - self._start
            value += self.drift * math.sin(age / 10.0)
        return template.format(value=value)


def simulate_serial_stream(
    *,
    address: int | str | None = None,
    quantities: Mapping[str, Any] | None = None,
    read_terminator: str = "\n",
    write_terminator: str = "\n",
    **options: Any,
) -> SimulatedStreamingInstrument:
    """The simulated part for the ``serial-stream`` driver's board-file options.

    Streams a line per quantity: ``KEY=value`` for a ``key`` quantity, the
    ``sim_line`` template for a ``pattern`` one (none without it). Numbers
    start at 20, 25, 30 ... in declaration order; strings are ``OK``.
    The terminators are the driver's, seen from the other end of the line.
    """
    name = "ttySTREAM0" if not isinstance(address, str) else re.sub(r"\W", "-", address)[-40:]
    sim = SimulatedStreamingInstrument(
        address=None if address is None else str(address),
        name=name.strip("-") or "ttySTREAM0",
        read_terminator=write_terminator,
        write_terminator=read_terminator,
    )
    for index, (_, spec) in enumerate((quantities or {}).items()):
        kind = spec.get("type", "float") if isinstance(spec, Mapping) else "float"
        value: Any = {"float": 20.0 + 5 * index, "int": 20 + 5 * index}.get(kind, "OK")
        if isinstance(spec, Mapping) and "key" in spec:
            sim.add_line(f"{spec['key']}={{value}}", value)
        elif isinstance(spec, Mapping) and "sim_line" in spec:
            sim.add_line(str(spec["sim_line"]), value)
    return sim


# -- board files -------------------------------------------------------------------------------


def make_serial_stream(
    *,
    prefix: str,
    bus: Any = None,
    address: int | str | None = None,
    quantities: Mapping[str, Any] | None = None,
    stale_after: float | None = 5.0,
    **options: Any,
) -> StreamingInstrument:
    """A :class:`StreamingInstrument` with the quantities of a board file's options."""
    framing = take_framing(options)
    port = port_spec(bus, address, framing, what="a streaming instrument")
    configured = StreamingInstrument.configured(
        quantities=quantities, stale_after=stale_after if stale_after else None
    )
    return configured(prefix, port=port, **options, **framing)


register(
    DriverInfo(
        name="serial-stream",
        summary=(
            'instrument that streams lines unasked on bus "serial" ("T=23.5"): each'
            " declared quantity is an I/O-interrupt PV, TIMEOUT when the lines stop"
        ),
        bus="serial",
        factory=make_serial_stream,
        simulator=simulate_serial_stream,
        options={
            "quantities": {},
            "stale_after": 5.0,
            "start_command": "",
            "max_queued": 100,
            **FRAMING_DEFAULTS,
        },
    )
)

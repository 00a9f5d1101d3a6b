"""Simulated SCPI instruments on a pty, for the ``scpi`` driver and its tests.

:class:`SimulatedSCPI` is a :class:`~caioc.hw.sim.SimulatedInstrument`
(the code under test opens its pty with real pyserial) that parses what it
receives as SCPI does, rather than matching whole lines:

* headers in the SCPI tree notation, ``MEASure[:SCALar]:VOLTage[:DC]?``:
  each node is accepted in its short form (the capitals) or its long form,
  in any case, and bracketed nodes may be left out;
* the IEEE 488.2 common commands ``*IDN?``, ``*RST``, ``*CLS``, ``*OPC?``,
  ``*ESR?`` and ``*STB?``;
* a real error queue (SCPI-99 volume 2, chapter 21) read with
  ``SYSTem:ERRor[:NEXT]?`` / ``SYSTem:ERRor:COUNt?``: an unknown header is
  ``-113,"Undefined header"`` and gets no reply (a query with it times out
  on the host, as with real instruments); a parameter that is not a number
  ``-104,"Data type error"``; a missing one ``-109,"Missing parameter"``; a
  value outside the instrument's range ``-222,"Data out of range"``; a
  full queue replaces its newest entry with ``-350,"Queue overflow"``.
  Each error sets its bit in the standard event status register (*ESR?).

:class:`SimulatedPowerSupply` models a bench power supply behind the usual
SCPI subsystems (``VOLTage``, ``CURRent``, ``OUTPut``, ``MEASure``) driving
a resistive load: the output holds the voltage setpoint until the load
would draw more than the current limit, then holds the current (constant
current), and measurements follow. Faults are those of the base class:
``faults.garble_next()``, ``faults.no_reply_next()``,
``faults.partial_reply_next()``, ``faults.reply_delay``, ``unplug()`` and
``replug()``.
"""

from __future__ import annotations

import math
import re
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from caioc.hw.sim import SimulatedInstrument

__all__ = [
    "SCPIHandler",
    "SimulatedPowerSupply",
    "SimulatedSCPI",
    "scpi_header_pattern",
    "simulate",
]

#: ``handler(instrument, parameters) -> reply`` (None: no reply). Raising
#: :class:`SCPICommandError` puts that error in the queue instead.
SCPIHandler = Callable[["SimulatedSCPI", list[str]], "str | None"]

#: SCPI-99 standard error numbers and messages used by the simulators.
ERRORS = {
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -222: "Data out of range",
    -350: "Queue overflow",
}
#: Error ranges -> the standard event status register bit they set (IEEE 488.2 11.5.1).
_ESR_BITS = ((-199, -100, 0x20), (-299, -200, 0x10), (-399, -300, 0x08), (-499, -400, 0x04))

_NODE = re.compile(r"(\[?)(:?)(\*?[A-Z0-9]*)([a-z0-9]*)(:(?=\]))?(\]?)")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class SCPICommandError(Exception):
    """What a handler raises to put a SCPI error in the queue (no reply is sent)."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message or ERRORS.get(code, "Command error"))
        self.code = code


def scpi_header_pattern(header: str) -> re.Pattern[str]:
    """A regex for a header in SCPI tree notation (``SOURce:VOLTage[:LEVel]?``).

    Capitals are a node's short form, capitals and lower case its long form;
    either is accepted, in any case. ``[...]`` nodes are optional.
    """
    parts = []
    position = 0
    query = header.endswith("?")
    text = header[:-1] if query else header
    while position < len(text):
        match = _NODE.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"cannot read the SCPI header {header!r} at {position}")
        optional, colon, short, rest, trailing, close = match.groups()
        if bool(optional) != bool(close) or (trailing and not close):
            raise ValueError(f"unbalanced [] in the SCPI header {header!r}")
        names = re.escape(short) if not rest else f"(?:{re.escape(short + rest)}|{short})"
        # "[SOURce:]VOLTage": an optional node may carry the colon after it.
        node = f"{':' if colon else ''}{names}{':' if trailing else ''}"
        parts.append(f"(?:{node})?" if optional else node)
        position = match.end()
    # A leading colon names the root of the tree and is always allowed.
    root = "" if header.startswith(("*", ":")) else ":?"
    return re.compile(root + "".join(parts) + (r"\?" if query else ""), re.IGNORECASE)


def parse_number(text: str) -> float:
    """A SCPI numeric parameter (NR1/NR2/NR3, MIN/MAX not included)."""
    if _NUMBER.fullmatch(text.strip()) is None:
        raise SCPICommandError(-104)
    return float(text)


def parse_boolean(text: str) -> bool:
    """A SCPI boolean parameter: ``ON``/``OFF`` or a number (non-zero: true)."""
    word = text.strip().upper()
    if word in ("ON", "OFF"):
        return word == "ON"
    return round(parse_number(word)) != 0


class SimulatedSCPI(SimulatedInstrument):
    """A SCPI instrument with an error queue and the IEEE 488.2 common commands.

    *identity* is the ``*IDN?`` reply (manufacturer, model, serial number,
    firmware); *address* the port a board file names. Add commands with
    :meth:`command`; override :meth:`reset` for what ``*RST`` does.
    *queue_size* is the error queue's length.
    """

    def __init__(
        self,
        identity: str = "caioc,SCPI-SIM,0001,1.0",
        *,
        read_terminator: str | bytes = "\n",
        write_terminator: str | bytes = "\n",
        queue_size: int = 10,
        name: str = "ttySCPI0",
        address: str | None = None,
    ) -> None:
        super().__init__(
            read_terminator=read_terminator, write_terminator=write_terminator, name=name
        )
        if queue_size < 2:
            raise ValueError("SCPI needs an error queue of at least two entries")
        self.identity = identity
        #: The serial port a board file puts it on (a simulated serial bus reads it).
        self.address = address
        self.queue_size = queue_size
        #: Pending errors, oldest first: (number, message).
        self.errors: deque[tuple[int, str]] = deque()
        #: The standard event status register (*ESR? reads and clears it).
        self.event_status = 0
        self._commands: list[tuple[re.Pattern[str], SCPIHandler]] = []
        self._lock = threading.Lock()  # handlers run on the pty thread; tests poke state
        self.command("*IDN?", lambda sim, params: sim.identity)
        self.command("*RST", lambda sim, params: sim._common_reset())
        self.command("*CLS", lambda sim, params: sim.clear_status())
        self.command("*OPC?", lambda sim, params: "1")
        self.command("*ESR?", lambda sim, params: str(sim._read_event_status()))
        self.command("*STB?", lambda sim, params: str(0x04 if sim.errors else 0))
        self.command("SYSTem:ERRor[:NEXT]?", lambda sim, params: sim.next_error())
        self.command("SYSTem:ERRor:COUNt?", lambda sim, params: str(len(sim.errors)))
        self.on(r".*", self._dispatch)

    # Describing the instrument.

    def command(self, header: str, handler: SCPIHandler, *, literal: bool = False) -> None:
        """Answer *header* (SCPI tree notation) with ``handler(self, parameters)``.

        A *literal* header is matched as it is spelt (in any case), for
        headers taken from a driver's configuration rather than a manual.
        """
        if literal:
            pattern = re.compile(":?" + re.escape(header.lstrip(":")), re.IGNORECASE)
        else:
            pattern = scpi_header_pattern(header)
        self._commands.append((pattern, handler))

    def reset(self) -> None:
        """What ``*RST`` does besides the common part; subclasses override."""

    # The error queue.

    def push_error(self, code: int, message: str | None = None) -> None:
        """Add an error to the queue as the instrument would (overflow: -350 last)."""
        with self._lock:
            text = message or ERRORS.get(code, "Command error")
            if len(self.errors) >= self.queue_size:
                self.errors[-1] = (-350, ERRORS[-350])
            else:
                self.errors.append((code, text))
            for low, high, bit in _ESR_BITS:
                if low <= code <= high:
                    self.event_status |= bit

    def next_error(self) -> str:
        """The oldest error as ``SYST:ERR?`` answers it, taking it off the queue."""
        with self._lock:
            code, message = self.errors.popleft() if self.errors else (0, "No error")
        return f'{code:+d},"{message}"' if code else '0,"No error"'

    def clear_status(self) -> None:
        """``*CLS``: empty the error queue and the event status register."""
        with self._lock:
            self.errors.clear()
            self.event_status = 0

    def _read_event_status(self) -> int:
        with self._lock:
            value, self.event_status = self.event_status, 0
        return value

    def _common_reset(self) -> None:
        self.reset()

    # Parsing what arrives.

    def _dispatch(self, match: re.Match[str], instrument: SimulatedInstrument) -> str | None:
        # Several commands in one message are separated by ';' (SCPI-99 6.2.4);
        # their replies are joined with ';' in one response message.
        replies = []
        for unit in match.group(0).split(";"):
            reply = self._execute(unit.strip())
            if reply is not None:
                replies.append(reply)
        return ";".join(replies) if replies else None

    def _execute(self, unit: str) -> str | None:
        if not unit:
            return None
        header, _, rest = unit.partition(" ")
        parameters = [part.strip() for part in rest.split(",")] if rest.strip() else []
        for pattern, handler in self._commands:
            if pattern.fullmatch(header):
                try:
                    return handler(self, parameters)
                except SCPICommandError as error:
                    self.push_error(error.code, str(error))
                    return None
        self.push_error(-113)
        return None


def _one_number(parameters: list[str], low: float, high: float) -> float:
    if not parameters:
        raise SCPICommandError(-109)
    if len(parameters) > 1:
        raise SCPICommandError(-108)
    value = parse_number(parameters[0])
    if not low <= value <= high:
        raise SCPICommandError(-222)
    return value


class SimulatedPowerSupply(SimulatedSCPI):
    """A single-output bench power supply driving a resistive load.

    Settings: :attr:`voltage_setpoint` (0 .. :attr:`max_voltage` V),
    :attr:`current_limit` (0 .. :attr:`max_current` A) and :attr:`output`;
    the modelled world: :attr:`load_ohms`. ``*RST`` turns the output off
    and sets both setpoints to zero, as real supplies do.
    """

    def __init__(
        self,
        identity: str = "caioc,PSU-3005,SIM0001,1.0",
        *,
        max_voltage: float = 30.0,
        max_current: float = 5.0,
        load_ohms: float = 10.0,
        **options: Any,
    ) -> None:
        super().__init__(identity, **options)
        self.max_voltage = max_voltage
        self.max_current = max_current
        #: The load across the terminals (ohms; inf: open circuit).
        self.load_ohms = load_ohms
        self.voltage_setpoint = 0.0
        self.current_limit = 1.0
        self.output = False
        #: Measurements answered for queries the supply does not know itself,
        #: by header (see :func:`simulate`).
        self.quantities: dict[str, float] = {}
        self.command("[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]", self._set_voltage)
        self.command(
            "[SOURce:]VOLTage[:LEVel][:IMMediate][:AMPLitude]?",
            lambda sim, params: f"{self.voltage_setpoint:.3f}",
        )
        self.command("[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]", self._set_current)
        self.command(
            "[SOURce:]CURRent[:LEVel][:IMMediate][:AMPLitude]?",
            lambda sim, params: f"{self.current_limit:.3f}",
        )
        self.command("OUTPut[:STATe]", self._set_output)
        self.command("OUTPut[:STATe]?", lambda sim, params: "1" if self.output else "0")
        self.command("MEASure[:SCALar]:VOLTage[:DC]?", lambda sim, params: _nr3(self.volts()))
        self.command("MEASure[:SCALar]:CURRent[:DC]?", lambda sim, params: _nr3(self.amps()))
        self.command("MEASure[:SCALar]:POWer[:DC]?", lambda sim, params: _nr3(self.watts()))

    def reset(self) -> None:
        """``*RST``: output off, setpoints zero (the current limit to its minimum)."""
        self.voltage_setpoint = 0.0
        self.current_limit = 0.0
        self.output = False

    # The model.

    def volts(self) -> float:
        """The voltage across the load: the setpoint unless current-limited."""
        if not self.output:
            return 0.0
        if self.load_ohms <= 0:
            return 0.0  # a short circuit
        if math.isinf(self.load_ohms):
            return self.voltage_setpoint
        return min(self.voltage_setpoint, self.current_limit * self.load_ohms)

    def amps(self) -> float:
        """The current into the load."""
        if not self.output:
            return 0.0
        if self.load_ohms <= 0:
            return self.current_limit
        return self.volts() / self.load_ohms

    def watts(self) -> float:
        """The power into the load."""
        return self.volts() * self.amps()

    @property
    def constant_current(self) -> bool:
        """True while the current limit, not the voltage setpoint, sets the output."""
        return self.output and self.volts() < self.voltage_setpoint

    # The commands.

    def _set_voltage(self, sim: SimulatedSCPI, parameters: list[str]) -> None:
        self.voltage_setpoint = _one_number(parameters, 0.0, self.max_voltage)

    def _set_current(self, sim: SimulatedSCPI, parameters: list[str]) -> None:
        self.current_limit = _one_number(parameters, 0.0, self.max_current)

    def _set_output(self, sim: SimulatedSCPI, parameters: list[str]) -> None:
        if len(parameters) != 1:
            raise SCPICommandError(-109 if not parameters else -108)
        self.output = parse_boolean(parameters[0])

    def quantity(self, header: str, value: float = 0.0) -> None:
        """Answer the query *header* with the modelled quantity ``quantities[header]``."""
        self.quantities.setdefault(header, value)
        self.command(header, lambda sim, params: _nr3(self.quantities[header]), literal=True)


def _nr3(value: float) -> str:
    # SCPI NR3 as instruments print it: +1.23450000E+01
    return f"{value:+.8E}"


#: A setting's command template ("VOLT {value}") -> its header.
_TEMPLATE_HEADER = re.compile(r"\s*([^\s{]+)")


def simulate(
    address: int | str | None = None,
    *,
    expected_model: str = "",
    measurements: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    write_terminator: str = "\n",
    read_terminator: str = "\n",
    **options: Any,
) -> SimulatedPowerSupply:
    """The simulated part for the ``scpi`` driver's board-file options.

    A :class:`SimulatedPowerSupply` (reporting *expected_model* as its model
    when one is given); measurement queries and setting commands of the
    options that the supply does not know are answered from
    :attr:`~SimulatedPowerSupply.quantities` and stored settings, so any
    board file runs under ``--sim``. The terminators are the driver's,
    seen from the other end of the line. Other driver options are ignored.
    """
    identity = f"caioc,{expected_model or 'PSU-3005'},SIM0001,1.0"
    name = "ttySCPI0" if not isinstance(address, str) else re.sub(r"\W", "-", address)[-40:]
    supply = SimulatedPowerSupply(
        identity,
        read_terminator=write_terminator,
        write_terminator=read_terminator,
        name=name.strip("-") or "ttySCPI0",
        address=None if address is None else str(address),
    )
    for index, spec in enumerate((measurements or {}).values()):
        query = spec if isinstance(spec, str) else spec.get("query", "")
        if query and not _known(supply, query):
            supply.quantity(query, 1.0 + index)
    for spec in (settings or {}).values():
        template = spec if isinstance(spec, str) else spec.get("command", "")
        match = _TEMPLATE_HEADER.match(template)
        if match is None or _known(supply, match.group(1)):
            continue
        header = match.group(1)
        supply.state.setdefault(header, "0")
        supply.command(header, _store(header), literal=True)
        readback = spec.get("query") if isinstance(spec, dict) else None
        if readback and not _known(supply, readback):
            supply.command(readback, _recall(header), literal=True)
    return supply


def _known(supply: SimulatedSCPI, header: str) -> bool:
    return any(pattern.fullmatch(header) for pattern, _ in supply._commands)


def _store(header: str) -> SCPIHandler:
    def handler(sim: SimulatedSCPI, parameters: list[str]) -> None:
        if len(parameters) != 1:
            raise SCPICommandError(-109 if not parameters else -108)
        sim.state[header] = parameters[0]

    return handler


def _recall(header: str) -> SCPIHandler:
    def handler(sim: SimulatedSCPI, parameters: list[str]) -> str:
        return str(sim.state[header])

    return handler

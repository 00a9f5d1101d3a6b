"""SCPI instruments over a serial line: the template for serial instrument drivers.

Most bench instruments (power supplies, multimeters, counters, source
meters) speak SCPI: IEEE 488.2 common commands (``*IDN?``, ``*RST``,
``*CLS``, ``*OPC?``) plus a tree of instrument commands
(``MEAS:VOLT:DC?``, ``VOLT 5.0``), with failures kept in an error queue
read by ``SYST:ERR?`` (one entry per read, ``0,"No error"`` when empty).
:class:`SCPIInstrument` does what every one of them needs:

* probe: ``*IDN?`` into the ``manufacturer``, ``model``, ``serial_number``
  and ``firmware`` PVs; with *expected_model*, another model fails the
  probe with a CALC alarm (on ``model`` and every reading), so a board file
  never drives the wrong instrument on a port;
* initialise: ``*RST`` (and ``*OPC?`` to wait for it) when *reset*,
  ``*CLS`` when *clear*, then *init_commands* (``SYST:REM`` ...), then the
  error queue must be empty; settings with a read-back query take the
  instrument's values, so a restarted IOC shows what the instrument does;
* readings (:class:`Measurement`): a query whose reply is parsed as a
  number (SCPI's not-a-number, 9.91E37, becomes NaN and so UDF), an
  integer or text;
* settings (:class:`Command`): a command template (``"VOLT {value:.3f}"``)
  followed by an error-queue check; an error refuses the client's put with
  the instrument's own message (``-222,"Data out of range"``);
* the error queue, drained (at most *max_error_reads* reads) every
  ``error_poll_period`` seconds and after every setting: ``scpi_error``
  holds the latest entry, ``scpi_error_count`` counts them.

* event lines (an instrument that reports ``EVENT OVP`` or a trigger's
  readings unasked): a subclass declares
  :class:`~caioc.hw.serial.line_reading` quantities, the port's
  *unsolicited* pattern (a framing option, ``unsolicited = "EVENT "`` in a
  board file) tells those lines from replies, and the device listens to
  the port while it is open (see "Unsolicited lines" in
  :mod:`caioc.hw.serial` for the rule).

Every exchange runs under :attr:`SCPIInstrument.lock`, so a write and the
error check after it are never split by a poll. The serial port is a
:class:`~caioc.hw.SerialPort` (faults are alarms: no reply -> TIMEOUT, a
cut-off reply -> READ, garbage -> CALC, unplugged -> COMM and reconnect).

A driver for one instrument subclasses it and declares its quantities
(:class:`BenchPowerSupply` is the worked example)::

    class Multimeter(SCPIInstrument):
        voltage = Measurement("MEAS:VOLT:DC?", units="V", precision=6)
        range = Command("VOLT:DC:RANG {value}", query="VOLT:DC:RANG?", units="V")

A board file declares them instead (driver ``scpi``, see
:meth:`SCPIInstrument.configured` for the keys)::

    [device.options.measurements]
    voltage = { query = "MEAS:VOLT?", units = "V", precision = 3 }
    [device.options.settings]
    output = { command = "OUTP {value}", query = "OUTP?", enum = ["Off", "On"] }
"""

from __future__ import annotations

import asyncio
import copy
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from caioc.ca import AlarmSeverity, AlarmStatus
from caioc.hw import BadReply, HardwareError, reading, setting
from caioc.hw.serial import LineBinding, line_reading
from caioc.ioc import pvproperty

from ._registry import DriverInfo, register
from ._serial_instrument import (
    FRAMING,
    FRAMING_DEFAULTS,
    PV_OPTIONS,
    PortSpec,
    SerialInstrument,
    check_quantity_name,
    port_spec,
    take_framing,
)
from ._sim_scpi import SimulatedPowerSupply, simulate

__all__ = [
    "BenchPowerSupply",
    "Command",
    "Identity",
    "Measurement",
    "SCPIError",
    "SCPIInstrument",
    "make_scpi",
    "make_scpi_power_supply",
    "parse_error",
    "parse_identity",
    "parse_number",
    "simulate_scpi",
]

#: SCPI's "not a number" (SCPI-99 7.2.1.5); 9.9E37 is "infinity" and stays a number.
NOT_A_NUMBER = 9.91e37

_ERROR = re.compile(r'\s*([-+]?\d+)\s*,\s*"(.*)"\s*', re.DOTALL)


class SCPIError(HardwareError, ValueError):
    """The instrument put errors in its queue; ``errors`` lists (code, message).

    The message is the instrument's own (``-222,"Data out of range"``), so
    a refused put tells the client exactly what the instrument objected to.
    Alarm: ``CALC`` (it answered, but refused).
    """

    kind = AlarmStatus.CALC

    def __init__(self, errors: list[tuple[int, str]], *, source: str | None = None) -> None:
        super().__init__("; ".join(f'{code},"{text}"' for code, text in errors), source=source)
        self.errors = errors


class Identity(NamedTuple):
    """The four fields of an ``*IDN?`` reply (IEEE 488.2 section 10.14)."""

    manufacturer: str
    model: str
    serial_number: str
    firmware: str


def parse_identity(reply: str) -> Identity:
    """Split an ``*IDN?`` reply; fewer than four fields is a :class:`BadReply`."""
    fields = [field.strip() for field in reply.split(",")]
    if len(fields) < 4 or not fields[1]:
        raise BadReply(f"*IDN? reply {reply!r} is not manufacturer,model,serial,firmware")
    # Some firmware versions contain commas of their own: keep them.
    return Identity(fields[0], fields[1], fields[2], ",".join(fields[3:]))


def parse_error(reply: str) -> tuple[int, str]:
    """An error-queue entry, ``-113,"Undefined header"`` -> ``(-113, "Undefined header")``."""
    match = _ERROR.fullmatch(reply)
    if match is None:
        raise BadReply(f'SYST:ERR? reply {reply!r} is not code,"message"')
    return int(match.group(1)), match.group(2)


def parse_number(reply: str) -> float:
    """The first value of a numeric reply; SCPI's not-a-number becomes NaN."""
    text = reply.split(",")[0].strip()
    try:
        value = float(text)
    except ValueError:
        raise BadReply(f"reply {reply!r} is not a number") from None
    return math.nan if value == NOT_A_NUMBER else value


def parse_integer(reply: str) -> int:
    """A numeric reply as an integer (``+1.0E+00`` is 1)."""
    value = parse_number(reply)
    if math.isnan(value) or value != round(value):
        raise BadReply(f"reply {reply!r} is not an integer")
    return round(value)


def _fit(text: str) -> str:
    # A DBR_STRING holds 39 bytes; an instrument's text may be longer.
    return text.encode()[:39].decode(errors="ignore")


def _plain(value: Any) -> Any:
    # A put arrives converted to the channel's type, possibly as a numpy scalar.
    return value.item() if hasattr(value, "item") else value


_PARSERS: dict[str, Callable[[str], Any]] = {
    "float": parse_number,
    "int": parse_integer,
    "string": lambda reply: _fit(reply.strip()),
}
_INITIAL = {"float": 0.0, "int": 0, "string": ""}
#: Seconds a whole read or write may take, queueing for the lock included.
_BACKSTOP = 10.0


class Measurement(reading):
    """A reading that is one SCPI query (the template's building block).

    *kind* is how the reply is parsed: ``"float"`` (the default), ``"int"``
    or ``"string"``; other options are those of :class:`~caioc.hw.reading`.
    """

    def __init__(self, query: str, value: Any = None, *, kind: str = "float", **options: Any):
        if kind not in _PARSERS:
            raise ValueError(f"a measurement is one of {sorted(_PARSERS)}, not {kind!r}")
        # Only a backstop: the port's reply timeout reports a silent instrument
        # first, and the time spent waiting for the lock must not count as one.
        options.setdefault("timeout", _BACKSTOP)
        super().__init__(_INITIAL[kind] if value is None else value, **options)
        self.query = query
        self.parse = _PARSERS[kind]
        self.read_function = self._read

    async def _read(self, device: SCPIInstrument) -> Any:
        # Under the lock: a query must not slip between a command and its error check.
        async with device.lock:
            reply = await device.ask(self.query)
        return self.parse(reply)


class Command(setting):
    """A setting that sends a SCPI command, then checks the error queue.

    *command* is a template with ``{value}`` (``"VOLT {value:.3f}"``); an
    enum setting sends the state's index (``"OUTP {value}"`` -> ``OUTP 1``).
    *query* reads the value back when the device (re)initialises.
    """

    def __init__(self, command: str, value: Any = 0.0, *, query: str | None = None, **options: Any):
        options.setdefault("timeout", _BACKSTOP)  # a write and an error-queue drain
        super().__init__(value, **options)
        if "{value" not in command:
            raise ValueError(f"a command template needs {{value}}: {command!r}")
        self.command = command
        self.query = query
        self.write_function = self._write

    async def _write(self, device: SCPIInstrument, value: Any) -> None:
        await device.command(self.command.format(value=_plain(value)))

    def parse(self, reply: str) -> Any:
        """The read-back *reply* as this setting's value."""
        if self.enum_strings:
            word = reply.strip().strip('"')
            for index, state in enumerate(self.enum_strings):
                if word.upper() == state.upper():
                    return index
            return parse_integer(word)
        if isinstance(self.value, str):
            return _fit(reply.strip())
        if isinstance(self.value, int):
            return parse_integer(reply)
        return parse_number(reply)


class SCPIInstrument(SerialInstrument):
    """A SCPI instrument on a serial port (see the module doc).

    *port* is a :class:`~caioc.hw.SerialPort` (shared: never closed here),
    a device path or pyserial URL (opened here with the *framing* options
    :class:`~caioc.hw.SerialPort` takes, and closed when the device
    closes), or a callable returning a new port at each (re)connection,
    which is how a board file's ``serial`` bus finds a USB adapter again
    under whatever name it comes back.

    *reset* is off by default: an IOC that restarts must not change what a
    running instrument does (``*RST`` turns a supply's output off).
    ``*CLS`` is on, so errors from before the IOC started are not reported
    as its own.
    """

    manufacturer = pvproperty("", read_only=True, doc="*IDN? manufacturer")
    model = pvproperty("", read_only=True, doc="*IDN? model")
    serial_number = pvproperty("", read_only=True, doc="*IDN? serial number")
    firmware = pvproperty("", read_only=True, doc="*IDN? firmware version")
    scpi_error = reading("", period=1.0, timeout=_BACKSTOP, doc="The latest instrument error")
    scpi_error_count = pvproperty(0, read_only=True, doc="Errors read from the instrument")

    def __init__(
        self,
        prefix: str = "",
        *,
        port: PortSpec,
        expected_model: str = "",
        reset: bool = False,
        clear: bool = True,
        init_commands: Iterable[str] = (),
        max_error_reads: int = 20,
        **framing: Any,
    ) -> None:
        if max_error_reads < 1:
            raise ValueError("max_error_reads must be at least 1")
        self.expected_model = expected_model
        self.reset = reset
        self.clear = clear
        self.init_commands = list(init_commands)
        self.max_error_reads = max_error_reads
        self._lines: LineBinding | None = None
        #: Held for every exchange, so a command and its error check stay together.
        self.lock = asyncio.Lock()
        super().__init__(prefix, port=port, **framing)

    # -- talking to the instrument ------------------------------------------------------

    async def ask(self, query: str) -> str:
        """Send *query* and return the reply (take :attr:`lock` around sequences)."""
        return await self.port.query_async(query)

    async def send(self, command: str) -> None:
        """Send *command*, which has no reply."""
        await self.port.write_line_async(command)

    async def command(self, command: str) -> None:
        """Send *command* and raise :class:`SCPIError` if the instrument queued errors."""
        async with self.lock:
            await self.send(command)
            errors = await self.read_errors()
        if errors:
            raise SCPIError(errors, source=self.port.name)

    async def read_errors(self) -> list[tuple[int, str]]:
        """Drain the error queue (at most *max_error_reads* entries); hold :attr:`lock`.

        Errors found are published (``scpi_error``, ``scpi_error_count``).
        """
        errors = []
        for _ in range(self.max_error_reads):
            code, text = parse_error(await self.ask("SYST:ERR?"))
            if code == 0:
                break
            errors.append((code, text))
        if errors:
            await self.scpi_error_count.set(int(self.scpi_error_count.value) + len(errors))
            code, text = errors[-1]
            await self.post("scpi_error", _fit(f'{code},"{text}"'))
        return errors

    # -- the device lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        """Get the port (a new one at each connection unless one was given)."""
        if self._port is not None:
            return
        port = self.take_port()
        if any(isinstance(declared, line_reading) for _, declared in self._declared()):
            self._lines = LineBinding(self, port)
            await self._lines.start()

    async def close(self) -> None:
        """Let the port go (closed unless it was given as a SerialPort; idempotent)."""
        lines, self._lines = self._lines, None
        if lines is not None:
            await lines.stop()
        await self.release_port()

    async def probe(self) -> None:
        """``*IDN?``: publish the identity; another model than expected is CALC."""
        async with self.lock:
            identity = parse_identity(await self.ask("*IDN?"))
        for attribute, text in zip(Identity._fields, identity, strict=True):
            await getattr(self, attribute).set(_fit(text))
        expected = self.expected_model.strip()
        if expected and identity.model.upper() != expected.upper():
            await self.model.set_alarm(AlarmStatus.CALC, AlarmSeverity.INVALID)
            raise BadReply(f"model {identity.model!r} is not the expected {expected!r}")

    async def initialise(self) -> None:
        """Reset/clear as configured, send the init commands, read settings back."""
        async with self.lock:
            if self.reset:
                await self.send("*RST")
                await self.ask("*OPC?")  # returns once the reset is complete
            if self.clear:
                await self.send("*CLS")
            await self.read_errors()  # left over from before: reported, not fatal
            for command in self.init_commands:
                await self.send(command)
            errors = await self.read_errors()
            if errors:
                raise SCPIError(errors, source=self.port.name)
            for attribute, declared in self._declared():
                if isinstance(declared, Command) and declared.query:
                    value = declared.parse(await self.ask(declared.query))
                    await self._channels[attribute].set(value)
        if self.scpi_error.alarm_status == AlarmStatus.UDF:
            await self.post("scpi_error", "")  # a known empty queue, not UDF

    @scpi_error.reader  # type: ignore[no-redef]
    async def scpi_error(self) -> str:
        async with self.lock:
            await self.read_errors()
        return str(self.scpi_error.value)

    # -- declaring quantities from configuration -----------------------------------------

    @classmethod
    def configured(
        cls,
        *,
        measurements: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
        period: float | None = None,
        error_poll_period: float | None = 1.0,
    ) -> type[SCPIInstrument]:
        """A subclass with more quantities, as a board file declares them.

        *measurements* maps a PV name to a query (``"MEAS:VOLT?"``) or a table
        with ``query`` and any of ``units``, ``precision``, ``period``,
        ``timeout``, ``type`` ("float", "int", "string"), ``low``/``high``
        (display limits), ``doc`` and the pvproperty limit options.
        *settings* maps a PV name to a command template (``"VOLT {value}"``)
        or a table with ``command`` and any of ``query`` (read back at
        initialise), ``units``, ``precision``, ``low``/``high`` (control
        limits: puts are clamped to them), ``enum`` (state names; the
        command gets the index), ``type`` ("float", "int", "string"),
        ``doc``, ``timeout``. *period* is every measurement's default poll
        period (the class's own measurements too); *error_poll_period* is
        how often the error queue is read (0 or None: after settings only).
        """
        attributes: dict[str, Any] = {}
        taken = {name for name, _ in cls._declared()} | set(dir(cls)) | set(cls.RESERVED)
        taken |= _INSTANCE_ATTRIBUTES
        for name, spec in (measurements or {}).items():
            _check_name(cls, name, taken)
            attributes[name] = _measurement(name, spec, 1.0 if period is None else period)
        for name, spec in (settings or {}).items():
            _check_name(cls, name, taken)
            if name in attributes:
                raise ValueError(f"{name!r} is both a measurement and a setting")
            attributes[name] = _command(name, spec)
        for name, declared in cls._declared():
            if isinstance(declared, Measurement) and period is not None and name not in attributes:
                attributes[name] = _with_period(declared, period)
        poll = error_poll_period if error_poll_period else None
        if poll != cls.scpi_error.period:
            attributes["scpi_error"] = _with_period(cls.scpi_error, poll)
        return type(cls.__name__, (cls,), attributes)


# -- building quantities from a board file's tables ---------------------------------------------

#: What SCPIInstrument.__init__ sets on the instance; a PV may not take these names.
_INSTANCE_ATTRIBUTES = {
    "port_spec",
    "framing",
    "expected_model",
    "reset",
    "clear",
    "init_commands",
    "max_error_reads",
    "lock",
    "macros",
}


def _check_name(cls: type[SCPIInstrument], name: str, taken: set[str]) -> None:
    declared = cls._declared_map().get(name)
    if isinstance(declared, (Measurement, Command)):
        return  # a board file may redefine the template's own quantities
    check_quantity_name(cls, name, taken)


def _split(name: str, spec: Any, main: str, known: set[str]) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if not isinstance(spec, Mapping) or not isinstance(spec.get(main), str):
        raise ValueError(f'{name}: give "..." or a table with {main} = "..."')
    unknown = set(spec) - known - {main}
    if unknown:
        raise ValueError(f"{name}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    return spec[main], {key: value for key, value in spec.items() if key != main}


def _measurement(name: str, spec: Any, period: float) -> Measurement:
    known = PV_OPTIONS | {"period", "timeout", "type", "low", "high", "doc"}
    query, options = _split(name, spec, "query", known)
    if "low" in options:
        options["lower_disp_limit"] = options.pop("low")
    if "high" in options:
        options["upper_disp_limit"] = options.pop("high")
    kind = options.pop("type", "float")
    options.setdefault("period", period)
    options.setdefault("doc", query)
    return Measurement(query, kind=kind, **options)


def _command(name: str, spec: Any) -> Command:
    known = PV_OPTIONS | {"query", "timeout", "type", "low", "high", "enum", "doc"}
    template, options = _split(name, spec, "command", known)
    if "low" in options:
        options["lower_ctrl_limit"] = options["lower_disp_limit"] = options.pop("low")
    if "high" in options:
        options["upper_ctrl_limit"] = options["upper_disp_limit"] = options.pop("high")
    kind = options.pop("type", "float")
    if kind not in _INITIAL:
        raise ValueError(f"{name}: type is one of {sorted(_INITIAL)}, not {kind!r}")
    enum = options.pop("enum", None)
    options.setdefault("doc", template)
    if enum is not None:
        return Command(template, 0, enum_strings=[str(state) for state in enum], **options)
    return Command(template, _INITIAL[kind], **options)


def _with_period(declared: reading, period: float | None) -> reading:
    polled = copy.copy(declared)
    polled.period = None if period is None else float(period)
    if polled.period is not None and not polled.period > 0:
        raise ValueError(f"a poll period must be positive, not {period!r}")
    return polled


# -- the worked example: a bench power supply -----------------------------------------------------


class BenchPowerSupply(SCPIInstrument):
    """A single-output bench power supply: the template for a SCPI instrument.

    The commands are the SCPI standard ones most supplies accept (short
    forms of ``SOURce:VOLTage``, ``SOURce:CURRent``, ``OUTPut``,
    ``MEASure``); an instrument with other spellings subclasses this and
    redefines the quantities that differ.
    """

    voltage = Measurement("MEAS:VOLT?", units="V", precision=3, doc="Output voltage")
    current = Measurement("MEAS:CURR?", units="A", precision=4, doc="Output current")
    voltage_setpoint = Command(
        "VOLT {value:.3f}", query="VOLT?", units="V", precision=3, doc="Voltage setpoint"
    )
    current_limit = Command(
        "CURR {value:.3f}", query="CURR?", units="A", precision=3, doc="Current limit"
    )
    output = Command("OUTP {value}", 0, query="OUTP?", enum_strings=["Off", "On"], doc="Output")


# -- board files ------------------------------------------------------------------------------

#: Options SerialPort takes, as a board file may give them.
_FRAMING = (*FRAMING, "reply_timeout", "unsolicited")


def _make(
    cls: type[SCPIInstrument],
    *,
    prefix: str,
    bus: Any = None,
    address: int | str | None = None,
    period: float = 1.0,
    error_poll_period: float | None = 1.0,
    measurements: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    **options: Any,
) -> SCPIInstrument:
    framing = take_framing(options, _FRAMING)
    if not framing.get("unsolicited"):
        framing.pop("unsolicited", None)  # "" (TOML has no null): no pattern
    port = port_spec(bus, address, framing, what="a SCPI instrument")
    configured = cls.configured(
        measurements=measurements,
        settings=settings,
        period=period,
        error_poll_period=error_poll_period,
    )
    return configured(prefix, port=port, **options, **framing)


def make_scpi(*, prefix: str, **options: Any) -> SCPIInstrument:
    """A generic :class:`SCPIInstrument` with the measurements and settings of *options*."""
    return _make(SCPIInstrument, prefix=prefix, **options)


def make_scpi_power_supply(*, prefix: str, **options: Any) -> SCPIInstrument:
    """A :class:`BenchPowerSupply` (board-file options as :func:`make_scpi`)."""
    return _make(BenchPowerSupply, prefix=prefix, **options)


def simulate_scpi(*, address: int | str | None = None, **options: Any) -> SimulatedPowerSupply:
    """A simulated bench power supply answering the options' queries (see ``_sim_scpi``)."""
    return simulate(address, **options)


_OPTIONS: dict[str, Any] = {
    "period": 1.0,
    "error_poll_period": 1.0,
    "expected_model": "",
    "reset": False,
    "clear": True,
    "init_commands": [],
    "max_error_reads": 20,
    **FRAMING_DEFAULTS,
    "reply_timeout": 1.0,
    "unsolicited": "",
}

register(
    DriverInfo(
        name="scpi",
        summary=(
            'SCPI instrument on bus "serial" (address: the port, a path, usb:VID:PID or URL):'
            " *IDN?, error queue, declared measurements and settings"
        ),
        bus="serial",
        factory=make_scpi,
        simulator=simulate_scpi,
        options={**_OPTIONS, "measurements": {}, "settings": {}},
    )
)
register(
    DriverInfo(
        name="scpi-psu",
        summary=(
            'SCPI bench power supply on bus "serial": voltage (V), current (A),'
            " voltage setpoint, current limit, output"
        ),
        bus="serial",
        factory=make_scpi_power_supply,
        simulator=simulate_scpi,
        options={**_OPTIONS, "measurements": {}, "settings": {}},
    )
)

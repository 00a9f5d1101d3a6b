"""``caioc-monitor``: print every update of PVs, as epics-base's ``camonitor``.

Same options (``camonitor -h``) and lines: ``name timestamp value`` and the
alarm status and severity when there is an alarm, ``*** disconnected`` when
a server goes away, ``*** Not connected (PV not found)`` for names not found
within ``-w`` seconds (they are still searched for). Runs until interrupted;
Ctrl-C ends it cleanly (it then dies of SIGINT, as a C program does).
Run as ``caioc-monitor`` or ``python -m caioc.cli.monitor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..ca import ECA, PRIORITY_MAX, SubscriptionMask
from ..client import Channel, Reading, Subscription
from ._common import (
    DEFAULT_TIMEOUT,
    FOREVER,
    Getopt,
    cli_timeout_from_environment,
    close_quietly,
    double_format,
    new_context,
    permute_operands,
    run_until_interrupted,
    scan_priority,
    scan_timeout,
    scan_uint,
    separator_of,
    setup_streams,
    version_text,
)
from ._format import IntFormat, Printer, PvState, Settings, TimeType, from_reading, time_type_of

__all__ = ["main"]

OPTSTRING = ":nhVm:sSe:f:g:l:#:0:w:t:p:F:"
_INT_FORMATS = {"x": IntFormat.HEX, "b": IntFormat.BIN, "o": IntFormat.OCT}
_MASK_LETTERS = {
    "v": SubscriptionMask.VALUE,
    "a": SubscriptionMask.ALARM,
    "l": SubscriptionMask.LOG,
    "p": SubscriptionMask.PROPERTY,
}
_DEFAULT_MASK = SubscriptionMask.VALUE | SubscriptionMask.ALARM

USAGE = """
Usage: camonitor [options] <PV name> ...

  -h:       Help: Print this message
  -V:       Version: Show EPICS and CA versions
Channel Access options:
  -w <sec>: Wait time, specifies CA timeout, default is {timeout:f} second(s)
  -m <msk>: Specify CA event mask to use.  <msk> is any combination of
            'v' (value), 'a' (alarm), 'l' (log/archive), 'p' (property).
            Default event mask is 'va'
  -p <pri>: CA priority (0-{prio}, default 0=lowest)
Timestamps:
  Default:  Print absolute timestamps (as reported by CA server)
  -t <key>: Specify timestamp source(s) and type, with <key> containing
            's' = CA server (remote) timestamps
            'c' = CA client (local) timestamps (shown in '()'s)
            'n' = no timestamps
            'r' = relative timestamps (time elapsed since start of program)
            'i' = incremental timestamps (time elapsed since last update)
            'I' = incremental timestamps (time since last update, by channel)
            'r', 'i' or 'I' require 's' or 'c' to select the time source
Enum format:
  -n:       Print DBF_ENUM values as number (default is enum string)
Array values: Print number of elements, then list of values
  Default:  Request and print all elements (dynamic arrays supported)
  -# <num>: Request and print up to <num> elements
  -S:       Print arrays of char as a string (long string)
Floating point format:
  Default:  Use %g format
  -e <num>: Use %e format, with a precision of <num> digits
  -f <num>: Use %f format, with a precision of <num> digits
  -g <num>: Use %g format, with a precision of <num> digits
  -s:       Get value as string (honors server-side precision)
  -lx:      Round to long integer and print as hex number
  -lo:      Round to long integer and print as octal number
  -lb:      Round to long integer and print as binary number
Integer number format:
  Default:  Print as decimal number
  -0x:      Print as hex number
  -0o:      Print as octal number
  -0b:      Print as binary number
Alternate output field separator:
  -F <ofs>: Use <ofs> to separate fields in output

Example: camonitor -f8 my_channel another_channel
  (doubles are printed as %f with precision of 8)

"""


def usage() -> None:
    """camonitor's help text, on stderr."""
    sys.stderr.write(USAGE.format(timeout=DEFAULT_TIMEOUT, prio=PRIORITY_MAX))


@dataclass
class Options:
    """What the command line asked for."""

    req_elems: int = 0
    mask: int = _DEFAULT_MASK
    float_as_string: bool = False
    timeout: float = DEFAULT_TIMEOUT
    priority: int = 0
    settings: Settings = field(default_factory=Settings)
    names: list[str] = field(default_factory=list)


_TS_LETTERS = {
    "r": TimeType.RELATIVE,
    "i": TimeType.INCREMENTAL,
    "I": TimeType.INCREMENTAL_BY_CHANNEL,
}


def _timestamps(settings: Settings, key: str) -> None:
    settings.ts_src_server = settings.ts_src_client = False
    for c in key:
        if c == "s":
            settings.ts_src_server = True
        elif c == "c":
            settings.ts_src_client = True
        elif c in _TS_LETTERS:
            settings.ts_type = _TS_LETTERS[c]
        elif c != "n":
            sys.stderr.write(f"Invalid argument '{c}' for option '-t' - ignored.\n")


def _mask(key: str) -> int:
    mask = 0
    for c in key:
        bit = _MASK_LETTERS.get(c)
        if bit is None:
            sys.stderr.write(f"Invalid argument '{key}' for option '-m' - ignored.\n")
            return _DEFAULT_MASK
        mask |= bit
    return mask


def parse(argv: Sequence[str]) -> Options | int:
    """The options of ``argv``, or the exit code when the tool is done already."""
    options = Options(timeout=cli_timeout_from_environment(DEFAULT_TIMEOUT))
    s = options.settings
    getopt = Getopt(argv, OPTSTRING, permute_operands())
    for opt, optarg in getopt:
        arg = optarg or ""
        if opt == "h":
            usage()
            return 0
        if opt == "V":
            sys.stdout.write(version_text())
            return 0
        if opt == "n":
            s.enum_as_nr = True
        elif opt == "t":
            _timestamps(s, arg)
        elif opt == "w":
            options.timeout = scan_timeout(arg, options.timeout, "camonitor")
        elif opt == "#":
            count = scan_uint(arg, bits=64)
            if count is None:
                sys.stderr.write(
                    f"'{arg}' is not a valid array element count - ignored. "
                    "('camonitor -h' for help.)\n"
                )
                count = 0
            options.req_elems = count
        elif opt == "p":
            options.priority = scan_priority(arg, "camonitor")
        elif opt == "m":
            options.mask = _mask(arg)
        elif opt == "s":
            options.float_as_string = True
        elif opt == "S":
            s.char_arr_as_str = True
        elif opt in "efg":
            s.dbl_format = double_format(opt, arg) or s.dbl_format
        elif opt in "l0":
            out_type = _INT_FORMATS.get(arg[:1])
            if out_type is None:
                sys.stderr.write(f"Invalid argument '{arg}' for option '-{opt}' - ignored.\n")
            elif opt == "0":
                s.out_type_i = out_type
            else:
                s.out_type_f = out_type
        elif opt == "F":
            s.field_separator = separator_of(arg)
        elif opt == "?":
            sys.stderr.write(f"Unrecognized option: '-{arg}'. ('camonitor -h' for help.)\n")
            return 1
        elif opt == ":":
            sys.stderr.write(f"Option '-{arg}' requires an argument. ('camonitor -h' for help.)\n")
            return 1
        else:
            usage()
            return 1
    options.names = getopt.operands
    if not options.names:
        sys.stderr.write("No pv name specified. ('camonitor -h' for help.)\n")
        return 1
    return options


class Monitor:
    """camonitor's connection and event handlers for one channel."""

    def __init__(self, options: Options, printer: Printer, channel: Channel, name: str) -> None:
        self.options = options
        self.printer = printer
        self.channel = channel
        self.pv = PvState(name)
        self.subscription: Subscription | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        #: Set when the tool shuts down: closing the channels is no news.
        self.closing = False

    def _print(self, line: str) -> None:
        sys.stdout.write(line)
        sys.stdout.flush()

    def on_event(self, reading: Reading) -> None:
        """event_handler: print an update with a normal status."""
        pv = self.pv
        pv.status = int(reading.status)
        if pv.status != ECA.NORMAL:
            return
        data = from_reading(reading)
        pv.dbr_type, pv.n_elems, pv.value = data.dbr_type, data.count, data
        self._print(self.printer.time_val_sts(pv, self.options.req_elems))
        pv.value = None

    def on_connection(self, channel: Channel, up: bool) -> None:
        """connection_handler: subscribe on the first connection, report losses."""
        pv = self.pv
        if self.closing:
            return
        if not up:
            pv.status = ECA.DISCONN
            self._print(self.printer.time_val_sts(pv, self.options.req_elems))
            return
        native = int(channel.native_type) if channel.native_type is not None else -1
        if pv.once_connected and pv.dbf_type != native and self.subscription is not None:
            self._spawn(self.subscription.clear())  # the type changed: subscribe anew
            self.subscription = None
        if self.subscription is None:
            pv.once_connected = True
            pv.dbf_type = native
            pv.dbr_type = time_type_of(native, self.options.settings, self.options.float_as_string)
            pv.n_elems = channel.native_count
            req = self.options.req_elems
            pv.req_elems = pv.n_elems if req > pv.n_elems else req
            self._spawn(self._subscribe(pv.dbr_type, pv.req_elems))

    async def _subscribe(self, dbr_type: int, count: int) -> None:
        self.subscription = await self.channel.subscribe(
            dbr_type, count, self.options.mask, callback=self.on_event
        )

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def camonitor(options: Options) -> int:
    """Subscribe to every name and print updates until cancelled."""
    context = new_context()
    monitors: list[Monitor] = []
    try:
        await context.start()
        printer = Printer(options.settings)
        for name in options.names:
            channel = context.channel(name, options.priority)
            monitor = Monitor(options, printer, channel, name)
            channel.add_connection_callback(monitor.on_connection)
            monitors.append(monitor)
        if options.timeout > 0:  # ca_pend_event(0) would wait forever
            await asyncio.sleep(options.timeout)
            for monitor in monitors:
                if not monitor.pv.once_connected:
                    monitor._print(printer.time_val_sts(monitor.pv, options.req_elems))
        while True:
            await asyncio.sleep(FOREVER)
    finally:
        for monitor in monitors:
            monitor.closing = True
            for task in list(monitor.tasks):
                task.cancel()
        await close_quietly(context)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``caioc-monitor`` command."""
    setup_streams()
    parsed = parse(sys.argv[1:] if argv is None else argv)
    if isinstance(parsed, int):
        return parsed
    with contextlib.suppress(BrokenPipeError):
        return run_until_interrupted(lambda: asyncio.run(camonitor(parsed)))
    return 1


if __name__ == "__main__":
    sys.exit(main())

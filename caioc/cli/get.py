"""``caioc-get``: read and print PVs, as epics-base's ``caget`` does.

Same options (``caget -h``), same output and exit codes: 1 when a channel
does not connect within ``-w`` seconds (nothing is read then, as in
epics-base 7), 0 otherwise. Run as ``caioc-get`` or ``python -m caioc.cli.get``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..ca import ECA, PRIORITY_MAX, ChannelType
from ..client import Channel, ClientError, ServerError
from ._common import (
    DEFAULT_TIMEOUT,
    Getopt,
    ca_wait,
    cli_timeout_from_environment,
    close_quietly,
    double_format,
    new_context,
    permute_operands,
    run_until_interrupted,
    scan_int,
    scan_priority,
    scan_timeout,
    separator_of,
    setup_streams,
    version_text,
    wait_connected,
)
from ._format import (
    DbrValue,
    IntFormat,
    Printer,
    PvState,
    Settings,
    char_string,
    dbf_type_to_text,
    dbr2str,
    dbr_text_to_type,
    dbr_type_to_text,
    eca_message,
    format_plain,
    format_stamp,
    from_reading,
    is_char_type,
    stamp_of,
    time_type_of,
    val2str,
    zero_value,
)

__all__ = ["main"]

OPTSTRING = ":taicnhsSVe:f:g:l:#:d:0:w:p:F:"
PEND_EVENT_SLICES = 5
_INT_FORMATS = {"x": IntFormat.HEX, "b": IntFormat.BIN, "o": IntFormat.OCT}

USAGE = """
Usage: caget [options] <PV name> ...

  -h: Help: Print this message
  -V: Version: Show EPICS and CA versions
Channel Access options:
  -w <sec>: Wait time, specifies CA timeout, default is {timeout:f} second(s)
  -c: Asynchronous get (use ca_get_callback and wait for completion)
  -p <prio>: CA priority (0-{prio}, default 0=lowest)
Format options:
      Default output format is "name value"
  -t: Terse mode - print only value, without name
  -a: Wide mode "name timestamp value stat sevr" (read PVs as DBR_TIME_xxx)
  -d <type>: Request specific dbr type; use string (DBR_ prefix may be omitted)
      or number of one of the following types:
 DBR_STRING     0  DBR_STS_FLOAT    9  DBR_TIME_LONG   19  DBR_CTRL_SHORT    29
 DBR_INT        1  DBR_STS_ENUM    10  DBR_TIME_DOUBLE 20  DBR_CTRL_INT      29
 DBR_SHORT      1  DBR_STS_CHAR    11  DBR_GR_STRING   21  DBR_CTRL_FLOAT    30
 DBR_FLOAT      2  DBR_STS_LONG    12  DBR_GR_SHORT    22  DBR_CTRL_ENUM     31
 DBR_ENUM       3  DBR_STS_DOUBLE  13  DBR_GR_INT      22  DBR_CTRL_CHAR     32
 DBR_CHAR       4  DBR_TIME_STRING 14  DBR_GR_FLOAT    23  DBR_CTRL_LONG     33
 DBR_LONG       5  DBR_TIME_INT    15  DBR_GR_ENUM     24  DBR_CTRL_DOUBLE   34
 DBR_DOUBLE     6  DBR_TIME_SHORT  15  DBR_GR_CHAR     25  DBR_STSACK_STRING 37
 DBR_STS_STRING 7  DBR_TIME_FLOAT  16  DBR_GR_LONG     26  DBR_CLASS_NAME    38
 DBR_STS_SHORT  8  DBR_TIME_ENUM   17  DBR_GR_DOUBLE   27
 DBR_STS_INT    8  DBR_TIME_CHAR   18  DBR_CTRL_STRING 28
Enum format:
  -n: Print DBF_ENUM value as number (default is enum string)
Arrays: Value format: print number of requested values, then list of values
  Default:    Print all values
  -# <count>: Print first <count> elements of an array
  -S:         Print array of char as a string (long string)
Floating point type format:
  Default: Use %g format
  -e <nr>: Use %e format, with a precision of <nr> digits
  -f <nr>: Use %f format, with a precision of <nr> digits
  -g <nr>: Use %g format, with a precision of <nr> digits
  -s:      Get value as string (honors server-side precision)
  -lx:     Round to long integer and print as hex number
  -lo:     Round to long integer and print as octal number
  -lb:     Round to long integer and print as binary number
Integer number format:
  Default: Print as decimal number
  -0x: Print as hex number
  -0o: Print as octal number
  -0b: Print as binary number
Alternate output field separator:
  -F <ofs>: Use <ofs> as an alternate output field separator

Example: caget -a -f8 my_channel another_channel
  (uses wide output format, doubles are printed as %f with precision of 8)

"""


def usage() -> None:
    """caget's help text, on stderr."""
    sys.stderr.write(USAGE.format(timeout=DEFAULT_TIMEOUT, prio=PRIORITY_MAX))


@dataclass
class Options:
    """What the command line asked for."""

    format: str = "plain"  # plain, terse, all, specifiedDbr
    callback: bool = False
    dbr_type: int = -1
    count: int = 0
    float_as_string: bool = False
    timeout: float = DEFAULT_TIMEOUT
    priority: int = 0
    settings: Settings = field(default_factory=Settings)
    names: list[str] = field(default_factory=list)


def _set_format(options: Options, requested: str) -> None:
    if options.format != "plain":
        sys.stderr.write("Options t,d,a are mutually exclusive. ('caget -h' for help.)\n")
    options.format = requested


def _parse_type(optarg: str) -> int:
    number = scan_int(optarg)
    if number is not None:
        return number
    dbr_type = dbr_text_to_type(optarg)
    if dbr_type == -1:
        dbr_type = dbr_text_to_type(("DBR_" + optarg[:25])[:29])
    return dbr_type


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
        if opt == "t":
            _set_format(options, "terse")
        elif opt == "a":
            _set_format(options, "all")
        elif opt == "c":
            options.callback = True
        elif opt == "d":
            _set_format(options, "specifiedDbr")
            options.dbr_type = _parse_type(arg)
            t = options.dbr_type
            if not 0 <= t <= ChannelType.CLASS_NAME or t in (35, 36):
                sys.stderr.write(
                    "Requested dbr type out of range or invalid - ignored. ('caget -h' for help.)\n"
                )
                options.format = "plain"
        elif opt == "n":
            s.enum_as_nr = True
        elif opt == "w":
            options.timeout = scan_timeout(arg, options.timeout, "caget")
        elif opt == "#":
            count = scan_int(arg)
            if count is None:
                sys.stderr.write(
                    f"'{arg}' is not a valid array element count - ignored. "
                    "('caget -h' for help.)\n"
                )
                count = 0
            options.count = count % (1 << 64)  # an unsigned long in caget()
        elif opt == "p":
            options.priority = scan_priority(arg, "caget")
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
                options.dbr_type = ChannelType.LONG
                s.out_type_i = out_type
            else:
                s.out_type_f = out_type
        elif opt == "F":
            s.field_separator = separator_of(arg)
        elif opt == "?":
            sys.stderr.write(f"Unrecognized option: '-{arg}'. ('caget -h' for help.)\n")
            return 1
        elif opt == ":":
            sys.stderr.write(f"Option '-{arg}' requires an argument. ('caget -h' for help.)\n")
            return 1
        else:  # in the option string but not handled (-i), as caget does
            usage()
            return 1
    options.names = getopt.operands
    if not options.names:
        sys.stderr.write("No pv name specified. ('caget -h' for help.)\n")
        return 1
    return options


async def _read(channel: Channel, dbr_type: int, count: int) -> DbrValue:
    reading = await channel.read(dbr_type, count, timeout=ca_wait(0))
    return from_reading(reading)


def _exception_report(pv: PvState, error: BaseException) -> str:
    """What libca's default exception handler says about a failed read."""
    status = error.eca if isinstance(error, ServerError) else ECA.DISCONN
    return (
        "CA.Client.Exception...............................................\n"
        f'    Warning: "{eca_message(status)}"\n'
        f'    Context: "channel={pv.name}, type={dbr_type_to_text(pv.dbr_type)}, '
        f'count={pv.n_elems}"\n'
        "..................................................................\n"
    )


async def _read_all(
    options: Options, pvs: list[PvState], channels: list[Channel], n_conn: int
) -> None:
    """Issue every read, then wait for all of them as ca_pend_io / ca_pend_event do."""
    tasks: dict[asyncio.Future[DbrValue], PvState] = {}
    for pv, channel in zip(pvs, channels, strict=True):
        if pv.status != ECA.NORMAL:
            continue
        # callback mode asks for min(count, native) (0: the current length)
        count = pv.req_elems if options.callback else pv.n_elems
        tasks[asyncio.ensure_future(_read(channel, pv.dbr_type, count))] = pv
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=ca_wait(options.timeout))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    n_read = 0
    for task, pv in tasks.items():
        error = None if task in pending else task.exception()
        if task in done and error is None:
            data = task.result()
            pv.dbr_type, pv.value = data.dbr_type, data
            if options.callback:
                pv.n_elems = data.count
            n_read += 1
        elif options.callback:
            if isinstance(error, ServerError):
                pv.status = error.eca
            elif isinstance(error, ClientError):
                pv.status = ECA.DISCONN
        else:  # a synchronous get leaves its zeroed buffer behind
            if error is not None:
                sys.stderr.write(_exception_report(pv, error))
            pv.value = zero_value(pv.dbr_type, pv.n_elems)
    if pending and not options.callback:  # ca_pend_io timed out
        sys.stderr.write("Read operation timed out: some PV data was not read.\n")
    if options.callback and n_read < n_conn and options.timeout != 0:
        # errors are not counted as read: caget waits out its timeout and says so
        sys.stderr.write("Read operation timed out: some PV data was not read.\n")


def _print_specified(pv: PvState, options: Options) -> str:
    s = options.settings
    out = f"{pv.name}\n"
    if pv.status == ECA.DISCONN:
        return out + "    *** not connected\n"
    if pv.status == ECA.NORDACCESS:
        return out + "    *** no read access\n"
    if pv.status != ECA.NORMAL:
        return out + f"    *** CA error {eca_message(pv.status)}\n"
    out += f"    Native data type: {dbf_type_to_text(pv.dbf_type)}\n"
    out += f"    Request type:     {dbr_type_to_text(pv.dbr_type)}\n"
    data = pv.value or zero_value(pv.dbr_type, pv.n_elems)
    if pv.dbr_type == ChannelType.CLASS_NAME:
        name = data.values[0] if data.values else b""
        return out + f"    Class Name:       {name.decode('utf-8', 'surrogateescape')}\n"
    out += f"    Element count:    {pv.n_elems}\n    Value:            "
    if s.char_arr_as_str and is_char_type(pv.dbr_type) and (options.count or pv.n_elems > 1):
        out += char_string(data)
    else:
        sep = s.field_separator
        out += sep.join(val2str(data, i, s) for i in range(pv.n_elems))
    out += "\n"
    if pv.dbr_type > ChannelType.DOUBLE:
        out += dbr2str(data, format_stamp(stamp_of(data.meta))) + "\n"
    return out


async def caget(options: Options) -> int:
    """Connect all channels as one batch, read them, print them; the exit code."""
    context = new_context()
    try:
        await context.start()
        channels = [context.channel(name, options.priority) for name in options.names]
        connected = await wait_connected(channels, options.timeout)
        if not all(connected):
            if len(channels) > 1:
                sys.stderr.write("Channel connect timed out: some PV(s) not found.\n")
            else:
                sys.stderr.write(f"Channel connect timed out: '{options.names[0]}' not found.\n")
            return 1
        pvs = [PvState(name) for name in options.names]
        n_conn = 0
        for pv, channel in zip(pvs, channels, strict=True):
            native = int(channel.native_type) if channel.native_type is not None else -1
            n_elems = channel.native_count
            pv.dbf_type = native
            pv.dbr_type = options.dbr_type
            if options.format != "specifiedDbr":
                pv.dbr_type = time_type_of(native, options.settings, options.float_as_string)
            if not channel.connected.is_set():
                pv.status = ECA.DISCONN
                continue
            n_conn += 1
            pv.once_connected = True
            if options.callback:
                pv.req_elems = min(options.count, n_elems)
            else:
                count = options.count
                pv.n_elems = count if count and count < n_elems else n_elems
            if not channel.access_rights & 1:
                pv.status = ECA.NORDACCESS
        if not n_conn:
            return 1
        await _read_all(options, pvs, channels, n_conn)
        printer = Printer(options.settings)
        out = []
        for pv in pvs:
            if options.format in ("plain", "terse"):
                out.append(
                    format_plain(pv, options.count, options.settings, options.format == "plain")
                )
            elif options.format == "all":
                out.append(printer.time_val_sts(pv, options.count))
            else:
                out.append(_print_specified(pv, options))
        sys.stdout.write("".join(out))
        return 0
    finally:
        await close_quietly(context)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``caioc-get`` command."""
    setup_streams()
    parsed = parse(sys.argv[1:] if argv is None else argv)
    if isinstance(parsed, int):
        return parsed
    return run_until_interrupted(lambda: asyncio.run(caget(parsed)))


if __name__ == "__main__":
    sys.exit(main())

"""``caioc-put``: write a PV and print its old and new values, as epics-base's ``caput``.

Same options (``caput -h``), output (``Old : ``/``New : `` lines, ``-t``
values only, ``-l`` wide lines) and exit codes (1 when the channel does not
connect, an enum value is invalid or the put fails). Options end at the
PV name (caput sets POSIXLY_CORRECT), so negative values need no ``--``.
Run as ``caioc-put`` or ``python -m caioc.cli.put``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..ca import ECA, PRIORITY_MAX, ChannelType
from ..client import Channel, ChannelTimeout, ClientError, ServerError
from ._common import (
    DEFAULT_TIMEOUT,
    Getopt,
    ca_wait,
    cli_timeout_from_environment,
    close_quietly,
    epics_strtod,
    new_context,
    raw_from_escaped,
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
    Printer,
    PvState,
    Settings,
    eca_message,
    format_plain,
    from_reading,
    time_type_of,
    zero_value,
)

__all__ = ["main"]

OPTSTRING = ":cnlhatsVS#:w:p:F:"
MAX_STRING_SIZE = 40

USAGE = """
Usage: caput [options] <PV name> <PV value> ...
       caput -a [options] <PV name> <no of values> <PV value> ...

  -h: Help: Print this message
  -V: Version: Show EPICS and CA versions
Channel Access options:
  -w <sec>:  Wait time, specifies CA timeout, default is {timeout:f} second(s)
  -c: Asynchronous put (use ca_put_callback and wait for completion)
  -p <prio>: CA priority (0-{prio}, default 0=lowest)
Format options:
  -t: Terse mode - print only sucessfully written value, without name
  -l: Long mode "name timestamp value stat sevr" (read PVs as DBR_TIME_xxx)
Enum format:
  Default: Auto - try value as ENUM string, then as index number
  -n: Force interpretation of values as numbers
  -s: Force interpretation of values as strings
Arrays:
  Default: Put scalar
      Value format: all value arguments concatenated with spaces
  -S: Put string as an array of chars (long string)
  -a: Put array
      Value format: number of values, then list of values
Alternate output field separator:
  -F <ofs>: Use <ofs> as an alternate output field separator

Example: caput my_channel 1.2
  (puts 1.2 to my_channel)

"""


def usage() -> None:
    """caput's help text, on stderr."""
    sys.stderr.write(USAGE.format(timeout=DEFAULT_TIMEOUT, prio=PRIORITY_MAX))


@dataclass
class Options:
    """What the command line asked for."""

    format: str = "plain"  # plain, terse, all
    callback: bool = False
    is_array: bool = False
    enum_as_string: bool = False
    timeout: float = DEFAULT_TIMEOUT
    priority: int = 0
    settings: Settings = field(default_factory=Settings)
    name: str = ""
    values: list[str] = field(default_factory=list)


def parse(argv: Sequence[str]) -> Options | int:
    """The options of ``argv``, or the exit code when the tool is done already."""
    options = Options(timeout=cli_timeout_from_environment(DEFAULT_TIMEOUT))
    s = options.settings
    getopt = Getopt(argv, OPTSTRING, permute=False)  # caput sets POSIXLY_CORRECT
    for opt, optarg in getopt:
        arg = optarg or ""
        if opt == "h":
            usage()
            return 0
        if opt == "V":
            sys.stdout.write(version_text())
            return 0
        if opt == "n":
            s.enum_as_nr, options.enum_as_string = True, False
        elif opt == "s":
            s.enum_as_nr, options.enum_as_string = False, True
        elif opt == "S":
            s.char_arr_as_str, options.is_array = True, False
        elif opt == "t":
            options.format = "terse"
        elif opt == "l":
            options.format = "all"
        elif opt == "a":
            options.is_array, s.char_arr_as_str = True, False
        elif opt == "c":
            options.callback = True
        elif opt == "w":
            options.timeout = scan_timeout(arg, options.timeout, "caput")
        elif opt == "#":  # accepted, then overridden by the values given (as caput)
            if scan_int(arg) is None:
                sys.stderr.write(
                    f"'{arg}' is not a valid array element count - ignored. "
                    "('caput -h' for help.)\n"
                )
        elif opt == "p":
            options.priority = scan_priority(arg, "caput")
        elif opt == "F":
            s.field_separator = separator_of(arg)
        elif opt == "?":
            sys.stderr.write(f"Unrecognized option: '-{arg}'. ('caput -h' for help.)\n")
            return 1
        elif opt == ":":
            sys.stderr.write(f"Option '-{arg}' requires an argument. ('caput -h' for help.)\n")
            return 1
        else:
            usage()
            return 1
    operands = getopt.operands
    if not operands:
        sys.stderr.write("No pv name specified. ('caput -h' for help.)\n")
        return 1
    if len(operands) == 1:
        sys.stderr.write("No value specified. ('caput -h' for help.)\n")
        return 1
    options.name, options.values = operands[0], operands[1:]
    return options


async def readback(options: Options, pv: PvState, channel: Channel, printer: Printer) -> int:
    """caput's own caget: read the whole value as DBR_TIME_xxx and print it."""
    s = options.settings
    native = int(channel.native_type) if channel.native_type is not None else -1
    pv.n_elems = pv.req_elems = channel.native_count
    pv.dbf_type = native
    pv.dbr_type = time_type_of(native, s, float_as_string=False)
    pv.value = None
    if not channel.connected.is_set():
        pv.status = ECA.DISCONN
        return 1
    pv.once_connected = True
    pv.status = ECA.NORMAL if channel.access_rights & 1 else ECA.NORDACCESS
    if pv.status == ECA.NORMAL:
        try:
            reading = await channel.read(
                pv.dbr_type, pv.req_elems, timeout=ca_wait(options.timeout)
            )
            pv.value = from_reading(reading)
        except ChannelTimeout:
            sys.stderr.write("Read operation timed out: PV data was not read.\n")
        except ClientError:
            pass  # libca reports the failed get; its buffer stays zeroed
        if pv.value is None:
            pv.value = zero_value(pv.dbr_type, pv.req_elems)
    if options.format == "all":
        line = printer.time_val_sts(pv, 0)
    else:
        line = format_plain(pv, 0, s, options.format == "plain", pad_elems=pv.req_elems)
    sys.stdout.write(line)
    return 0


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


async def _enum_request(
    options: Options, channel: Channel, values: list[str]
) -> tuple[int, Any] | int:
    """(DBR type, data) of the values for an ENUM channel, or an exit code."""
    try:
        reading = await channel.read(ChannelType.GR_ENUM, 1, timeout=ca_wait(options.timeout))
        states = [s.encode("utf-8", "surrogateescape") for s in reading.metadata.get("strs", [])]
        no_str = int(reading.metadata.get("no_str", len(states)))
    except ChannelTimeout:
        sys.stderr.write("Read operation timed out: ENUM data was not read.\n")
        return 1
    except ClientError:
        states, no_str = [], 0
    numbers = [0.0] * len(values)
    if options.settings.enum_as_nr:
        for i, value in enumerate(values):
            number = epics_strtod(value)
            if number is None:
                sys.stderr.write(f"Enum index value '{value}' is not a number.\n")
                return 1
            if number >= no_str:
                sys.stderr.write(f"Warning: enum index value '{value}' may be too large.\n")
            numbers[i] = number
        return ChannelType.DOUBLE, numbers
    strings = []
    dbr_type = ChannelType.STRING
    for i, value in enumerate(values):
        raw = raw_from_escaped(value, MAX_STRING_SIZE, MAX_STRING_SIZE)
        strings.append(raw)
        dbr_type = ChannelType.STRING
        if raw in states[: max(no_str, 0)]:
            continue
        number = epics_strtod(raw.decode("latin-1"))
        if number is None or options.enum_as_string:
            sys.stderr.write(f"Enum string value '{_text(raw)}' invalid.\n")
            return 1
        if number >= no_str:
            sys.stderr.write(f"Warning: enum index value '{_text(raw)}' may be too large.\n")
        numbers[i] = number
        dbr_type = ChannelType.DOUBLE
    # as caput: the last value decides the type of the whole put
    return (dbr_type, strings) if dbr_type == ChannelType.STRING else (dbr_type, numbers)


def _plain_request(options: Options, values: list[str]) -> tuple[int, Any]:
    """(DBR type, data) of the values for a channel of another type."""
    if options.settings.char_arr_as_str:
        length = sum(len(os.fsencode(value)) + 1 for value in options.values)
        raw = raw_from_escaped(values[0], length, length - 1)
        return ChannelType.CHAR, raw + b"\0"
    return ChannelType.STRING, [
        raw_from_escaped(v, MAX_STRING_SIZE, MAX_STRING_SIZE) for v in values
    ]


def _count(data: Any) -> int:
    return len(data)


async def _put(options: Options, channel: Channel, dbr_type: int, data: Any) -> int:
    """Write; 0 when done, 1 (after the message caput prints) when not."""
    count = _count(data)
    if not channel.connected.is_set():
        status = ECA.DISCONN
    elif not channel.access_rights & 2:
        status = ECA.NOWTACCESS
    elif count == 0 or count > channel.native_count:
        status = ECA.BADCOUNT
    else:
        status = ECA.NORMAL
    if status != ECA.NORMAL:
        sys.stderr.write(f"Error from put operation: {eca_message(status)}\n")
        return 1
    value = data[0] if count == 1 and dbr_type != ChannelType.CHAR else data
    if not options.callback:
        try:
            await channel.write(value, dbr_type, wait=False, timeout=ca_wait(options.timeout))
        except ClientError as error:
            sys.stderr.write(f"Error from put operation: {error}\n")
            return 1
        return 0
    try:
        await channel.write(value, dbr_type, wait=True, timeout=max(options.timeout, 1e-3))
    except ChannelTimeout:
        sys.stderr.write("Write callback operation timed out\n")
    except ServerError as error:
        sys.stderr.write(f"Error occured writing data: {eca_message(error.eca)}\n")
        return 1
    except ClientError:
        sys.stderr.write(f"Error occured writing data: {ECA.DISCONN.message}\n")
        return 1
    return 0


async def caput(options: Options) -> int:
    """Connect, read the old value, write, read the new value; the exit code."""
    context = new_context()
    try:
        await context.start()
        channel = context.channel(options.name, options.priority)
        (connected,) = await wait_connected([channel], options.timeout)
        if not connected:
            sys.stderr.write(f"Channel connect timed out: '{options.name}' not found.\n")
            return 1
        if options.is_array:
            values = options.values[1:]  # the count given is ignored: the values count
        else:
            values = [" ".join(options.values)]
        if channel.native_type == ChannelType.ENUM:
            request = await _enum_request(options, channel, values)
            if isinstance(request, int):
                return request
        else:
            request = _plain_request(options, values)
        pv = PvState(options.name)
        printer = Printer(options.settings)
        if options.format != "terse":
            sys.stdout.write("Old : ")
            await readback(options, pv, channel, printer)
        if await _put(options, channel, *request):
            return 1
        if options.format != "terse":
            sys.stdout.write("New : ")
        return await readback(options, pv, channel, printer)
    finally:
        await close_quietly(context)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``caioc-put`` command."""
    setup_streams()
    parsed = parse(sys.argv[1:] if argv is None else argv)
    if isinstance(parsed, int):
        return parsed
    return run_until_interrupted(lambda: asyncio.run(caput(parsed)))


if __name__ == "__main__":
    sys.exit(main())

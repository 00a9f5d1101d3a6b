"""What caioc-get, -put and -monitor share: option parsing, C scanners, CA set-up.

The three tools mirror epics-base's ``caget``, ``caput`` and ``camonitor``
(``modules/ca/src/tools``), so their command lines are parsed as glibc's
``getopt`` parses them (:class:`Getopt`: combined flags such as ``-#5``,
``-lx``, ``-e3``, a leading ``:`` in the option string, permutation of
operands unless ``POSIXLY_CORRECT``), and numbers are read as ``sscanf``
and ``epicsScanDouble`` read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence

from .. import __version__
from ..ca import PRIORITY_MAX
from ..ca._convert import ConversionError, _strtod
from ..client import Channel, ClientConfig, Context

__all__ = [
    "DEFAULT_TIMEOUT",
    "FOREVER",
    "Getopt",
    "ca_wait",
    "cli_timeout_from_environment",
    "epics_strtod",
    "escaped_from_raw",
    "new_context",
    "permute_operands",
    "raw_from_escaped",
    "run_until_interrupted",
    "scan_double",
    "scan_int",
    "scan_priority",
    "scan_timeout",
    "scan_uint",
    "separator_of",
    "setup_streams",
    "version_text",
]

#: tool_lib.h DEFAULT_TIMEOUT: seconds to wait for connections and replies.
DEFAULT_TIMEOUT = 1.0
#: Stands for "no time limit" (a CA timeout of 0) where asyncio wants a number.
FOREVER = 10.0 * 365 * 86400


# --------------------------------------------------------------------------
# getopt


class Getopt:
    """glibc ``getopt(argc, argv, optstring)`` as an iterator of ``(opt, optarg)``.

    ``optstring`` starts with ``:`` as the epics tools' do: a missing
    argument yields ``(":", optopt)``, an unknown option ``("?", optopt)``,
    and nothing is printed here. Operands are collected in :attr:`operands`;
    with ``permute`` (glibc's default unless ``POSIXLY_CORRECT`` is set)
    options after operands are still parsed, otherwise the first operand
    ends the options. ``--`` always ends them.
    """

    def __init__(self, args: Sequence[str], optstring: str, permute: bool) -> None:
        self.args = list(args)
        self.optstring = optstring.lstrip(":+")
        self.permute = permute
        self.operands: list[str] = []

    def _takes_argument(self, opt: str) -> bool | None:
        index = self.optstring.find(opt)
        if index < 0 or opt == ":":
            return None
        return self.optstring[index + 1 : index + 2] == ":"

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        args = self.args
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                self.operands.extend(args[i:])
                return
            if not arg.startswith("-") or arg == "-":
                self.operands.append(arg)
                if not self.permute:
                    self.operands.extend(args[i:])
                    return
                continue
            j = 1
            while j < len(arg):
                opt = arg[j]
                j += 1
                takes = self._takes_argument(opt)
                if takes is None:
                    yield "?", opt
                elif not takes:
                    yield opt, None
                elif j < len(arg):
                    yield opt, arg[j:]
                    break
                elif i < len(args):
                    yield opt, args[i]
                    i += 1
                    break
                else:
                    yield ":", opt
                    break


def permute_operands() -> bool:
    """Whether glibc getopt permutes (it does unless POSIXLY_CORRECT is set)."""
    return "POSIXLY_CORRECT" not in os.environ


# --------------------------------------------------------------------------
# C number scanners

_SCANF_INT = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def scan_int(text: str) -> int | None:
    """``sscanf(text, "%d", &n)``: the leading decimal integer, or None."""
    m = _SCANF_INT.match(text)
    if m is None:
        return None
    value = int(m.group(1)) & 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


def scan_uint(text: str, bits: int = 32) -> int | None:
    """``sscanf(text, "%u")`` (or ``"%lu"`` with 64 bits): negatives wrap."""
    m = _SCANF_INT.match(text)
    if m is None:
        return None
    return int(m.group(1)) % (1 << bits)


def scan_double(text: str) -> float | None:
    """``epicsScanDouble``: a whole number text (blanks around it allowed), or None."""
    try:
        return _strtod(text, units=False)
    except ConversionError:
        return None


def epics_strtod(text: str) -> float | None:
    """``epicsStrtod(text, &end)``: the leading number, None when ``end == text``."""
    try:
        return _strtod(text, units=True)
    except ConversionError as error:
        if error.status == "noConversion":
            return None
        # glibc strtod still converts on ERANGE: +-HUGE_VAL or a tiny value
        return float("inf") if error.status == "overflow" else 0.0


def cli_timeout_from_environment(timeout: float) -> float:
    """tool_lib's use_ca_timeout_env: EPICS_CLI_TIMEOUT overrides the default."""
    text = os.environ.get("EPICS_CLI_TIMEOUT")
    if text is None:
        return timeout
    value = scan_double(text)
    if value is None:
        sys.stderr.write(
            f"'{text}' is not a valid timeout value (from 'EPICS_CLI_TIMEOUT' in the "
            "environment) - ignored. (use '-h' for help.)\n"
        )
        return DEFAULT_TIMEOUT
    return value


def scan_timeout(text: str, current: float, tool: str) -> float:
    """The ``-w`` option: a new timeout, or the current one with a complaint."""
    value = scan_double(text)
    if value is None:
        sys.stderr.write(
            f"'{text}' is not a valid timeout value - ignored, using '{current:.1f}'. "
            f"('{tool} -h' for help.)\n"
        )
        return current
    return value


def scan_priority(text: str, tool: str) -> int:
    """The ``-p`` option: a CA priority, clamped to 0-99."""
    value = scan_uint(text)
    if value is None:
        sys.stderr.write(
            f"'{text}' is not a valid CA priority - ignored. ('{tool} -h' for help.)\n"
        )
        value = 0
    return min(value, PRIORITY_MAX)


#: Digits -e/-f/-g accept (tool_lib.h VALID_DOUBLE_DIGITS).
VALID_DOUBLE_DIGITS = 18


def double_format(opt: str, arg: str) -> str | None:
    """The printf format of ``-e``/``-f``/``-g ARG``, or None (warned) when invalid."""
    digits = scan_int(arg)
    if digits is None:
        sys.stderr.write(f"Invalid precision argument '{arg}' for option '-{opt}' - ignored.\n")
        return None
    if not 0 <= digits <= VALID_DOUBLE_DIGITS:
        sys.stderr.write(f"Precision {digits} for option '-{opt}' out of range - ignored.\n")
        return None
    return f"%-.{digits}{opt}"


def separator_of(optarg: str) -> str:
    """The ``-F`` option: its first character (a NUL for an empty argument, as C)."""
    return optarg[0] if optarg else "\0"


# --------------------------------------------------------------------------
# Escapes (epicsString.c)

_ESCAPES = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}
_ESCAPES.update({0x5C: "\\\\", 0x27: "\\'", 0x22: '\\"', 0: "\\0"})
_UNESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "0": 0}
_HEX = "0123456789abcdefABCDEF"


def escaped_from_raw(raw: bytes) -> str:
    """epicsStrnEscapedFromRaw: C escapes for controls, ``\\xhh`` for other non-printables."""
    out = []
    for byte in raw:
        escape = _ESCAPES.get(byte)
        if escape is not None:
            out.append(escape)
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def raw_from_escaped(text: str | bytes, dstlen: int, srclen: int | None = None) -> bytes:
    """epicsStrnRawFromEscaped: the bytes ``text`` stands for, at most ``dstlen - 1``.

    Reads at most ``srclen`` source bytes and stops at a NUL, as C does.
    """
    src = text if isinstance(text, bytes) else os.fsencode(text)
    if srclen is not None:
        src = src[:srclen]
    out = bytearray()
    limit = dstlen - 1
    i = 0

    def put(byte: int) -> None:
        if len(out) < limit:
            out.append(byte)

    while i < len(src):
        c = src[i]
        i += 1
        if c == 0:
            break
        if c != 0x5C:
            put(c)
            continue
        if i >= len(src) or src[i] == 0:
            break
        c = src[i]
        i += 1
        letter = chr(c)
        if letter in _UNESCAPES:
            put(_UNESCAPES[letter])
        elif letter == "x":
            digits = 0
            value = 0
            while digits < 2 and i < len(src) and chr(src[i]) in _HEX:
                value = value << 4 | int(chr(src[i]), 16)
                i += 1
                digits += 1
            if digits == 0:
                if i >= len(src) or src[i] == 0:
                    break
                continue  # C: "goto input" with the non-hex character
            put(value)
        else:
            put(c)
    return bytes(out)


# --------------------------------------------------------------------------
# Streams, versions, contexts


def setup_streams() -> None:
    """stdout line buffered as the C tools set it; bytes kept through surrogates."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="surrogateescape", line_buffering=True)
    if hasattr(signal, "SIGPIPE"):
        # A closed pipe ends the tool quietly, as it ends a C program.
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def version_text() -> str:
    """The ``-V`` text: epics prints its base version and the CA protocol version."""
    return f"\nEPICS Version caioc {__version__}, CA Protocol version 4.13\n"


def new_context() -> Context:
    """A client context configured from the EPICS_CA_* environment."""
    return Context(ClientConfig.from_environment())


def ca_wait(timeout: float) -> float:
    """A CA timeout as asyncio wants it: 0 means wait without limit, as ca_pend_io(0)."""
    return FOREVER if timeout <= 0 else timeout


async def wait_connected(channels: Sequence[Channel], timeout: float) -> list[bool]:
    """ca_pend_io after ca_create_channel: wait until all connect or the time is up."""
    pending = [
        asyncio.ensure_future(channel.connected.wait())
        for channel in channels
        if not channel.connected.is_set()
    ]
    if pending:
        _, not_done = await asyncio.wait(pending, timeout=ca_wait(timeout))
        for task in not_done:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return [channel.connected.is_set() for channel in channels]


async def close_quietly(context: Context) -> None:
    """ca_context_destroy: close, bounded, whatever state the channels are in."""
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        await asyncio.wait_for(context.close(), 2.0)


def run_until_interrupted(main: Callable[[], int]) -> int:
    """Run ``main``; on Ctrl-C die of SIGINT after cleaning up, as a C tool does."""
    try:
        return main()
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        if hasattr(signal, "SIGINT") and hasattr(os, "kill"):
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        return 130

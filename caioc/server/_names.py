"""Channel names with field modifiers and filters, parsed as epics-base 7 does.

An IOC's CA server (rsrv over ``dbChannelCreate``) accepts more than a
record name::

    REC                       the VAL field
    REC.FIELD                 a field (REC. and REC.VAL are VAL)
    REC.FIELD$                a string field as a CHAR array (long strings)
    REC.FIELD[s:i:e]          the array filter shorthand: [s], [s:e], [s:i:e]
    REC.FIELD{"arr":{...}}    a JSON map of channel filters, applied in order

in that order (``REC.$[1:3]{"ts":{}}`` is legal). Array indices are
inclusive and may count from the end (-1 is the last element); an omitted
start is 0, an omitted end -1, an omitted increment 1. The JSON may be
JSON5 (bare keys, single quotes), as epics-base >= 7.0.8 accepts.

Filters (the ones of epics-base's ``filters.dbd``): ``arr`` (s, e, i),
``dbnd`` (d, m = "abs"/"rel", or the tags "abs"/"rel" with the deadband),
``ts`` (no options), ``dec`` (n >= 1), ``sync`` (m = before, first, last,
after, while, unless; s = a state name). Unknown filters, unknown options
and malformed specs make the name invalid, so the server neither answers
its search nor creates its channel, as an IOC does.

A caioc extension: with ``dotless=True`` the modifiers may follow a record
name without the dot (``REC$``, ``REC[2:5]``, ``REC{"ts":{}}``). epics-base
takes those for record names and does not find them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ._served import MODIFIER_START

__all__ = [
    "SYNC_MODES",
    "ArrayFilter",
    "ChannelName",
    "ChannelNameError",
    "DeadbandFilter",
    "DecimateFilter",
    "FilterSpec",
    "SyncFilter",
    "TimestampFilter",
    "parse_channel_name",
    "parse_filters",
]

#: The modes of the ``sync`` filter (sync.c).
SYNC_MODES = ("before", "first", "last", "after", "while", "unless")
_INT32 = (-(1 << 31), (1 << 31) - 1)
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ChannelNameError(ValueError):
    """A channel name whose field modifiers or filter specification is invalid."""


@dataclass(frozen=True)
class ArrayFilter:
    """``arr``: elements ``start``, ``start + increment`` ... up to ``end`` (inclusive)."""

    start: int = 0
    end: int = -1
    increment: int = 1

    def indices(self, length: int) -> tuple[int, int]:
        """(first index, element count) of this slice of ``length`` elements.

        epics-base's ``wrapArrayIndices``: negative indices count from the
        end, then both are clamped to the array.
        """
        start, end = self.start, self.end
        if start < 0:
            start += length
        start = min(max(start, 0), length)
        if end < 0:
            end += length
        end = min(max(end, 0), length - 1)
        if end < start:
            return start, 0
        return start, 1 + (end - start) // self.increment


@dataclass(frozen=True)
class DeadbandFilter:
    """``dbnd``: pass a monitor update only when the value moved by more than
    ``deadband`` (absolute) or ``deadband`` percent of the last sent value."""

    deadband: float = 0.0
    relative: bool = False


@dataclass(frozen=True)
class TimestampFilter:
    """``ts``: the timestamp becomes the server's time of the read or update."""


@dataclass(frozen=True)
class DecimateFilter:
    """``dec``: pass the first monitor update and then every ``n``-th."""

    n: int


@dataclass(frozen=True)
class SyncFilter:
    """``sync``: pass monitor updates according to the named state (see SYNC_MODES)."""

    mode: str
    state: str


FilterSpec = ArrayFilter | DeadbandFilter | TimestampFilter | DecimateFilter | SyncFilter


@dataclass(frozen=True)
class ChannelName:
    """A parsed channel name: which PV, which field, and how it is viewed."""

    #: The record (PV) name.
    record: str
    #: The field name; "" when the name gave none (which means VAL).
    field: str = ""
    #: The ``$`` modifier: a string served as a CHAR array.
    long_string: bool = False
    #: The filters in the order they apply (the ``[...]`` shorthand first).
    filters: tuple[FilterSpec, ...] = ()

    @property
    def pv_name(self) -> str:
        """The name to look up: the record for VAL, else ``record.FIELD``."""
        if self.field in ("", "VAL"):
            return self.record
        return f"{self.record}.{self.field}"

    @property
    def plain(self) -> bool:
        """True when neither ``$`` nor a filter decorates the channel."""
        return not self.long_string and not self.filters


def parse_channel_name(name: str, *, dotless: bool = True) -> ChannelName | None:
    """The parts of ``name``, or None for a bare record name.

    Raises :class:`ChannelNameError` when the modifiers are malformed. The
    sync filter's state is not checked here (states belong to a server).
    """
    found = MODIFIER_START.search(name)
    if found is None:
        return None
    if "." in name:
        dot = name.index(".")
        record, rest = name[:dot], name[dot + 1 :]
        match = _FIELD.match(rest)
        field = match.group() if match else ""
        rest = rest[len(field) :]
    elif dotless:
        record, rest = _split_dotless(name)
        field = ""
    else:
        return None
    if not record:
        raise ChannelNameError(f"no record name in {name!r}")
    long_string = rest.startswith("$")
    if long_string:
        rest = rest[1:]
    filters: list[FilterSpec] = []
    if rest.startswith("["):
        shorthand, rest = _parse_range(rest)
        filters.append(shorthand)
    if rest.startswith("{"):
        filters.extend(parse_filters(rest))
        rest = ""
    if rest:
        raise ChannelNameError(f"unexpected {rest!r} in channel name {name!r}")
    return ChannelName(record, field, long_string, tuple(filters))


def _split_dotless(name: str) -> tuple[str, str]:
    """(record, modifiers) of a name with no dot: the caioc extension."""
    cut = len(name)
    for mark in ("$", "{"):
        at = name.find(mark)
        if 0 <= at < cut:
            cut = at
    head = name[:cut]
    if head.endswith("]") and "[" in head:
        cut = head.rindex("[")
    return name[:cut], name[cut:]


# -- the [s:i:e] shorthand ------------------------------------------------------

_STRTOL = re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def _strtol(text: str) -> tuple[int | None, str]:
    """C ``strtol(text, &end, 0)``: (number or None if none, the rest)."""
    match = _STRTOL.match(text)
    if match is None:
        return None, text
    digits = match.group(2)
    if digits[:2] in ("0x", "0X"):
        value = int(digits, 16)
    elif digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    if match.group(1) == "-":
        value = -value
    value = min(max(value, _INT32[0]), _INT32[1])  # epicsInt32 as rsrv stores it
    return value, text[match.end() :]


def _parse_range(text: str) -> tuple[ArrayFilter, str]:
    """``[s]``, ``[s:e]`` or ``[s:i:e]`` at the start of ``text`` (dbChannel.c)."""
    start, rest = _strtol(text[1:])
    if rest.startswith("]") and start is not None:
        return ArrayFilter(start, start, 1), rest[1:]
    if not rest.startswith(":"):
        raise ChannelNameError(f"bad array range {text!r}")
    second, rest = _strtol(rest[1:])
    if rest.startswith("]"):
        end = -1 if second is None else second
        return ArrayFilter(start or 0, end, 1), rest[1:]
    if not rest.startswith(":"):
        raise ChannelNameError(f"bad array range {text!r}")
    end_value, rest = _strtol(rest[1:])
    if not rest.startswith("]"):
        raise ChannelNameError(f"bad array range {text!r}")
    increment = 1 if second is None or second <= 0 else second
    end = -1 if end_value is None else end_value
    return ArrayFilter(start or 0, end, increment), rest[1:]


# -- the JSON filter map --------------------------------------------------------


def parse_filters(text: str) -> tuple[FilterSpec, ...]:
    """The filters of a JSON (or JSON5) map such as ``{"arr":{"s":1},"ts":{}}``.

    The map's keys are filter names, in the order the filters apply; a
    name may repeat (two ``arr`` filters slice twice).
    """
    parser = _Json5(text)
    pairs = parser.document()
    return tuple(_make_filter(name, options) for name, options in pairs)


def _make_filter(name: str, options: Any) -> FilterSpec:
    if not isinstance(options, _Pairs):
        raise ChannelNameError(f"filter {name!r}: options must be a JSON map")
    items = dict(options)  # an option given twice: the last one counts
    known = _OPTIONS.get(name)
    if known is None:
        raise ChannelNameError(f"unknown channel filter {name!r}")
    unknown = set(items) - set(known)
    if unknown:
        raise ChannelNameError(f"filter {name!r}: unknown option(s) {sorted(unknown)}")
    if name == "arr":
        start = _int(items.get("s", 0), "arr", "s", convert=True)
        end = _int(items.get("e", -1), "arr", "e", convert=True)
        increment = _int(items.get("i", 1), "arr", "i", convert=True)
        return ArrayFilter(start, end, increment if increment > 0 else 1)
    if name == "dbnd":
        return _deadband(options)
    if name == "ts":
        return TimestampFilter()
    if name == "dec":
        if "n" not in items:
            raise ChannelNameError("filter 'dec' needs n")
        n = _int(items["n"], "dec", "n", convert=False)
        if n < 1:
            raise ChannelNameError(f"filter 'dec': n must be at least 1, not {n}")
        return DecimateFilter(n)
    mode, state = items.get("m"), items.get("s")
    if mode not in SYNC_MODES:
        raise ChannelNameError(f"filter 'sync': m must be one of {SYNC_MODES}, not {mode!r}")
    if not isinstance(state, str):
        raise ChannelNameError("filter 'sync' needs the state name s")
    return SyncFilter(mode, state)


_OPTIONS: dict[str, tuple[str, ...]] = {
    "arr": ("s", "e", "i"),
    "dbnd": ("d", "m", "abs", "rel"),
    "ts": (),
    "dec": ("n",),
    "sync": ("m", "s"),
}


def _deadband(options: _Pairs) -> DeadbandFilter:
    deadband, relative = 0.0, False
    for key, value in options:  # in order: a later "abs"/"rel"/"m" overrides
        if key == "m":
            if value not in ("abs", "rel"):
                raise ChannelNameError(f"filter 'dbnd': m must be 'abs' or 'rel', not {value!r}")
            relative = value == "rel"
        else:
            deadband = _float(value, "dbnd", key)
            if key != "d":
                relative = key == "rel"
    return DeadbandFilter(deadband, relative)


def _int(value: Any, name: str, key: str, *, convert: bool) -> int:
    """An integer option (chfInt32; ``convert`` also takes booleans, reals, text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif not convert:
        raise ChannelNameError(f"filter {name!r}: {key} must be an integer, not {value!r}")
    elif isinstance(value, bool) or (isinstance(value, float) and math.isfinite(value)):
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip(), 0)
        except ValueError:
            raise ChannelNameError(f"filter {name!r}: {key}={value!r} is not an integer") from None
    else:
        raise ChannelNameError(f"filter {name!r}: {key} must be an integer, not {value!r}")
    if not _INT32[0] <= number <= _INT32[1]:
        raise ChannelNameError(f"filter {name!r}: {key}={number} does not fit 32 bits")
    return number


def _float(value: Any, name: str, key: str) -> float:
    """A real option (chfDouble with conversion: numbers, booleans, numeric text)."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ChannelNameError(f"filter {name!r}: {key}={value!r} is not a number")


class _Pairs(list[tuple[str, Any]]):
    """A JSON map as its (key, value) pairs, in order, repeated keys kept."""


class _Json5:
    """A small JSON5 reader: maps come back as :class:`_Pairs`."""

    _SPACE = re.compile(r"(?:\s|//[^\n]*|/\*.*?\*/)*", re.S)
    _KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
    _NUMBER = re.compile(
        r"[+-]?(?:0[xX][0-9a-fA-F]+|Infinity|NaN|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    )
    _ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "0": "\0"}

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def error(self, what: str) -> ChannelNameError:
        return ChannelNameError(f"filter JSON: {what} at {self.text[self.at : self.at + 20]!r}")

    def skip(self) -> None:
        match = self._SPACE.match(self.text, self.at)
        self.at = match.end() if match else self.at

    def document(self) -> _Pairs:
        self.skip()
        if not self.text.startswith("{", self.at):
            raise self.error("expected a map")
        pairs = self.value()
        self.skip()
        if self.at != len(self.text):
            raise self.error("trailing text")
        return pairs

    def value(self) -> Any:
        self.skip()
        text, at = self.text, self.at
        char = text[at : at + 1]
        if char == "{":
            return _Pairs(self.sequence("}", self.pair))
        if char == "[":
            return self.sequence("]", self.value)
        if char in ("'", '"'):
            return self.string()
        for word, result in (("true", True), ("false", False), ("null", None)):
            if text.startswith(word, at):
                self.at += len(word)
                return result
        match = self._NUMBER.match(text, at)
        if match is None:
            raise self.error("expected a value")
        self.at = match.end()
        number = match.group()
        if "x" in number.lower():
            return int(number, 16)
        if any(c in number for c in ".eEIN"):
            return float(number)
        return int(number)

    def sequence(self, close: str, item: Any) -> list[Any]:
        self.at += 1
        out: list[Any] = []
        while True:
            self.skip()
            if self.text.startswith(close, self.at):
                self.at += 1
                return out
            out.append(item())
            self.skip()
            if self.text.startswith(",", self.at):
                self.at += 1
            elif not self.text.startswith(close, self.at):
                raise self.error(f"expected ',' or {close!r}")

    def pair(self) -> tuple[str, Any]:
        self.skip()
        if self.text[self.at : self.at + 1] in ("'", '"'):
            key = self.string()
        else:
            match = self._KEY.match(self.text, self.at)
            if match is None:
                raise self.error("expected a key")
            key, self.at = match.group(), match.end()
        self.skip()
        if not self.text.startswith(":", self.at):
            raise self.error("expected ':'")
        self.at += 1
        return key, self.value()

    def string(self) -> str:
        text = self.text
        quote = text[self.at]
        out: list[str] = []
        at = self.at + 1
        while at < len(text):
            char = text[at]
            if char == quote:
                self.at = at + 1
                return "".join(out)
            if char == "\\":
                code = text[at + 1 : at + 2]
                if code == "u":
                    try:
                        out.append(chr(int(text[at + 2 : at + 6], 16)))
                    except ValueError:
                        raise self.error("bad \\u escape") from None
                    at += 6
                    continue
                out.append(self._ESCAPES.get(code, code))
                at += 2
                continue
            out.append(char)
            at += 1
        self.at = at
        raise self.error("unterminated string")

"""EPICS database files (``.db``): parsed, their macros expanded, served as PVs.

``caioc softioc -d FILE.db -m P=x,R=y`` serves the records of a database
file the way epics-base's ``softIoc`` does, for the record types that hold
a value (ai, ao, bi, bo, mbbi, mbbo, longin, longout, int64in, int64out,
stringin, stringout, lsi, lso, waveform, aai, aao, and calc as a plain
value): each record is a PV with its fields (``.EGU``, ``.HIHI`` ...).
There is no record processing: links (INP, OUT, DOL, FLNK ...), periodic
SCAN and CALC expressions are not followed. A constant INP or DOL (a
number, or a JSON array for an array record) gives the initial value, as
it does in EPICS. Everything the file says that this does not do is
reported, by file, line, record and field: see :func:`load_database`.

The syntax is dbLoadRecords': ``record(TYPE, "NAME") { field(F, "V")
info(K, "V") alias("OTHER") }``, ``grecord``, top-level ``alias(NAME,
OTHER)``, ``include "FILE"``, ``#`` comments, and macros ``$(NAME)``,
``${NAME}``, ``$(NAME=default)`` (nested too), expanded before parsing.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _macros
from ..ca._constants import EPICS_EPOCH_OFFSET
from ..server._data import (
    ChannelChar,
    ChannelData,
    ChannelDouble,
    ChannelEnum,
    ChannelFloat,
    ChannelInteger,
    ChannelShort,
    ChannelString,
)
from ..server._data_alarms import AlarmSeverity, AlarmStatus
from ._fields import add_fields
from ._group import PVGroup

__all__ = [
    "DatabaseError",
    "DatabaseGroup",
    "Record",
    "expand_macros",
    "load_database",
    "parse_macros",
]


class DatabaseError(ValueError):
    """A database file that cannot be used: ``FILE:LINE: what is wrong``."""


@dataclass
class Record:
    """One ``record(...)`` of a database file, its macros expanded."""

    record_type: str
    name: str
    file: str
    line: int
    #: field name -> (value as written, line)
    fields: dict[str, tuple[str, int]] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    #: info name -> value (metadata for other tools: kept, not acted on)
    infos: dict[str, str] = field(default_factory=dict)


# -- macros -------------------------------------------------------------------


def parse_macros(text: str) -> dict[str, str]:
    """softIoc's ``-m`` argument, ``NAME=VALUE,NAME=VALUE`` (quotes allowed), as a dict."""
    macros: dict[str, str] = {}
    for part in _split_macro_list(text):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise DatabaseError(f"a macro is NAME=VALUE, not {part!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        macros[name] = value
    return macros


def _split_macro_list(text: str) -> Iterator[str]:
    """Split at commas outside quotes and outside $(...)."""
    depth, quote, start = 0, "", 0
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "({":
            depth += 1
        elif char in ")}":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            yield text[start:index]
            start = index + 1
    yield text[start:]


def expand_macros(text: str, macros: Mapping[str, str], where: str = "") -> str:
    """``text`` with every ``$(NAME)``, ``${NAME}`` and ``$(NAME=default)`` expanded.

    See :mod:`caioc._macros`; a macro that cannot be expanded is a
    :class:`DatabaseError` starting with ``where``.
    """
    try:
        return _macros.expand_macros(text, macros)
    except _macros.UndefinedMacro as error:
        raise DatabaseError(
            f"{where}macro $({error.name}) is undefined (give it with -m {error.name}=...)"
        ) from None
    except _macros.MacroError as error:
        raise DatabaseError(f"{where}{error}") from None


# -- the parser ------------------------------------------------------------------


_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n]+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*")
    | (?P<bare>[A-Za-z0-9_\-+:.\[\]<>;*/%&|^~!?@$]+)
    | (?P<punct>[(){},])
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'"}
_NOT_IN_A_DB = (
    "menu", "recordtype", "device", "driver", "registrar", "function", "variable", "breaktable",
)  # fmt: skip


@dataclass
class _Token:
    kind: str
    text: str
    line: int


class _Parser:
    def __init__(self, text: str, path: str, macros: Mapping[str, str], depth: int) -> None:
        self.path = path
        self.macros = macros
        self.depth = depth
        self.tokens = list(self._tokens(text))
        self.index = 0

    def _tokens(self, text: str) -> Iterator[_Token]:
        last = ""  # the previous token: after a comma, "{" or "[" opens a JSON value
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue  # a comment line: its macros need no definition
            line = expand_macros(line, self.macros, f"{self.path}:{number}: ")
            position = 0
            while position < len(line):
                if line[position] in "{[" and last == ",":
                    # a JSON value (a link: {const: 1.5}, [1, 2, 3]), kept as text
                    end = _matching_bracket(line, position)
                    if end < 0:
                        raise self._error(number, "a JSON value is not closed on its line")
                    yield _Token("json", line[position : end + 1], number)
                    last = "json"
                    position = end + 1
                    continue
                match = _TOKEN.match(line, position)
                if match is None:
                    raise self._error(number, f"unexpected character {line[position]!r}")
                kind = match.lastgroup or ""
                position = match.end()
                if kind in ("space", "comment"):
                    continue
                token = _Token(kind, match.group(), number)
                last = token.text
                yield token

    def _error(self, line: int, message: str) -> DatabaseError:
        return DatabaseError(f"{self.path}:{line}: {message}")

    def _peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _next(self, what: str) -> _Token:
        token = self._peek()
        if token is None:
            last = self.tokens[-1].line if self.tokens else 1
            raise self._error(last, f"the file ends where {what} was expected")
        self.index += 1
        return token

    def _expect(self, text: str) -> _Token:
        token = self._next(repr(text))
        if token.text != text:
            raise self._error(token.line, f"expected {text!r}, found {token.text!r}")
        return token

    def _value(self, what: str) -> str:
        token = self._next(what)
        if token.kind == "string":
            return _unquote(token.text)
        if token.kind in ("bare", "json"):
            return token.text
        raise self._error(token.line, f"expected {what}, found {token.text!r}")

    def parse(self, records: dict[str, Record], aliases: dict[str, str]) -> None:
        while (token := self._peek()) is not None:
            self.index += 1
            word = token.text
            if word in ("record", "grecord"):
                self._record(token, records, aliases)
            elif word == "alias":
                self._expect("(")
                target = self._value("a record name")
                self._expect(",")
                alias = self._value("an alias name")
                self._expect(")")
                if target not in records:
                    raise self._error(token.line, f"alias {alias!r}: no record {target!r}")
                _add_alias(records[target], alias, records, aliases, self._error(token.line, ""))
            elif word == "include":
                self._include(token, records, aliases)
            elif word in ("path", "addpath"):
                self._value("a path")  # for include: relative to the including file here
            elif word in _NOT_IN_A_DB:
                raise self._error(
                    token.line, f"{word}(...) belongs in a .dbd file, not a database file"
                )
            else:
                raise self._error(token.line, f"expected record(...), found {word!r}")

    def _record(self, start: _Token, records: dict[str, Record], aliases: dict[str, str]) -> None:
        self._expect("(")
        record_type = self._value("a record type")
        self._expect(",")
        name = self._value("a record name")
        self._expect(")")
        if not name:
            raise self._error(start.line, "a record needs a name")
        if name in aliases:
            raise self._error(start.line, f"record {name!r}: the name is an alias already")
        record = records.get(name)
        if record is None and record_type == "*":
            raise self._error(start.line, f"record(*, {name!r}): no such record to add to")
        if record is None:
            record = records[name] = Record(record_type, name, self.path, start.line)
        elif record_type not in ("*", record.record_type):
            raise self._error(
                start.line,
                f"record {name!r} is a {record.record_type} ({record.file}:{record.line}), "
                f"not a {record_type}",
            )
        token = self._peek()
        if token is None or token.text != "{":
            return
        self.index += 1
        while True:
            token = self._next("field(...) or '}'")
            if token.text == "}":
                return
            if token.text in ("field", "info"):
                self._expect("(")
                key = self._value(f"a {token.text} name")
                self._expect(",")
                value = self._value(f"the {token.text}'s value")
                self._expect(")")
                if token.text == "field":
                    record.fields[key] = (value, token.line)
                else:
                    record.infos[key] = value
            elif token.text == "alias":
                self._expect("(")
                alias = self._value("an alias name")
                self._expect(")")
                _add_alias(record, alias, records, aliases, self._error(token.line, ""))
            else:
                raise self._error(token.line, f"expected field(...), found {token.text!r}")

    def _include(self, start: _Token, records: dict[str, Record], aliases: dict[str, str]) -> None:
        name = self._value("a file name")
        if self.depth >= 20:
            raise self._error(start.line, "include nested more than 20 deep")
        path = os.path.join(os.path.dirname(self.path), name)
        _parse_file(
            path, self.macros, records, aliases, self.depth + 1, self._error(start.line, "")
        )


def _matching_bracket(line: str, start: int) -> int:
    depth, quote = 0, False
    for index in range(start, len(line)):
        char = line[index]
        if quote:
            if char == "\\":
                continue
            quote = char != '"'
        elif char == '"':
            quote = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index
    return -1


def _unquote(text: str) -> str:
    body = text[1:-1]
    if "\\" not in body:
        return body
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def _add_alias(
    record: Record,
    alias: str,
    records: dict[str, Record],
    aliases: dict[str, str],
    error: DatabaseError,
) -> None:
    if alias in records or alias in aliases:
        raise DatabaseError(f"{error}alias {alias!r}: the name is in use")
    aliases[alias] = record.name
    record.aliases.append(alias)


def _parse_file(
    path: str,
    macros: Mapping[str, str],
    records: dict[str, Record],
    aliases: dict[str, str],
    depth: int,
    where: DatabaseError | None = None,
) -> None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as file:
            text = file.read()
    except OSError as error:
        prefix = str(where) if where is not None else ""
        raise DatabaseError(
            f"{prefix}{path}: cannot read the database file: {error.strerror or error}"
        ) from None
    _Parser(text, path, macros, depth).parse(records, aliases)


def load_database(
    path: str | os.PathLike[str],
    macros: Mapping[str, str] | None = None,
    records: dict[str, Record] | None = None,
) -> list[Record]:
    """The records of the database file at ``path``, macros expanded.

    ``records``: those loaded from earlier files (softIoc's several
    ``-d``), which a record of the same name in this file adds fields to.
    Raises :class:`DatabaseError` (``FILE:LINE: what is wrong``) for a file
    that cannot be read or parsed, an undefined macro, a name used twice.
    """
    records = {} if records is None else records
    aliases = {alias: record.name for record in records.values() for alias in record.aliases}
    _parse_file(os.fspath(path), dict(macros or {}), records, aliases, 0)
    return list(records.values())


# -- records as PVs ---------------------------------------------------------------


#: Fields every record type here takes: what they do without processing.
_COMMON = {"DESC", "ASG", "SCAN", "PINI", "DTYP", "PHAS", "EVNT", "PRIO", "TSE", "TPRO", "DISV"}
_ANALOG = {"EGU", "PREC", "HOPR", "LOPR"}
_ALARMS = {"HIHI", "HIGH", "LOW", "LOLO", "HHSV", "HSV", "LSV", "LLSV", "HYST"}
_DEADBANDS = {"MDEL", "ADEL"}
_STATE_NAMES = (
    "ZR", "ON", "TW", "TH", "FR", "FV", "SX", "SV", "EI", "NI", "TE", "EL", "TV", "TT", "FT", "FF",
)  # fmt: skip
_MBB_FIELDS = {f"{p}{s}" for p in _STATE_NAMES for s in ("ST", "SV", "VL")} | {
    "NOBT",
    "SHFT",
    "MASK",
    "UNSV",
}
#: Link fields (INP, OUT, DOL, FLNK, SDIS, TSEL, SIML, SIOL, INPA ... OUTL, NVL ...).
_LINK = re.compile(r"INP[A-U]?|OUT[A-U]?|DOL\d?|FLNK|SDIS|TSEL|SIML|SIOL|LNK\d|NVL|DOL[A-U]|SELL")
#: FTVL of an array record -> (channel class, numpy dtype of its values).
_FTVL: dict[str, tuple[type[ChannelData], str]] = {
    "DOUBLE": (ChannelDouble, "f8"),
    "FLOAT": (ChannelFloat, "f4"),
    "LONG": (ChannelInteger, "i4"),
    "ULONG": (ChannelInteger, "i4"),
    "SHORT": (ChannelShort, "i2"),
    "USHORT": (ChannelShort, "i2"),
    "CHAR": (ChannelChar, "u1"),
    "UCHAR": (ChannelChar, "u1"),
    "INT64": (ChannelDouble, "f8"),
    "UINT64": (ChannelDouble, "f8"),
    "STRING": (ChannelString, "U40"),
}


@dataclass(frozen=True)
class _Kind:
    """How a record type is served: its channel class and the fields it takes."""

    channel: type[ChannelData] | None  # None: chosen by FTVL (arrays) or enum
    fields: frozenset[str]
    #: the field whose constant link gives the initial value
    init_link: str = "INP"
    #: DRVH/DRVL limit puts (ao, longout)
    drive_limits: bool = False


def _kind(
    channel: type[ChannelData] | None, *groups: set[str], link: str = "INP", drive: bool = False
) -> _Kind:
    fields = set(_COMMON).union(*groups) | {"VAL", link}
    if drive:
        fields |= {"DRVH", "DRVL", "OMSL"}
    return _Kind(channel, frozenset(fields), link, drive)


_KINDS: dict[str, _Kind] = {
    "ai": _kind(ChannelDouble, _ANALOG, _ALARMS, _DEADBANDS, {"LINR"}),
    "ao": _kind(ChannelDouble, _ANALOG, _ALARMS, _DEADBANDS, {"LINR"}, link="DOL", drive=True),
    "calc": _kind(ChannelDouble, _ANALOG, _ALARMS, _DEADBANDS, link="CALC"),
    "longin": _kind(ChannelInteger, _ANALOG - {"PREC"}, _ALARMS, _DEADBANDS),
    "longout": _kind(
        ChannelInteger, _ANALOG - {"PREC"}, _ALARMS, _DEADBANDS, link="DOL", drive=True
    ),
    "int64in": _kind(ChannelDouble, _ANALOG - {"PREC"}, _ALARMS, _DEADBANDS),
    "int64out": _kind(
        ChannelDouble, _ANALOG - {"PREC"}, _ALARMS, _DEADBANDS, link="DOL", drive=True
    ),
    "bi": _kind(ChannelEnum, {"ZNAM", "ONAM", "ZSV", "OSV"}),
    "bo": _kind(ChannelEnum, {"ZNAM", "ONAM", "ZSV", "OSV", "OMSL"}, link="DOL"),
    "mbbi": _kind(ChannelEnum, _MBB_FIELDS),
    "mbbo": _kind(ChannelEnum, _MBB_FIELDS | {"OMSL"}, link="DOL"),
    "stringin": _kind(ChannelString),
    "stringout": _kind(ChannelString, {"OMSL"}, link="DOL"),
    "lsi": _kind(ChannelChar, {"SIZV"}),
    "lso": _kind(ChannelChar, {"SIZV", "OMSL"}, link="DOL"),
    "waveform": _kind(None, _ANALOG, {"FTVL", "NELM"}),
    "aai": _kind(None, _ANALOG, {"FTVL", "NELM"}),
    "aao": _kind(None, _ANALOG, {"FTVL", "NELM"}, link="DOL"),
}
#: Record types served, in the order the docs list them.
RECORD_TYPES = tuple(_KINDS)
_SEVERITIES = {severity.name: severity for severity in AlarmSeverity}


class _Fields:
    """A record's fields, each taken once; what is left is reported."""

    def __init__(self, record: Record) -> None:
        self.record = record
        self.left = dict(record.fields)
        self.problems: list[str] = []

    def where(self, name: str | None = None) -> str:
        record = self.record
        line = record.line if name is None else record.fields[name][1]
        place = f"{record.file}:{line}: record {record.name!r} ({record.record_type})"
        return place if name is None else f"{place}: field {name}"

    def take(self, name: str, default: str = "") -> str:
        entry = self.left.pop(name, None)
        return default if entry is None else entry[0].strip()

    def has(self, name: str) -> bool:
        return name in self.left

    def number(self, name: str, default: float = 0.0) -> float:
        text = self.take(name)
        if not text:
            return default
        try:
            return float(text)
        except ValueError:
            self.problems.append(f"{self.where(name)}: {text!r} is not a number")
            return default

    def severity(self, name: str) -> AlarmSeverity:
        text = self.take(name)
        if not text:
            return AlarmSeverity.NO_ALARM
        try:
            return _SEVERITIES[text] if text in _SEVERITIES else AlarmSeverity(int(text))
        except ValueError:
            self.problems.append(f"{self.where(name)}: {text!r} is not an alarm severity")
            return AlarmSeverity.NO_ALARM

    def report(self, name: str, why: str) -> None:
        value = self.record.fields[name][0]
        self.problems.append(f"{self.where(name)}={value!r}: {why}")


def _constant(text: str) -> Any:
    """The value of a constant link (a number, a JSON array or {const: ...}), else None."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    if text[0] in "[{":
        try:
            value = json.loads(re.sub(r"([{,]\s*)([A-Za-z_]\w*)(\s*:)", r'\1"\2"\3', text))
        except ValueError:
            return None
        if isinstance(value, dict):
            return value.get("const") if set(value) == {"const"} else None
        return value
    return None


def _text_constant(text: str) -> str | None:
    """A string record's constant link: its text, or a JSON ``{const: ...}``'s value."""
    text = text.strip()
    if not text:
        return None
    if text[0] in "[{":
        value = _constant(text)
        if value is None or isinstance(value, list):
            return None
        return value if isinstance(value, str) else json.dumps(value)
    try:
        float(text)
    except ValueError:
        return None  # a record's name: a link, as in EPICS
    return text


def record_channel(record: Record) -> tuple[ChannelData | None, str, list[str]]:
    """The channel serving ``record``, its DESC, and what of it is not supported.

    What is not supported comes one line each; the channel is None (and the
    lines say why) for a record that cannot be served.
    """
    kind = _KINDS.get(record.record_type)
    fields = _Fields(record)
    if kind is None:
        supported = ", ".join(RECORD_TYPES)
        return None, "", [f"{fields.where()}: record type not supported (served: {supported})"]
    options: dict[str, Any] = {"record_type": record.record_type}
    pini = fields.record.fields.get("PINI", ("NO", 0))[0].strip() or "NO"
    if pini in ("NO", "0", "YES", "1"):
        fields.take("PINI")
    if pini not in ("YES", "1"):
        # Never processed, as in an IOC: STAT UDF; SEVR INVALID unless the
        # file gave VAL (its first put or PINI processes it, and clears that);
        # no time stamp yet (TIME replies carry 0: the EPICS epoch).
        options["timestamp"] = float(EPICS_EPOCH_OFFSET)
        options["alarm_status"] = AlarmStatus.UDF
        options["alarm_severity"] = (
            AlarmSeverity.NO_ALARM if fields.has("VAL") else AlarmSeverity.INVALID
        )
    _processing(fields)
    link_text = fields.take(kind.init_link) if fields.has(kind.init_link) else ""
    if kind.init_link == "CALC":
        initial = None
    elif kind.channel in (ChannelString, ChannelChar):
        initial = _text_constant(link_text)
    else:
        initial = _constant(link_text)
    if link_text and initial is None:
        if kind.init_link == "CALC":
            why = "CALC expressions are not evaluated: the record holds a plain value"
        else:
            why = "a link that is not a constant: links are not followed (no record processing)"
        fields.problems.append(f"{fields.where()}: field {kind.init_link}={link_text!r}: {why}")
    value_text = fields.take("VAL") if fields.has("VAL") else None
    channel_class = kind.channel
    rtype = record.record_type
    if rtype in ("waveform", "aai", "aao"):
        channel_class, value = _array(fields, initial, options)
    elif channel_class is ChannelEnum:
        value = _enum(fields, rtype, options, value_text, initial)
    elif channel_class is ChannelString:
        value = value_text if value_text is not None else ("" if initial is None else str(initial))
    elif channel_class is ChannelChar:  # lsi, lso: a long string as a CHAR array
        size = int(fields.number("SIZV", 41.0))
        value = value_text if value_text is not None else ("" if initial is None else str(initial))
        options["max_length"] = max(1, size)
        if len(value.encode()) + 1 > size:
            fields.problems.append(f"{fields.where()}: VAL is longer than SIZV={size}: cut")
            value = value.encode()[: size - 1].decode(errors="ignore")
    else:
        integer = rtype in _INTEGER_TYPES
        value = _number(fields, value_text, initial, channel_class is ChannelInteger)
        _analog(fields, kind, options, integer)
        assert channel_class is not None
        channel_class = _variant(channel_class, not kind.drive_limits, integer)
    desc = fields.take("DESC")
    asg = fields.take("ASG")
    for name in list(fields.left):
        if _LINK.fullmatch(name):
            fields.report(name, "links are not followed (no record processing)")
        elif name not in kind.fields:
            fields.report(name, f"not a field served for a {rtype} record here")
        else:
            fields.report(name, "not supported")
    assert channel_class is not None
    try:
        channel = channel_class(value=value, **options)
    except (TypeError, ValueError) as error:
        return None, "", [*fields.problems, f"{fields.where()}: cannot be served: {error}"]
    if asg:
        channel.access_group = asg
    return channel, desc, fields.problems


def _processing(fields: _Fields) -> None:
    """The fields about processing: accepted where they change nothing here."""
    for name, quiet in (
        ("SCAN", ("", "Passive")),
        ("DTYP", ("", "Soft Channel")),
        ("OMSL", ("", "supervisory")),
        ("LINR", ("", "NO CONVERSION")),
        ("PHAS", ("", "0")),
        ("PRIO", ("", "LOW", "MEDIUM", "HIGH")),
        ("EVNT", ("", "0")),
        ("TSE", ("", "0")),
        ("TPRO", ("", "0")),
        ("DISV", ("", "1")),
    ):
        if fields.has(name):
            text = fields.record.fields[name][0].strip()
            if text in quiet:
                fields.take(name)
            elif name == "SCAN":
                fields.report(name, "only Passive: there is no record processing")
                fields.take(name)
            elif name == "DTYP":
                fields.report(name, "only Soft Channel device support")
                fields.take(name)


def _number(fields: _Fields, text: str | None, initial: Any, integer: bool) -> float | int:
    source = text if text is not None else initial
    if source is None or source == "":
        return 0 if integer else 0.0
    try:
        number = float(source)
    except (TypeError, ValueError):
        fields.problems.append(f"{fields.where()}: VAL {source!r} is not a number")
        return 0 if integer else 0.0
    return int(number) if integer else number


def _analog(fields: _Fields, kind: _Kind, options: dict[str, Any], integer: bool) -> None:
    options["units"] = fields.take("EGU")
    if not integer and fields.has("PREC"):
        options["precision"] = int(fields.number("PREC"))
    options["upper_disp_limit"] = fields.number("HOPR")
    options["lower_disp_limit"] = fields.number("LOPR")
    for name, option in (
        ("HIHI", "upper_alarm_limit"),
        ("HIGH", "upper_warning_limit"),
        ("LOW", "lower_warning_limit"),
        ("LOLO", "lower_alarm_limit"),
    ):
        if fields.has(name) or integer:  # integer records' limits default to 0
            options[option] = fields.number(name)
    for name, option in (
        ("HHSV", "upper_alarm_severity"),
        ("HSV", "upper_warning_severity"),
        ("LSV", "lower_warning_severity"),
        ("LLSV", "lower_alarm_severity"),
    ):
        # EPICS: a limit alarms only with a severity (the fields default to NO_ALARM)
        options[option] = fields.severity(name)
    options["alarm_hysteresis"] = fields.number("HYST")
    options["monitor_deadband"] = fields.number("MDEL")
    options["archive_deadband"] = fields.number("ADEL")
    if kind.drive_limits:
        options["upper_ctrl_limit"] = fields.number("DRVH")
        options["lower_ctrl_limit"] = fields.number("DRVL")
    else:
        options["upper_ctrl_limit"] = options["upper_disp_limit"]
        options["lower_ctrl_limit"] = options["lower_disp_limit"]


def _enum(
    fields: _Fields, rtype: str, options: dict[str, Any], text: str | None, initial: Any
) -> int:
    if rtype in ("bi", "bo"):
        strings = [fields.take("ZNAM"), fields.take("ONAM")]
        severities = [fields.severity("ZSV"), fields.severity("OSV")]
    else:
        strings = [fields.take(f"{p}ST") for p in _STATE_NAMES]
        severities = [fields.severity(f"{p}SV") for p in _STATE_NAMES]
        for p in _STATE_NAMES:  # raw values: what device support reads, none here
            fields.take(f"{p}VL")
        for name in ("NOBT", "SHFT", "MASK"):
            fields.take(name)
        if fields.has("UNSV") and fields.take("UNSV") not in ("", "NO_ALARM"):
            fields.problems.append(f"{fields.where()}: field UNSV: not supported")
        used = max((i + 1 for i, s in enumerate(strings) if s), default=0)
        strings, severities = strings[:used], severities[:used]
    options["enum_strings"] = strings
    if any(severities):
        options["enum_severities"] = severities
    if rtype in ("bi", "bo"):
        options["states"] = 2
    source = text if text is not None else initial
    if source is None or source == "":
        return 0
    try:
        return int(float(source))
    except (TypeError, ValueError):
        if source in strings:
            return strings.index(source)
        fields.problems.append(f"{fields.where()}: VAL {source!r} is not a state")
        return 0


def _array(fields: _Fields, initial: Any, options: dict[str, Any]) -> tuple[type[ChannelData], Any]:
    ftvl = fields.take("FTVL", "STRING").upper()
    if ftvl not in _FTVL:
        fields.problems.append(f"{fields.where()}: FTVL {ftvl!r} not supported: served as DOUBLE")
        ftvl = "DOUBLE"
    channel_class, dtype = _FTVL[ftvl]
    length = max(1, int(fields.number("NELM", 1.0)))
    options["max_length"] = length
    options["units"] = fields.take("EGU")
    if fields.has("PREC"):
        options["precision"] = int(fields.number("PREC"))
    options["upper_disp_limit"] = fields.number("HOPR")
    options["lower_disp_limit"] = fields.number("LOPR")
    if channel_class in (ChannelInteger, ChannelShort, ChannelChar):
        # an array record has no alarm limits: EPICS reports 0 for integers
        for limit in ("upper_alarm", "upper_warning", "lower_warning", "lower_alarm"):
            options[f"{limit}_limit"] = 0.0
            options[f"{limit}_severity"] = AlarmSeverity.NO_ALARM
        channel_class = _variant(channel_class, False, True)
    values = initial if isinstance(initial, list) else ([] if initial is None else [initial])
    if len(values) > length:
        fields.problems.append(f"{fields.where()}: INP has more than NELM={length} values: cut")
        values = values[:length]
    try:
        value = np.array(values, dtype=dtype)
    except (TypeError, ValueError):
        fields.problems.append(f"{fields.where()}: INP values are not {ftvl}")
        value = np.array([], dtype=dtype)
    if length == 1 and not value.size:
        value = np.zeros(1, dtype)  # a one-element array: a scalar channel needs its value
    if channel_class is ChannelString:
        return channel_class, [str(v) for v in value]
    return channel_class, value


def _unclamped(self: ChannelData, value: Any) -> Any:
    return value


_VARIANTS: dict[tuple[type[ChannelData], bool, bool], type[ChannelData]] = {}


def _variant(base: type[ChannelData], inputs: bool, all_limits: bool) -> type[ChannelData]:
    """``base`` as a record type serves it.

    ``inputs``: HOPR/LOPR are the control limits and a put is not held to
    them (ai, longin: no DRVH/DRVL). ``all_limits``: GR/CTRL replies show
    the alarm limits whatever their severities (longin, int64in, arrays).
    """
    if not inputs and not all_limits:
        return base
    key = (base, inputs, all_limits)
    if key not in _VARIANTS:
        namespace: dict[str, Any] = {"limits_need_severity": not all_limits}
        if inputs:
            namespace["_clamp"] = _unclamped
        _VARIANTS[key] = type(base.__name__, (base,), namespace)
    return _VARIANTS[key]


_INTEGER_TYPES = frozenset({"longin", "longout", "int64in", "int64out"})


class DatabaseGroup(PVGroup):
    """The records of database files, served as PVs with their fields.

    ``records`` (from :func:`load_database`) become PVs; :attr:`problems`
    lists what they ask for that is not supported, one line each
    (``FILE:LINE: record 'NAME' (TYPE): field F='V': why``).
    """

    def __init__(self, records: list[Record]) -> None:
        super().__init__()
        self.problems: list[str] = []
        for record in records:
            channel, desc, problems = record_channel(record)
            self.problems += problems
            if channel is None:
                continue
            make = _fields_maker(record.name, channel, desc)
            self.pvdb.add_pv(record.name, channel, make)
            self.pv_names.append(record.name)
            for alias in record.aliases:
                self.pvdb.add_pv(alias, channel, _renamed(make, record.name, alias))
                self.pv_names.append(alias)


def _fields_maker(
    name: str, channel: ChannelData, desc: str
) -> Callable[[], dict[str, ChannelData]]:
    """The record's field channels, made once (for its name and its aliases')."""
    return functools.cache(lambda: add_fields(name, channel, desc))


def _renamed(
    make: Callable[[], dict[str, ChannelData]], name: str, alias: str
) -> Callable[[], dict[str, ChannelData]]:
    """An alias's fields: the record's own channels under the alias's name."""

    def make_alias() -> dict[str, ChannelData]:
        return {alias + key[len(name) :]: channel for key, channel in make().items()}

    return make_alias

"""Output formats of caget, caput and camonitor (epics-base ``tool_lib.c``).

:func:`val2str` prints one value element, :func:`dbr2str` the metadata
block of ``caget -d``, :func:`format_plain` the ``name value`` and terse
lines, and :class:`Printer.time_val_sts` the wide ``name timestamp value
[stat sevr]`` line of ``caget -a``, ``caput -l`` and camonitor, with the
relative and incremental timestamp modes of ``camonitor -t``. Each keeps
the C tools' widths, separators and quirks: a name column of ``%-30s``
only for scalars and a blank separator, ``%g`` for floating point values
(or the ``-e/-f/-g`` format), ``0x%X``/``0o%o``/binary integers, DBR_CHAR
printed as a signed ``char``, strings escaped as epicsStrnEscapedFromRaw
does, ``<undefined>`` for a zero timestamp.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ca import ECA, EPICS_EPOCH_OFFSET, AlarmSeverity, AlarmStatus, ChannelType
from ..client import Reading
from ._common import escaped_from_raw

__all__ = [
    "DBF_TEXT",
    "DBR_TEXT",
    "TIMETEXTLEN",
    "DbrValue",
    "IntFormat",
    "Printer",
    "PvState",
    "Settings",
    "Stamp",
    "TimeType",
    "c_double_format",
    "char_string",
    "dbf_type_to_text",
    "dbr2str",
    "dbr_text_to_type",
    "dbr_type_to_text",
    "eca_message",
    "format_plain",
    "format_stamp",
    "format_values",
    "from_reading",
    "is_char_type",
    "name_column",
    "now_stamp",
    "sevr_to_str",
    "sprint_long",
    "stamp_of",
    "stat_to_str",
    "time_diff",
    "time_type_of",
    "val2str",
    "zero_value",
]

#: db_access.h dbr_text[]: the names dbr_type_to_text prints (and -d accepts).
DBR_TEXT = [
    "DBR_STRING",
    "DBR_SHORT",
    "DBR_FLOAT",
    "DBR_ENUM",
    "DBR_CHAR",
    "DBR_LONG",
    "DBR_DOUBLE",
    "DBR_STS_STRING",
    "DBR_STS_SHORT",
    "DBR_STS_FLOAT",
    "DBR_STS_ENUM",
    "DBR_STS_CHAR",
    "DBR_STS_LONG",
    "DBR_STS_DOUBLE",
    "DBR_TIME_STRING",
    "DBR_TIME_SHORT",
    "DBR_TIME_FLOAT",
    "DBR_TIME_ENUM",
    "DBR_TIME_CHAR",
    "DBR_TIME_LONG",
    "DBR_TIME_DOUBLE",
    "DBR_GR_STRING",
    "DBR_GR_SHORT",
    "DBR_GR_FLOAT",
    "DBR_GR_ENUM",
    "DBR_GR_CHAR",
    "DBR_GR_LONG",
    "DBR_GR_DOUBLE",
    "DBR_CTRL_STRING",
    "DBR_CTRL_SHORT",
    "DBR_CTRL_FLOAT",
    "DBR_CTRL_ENUM",
    "DBR_CTRL_CHAR",
    "DBR_CTRL_LONG",
    "DBR_CTRL_DOUBLE",
    "DBR_PUT_ACKT",
    "DBR_PUT_ACKS",
    "DBR_STSACK_STRING",
    "DBR_CLASS_NAME",
]
#: db_access.h dbf_text[] without its "TYPENOTCONN" (index = native type).
DBF_TEXT = (
    "DBF_STRING",
    "DBF_SHORT",
    "DBF_FLOAT",
    "DBF_ENUM",
    "DBF_CHAR",
    "DBF_LONG",
    "DBF_DOUBLE",
    "DBF_NO_ACCESS",
)
#: tool_lib.h TIMETEXTLEN: the timestamp buffer, NUL included.
TIMETEXTLEN = 28
_STRING, _INT, _FLOAT, _ENUM, _CHAR, _LONG, _DOUBLE = range(7)
_LAST_BUFFER_TYPE = 38
_NSEC_PER_SEC = 1_000_000_000


class IntFormat(enum.Enum):
    """tool_lib.h IntFormatT: how -0x/-0o/-0b and -lx/-lo/-lb print integers."""

    DEC = "dec"
    BIN = "bin"
    OCT = "oct"
    HEX = "hex"


class TimeType(enum.Enum):
    """tool_lib.h TimeT: the timestamp modes of ``camonitor -t``."""

    ABSOLUTE = "absolute"
    RELATIVE = "relative"
    INCREMENTAL = "incremental"
    INCREMENTAL_BY_CHANNEL = "incrementalByChan"


@dataclass
class Settings:
    """tool_lib.c's globals: what the format options chose."""

    dbl_format: str = "%g"
    out_type_i: IntFormat = IntFormat.DEC
    out_type_f: IntFormat = IntFormat.DEC
    enum_as_nr: bool = False
    char_arr_as_str: bool = False
    field_separator: str = " "
    ts_type: TimeType = TimeType.ABSOLUTE
    ts_src_server: bool = True
    ts_src_client: bool = False


@dataclass
class DbrValue:
    """A DBR reply as the C tools hold it: type, count, values and metadata.

    ``values`` are ``int``/``float`` for numbers and ``bytes`` (up to the
    first NUL) for strings.
    """

    dbr_type: int
    count: int
    values: list[Any]
    meta: dict[str, Any]


Stamp = tuple[int, int]  # (secPastEpoch, nsec): an epicsTimeStamp


@dataclass(eq=False)
class PvState:
    """tool_lib.h ``pv``: one channel as a tool sees it."""

    name: str
    dbf_type: int = -1
    dbr_type: int = -1
    n_elems: int = 0
    req_elems: int = 0
    status: int = ECA.NORMAL
    value: DbrValue | None = None
    ts_previous_c: Stamp = (0, 0)
    ts_previous_s: Stamp = (0, 0)
    first_stamp_printed: bool = False
    once_connected: bool = False


def eca_message(status: int) -> str:
    """ca_message(): the text of a CA status code (its message number decides)."""
    number = (int(status) & 0xFFF8) >> 3
    for code in ECA:
        if code.message_number == number:
            return code.message
    return "new CA message number known only by server - see caerr.h"


def dbr_text_to_type(text: str) -> int:
    """db_access.h dbr_text_to_type: the type named exactly ``text``, else -1."""
    try:
        return DBR_TEXT.index(text)
    except ValueError:
        return -1


def dbr_type_to_text(dbr_type: int) -> str:
    """db_access.h dbr_type_to_text."""
    return DBR_TEXT[dbr_type] if 0 <= dbr_type < len(DBR_TEXT) else "DBR_invalid"


def dbf_type_to_text(dbf_type: int) -> str:
    """db_access.h dbf_type_to_text."""
    if dbf_type == -1:
        return "TYPENOTCONN"
    return DBF_TEXT[dbf_type] if 0 <= dbf_type < len(DBF_TEXT) else "DBF_invalid"


def time_type_of(native: int, settings: Settings, float_as_string: bool) -> int:
    """The DBR_TIME_xxx type a tool reads a native type as (-n and -s honoured)."""
    dbr_type = native + 2 * 7
    if native == _ENUM:
        return ChannelType.TIME_INT if settings.enum_as_nr else ChannelType.TIME_STRING
    if float_as_string and native in (_FLOAT, _DOUBLE):
        return ChannelType.TIME_STRING
    return dbr_type


def _base_type(dbr_type: int) -> int:
    if dbr_type in (ChannelType.STSACK_STRING, ChannelType.CLASS_NAME):
        return _STRING
    return dbr_type % 7


def is_char_type(dbr_type: int) -> bool:
    """db_access.h dbr_type_is_CHAR."""
    return 0 <= dbr_type <= _LAST_BUFFER_TYPE and dbr_type % 7 == _CHAR


def _is_time_type(dbr_type: int) -> bool:
    return ChannelType.TIME_STRING <= dbr_type <= ChannelType.TIME_DOUBLE


# --------------------------------------------------------------------------
# Values


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, str):
        raw = item.encode("utf-8", "surrogateescape")
    else:
        raw = bytes(item)
    nul = raw.find(b"\0")
    return raw if nul < 0 else raw[:nul]


def from_reading(reading: Reading) -> DbrValue:
    """A client :class:`~caioc.client.Reading` as the tools hold a reply."""
    dbr_type = int(reading.data_type)
    count = int(reading.data_count)
    value = reading.value
    if _base_type(dbr_type) == _STRING:
        items = [value] if isinstance(value, (str, bytes)) else list(value)
        values: list[Any] = [_as_bytes(item) for item in items]
    elif isinstance(value, np.ndarray):
        values = value.tolist()
    elif isinstance(value, (list, tuple)):
        values = list(value)
    else:
        values = [value]
    return DbrValue(dbr_type, count, values[:count], dict(reading.metadata))


def zero_value(dbr_type: int, count: int) -> DbrValue:
    """The zeroed buffer a C tool prints when a synchronous read never completed."""
    zero: Any = b"" if _base_type(dbr_type) == _STRING else 0
    return DbrValue(dbr_type, count, [zero] * count, {})


def _c_int32(value: float) -> int:
    """A double assigned to a C int32 on x86-64 (out of range and NaN: INT_MIN)."""
    if -2147483649.0 < value < 2147483648.0:
        return int(value)
    return -(1 << 31)


def sprint_long(value: int, out_type: IntFormat) -> str:
    """tool_lib.c sprint_long: decimal, ``0x%X``, ``0o%o`` or binary of an int32."""
    if out_type is IntFormat.DEC:
        return str(value)
    bits = value & 0xFFFFFFFF
    if out_type is IntFormat.HEX:
        return f"0x{bits:X}"
    if out_type is IntFormat.OCT:
        return f"0o{bits:o}"
    return format(bits, "b") if bits else "0"


def c_double_format(fmt: str, value: float) -> str:
    """``sprintf(fmt, value)`` for the ``%g``/``%-.<n>e|f|g`` formats (glibc's NaN sign)."""
    value = float(value)
    if math.isnan(value) and math.copysign(1.0, value) < 0:
        return "-" + fmt % math.nan
    return fmt % value


def _signed_char(value: int) -> int:
    value = int(value) & 0xFF
    return value - 256 if value > 127 else value


def val2str(data: DbrValue, index: int, settings: Settings) -> str:
    """tool_lib.c val2str: element ``index`` of ``data`` as the tools print it."""
    dbr_type = data.dbr_type
    if not 0 <= dbr_type <= _LAST_BUFFER_TYPE:
        return "*** invalid type"
    base = _base_type(dbr_type)
    value = data.values[index] if index < len(data.values) else (b"" if base == _STRING else 0)
    if base == _STRING:
        return escaped_from_raw(_as_bytes(value))
    if base in (_FLOAT, _DOUBLE):
        if settings.out_type_f is IntFormat.DEC:
            return c_double_format(settings.dbl_format, float(value))
        value = float(value)
        rounded = value + 0.5 if value > 0.0 else value - 0.5
        return sprint_long(_c_int32(rounded), settings.out_type_f)
    if base == _CHAR:
        return str(_signed_char(int(value)))
    if base in (_INT, _LONG):
        return sprint_long(int(value), settings.out_type_i)
    # DBR_ENUM: state strings only for GR/CTRL types (which carry them)
    index_value = int(value)
    if dbr_type in (ChannelType.GR_ENUM, ChannelType.CTRL_ENUM) and not settings.enum_as_nr:
        states = data.meta.get("strs") or []
        no_str = int(data.meta.get("no_str", len(states)))
        if index_value >= 16:
            return f"Illegal Value ({index_value})"
        if index_value >= no_str:
            return f"Enum Index Overflow ({index_value})"
        return states[index_value] if index_value < len(states) else ""
    return str(index_value)


def char_string(data: DbrValue, limit: int | None = None) -> str:
    """A CHAR array printed as a (long) string: up to its NUL, escaped."""
    values = data.values if limit is None else data.values[:limit]
    raw = bytes(int(v) & 0xFF for v in values)
    nul = raw.find(b"\0")
    return escaped_from_raw(raw if nul < 0 else raw[:nul])


# --------------------------------------------------------------------------
# Metadata block (caget -d)


def stat_to_str(status: int) -> str:
    """tool_lib.h stat_to_str: the alarm condition name, "??" when out of range."""
    try:
        return AlarmStatus(status).name
    except ValueError:
        return "??"


def sevr_to_str(severity: int) -> str:
    """tool_lib.h sevr_to_str: the alarm severity name, "??" when out of range."""
    try:
        return AlarmSeverity(severity).name
    except ValueError:
        return "??"


def _signed16(value: int) -> int:
    value = int(value) & 0xFFFF
    return value - 0x10000 if value >> 15 else value


def _sts(meta: dict[str, Any], unsigned: bool = False) -> str:
    status, severity = int(meta.get("status", 0)), int(meta.get("severity", 0))
    if not unsigned:
        status, severity = _signed16(status), _signed16(severity)
    return (
        f"    Status:           {stat_to_str(status)}\n"
        f"    Severity:         {sevr_to_str(severity)}"
    )


_GR_LABELS = (
    ("Lo disp limit:    ", "lower_disp_limit"),
    ("Hi disp limit:    ", "upper_disp_limit"),
    ("Lo alarm limit:   ", "lower_alarm_limit"),
    ("Lo warn limit:    ", "lower_warning_limit"),
    ("Hi warn limit:    ", "upper_warning_limit"),
    ("Hi alarm limit:   ", "upper_alarm_limit"),
)
_CTRL_LABELS = (
    ("Lo ctrl limit:    ", "lower_ctrl_limit"),
    ("Hi ctrl limit:    ", "upper_ctrl_limit"),
)


def _limit(meta: dict[str, Any], key: str, base: int) -> str:
    value = meta.get(key, 0)
    if base in (_FLOAT, _DOUBLE):
        return c_double_format("%g", value)
    if base == _CHAR:
        return f"{_signed_char(value):8d}"
    return f"{int(value):8d}"


def _limits(meta: dict[str, Any], labels: Sequence[tuple[str, str]], base: int) -> str:
    return "\n".join(f"    {label}{_limit(meta, key, base)}" for label, key in labels)


def _enum_block(meta: dict[str, Any]) -> str:
    states = meta.get("strs") or []
    no_str = _signed16(meta.get("no_str", len(states)))
    lines = [_sts(meta), f"\n    Enums:            ({no_str:2d})"]
    for i in range(max(no_str, 0)):
        state = states[i] if i < len(states) else ""
        lines.append(f"\n                      [{i:2d}] {state}")
    return "".join(lines)


def dbr2str(data: DbrValue, time_text: str) -> str:
    """tool_lib.c dbr2str: the metadata lines of an extended DBR type.

    ``time_text`` is the value's timestamp already formatted (TIME types).
    """
    dbr_type, meta = data.dbr_type, data.meta
    if 0 <= dbr_type <= _DOUBLE:
        return ""
    base = dbr_type % 7
    if ChannelType.STS_STRING <= dbr_type <= ChannelType.STS_DOUBLE or dbr_type in (
        ChannelType.GR_STRING,
        ChannelType.CTRL_STRING,
    ):
        return _sts(meta)
    if _is_time_type(dbr_type):
        return f"    Timestamp:        {time_text}\n{_sts(meta)}"
    if dbr_type in (ChannelType.GR_ENUM, ChannelType.CTRL_ENUM):
        return _enum_block(meta)
    if ChannelType.GR_STRING < dbr_type <= ChannelType.CTRL_DOUBLE:
        text = f"{_sts(meta)}\n    Units:            {meta.get('units', '')}"
        if base in (_FLOAT, _DOUBLE):
            text += f"\n    Precision:        {_signed16(meta.get('precision', 0))}"
        text += "\n" + _limits(meta, _GR_LABELS, base)
        if dbr_type >= ChannelType.CTRL_STRING:
            text += "\n" + _limits(meta, _CTRL_LABELS, base)
        return text
    if dbr_type == ChannelType.STSACK_STRING:
        ackt = "YES" if meta.get("ackt") else "NO"
        return (
            f"{_sts(meta, unsigned=True)}\n    Ack transient?:   {ackt}\n"
            f"    Ack severity:     {sevr_to_str(int(meta.get('acks', 0)))}"
        )
    return "can't print data type"


# --------------------------------------------------------------------------
# Timestamps


def now_stamp() -> Stamp:
    """epicsTimeGetCurrent."""
    ns = time.time_ns()
    return ns // _NSEC_PER_SEC - EPICS_EPOCH_OFFSET, ns % _NSEC_PER_SEC


def stamp_of(meta: dict[str, Any]) -> Stamp:
    """The epicsTimeStamp of TIME metadata."""
    return int(meta.get("secondsSinceEpoch", 0)), int(meta.get("nanoseconds", 0))


def format_stamp(stamp: Stamp) -> str:
    """epicsTimeToStrftime with the tools' ``%Y-%m-%d %H:%M:%S.%06f`` (local time)."""
    seconds, nsec = stamp
    if seconds == 0 and nsec == 0:
        return "<undefined>"
    text = time.strftime("%Y-%m-%d %H:%M:%S.", time.localtime(seconds + EPICS_EPOCH_OFFSET))
    if nsec < _NSEC_PER_SEC:
        fraction = min(nsec + 500, _NSEC_PER_SEC - 1) // 1000
        text += f"{fraction:06d}"
    else:
        text += "OVF"
    return text[: TIMETEXTLEN - 1]


def time_diff(left: Stamp, right: Stamp) -> float:
    """epicsTimeDiffInSeconds (the seconds difference wraps as a C int32)."""
    seconds = (left[0] - right[0]) & 0xFFFFFFFF
    if seconds >> 31:
        seconds -= 1 << 32
    return (seconds * _NSEC_PER_SEC + left[1] - right[1]) * 1e-9


# --------------------------------------------------------------------------
# Lines


def name_column(name: str, n_elems: int, sep: str) -> str:
    """The name and its separator: ``%-30s`` for scalars with a blank separator."""
    return (f"{name:<30}" if n_elems <= 1 and sep == " " else name) + sep


def format_values(data: DbrValue, n_elems: int, req_elems: int, settings: Settings) -> str:
    """caget's value text: a long string, or ``[count sep] v1 sep v2 ...``."""
    sep = settings.field_separator
    if settings.char_arr_as_str and is_char_type(data.dbr_type) and (req_elems or n_elems > 1):
        return char_string(data)
    head = f"{n_elems}{sep}" if req_elems or n_elems > 1 else ""
    return head + sep.join(val2str(data, i, settings) for i in range(n_elems))


def format_plain(
    pv: PvState, req_elems: int, settings: Settings, with_name: bool, pad_elems: int | None = None
) -> str:
    """caget's default (``with_name``) or terse (``-t``) line of one channel."""
    sep = settings.field_separator
    out = name_column(pv.name, pv.n_elems if pad_elems is None else pad_elems, sep)
    out = out if with_name else ""
    if pv.status == ECA.DISCONN:
        return out + "*** not connected\n"
    if pv.status == ECA.NORDACCESS:
        return out + "*** no read access\n"
    if pv.status != ECA.NORMAL:
        return out + f"*** CA error {eca_message(pv.status)}\n"
    if pv.value is None:
        return out + "*** no data available (timeout)\n"
    return out + format_values(pv.value, pv.n_elems, req_elems, settings) + "\n"


@dataclass
class Printer:
    """tool_lib.c print_time_val_sts with its timestamp state (start, first, previous)."""

    settings: Settings
    ts_start: Stamp = field(default_factory=now_stamp)
    ts_first: Stamp = (0, 0)
    ts_init_s: bool = False
    ts_previous_c: Stamp = (0, 0)
    ts_previous_s: Stamp = (0, 0)

    def _stamps(self, pv: PvState, new_s: Stamp, new_c: Stamp) -> str:
        s = self.settings
        print_abs = not pv.first_stamp_printed
        if not self.ts_init_s:
            self.ts_first = new_s
            self.ts_init_s = True
        if s.ts_type is TimeType.RELATIVE:
            ref_c, ref_s = self.ts_start, self.ts_first
        elif s.ts_type is TimeType.INCREMENTAL:
            ref_c, ref_s = self.ts_previous_c, self.ts_previous_s
        elif s.ts_type is TimeType.INCREMENTAL_BY_CHANNEL:
            ref_c, ref_s = pv.ts_previous_c, pv.ts_previous_s
        else:
            ref_c = ref_s = (0, 0)
            print_abs = True
        out = ""
        if print_abs:
            if s.ts_src_server:
                out += format_stamp(new_s)
            if s.ts_src_client:
                out += f"({format_stamp(new_c)})"
            pv.first_stamp_printed = True
        else:
            if s.ts_src_server:
                out += f"              {time_diff(new_s, ref_s):+12.6f}"
            if s.ts_src_client:
                out += f"              ({time_diff(new_c, ref_c):+12.6f})"
        if s.ts_type is TimeType.INCREMENTAL_BY_CHANNEL:
            pv.ts_previous_c, pv.ts_previous_s = new_c, new_s
        self.ts_previous_c, self.ts_previous_s = new_c, new_s
        return out

    def time_val_sts(self, pv: PvState, req_elems: int) -> str:
        """One wide line: ``name timestamp value`` and the alarm when there is one."""
        s = self.settings
        sep = s.field_separator
        now = now_stamp()
        time_text = format_stamp(now)
        out = name_column(pv.name, pv.n_elems, sep)
        if not pv.once_connected:
            return out + "*** Not connected (PV not found)\n"
        if pv.status == ECA.DISCONN:
            return out + f"{time_text} *** disconnected\n"
        if pv.status == ECA.NORDACCESS:
            return out + f"{time_text} *** no read access\n"
        if pv.status != ECA.NORMAL:
            return out + f"{time_text} *** CA error {eca_message(pv.status)}\n"
        data = pv.value
        if data is None:
            return out + f"{time_text} *** no data available (timeout)\n"
        if not _is_time_type(pv.dbr_type):
            return out + "can't print data type\n"
        out += self._stamps(pv, stamp_of(data.meta), now)
        if s.char_arr_as_str and is_char_type(pv.dbr_type) and (req_elems or pv.n_elems > 1):
            elems = req_elems if req_elems and req_elems < pv.n_elems else pv.n_elems
            out += sep + char_string(data, elems)
        else:
            if req_elems or pv.n_elems > 1:
                out += f"{sep}{pv.n_elems}"
            out += "".join(sep + val2str(data, i, s) for i in range(pv.n_elems))
        status = _signed16(data.meta.get("status", 0))
        severity = _signed16(data.meta.get("severity", 0))
        if status or severity:
            return out + f"{sep}{stat_to_str(status)}{sep}{sevr_to_str(severity)}\n"
        return out + f"{sep}{sep}\n"

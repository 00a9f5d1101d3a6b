"""Support of :mod:`caioc.server._data`: errors, protocols and pure helpers.

The errors and the subscription protocol of the channel data API; how a
value handed over by server code becomes an array of a channel's native
DBR type; how a limit reaches a client of another type (as epics-base's
``db_access.c`` converts it); the alarm an ``ai`` record would raise for a
value; and the metadata attribute descriptor.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

import numpy as np

from ..ca import (
    ECA,
    MAX_ENUM_STATES,
    MAX_ENUM_STRING_SIZE,
    MAX_STRING_SIZE,
    MAX_UNITS_SIZE,
    VALUE_DTYPES,
    AlarmSeverity,
    AlarmStatus,
    ChannelType,
    double_to_float,
    epics_now,
    posix_to_epics,
)
from ..ca._convert import ConversionError, convert_scalar, convert_values, string_to_char_array

if TYPE_CHECKING:
    from ._data_channel import ChannelData

__all__ = [
    "ALARM_RANGES",
    "LIMIT_NAMES",
    "ZERO_VALUES",
    "ChannelError",
    "ChannelValueError",
    "Metadata",
    "PutHook",
    "Subscription",
    "alarm_pair",
    "as_limit",
    "as_optional_limit",
    "as_precision",
    "as_record_type",
    "as_severity",
    "as_short",
    "as_units",
    "check_enum_strings",
    "check_units",
    "deadband_exceeded",
    "epics_stamp",
    "limit_alarm",
    "limit_as",
    "looks_like_array",
    "python_to_native",
    "string_as_enum",
]

_STRING, _SHORT, _FLOAT, _ENUM, _CHAR, _LONG, _DOUBLE = range(7)
#: Inclusive value ranges of the integer native types.
_INT_RANGES = {
    _SHORT: (-(1 << 15), (1 << 15) - 1),
    _ENUM: (0, 0xFFFF),
    _CHAR: (0, 0xFF),
    _LONG: (-(1 << 31), (1 << 31) - 1),
}
#: The GR and CTRL limit fields, in db_access.h order.
LIMIT_NAMES = (
    "upper_disp_limit",
    "lower_disp_limit",
    "upper_alarm_limit",
    "upper_warning_limit",
    "lower_warning_limit",
    "lower_alarm_limit",
    "upper_ctrl_limit",
    "lower_ctrl_limit",
)
_TEXT = (str, bytes, bytearray, np.str_, np.bytes_)


def reply_key(data_type: int, count: int) -> int:
    """The key of a channel's cached reply of ``count`` elements of ``data_type``.

    One int, not a (type, count) tuple: a thousand reads in a batch look
    their replies up with it, and an int hashes and compares at once where a
    tuple hashes both members each time. The type takes the low 16 bits, all
    a request's type field has: no pair a client can send, valid or not,
    shares a key with another (an invalid type must miss, and be refused).
    The hot paths write ``count << 16 | data_type`` inline.
    """
    return count << 16 | data_type


def limit_as(limit: float | None, native: int) -> float | int:
    """A limit (None: not set) as a GR/CTRL reply of ``native`` values carries it.

    epics-base hands a record's limits out as doubles; an unset alarm limit
    is NaN (``get_alarm`` in dbAccess.c). ``db_access.c`` narrows them to
    float with epicsConvertDoubleToFloat and to the integer types through a
    C ``(epicsInt32)`` cast, so NaN reaches a DBR_GR_LONG client as
    -2147483648 and a DBR_GR_SHORT or DBR_GR_CHAR client as 0.
    """
    value = math.nan if limit is None else float(limit)
    if native == _DOUBLE:
        return value
    if native == _FLOAT:
        return double_to_float(value)
    return int(convert_scalar(value, _DOUBLE, native))


#: The limit checks of ``ai``'s checkAlarms, in its order: (status, +1 for an
#: upper limit, -1 for a lower one).
ALARM_RANGES = (
    (AlarmStatus.HIHI, 1),
    (AlarmStatus.LOLO, -1),
    (AlarmStatus.HIGH, 1),
    (AlarmStatus.LOW, -1),
)


def limit_alarm(
    value: float,
    limits: Sequence[tuple[AlarmStatus, int, float, AlarmSeverity]],
    hysteresis: float = 0.0,
    last_level: float = math.nan,
) -> tuple[AlarmStatus, AlarmSeverity, float]:
    """(status, severity, LALM) of a value checked as aiRecord.c ``checkAlarms`` does.

    ``limits`` are (status, direction, limit, severity) in ALARM_RANGES
    order (HIHI, LOLO, HIGH, LOW), only those that are set and have a
    severity: the first one the value reaches wins. ``last_level`` (LALM)
    is the limit of the alarm raised last, or the last value when there was
    none: a value stays in that alarm until it is ``hysteresis`` (HYST)
    back inside the limit. The result's last item is the next LALM. A NaN
    value is undefined: UDF with INVALID severity (the record's UDF check),
    LALM unchanged.
    """
    if value != value:
        return AlarmStatus.UDF, AlarmSeverity.INVALID, last_level
    for status, direction, limit, severity in limits:
        if direction > 0:
            hit = value >= limit or (last_level == limit and value >= limit - hysteresis)
        else:
            hit = value <= limit or (last_level == limit and value <= limit + hysteresis)
        if hit:
            return status, severity, limit
    return AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM, value


def deadband_exceeded(last: float, value: float, deadband: float) -> bool:
    """Whether ``value`` moved more than ``deadband`` from ``last`` (recGblCheckDeadband).

    Finite values compare their distance; a change between finite, NaN and
    infinite (or between the two infinities) is an infinite distance. So a
    deadband of 0 passes any change, and a negative one every value, even
    an unchanged one (MDEL/ADEL -1: post on every processing).
    """
    if math.isfinite(value) and math.isfinite(last):
        return abs(last - value) > deadband
    moved = (
        math.isnan(value) != math.isnan(last)
        or math.isinf(value) != math.isinf(last)
        or (math.isinf(value) and value != last)
    )
    return (math.inf if moved else 0.0) > deadband


def _encoded(text: str | bytes, encoding: str) -> bytes:
    return text.encode(encoding, "surrogateescape") if isinstance(text, str) else bytes(text)


def check_units(units: str, encoding: str = "utf-8") -> str:
    """``units`` if it fits the 8-byte ``units`` field (7 bytes and a NUL)."""
    if not isinstance(units, str):
        raise TypeError(f"units must be a str, not {type(units).__name__}")
    if len(_encoded(units, encoding)) >= MAX_UNITS_SIZE:
        raise ValueError(f"units {units!r} longer than {MAX_UNITS_SIZE - 1} bytes")
    return units


def check_enum_strings(enum_strings: Iterable[str], encoding: str = "utf-8") -> tuple[str, ...]:
    """The enum state strings as a tuple, checked against the DBR_CTRL_ENUM limits."""
    if isinstance(enum_strings, (str, bytes)):
        raise TypeError("enum_strings must be a sequence of strings, not one string")
    states = tuple(enum_strings)
    if len(states) > MAX_ENUM_STATES:
        raise ValueError(f"{len(states)} enum strings, at most {MAX_ENUM_STATES}")
    for state in states:
        if not isinstance(state, str):
            raise TypeError(f"enum string {state!r} is not a str")
        if len(_encoded(state, encoding)) >= MAX_ENUM_STRING_SIZE:
            raise ValueError(f"enum string {state!r} longer than {MAX_ENUM_STRING_SIZE - 1} bytes")
    return states


def string_as_enum(values: Any, encoding: str = "utf-8") -> np.ndarray:
    """Strings read as DBR_ENUM from a channel that has no enum states.

    epics-base reads a string field as ENUM with ``getStringUshort``: the
    text is parsed as a number that must fit 16 bits (``_convert`` models
    the other direction, a string written to an enum, which looks the
    state strings up). Parsed as a 32-bit integer, then range checked.
    """
    longs = convert_values(values, _STRING, _LONG, encoding=encoding)
    if longs.size and (int(longs.min()) < 0 or int(longs.max()) > 0xFFFF):
        raise ConversionError(f"{values!r} does not fit DBR_ENUM (0-65535)", "overflow")
    return longs.astype(">u2")


def _is_text(value: Any) -> bool:
    if isinstance(value, _TEXT):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "SU"
    if isinstance(value, Sequence) and value:
        return all(isinstance(item, _TEXT) for item in value)
    return False


def python_to_native(
    value: Any,
    native: int,
    enum_strings: Sequence[str] | None = None,
    encoding: str = "utf-8",
) -> np.ndarray:
    """A value given by server code as a 1-d array of ``native`` DBR values.

    Numbers must fit the native type (an integer type takes integral
    floats, truncated toward zero; out-of-range values raise ValueError
    instead of wrapping as a C cast would). Text converts as a DBR_STRING
    put would (``"1.5"`` into a DOUBLE, a state string into an ENUM), except
    for CHAR: ``bytes`` are the raw array, a ``str`` its encoded bytes plus
    a terminating NUL (the EPICS long-string convention). A STRING takes
    text, or any other object as its ``str()``; each string must fit in 39
    bytes. Raises ValueError (ConversionError included) or TypeError.
    """
    if native == _STRING:
        items = [value] if isinstance(value, _TEXT) or not _iterable(value) else list(value)
        raw = [_encoded(x if isinstance(x, (str, bytes)) else str(x), encoding) for x in items]
        for text in raw:
            if len(text) >= MAX_STRING_SIZE or b"\0" in text:
                raise ValueError(
                    f"string {text[:50]!r} does not fit a DBR_STRING "
                    f"(at most {MAX_STRING_SIZE - 1} bytes, no NUL)"
                )
        return np.array(raw, dtype=f"S{MAX_STRING_SIZE}")
    if native == _CHAR and isinstance(value, (str, bytes, bytearray)):
        if isinstance(value, str):
            return string_to_char_array(value, encoding=encoding)
        return np.frombuffer(bytes(value), dtype=np.uint8).copy()
    if _is_text(value):
        return convert_values(value, _STRING, native, enum_strings=enum_strings, encoding=encoding)
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot make an array of {value!r}: {exc}") from exc
    arr = arr.reshape(-1)
    kind = arr.dtype.kind
    if kind == "b":
        arr, kind = arr.astype(np.int64), "i"
    if kind not in "iuf":
        raise TypeError(f"cannot store {value!r} in a DBR_{ChannelType(native).name} channel")
    if native == _DOUBLE:
        return arr.astype(VALUE_DTYPES[native])
    if native == _FLOAT:
        return convert_values(arr.astype(np.float64), _DOUBLE, _FLOAT)
    low, high = _INT_RANGES[native]
    if kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError(f"{value!r} is not finite: no DBR_{ChannelType(native).name} value")
        arr = np.trunc(arr)
    if arr.size and (float(arr.min()) < low or float(arr.max()) > high):
        raise ValueError(
            f"{value!r} outside the range {low}..{high} of DBR_{ChannelType(native).name}"
        )
    return arr.astype(np.int64).astype(VALUE_DTYPES[native])


def _iterable(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim > 0
    return isinstance(value, Iterable)


class ChannelError(Exception):
    """A request the channel refuses; ``eca`` is the status the client gets."""

    def __init__(self, eca: ECA, message: str | None = None) -> None:
        super().__init__(message or eca.message)
        #: The CA status code for the reply (an :class:`ECA` member).
        self.eca = eca


class ChannelValueError(ChannelError, ValueError):
    """A value the channel cannot take or give: conversion, range or length."""


class Subscription(Protocol):
    """What ``subscribe`` needs from the network layer's EVENT_ADD record."""

    @property
    def data_type(self) -> int:
        """DBR type of the updates."""

    @property
    def data_count(self) -> int:
        """Requested element count (0: the current length, for version >= 13)."""

    @property
    def mask(self) -> int:
        """:class:`SubscriptionMask` bits that trigger an update."""

    @property
    def client_version(self) -> int:
        """The client's CA minor protocol version."""

    def deliver(self, payload: bytes | memoryview, count: int) -> None:
        """Take one encoded update (shared by all subscribers of its form)."""


#: ``async def hook(channel, value) -> replacement or None``, see ChannelData.
PutHook = Callable[["ChannelData", Any], Awaitable[Any]]

_T = TypeVar("_T")


class Metadata(Generic[_T]):
    """A metadata attribute: setting it drops cached replies and posts DBE_PROPERTY."""

    def __init__(self, check: Callable[[ChannelData, Any], _T], doc: str) -> None:
        self._check = check
        self._attr = ""
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = "_meta_" + name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Metadata[_T]: ...
    @overload
    def __get__(self, obj: ChannelData, objtype: type | None = None) -> _T: ...
    def __get__(self, obj: ChannelData | None, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj, self._attr)

    def __set__(self, obj: ChannelData, value: Any) -> None:
        setattr(obj, self._attr, self._check(obj, value))
        obj._metadata_changed()


def as_limit(obj: ChannelData, value: Any) -> float:
    """A display or control limit: a float."""
    return float(value)


def as_optional_limit(obj: ChannelData, value: Any) -> float | None:
    """An alarm limit: a float, or None when not set."""
    return None if value is None else float(value)


def as_precision(obj: ChannelData, value: Any) -> int | None:
    """PREC: an int, or None when not set."""
    if value is not None and not isinstance(value, (int, np.integer)):
        raise TypeError(f"precision must be an int or None, not {value!r}")
    return None if value is None else int(value)


def as_severity(obj: ChannelData, value: Any) -> AlarmSeverity:
    """An alarm severity (menuAlarmSevr): a member, its number or its name."""
    if isinstance(value, str):
        try:
            return AlarmSeverity[value]
        except KeyError:
            raise ValueError(f"{value!r} is not an alarm severity") from None
    return AlarmSeverity(int(value))


def as_units(obj: ChannelData, value: Any) -> str:
    """EGU in the channel's encoding (see :func:`check_units`)."""
    return check_units(value, obj.encoding)


def as_record_type(obj: ChannelData, value: Any) -> str:
    """The DBR_CLASS_NAME answer: a string of at most 39 bytes."""
    text = str(value)
    if len(text.encode(obj.encoding, "surrogateescape")) >= MAX_STRING_SIZE:
        raise ValueError(f"record type {text!r} longer than {MAX_STRING_SIZE - 1} bytes")
    return text


def as_short(value: int) -> int:
    """``(dbr_short_t) value``, as db_access.c hands out PREC."""
    return ((value + 0x8000) & 0xFFFF) - 0x8000


#: The value of a scalar channel created without one.
ZERO_VALUES = {_STRING: "", _SHORT: 0, _FLOAT: 0.0, _ENUM: 0, _CHAR: 0, _LONG: 0, _DOUBLE: 0.0}


def looks_like_array(value: Any, native: int) -> bool:
    """Whether an initial value makes an array channel (bytes/str do for CHAR)."""
    if isinstance(value, np.ndarray):
        return value.ndim > 0
    if native == _CHAR and isinstance(value, (str, bytes, bytearray)):
        return True
    return isinstance(value, (list, tuple, range))


def alarm_pair(
    status: AlarmStatus | int | None, severity: AlarmSeverity | int | None
) -> tuple[AlarmStatus, AlarmSeverity]:
    """(status, severity) as enum members, None meaning NO_ALARM."""
    try:
        return AlarmStatus(status or 0), AlarmSeverity(severity or 0)
    except ValueError as exc:
        raise ChannelValueError(ECA.PUTFAIL, str(exc)) from exc


def epics_stamp(timestamp: float | None) -> tuple[int, int]:
    """(secondsSinceEpoch, nanoseconds) of a POSIX time (None: now)."""
    if timestamp is None:
        return epics_now()
    try:
        return posix_to_epics(float(timestamp))
    except ValueError as exc:
        raise ChannelValueError(ECA.PUTFAIL, str(exc)) from exc

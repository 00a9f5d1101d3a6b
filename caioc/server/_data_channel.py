"""The channel data base class: see :mod:`caioc.server._data` for the contract."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ..ca import (
    DBR_CLASSES,
    ECA,
    NATIVE_TYPES,
    VALUE_DTYPES,
    AccessRights,
    AlarmSeverity,
    AlarmStatus,
    ChannelType,
    DbrClass,
    DbrError,
    SubscriptionMask,
    decode_dbr,
    decode_scalar,
    decode_strings,
    encode_dbr,
    epics_now,
    epics_to_posix,
    payload_size,
)
from ..ca._convert import (
    ILLEGAL_ENUM_STRING,
    ConversionError,
    convert_scalar,
    convert_values,
    fit_count,
    resolve_count,
)
from ._data_alarms import SEVERITY_OF, ChannelAlarms
from ._data_support import (
    LIMIT_NAMES,
    ZERO_VALUES,
    ChannelError,
    ChannelValueError,
    Metadata,
    PutHook,
    Subscription,
    alarm_pair,
    as_limit,
    as_optional_limit,
    as_precision,
    as_record_type,
    as_severity,
    as_short,
    as_units,
    epics_stamp,
    limit_as,
    looks_like_array,
    python_to_native,
    string_as_enum,
)
from ._locks import PutLock

__all__ = ["ChannelData"]

_STRING, _SHORT, _FLOAT, _ENUM, _CHAR, _LONG, _DOUBLE = range(7)
_NUMBERS = frozenset((_SHORT, _FLOAT, _CHAR, _LONG, _DOUBLE))
_LAST_TYPE = ChannelType.CLASS_NAME
_WRITE_ONLY = (ChannelType.PUT_ACKT, ChannelType.PUT_ACKS)
_READ_ONLY = (ChannelType.STSACK_STRING, ChannelType.CLASS_NAME)
#: Encoded replies kept per channel until its value or metadata changes.
_CACHE_SIZE = 32
# Plain ints: IntFlag operators are slow on the per-update path.
_UPDATE = int(SubscriptionMask.VALUE | SubscriptionMask.LOG)
_UPDATE_AND_ALARM = int(_UPDATE | SubscriptionMask.ALARM)
_ALARM = int(SubscriptionMask.ALARM)
#: Inclusive ranges of the integer native types a Python int is stored in as is.
_INT_RANGES = {
    _SHORT: (-(1 << 15), (1 << 15) - 1),
    _CHAR: (0, 0xFF),
    _LONG: (-(1 << 31), (1 << 31) - 1),
}
_INT64 = (-(1 << 63), (1 << 63) - 1)
#: The methods a value from server code passes through on the generic path.
_COERCION = ("_coerce", "_native", "_from_native", "_enum_states", "_check_enum_index")


def _quick_number(value: Any, native: int) -> Any:
    """A Python ``int``/``float`` as a scalar channel of ``native`` numbers stores it.

    The same value ``python_to_native`` and ``_from_native`` make of it,
    without their numpy round trip (the per-update cost of a polled PV);
    None for anything else (bools, numpy scalars, text, values out of
    range, non-finite values for an integer type), which then takes the
    generic path and its errors.
    """
    kind = type(value)
    if kind is float:
        if native == _DOUBLE:
            return value
        if native == _FLOAT:
            return convert_scalar(value, _DOUBLE, _FLOAT)
        if not math.isfinite(value):
            return None
        value = int(value)  # truncated toward zero, as np.trunc
    elif kind is int:
        if native in (_DOUBLE, _FLOAT):
            if not _INT64[0] <= value <= _INT64[1]:
                return None
            number = float(value)
            return number if native == _DOUBLE else convert_scalar(number, _DOUBLE, _FLOAT)
    else:
        return None
    low, high = _INT_RANGES[native]
    return value if low <= value <= high else None


#: _generic's answers, by class: a server makes thousands of channels of a few classes.
_GENERIC: dict[type, bool] = {}


def _generic(channel: ChannelData) -> bool:
    """Whether ``channel`` coerces server values as ChannelData does (no override)."""
    cls = type(channel)
    generic = _GENERIC.get(cls)
    if generic is None:
        generic = _GENERIC[cls] = all(
            getattr(cls, name) is getattr(ChannelData, name) for name in _COERCION
        )
    return generic


#: What ChannelData._accept_put returns for a put already taken care of.
_STORED: Any = object()


class ChannelData(ChannelAlarms):
    """The value, alarm, timestamp and metadata behind one PV (abstract).

    Keyword arguments of every subclass: ``value`` (a scalar, or a sequence
    or numpy array for an array channel), ``max_length`` (default 1, or the
    length of an array value: a channel is an array when it is above 1),
    ``units``, ``precision`` (None: PREC 0, 6 digits as DBR_STRING),
    ``upper_disp_limit``/``lower_disp_limit`` and ``upper_ctrl_limit``/
    ``lower_ctrl_limit`` (default 0), the alarm limits ``upper_alarm_limit``
    (HIHI), ``upper_warning_limit`` (HIGH), ``lower_warning_limit`` (LOW),
    ``lower_alarm_limit`` (LOLO) (None: not set), ``read_only``,
    ``alarm_status``/``alarm_severity`` (None: computed from the value),
    ``timestamp`` (POSIX seconds, None: now), ``put_hook``, ``record_type``
    (what DBR_CLASS_NAME reads) and ``encoding`` of strings. As an ai
    record's fields: the severity each alarm limit raises,
    ``upper_alarm_severity`` (HHSV, default MAJOR), ``upper_warning_severity``
    (HSV, MINOR), ``lower_warning_severity`` (LSV, MINOR),
    ``lower_alarm_severity`` (LLSV, MAJOR), NO_ALARM turning that limit off;
    ``alarm_hysteresis`` (HYST, 0); the monitor and archive deadbands
    ``monitor_deadband`` (MDEL) and ``archive_deadband`` (ADEL), default -1:
    every update posts DBE_VALUE and DBE_LOG (an ai's default, 0, posts
    changes only); ``disable_severity`` (DISS, INVALID), see :attr:`disabled`.
    Limits, hysteresis and deadbands apply to scalar numbers only.

    ``value`` is a Python ``float``/``int``/``str`` for a scalar channel, a
    read-only big-endian numpy array (a tuple of ``str`` for strings) for
    an array channel.
    """

    #: The DBR type of the value (CREATE_CHAN reply).
    native_type: ClassVar[ChannelType]
    #: Whether a GR/CTRL reply shows an alarm limit only while it has a
    #: severity (NaN when off), as an ai does; a longin shows them all.
    limits_need_severity: ClassVar[bool] = True
    #: What an enum index without a state string reads as (bi/bo's text).
    illegal_enum: ClassVar[str | None] = ILLEGAL_ENUM_STRING

    units = Metadata(as_units, "Engineering units (EGU), at most 7 bytes.")
    precision = Metadata(as_precision, "Display precision (PREC) or None.")
    upper_disp_limit = Metadata(as_limit, "HOPR.")
    lower_disp_limit = Metadata(as_limit, "LOPR.")
    upper_alarm_limit = Metadata(as_optional_limit, "HIHI (MAJOR) or None.")
    upper_warning_limit = Metadata(as_optional_limit, "HIGH (MINOR) or None.")
    lower_warning_limit = Metadata(as_optional_limit, "LOW (MINOR) or None.")
    lower_alarm_limit = Metadata(as_optional_limit, "LOLO (MAJOR) or None.")
    upper_ctrl_limit = Metadata(as_limit, "DRVH: scalar puts are clamped below it.")
    lower_ctrl_limit = Metadata(as_limit, "DRVL: scalar puts are clamped above it.")
    record_type = Metadata(as_record_type, "What a DBR_CLASS_NAME read answers.")
    upper_alarm_severity = Metadata(as_severity, "HHSV: what HIHI raises (NO_ALARM: off).")
    upper_warning_severity = Metadata(as_severity, "HSV: what HIGH raises (NO_ALARM: off).")
    lower_warning_severity = Metadata(as_severity, "LSV: what LOW raises (NO_ALARM: off).")
    lower_alarm_severity = Metadata(as_severity, "LLSV: what LOLO raises (NO_ALARM: off).")
    # Where the alarm-limit descriptors keep their values (defaults: on the class).
    _meta_upper_alarm_limit: float | None
    _meta_upper_warning_limit: float | None
    _meta_lower_warning_limit: float | None
    _meta_lower_alarm_limit: float | None
    #: Access security group and level (ASG, ASL) the .acf rules apply to.
    access_group: str = "DEFAULT"
    access_level: int = 0

    def __init__(
        self,
        *,
        value: Any = None,
        max_length: int | None = None,
        units: str = "",
        precision: int | None = None,
        upper_disp_limit: float = 0.0,
        lower_disp_limit: float = 0.0,
        upper_alarm_limit: float | None = None,
        upper_warning_limit: float | None = None,
        lower_warning_limit: float | None = None,
        lower_alarm_limit: float | None = None,
        upper_ctrl_limit: float = 0.0,
        lower_ctrl_limit: float = 0.0,
        read_only: bool = False,
        alarm_status: AlarmStatus | int | None = None,
        alarm_severity: AlarmSeverity | int | None = None,
        timestamp: float | None = None,
        put_hook: PutHook | None = None,
        record_type: str = "caioc",
        encoding: str = "utf-8",
        upper_alarm_severity: AlarmSeverity | int | str = AlarmSeverity.MAJOR,
        upper_warning_severity: AlarmSeverity | int | str = AlarmSeverity.MINOR,
        lower_warning_severity: AlarmSeverity | int | str = AlarmSeverity.MINOR,
        lower_alarm_severity: AlarmSeverity | int | str = AlarmSeverity.MAJOR,
        alarm_hysteresis: float = 0.0,
        monitor_deadband: float = -1.0,
        archive_deadband: float = -1.0,
        disable_severity: AlarmSeverity | int | str = AlarmSeverity.INVALID,
    ) -> None:
        if type(self) is ChannelData or not hasattr(self, "native_type"):
            raise TypeError("ChannelData is abstract: use ChannelDouble, ChannelEnum ...")
        # reply_key(data_type, count) -> (payload, count)
        self._cache: dict[int, tuple[bytes | memoryview, int]] = {}
        # (data_type, data_count, count 0 means current length) -> id -> (mask, subscription)
        self._groups: dict[tuple[int, int, bool], dict[int, tuple[int, Subscription]]] = {}
        self._group_of: dict[int, tuple[int, int, bool]] = {}
        self._alarm_table = None
        self._write_lock: PutLock | None = None
        #: Text encoding of DBR strings, units and enum strings.
        self.encoding = encoding
        # Metadata as given, checked. A value that is the default is not
        # stored on the instance (the class holds it): most PVs take the
        # defaults, so a thousand of them start faster and smaller.
        given = (
            units,
            precision,
            upper_disp_limit,
            lower_disp_limit,
            upper_alarm_limit,
            upper_warning_limit,
            lower_warning_limit,
            lower_alarm_limit,
            upper_ctrl_limit,
            lower_ctrl_limit,
            record_type,
            upper_alarm_severity,
            upper_warning_severity,
            lower_warning_severity,
            lower_alarm_severity,
        )
        if given != _METADATA_DEFAULT_VALUES:  # one comparison in C for the usual case
            for (name, default), setting in zip(_METADATA_DEFAULTS, given, strict=True):
                if setting is not default and (
                    type(setting) is not type(default) or setting != default
                ):
                    setattr(self, name, setting)
        self.alarm_hysteresis = float(alarm_hysteresis)
        self.monitor_deadband = float(monitor_deadband)
        self.archive_deadband = float(archive_deadband)
        self.disable_severity = (
            disable_severity
            if disable_severity is AlarmSeverity.INVALID
            else as_severity(self, disable_severity)
        )
        #: True: clients may only read (access rights READ, puts refused).
        self.read_only = bool(read_only)
        #: Called with each client put before it is stored (see the module doc).
        self.put_hook = put_hook

        native_type = self.native_type
        generic = _generic(self)  # the coercion of ChannelData itself, not overridden
        quick = None
        if (max_length is None or max_length == 1) and native_type in _NUMBERS and generic:
            # A scalar number, the common PV: stored as set() stores it, no numpy.
            quick = _quick_number(value, native_type)
        if quick is not None:
            self.max_length = 1
            self._scalar = True
            self._value: Any = quick
        else:
            is_array = looks_like_array(value, native_type)
            native = self._native(value) if value is not None else None
            if max_length is None:
                max_length = len(native) if native is not None and is_array else 1
            if int(max_length) < 1:
                raise ValueError("max_length must be at least 1 (give it for an empty array)")
            #: Most elements the value may have (CREATE_CHAN reply count).
            self.max_length = int(max_length)
            self._scalar = self.max_length == 1
            if native is None:
                native = python_to_native(
                    [] if not self._scalar else ZERO_VALUES[native_type], native_type
                )
            if generic:  # python_to_native made ``native``: it may become the value
                self._value = self._from_native(native, strict=True, fresh=True)
            else:
                self._value = self._from_native(native, strict=True)
        self._deadbanded = self._scalar and native_type in _NUMBERS
        #: How set() stores a Python int or float without numpy: the native
        #: type of a scalar number whose coercion is exactly the generic one.
        self._quick_type = native_type if self._deadbanded and generic else None
        if self._deadbanded and (
            self._meta_upper_alarm_limit is None
            and self._meta_upper_warning_limit is None
            and self._meta_lower_warning_limit is None
            and self._meta_lower_alarm_limit is None
        ):
            self._alarm_table = ()  # no alarm limit set: _active_limits' answer, known already
        self._init_alarms(self._value, alarm_status, alarm_severity)
        self._stamp = epics_stamp(timestamp)

    # ------------------------------------------------------------------ state

    @property
    def value(self) -> Any:
        """The current value (scalar, or read-only array / tuple of str)."""
        return self._value

    @property
    def length(self) -> int:
        """The current element count."""
        return 1 if self._scalar else len(self._value)

    @property
    def timestamp(self) -> float:
        """Time of the current value, POSIX seconds."""
        return epics_to_posix(*self._stamp)

    @property
    def subscription_count(self) -> int:
        """How many subscriptions this channel feeds."""
        return len(self._group_of)

    def access_rights(self, host: str, user: str) -> AccessRights:
        """READ_WRITE, or READ for a ``read_only`` channel."""
        return AccessRights.READ if self.read_only else AccessRights.READ_WRITE

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(value={self._value!r}, max_length={self.max_length}, "
            f"alarm=({self._status.name}, {self._severity.name}))"
        )

    # ------------------------------------------------------------------ reads

    async def read(
        self, data_type: int, data_count: int, client_version: int
    ) -> tuple[bytes | memoryview, int]:
        """(payload, count) of the value as ``data_type``: see :meth:`encode`.

        Subclasses may override this to refresh the value first.
        """
        return self.encode(data_type, data_count, client_version)

    def encode(
        self, data_type: int, data_count: int, client_version: int
    ) -> tuple[bytes | memoryview, int]:
        """The value and its metadata as ``data_type``, ``data_count`` elements.

        The count is ``resolve_count``'s (0 from a version >= 13 client: the
        current length); the values are truncated or zero-padded to it.
        Replies are cached until the value or metadata changes; payloads are
        shared and must not be modified. Raises :class:`ChannelError`.
        """
        if not 0 <= data_type <= _LAST_TYPE:
            raise ChannelError(ECA.BADTYPE, f"invalid DBR type {data_type}")
        if data_count < 0:
            raise ChannelError(ECA.BADCOUNT, f"negative element count {data_count}")
        if data_type == ChannelType.CLASS_NAME:
            count = data_count or 1
        else:
            count = resolve_count(data_count, self.length, client_version, self.max_length)
        key = count << 16 | data_type  # reply_key(data_type, count)
        reply = self._cache.get(key)
        if reply is None:
            reply = self._encode(data_type, count)
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = reply
        return reply

    def _encode(self, data_type: int, count: int) -> tuple[bytes | memoryview, int]:
        if data_type in _WRITE_ONLY:
            name = ChannelType(data_type).name
            raise ChannelError(ECA.GETFAIL, f"DBR_{name} can be written, not read")
        if data_type == ChannelType.CLASS_NAME:
            names = [self.record_type] + [""] * (count - 1)
            return encode_dbr(data_type, names, encoding=self.encoding)
        target = NATIVE_TYPES[data_type]
        metadata = self._metadata(data_type)
        try:
            if self._scalar and count == 1:
                value = self._value
                if target != self.native_type:
                    value = self._convert_scalar(value, target)
                return encode_dbr(data_type, value, metadata, encoding=self.encoding)
            values = self._values_as(target)
            if len(values) != count:
                values = fit_count(values, count)
            elif metadata is None and values is self._value:
                # The stored array is immutable and big-endian: send it as is.
                return memoryview(values).cast("B"), count
            return encode_dbr(data_type, values, metadata, encoding=self.encoding)
        except ConversionError as exc:
            name = ChannelType(data_type).name
            raise ChannelValueError(exc.get_eca, f"cannot read as DBR_{name}: {exc}") from exc
        except DbrError as exc:
            raise ChannelValueError(ECA.GETFAIL, str(exc)) from exc

    def _convert_scalar(self, value: Any, target: int) -> Any:
        if self.native_type == _STRING and target == _ENUM:
            return int(string_as_enum(value, self.encoding)[0])
        return convert_scalar(
            value,
            self.native_type,
            target,
            precision=self._string_precision(),
            enum_strings=self._enum_states() or None,
            illegal_enum=self.illegal_enum,
            encoding=self.encoding,
        )

    def _values_as(self, target: int) -> np.ndarray:
        value, native = self._value, self.native_type
        if target == native and native != _STRING:
            return np.array([value], VALUE_DTYPES[native]) if self._scalar else value
        if native == _STRING and target == _ENUM:
            return string_as_enum(value, self.encoding)
        return convert_values(
            value,
            native,
            target,
            precision=self._string_precision(),
            enum_strings=self._enum_states() or None,
            illegal_enum=self.illegal_enum,
            encoding=self.encoding,
        )

    def _string_precision(self) -> int:
        return 6 if self.precision is None else self.precision

    def _metadata(self, data_type: int) -> dict[str, Any] | None:
        cls = DBR_CLASSES[data_type]
        if cls is DbrClass.PLAIN:
            return None
        metadata: dict[str, Any] = {"status": self._status, "severity": self._severity}
        if cls is DbrClass.TIME:
            metadata["secondsSinceEpoch"], metadata["nanoseconds"] = self._stamp
        elif cls is DbrClass.GR or cls is DbrClass.CTRL:
            target = NATIVE_TYPES[data_type]
            if target == _ENUM:
                metadata["strs"] = self._enum_states()
            elif target != _STRING:
                metadata["units"] = self.units
                if target in (_FLOAT, _DOUBLE):
                    metadata["precision"] = as_short(self.precision or 0)
                for name in LIMIT_NAMES:
                    limit = getattr(self, name)
                    if (
                        name in SEVERITY_OF
                        and self.limits_need_severity
                        and not getattr(self, SEVERITY_OF[name])
                    ):
                        limit = None  # aiRecord's get_alarm_double: NaN when off
                    metadata[name] = limit_as(limit, target)
        elif data_type == ChannelType.STSACK_STRING:
            metadata["ackt"], metadata["acks"] = self._ackt, self._acks
        return metadata

    # ------------------------------------------------------------------ writes

    async def write(self, data_type: int, data_count: int, payload: bytes | memoryview) -> None:
        """Store a client's put of ``data_count`` elements of ``data_type``.

        The value is converted as epics-base converts it, checked, passed
        through ``put_hook`` and stored with a new timestamp and an alarm
        computed from it; subscribers get a VALUE|LOG update as the
        deadbands allow (plus ALARM when the alarm changed). While
        :attr:`disabled` the value is only stored. Raises :class:`ChannelError`.
        """
        if self.write_now(data_type, data_count, payload):
            return
        value = self._accept_put(data_type, data_count, payload)
        hook = self.put_hook
        if value is _STORED or hook is None:
            return
        if self._write_lock is None:
            self._write_lock = PutLock()  # asyncio's, trio's or curio's
        async with self._write_lock:  # puts reach the hook and the value in order
            try:
                replacement = await hook(self, value)
            except ChannelError:
                raise
            except Exception as exc:
                raise ChannelError(ECA.PUTFAIL, f"put refused: {exc}") from exc
            if replacement is not None:
                value = self._coerce(replacement)
            self._store(value, None, None, None)

    def write_now(self, data_type: int, data_count: int, payload: bytes | memoryview) -> bool:
        """:meth:`write` when nothing needs awaiting (no ``put_hook``): True, done.

        False (nothing done) when a ``put_hook`` is set: :meth:`write` must
        be awaited. The server calls this first, so that a put to a plain
        channel is stored, and its monitors posted, without a coroutine.
        """
        if self.put_hook is not None:
            return False
        value = self._accept_put(data_type, data_count, payload)
        if value is not _STORED:
            self._store(value, None, None, None)
        return True

    def _accept_put(self, data_type: int, data_count: int, payload: bytes | memoryview) -> Any:
        """A put's value, checked and converted; _STORED if nothing is left to do."""
        if self.read_only:
            raise ChannelError(ECA.NOWTACCESS, "the channel is read-only")
        if data_type in _WRITE_ONLY:
            self._put_acknowledge(data_type, payload)
            return _STORED
        value = self._decode_put(data_type, data_count, payload)
        if self._disabled:  # the field is written, the record not processed
            self._value = value
            self._cache.clear()
            self.check_disabled()
            return _STORED
        return value

    def _decode_put(self, data_type: int, data_count: int, payload: bytes | memoryview) -> Any:
        if not 0 <= data_type <= _LAST_TYPE:
            raise ChannelError(ECA.BADTYPE, f"invalid DBR type {data_type}")
        if data_type in _READ_ONLY:
            name = ChannelType(data_type).name
            raise ChannelError(ECA.PUTFAIL, f"DBR_{name} can be read, not written")
        if data_count < 1 and self._scalar:
            raise ChannelError(ECA.BADCOUNT, "a put of no element to a scalar channel")
        source, native = NATIVE_TYPES[data_type], self.native_type
        if data_count == 1 and self._scalar and source != _STRING and native != _STRING:
            fast = decode_scalar(data_type, payload)
            if fast is not None:
                value = fast[0] if source == native else convert_scalar(fast[0], source, native)
                self._check_enum_index([value])
                return self._clamp(value)
        need = payload_size(data_type, data_count)
        have = payload.nbytes if isinstance(payload, memoryview) else len(payload)
        if source == _STRING and have < need:  # libca sends a lone string unpadded
            payload = bytes(payload) + bytes(need - have)
        try:
            _, values = decode_dbr(data_type, data_count, payload)
        except DbrError as exc:
            raise ChannelValueError(ECA.BADCOUNT, str(exc)) from exc
        try:
            converted = convert_values(
                values[: self.max_length],
                data_type,
                native,
                precision=self._string_precision(),
                enum_strings=self._enum_states() or None,
                encoding=self.encoding,
            )
        except ConversionError as exc:
            name = ChannelType(data_type).name
            raise ChannelValueError(exc.put_eca, f"cannot write DBR_{name}: {exc}") from exc
        return self._clamp(self._from_native(converted, strict=False))

    def _clamp(self, value: Any) -> Any:
        """A scalar put limited to the control limits (ao/longout DRVH, DRVL)."""
        high, low = self.upper_ctrl_limit, self.lower_ctrl_limit
        if not self._scalar or self.native_type not in _NUMBERS or not high > low:
            return value
        if value > high:
            value = high if self.native_type in (_FLOAT, _DOUBLE) else math.floor(high)
        elif value < low:
            value = low if self.native_type in (_FLOAT, _DOUBLE) else math.ceil(low)
        if self.native_type == _FLOAT:
            return float(convert_scalar(value, _DOUBLE, _FLOAT))
        return value

    # ------------------------------------------------------------------ server side

    async def set(
        self,
        value: Any,
        *,
        status: AlarmStatus | int | None = None,
        severity: AlarmSeverity | int | None = None,
        timestamp: float | None = None,
    ) -> None:
        """Store ``value`` from server code and publish it to subscribers.

        Monitors get it as the deadbands allow; while :attr:`disabled` the
        call is ignored (see there).

        With neither ``status`` nor ``severity`` the alarm is computed from
        the value (alarm limits, enum state severities); with either, the
        pair is taken as given (the missing one NO_ALARM). ``timestamp`` is
        POSIX seconds (None: now). Unlike a client put, the value is neither
        clamped nor passed to ``put_hook``, and must fit the native type and
        ``max_length`` exactly (else :class:`ChannelValueError`).
        """
        self.set_nowait(value, status=status, severity=severity, timestamp=timestamp)

    def set_nowait(
        self,
        value: Any,
        *,
        status: AlarmStatus | int | None = None,
        severity: AlarmSeverity | int | None = None,
        timestamp: float | None = None,
    ) -> None:
        """:meth:`set` for code that cannot await (callbacks, other threads' hand-offs)."""
        quick = self._quick_type
        stored = None if quick is None else _quick_number(value, quick)
        if stored is None:
            stored = self._coerce(value)
        self._store(stored, status, severity, timestamp)

    def _store(
        self,
        value: Any,
        status: AlarmStatus | int | None,
        severity: AlarmSeverity | int | None,
        timestamp: float | None,
    ) -> None:
        if self._disabled:
            self.check_disabled()
            return
        if status is None and severity is None:
            pair = self._alarm_for(value)
        else:
            pair = alarm_pair(status, severity)
        self._stamp = epics_now() if timestamp is None else epics_stamp(timestamp)
        self._value = value
        changed = self._update_alarm(*pair)
        if not self._deadbanded:
            mask = _UPDATE_AND_ALARM if changed else _UPDATE
        else:
            mask = self._deadband_mask(value) | (_ALARM if changed else 0)
        self._cache.clear()
        if mask:
            self.publish(mask)

    def _metadata_changed(self) -> None:
        self._alarm_table = None
        self._cache.clear()
        if self._groups:
            self.publish(SubscriptionMask.PROPERTY)

    # ------------------------------------------------------------------ values

    def _native(self, value: Any) -> np.ndarray:
        try:
            return python_to_native(value, self.native_type, self._enum_states(), self.encoding)
        except (ValueError, TypeError) as exc:
            raise ChannelValueError(ECA.PUTFAIL, str(exc)) from exc

    def _coerce(self, value: Any) -> Any:
        """A value from server code in the stored form, checked."""
        if _generic(self):  # python_to_native made the array: it may become the value
            return self._from_native(self._native(value), strict=True, fresh=True)
        return self._from_native(self._native(value), strict=True)

    def _from_native(self, values: np.ndarray, strict: bool, fresh: bool = False) -> Any:
        """The stored form of an array of native values (``strict``: no truncation).

        ``fresh``: ``values`` was made for this call (python_to_native's
        result) and nothing else holds it, so an array of the stored dtype
        becomes the value as it is, without a copy (8 MB of waveform is
        copied once, not twice).
        """
        if len(values) > self.max_length:
            if strict:
                raise ChannelValueError(
                    ECA.BADCOUNT, f"{len(values)} elements, at most {self.max_length}"
                )
            values = values[: self.max_length]
        self._check_enum_index(values)
        if self._scalar:
            if not len(values):
                raise ChannelValueError(ECA.BADCOUNT, "no value for a scalar channel")
            if self.native_type == _STRING:
                return decode_strings([values[0]], self.encoding)[0]
            return values[0].item()
        if self.native_type == _STRING:
            return tuple(decode_strings(values, self.encoding))
        dtype = VALUE_DTYPES[self.native_type]
        if fresh and values.dtype == dtype and values.flags.owndata and values.ndim == 1:
            stored = values
        else:
            stored = np.array(values, dtype=dtype)
        stored.flags.writeable = False
        return stored

    def _enum_states(self) -> tuple[str, ...]:
        return ()

    def _check_enum_index(self, values: Sequence[int] | np.ndarray) -> None:
        states = self._enum_states()
        limit = max(getattr(self, "states", 0), len(states))
        if states and len(values) and int(max(values)) >= limit:
            raise ChannelValueError(
                ECA.PUTFAIL, f"enum index {int(max(values))} is not one of the states {states}"
            )

    # ------------------------------------------------------------------ monitors

    def subscribe(self, subscription: Subscription) -> None:
        """Add a subscription and deliver the current value to it at once."""
        key = (
            subscription.data_type,
            subscription.data_count,
            subscription.client_version >= 13,
        )
        # a plain int: IntFlag's & would cost a microsecond per subscriber and update
        entry = (int(subscription.mask), subscription)
        self._groups.setdefault(key, {})[id(subscription)] = entry
        self._group_of[id(subscription)] = key
        self._deliver([subscription], key)

    def unsubscribe(self, subscription: Subscription) -> None:
        """Remove a subscription (unknown ones are ignored)."""
        key = self._group_of.pop(id(subscription), None)
        if key is None:
            return
        group = self._groups[key]
        del group[id(subscription)]
        if not group:
            del self._groups[key]

    def publish(self, mask: int) -> None:
        """Send the current value to each subscriber whose mask intersects ``mask``.

        Subscribers asking for the same (DBR type, count, count-0 meaning)
        share one encoded payload.
        """
        if not self._groups:
            return  # nobody subscribed (a polled PV's usual case): nothing to encode
        mask = int(mask)
        for key, group in list(self._groups.items()):
            targets = [s for wanted, s in group.values() if wanted & mask]
            if targets:
                self._deliver(targets, key)

    def _deliver(self, targets: list[Subscription], key: tuple[int, int, bool]) -> None:
        data_type, data_count, modern = key
        try:
            payload, count = self.encode(data_type, data_count, 13 if modern else 12)
        except ChannelError as error:
            # rsrv: status ECA_GETFAIL in the header, zeroed values (none when
            # the client asked for count 0).
            size = payload_size(data_type, data_count) if 0 <= data_type <= _LAST_TYPE else 0
            for subscription in targets:
                deliver_error = getattr(subscription, "deliver_error", None)
                if deliver_error is not None:
                    deliver_error(error.eca, bytes(size), data_count)
            return
        for subscription in targets:
            subscription.deliver(payload, count)


#: The metadata ``ChannelData.__init__`` takes, in its order, with the
#: signature's defaults: the class holds each, so that an instance keeping
#: a default stores nothing for it.
# The keyword-only defaults of __init__ (inspect.signature costs ~3 ms at import).
_INIT_DEFAULTS: dict[str, Any] = ChannelData.__init__.__kwdefaults__ or {}
_METADATA_DEFAULTS = tuple(
    (name, _INIT_DEFAULTS[name])
    for name in (
        "units",
        "precision",
        "upper_disp_limit",
        "lower_disp_limit",
        "upper_alarm_limit",
        "upper_warning_limit",
        "lower_warning_limit",
        "lower_alarm_limit",
        "upper_ctrl_limit",
        "lower_ctrl_limit",
        "record_type",
        "upper_alarm_severity",
        "upper_warning_severity",
        "lower_warning_severity",
        "lower_alarm_severity",
    )
)
_METADATA_DEFAULT_VALUES = tuple(default for _, default in _METADATA_DEFAULTS)
for _name, _default in _METADATA_DEFAULTS:
    # stored as the descriptor stores a value: checked (no instance needed
    # for these defaults)
    setattr(ChannelData, "_meta_" + _name, _default)
del _name, _default

"""DBR types: the data structures CA carries (db_access.h), as numpy dtypes.

Every DBR type 0-38 has a big-endian numpy structured dtype of one element
(:data:`DBR_DTYPES`) whose size and field offsets are exactly those of the
C struct in epics-base's ``db_access.h``: ``dbr_sts_double``,
``dbr_time_char``, ``dbr_ctrl_enum`` ... including the ``RISC_pad`` filler
fields, and a final ``value`` field holding the first value element. The
plain types (``DBR_DOUBLE`` ...), ``DBR_PUT_ACKT``/``DBR_PUT_ACKS`` and
``DBR_CLASS_NAME`` are a one-field struct with just ``value``.

Field names are the C member names, with one exception: the C
``epicsTimeStamp stamp`` member of the TIME structs is split into two flat
``>u4`` fields, ``secondsSinceEpoch`` (C ``stamp.secPastEpoch``) and
``nanoseconds`` (C ``stamp.nsec``). Seconds count from the EPICS epoch
1990-01-01 00:00 UTC; :func:`posix_to_epics` and :func:`epics_to_posix`
convert from and to POSIX time.

On the wire a reply of ``count`` elements is the struct's bytes up to the
value (the *metadata*, :data:`METADATA_SIZES` bytes, the C
``dbr_value_offset``) followed by ``count`` value elements
(:data:`VALUE_DTYPES`): :func:`payload_size` is the C ``dbr_size_n``
(before the 8-byte padding the CA header adds). :func:`decode_dbr` returns
zero-copy numpy views of a payload; :func:`encode_dbr` builds one.

GR_STRING and CTRL_STRING are laid out as ``dbr_sts_string`` (epics-base
implements neither). Strings are 40-byte NUL-padded fields (``S40``);
:func:`decode_strings` turns them into Python ``str``, stopping at the
first NUL as C does.
"""

from __future__ import annotations

import enum
import math
import struct
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from ._constants import (
    EPICS_EPOCH_OFFSET,
    MAX_ENUM_STATES,
    MAX_ENUM_STRING_SIZE,
    MAX_STRING_SIZE,
    MAX_UNITS_SIZE,
)

__all__ = [
    "DBR_CLASSES",
    "DBR_DTYPES",
    "METADATA_DTYPES",
    "METADATA_SIZES",
    "NATIVE_TYPES",
    "VALUE_DTYPES",
    "VALUE_SIZES",
    "ChannelType",
    "DbrClass",
    "DbrEncodeError",
    "DbrError",
    "TruncatedPayloadError",
    "ctrl_type",
    "dbr_class",
    "decode_dbr",
    "decode_scalar",
    "decode_strings",
    "double_to_float",
    "encode_dbr",
    "epics_now",
    "epics_to_posix",
    "gr_type",
    "metadata_dict",
    "native_type",
    "payload_size",
    "posix_to_epics",
    "promote",
    "scalar_layout",
    "sts_type",
    "time_type",
]


class ChannelType(enum.IntEnum):
    """DBR type numbers 0-38 (db_access.h DBR_*)."""

    STRING = 0
    INT = 1  # also called SHORT
    FLOAT = 2
    ENUM = 3
    CHAR = 4
    LONG = 5
    DOUBLE = 6

    STS_STRING = 7
    STS_INT = 8
    STS_FLOAT = 9
    STS_ENUM = 10
    STS_CHAR = 11
    STS_LONG = 12
    STS_DOUBLE = 13

    TIME_STRING = 14
    TIME_INT = 15
    TIME_FLOAT = 16
    TIME_ENUM = 17
    TIME_CHAR = 18
    TIME_LONG = 19
    TIME_DOUBLE = 20

    GR_STRING = 21
    GR_INT = 22
    GR_FLOAT = 23
    GR_ENUM = 24
    GR_CHAR = 25
    GR_LONG = 26
    GR_DOUBLE = 27

    CTRL_STRING = 28
    CTRL_INT = 29
    CTRL_FLOAT = 30
    CTRL_ENUM = 31
    CTRL_CHAR = 32
    CTRL_LONG = 33
    CTRL_DOUBLE = 34

    PUT_ACKT = 35
    PUT_ACKS = 36
    STSACK_STRING = 37
    CLASS_NAME = 38


class DbrClass(enum.IntEnum):
    """Family of a DBR type: which metadata precedes the values."""

    PLAIN = 0
    STS = 1
    TIME = 2
    GR = 3
    CTRL = 4
    #: DBR_PUT_ACKT, DBR_PUT_ACKS, DBR_STSACK_STRING, DBR_CLASS_NAME.
    SPECIAL = 5


class DbrError(ValueError):
    """Invalid DBR type number, element count or value for a DBR layout."""


class TruncatedPayloadError(DbrError):
    """A payload holds fewer bytes than its type and element count need."""


class DbrEncodeError(DbrError):
    """A value cannot be stored in a DBR type (string too long, out of range ...)."""


# --------------------------------------------------------------------------
# Layout tables, built once at import.

_LAST_TYPE = 38
_STRING_VALUE = f"S{MAX_STRING_SIZE}"
#: Value element of each plain type 0-6 (db_access.h dbr_*_t, big-endian).
_PLAIN_VALUE = (_STRING_VALUE, ">i2", ">f4", ">u2", "u1", ">i4", ">f8")
_GR_LIMITS = (
    "upper_disp_limit",
    "lower_disp_limit",
    "upper_alarm_limit",
    "upper_warning_limit",
    "lower_warning_limit",
    "lower_alarm_limit",
)
_CTRL_LIMITS = (*_GR_LIMITS, "upper_ctrl_limit", "lower_ctrl_limit")
_UNITS = ("units", f"S{MAX_UNITS_SIZE}")
_STRS = ("strs", (f"S{MAX_ENUM_STRING_SIZE}", MAX_ENUM_STATES))
_STATUS = (("status", ">i2"), ("severity", ">i2"))
_STAMP = (("secondsSinceEpoch", ">u4"), ("nanoseconds", ">u4"))

_Field = tuple[str, Any]


def _sts(native: int) -> list[_Field]:
    pad = {4: [("RISC_pad", "u1")], 6: [("RISC_pad", ">i4")]}.get(native, [])
    return [*_STATUS, *pad]


def _time(native: int) -> list[_Field]:
    pads: dict[int, list[_Field]] = {
        1: [("RISC_pad", ">i2")],
        3: [("RISC_pad", ">i2")],
        4: [("RISC_pad0", ">i2"), ("RISC_pad1", "u1")],
        6: [("RISC_pad", ">i4")],
    }
    return [*_STATUS, *_STAMP, *pads.get(native, [])]


def _graphic(native: int, limits: tuple[str, ...], float_pad: str) -> list[_Field]:
    if native == 0:  # GR/CTRL_STRING are dbr_sts_string
        return [*_STATUS]
    if native == 3:  # dbr_gr_enum / dbr_ctrl_enum
        return [*_STATUS, ("no_str", ">i2"), _STRS]
    elem = _PLAIN_VALUE[native]
    if native in (2, 6):
        head: list[_Field] = [*_STATUS, ("precision", ">i2"), (float_pad, ">i2"), _UNITS]
    else:
        head = [*_STATUS, _UNITS]
    tail: list[_Field] = [("RISC_pad", "u1")] if native == 4 else []
    return [*head, *((name, elem) for name in limits), *tail]


def _layout(data_type: int) -> tuple[list[_Field], str]:
    """(metadata fields in C order, value element format) of a DBR type."""
    if data_type <= 6:
        return [], _PLAIN_VALUE[data_type]
    if data_type <= 34:
        cls, native = divmod(data_type, 7)
        if cls == 1:
            fields = _sts(native)
        elif cls == 2:
            fields = _time(native)
        elif cls == 3:
            fields = _graphic(native, _GR_LIMITS, "RISC_pad0")
        else:  # dbr_ctrl_float names its filler RISC_pad, dbr_ctrl_double RISC_pad0
            fields = _graphic(native, _CTRL_LIMITS, "RISC_pad" if native == 2 else "RISC_pad0")
        return fields, _PLAIN_VALUE[native]
    if data_type in (35, 36):
        return [], ">u2"
    if data_type == 37:
        ushorts = ("status", "severity", "ackt", "acks")
        return [(name, ">u2") for name in ushorts], _STRING_VALUE
    return [], _STRING_VALUE


def _struct_dtype(fields: list[_Field]) -> np.dtype:
    names, formats, offsets = [], [], []
    offset = 0
    for name, fmt in fields:
        dt = np.dtype(fmt)
        names.append(name)
        formats.append(dt)
        offsets.append(offset)
        offset += dt.itemsize
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": offset})


_STRUCT_CODES = dict(zip(("i1", "i2", "i4", "u1", "u2", "u4", "f4", "f8"), "bhiBHIfd", strict=True))


def _struct_code(dt: np.dtype) -> tuple[str, int]:
    """(struct module code, number of arguments) of one dtype field."""
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return f"{base.itemsize}s" * shape[0], shape[0]
    if dt.kind == "S":
        return f"{dt.itemsize}s", 1
    return _STRUCT_CODES[f"{dt.kind}{dt.itemsize}"], 1


class _Info(NamedTuple):
    dtype: np.dtype  # the whole C struct, value field included
    meta_dtype: np.dtype | None
    value_dtype: np.dtype
    meta_size: int
    value_size: int
    native: ChannelType
    cls: DbrClass
    # (name, kind, size): kind "n" number, "s" fixed string, "S" enum strings
    meta_fields: tuple[tuple[str, str, int], ...]
    meta_struct: struct.Struct | None
    int_args: tuple[tuple[int, int, bool], ...]  # integer arguments: (index, bits, signed)
    f4_args: tuple[int, ...]  # ... and that are float32
    value_struct: struct.Struct | None  # numbers only
    is_string: bool


def _build(data_type: int) -> _Info:
    fields, value_fmt = _layout(data_type)
    meta_dtype = _struct_dtype(fields) if fields else None
    full = _struct_dtype([*fields, ("value", value_fmt)])
    value_dtype = np.dtype(value_fmt)
    codes = ">"
    spec = []
    int_args: list[tuple[int, int, bool]] = []
    f4_args: list[int] = []
    nargs = 0
    for name, fmt in fields:
        dt = np.dtype(fmt)
        code, n = _struct_code(dt)
        if dt.kind in "iu":
            int_args.append((nargs, 8 * dt.itemsize, dt.kind == "i"))
        elif code == "f":
            f4_args.append(nargs)
        nargs += n
        codes += code
        sub = dt.subdtype
        kind = "S" if sub else ("s" if dt.kind == "S" else "n")
        spec.append((name, kind, (sub[0] if sub else dt).itemsize))
    is_string = value_dtype.kind == "S"
    if data_type <= 34:
        native = ChannelType(data_type % 7)
        cls = DbrClass(data_type // 7)
    else:
        native = ChannelType.STRING if is_string else ChannelType.ENUM
        cls = DbrClass.SPECIAL
    return _Info(
        dtype=full,
        meta_dtype=meta_dtype,
        value_dtype=value_dtype,
        meta_size=meta_dtype.itemsize if meta_dtype is not None else 0,
        value_size=value_dtype.itemsize,
        native=native,
        cls=cls,
        meta_fields=tuple(spec),
        meta_struct=struct.Struct(codes) if fields else None,
        int_args=tuple(int_args),
        f4_args=tuple(f4_args),
        value_struct=None if is_string else struct.Struct(">" + _struct_code(value_dtype)[0]),
        is_string=is_string,
    )


_INFO: tuple[_Info, ...] = tuple(_build(t) for t in range(_LAST_TYPE + 1))

#: Per DBR type: the one-element C struct, ``value`` (first element) included.
DBR_DTYPES: tuple[np.dtype, ...] = tuple(i.dtype for i in _INFO)
#: Per DBR type: the struct without ``value`` (None for types without metadata).
METADATA_DTYPES: tuple[np.dtype | None, ...] = tuple(i.meta_dtype for i in _INFO)
#: Per DBR type: the big-endian dtype of one value element.
VALUE_DTYPES: tuple[np.dtype, ...] = tuple(i.value_dtype for i in _INFO)
#: Per DBR type: bytes before the first value (C ``dbr_value_offset``).
METADATA_SIZES: tuple[int, ...] = tuple(i.meta_size for i in _INFO)
#: Per DBR type: bytes of one value element (C ``dbr_value_size``).
VALUE_SIZES: tuple[int, ...] = tuple(i.value_size for i in _INFO)
#: Per DBR type: the plain type 0-6 whose values it carries. The special
#: types map to the plain type of the same value layout: PUT_ACKT/PUT_ACKS
#: (C ``epicsUInt16``) to ENUM, STSACK_STRING/CLASS_NAME to STRING.
NATIVE_TYPES: tuple[ChannelType, ...] = tuple(i.native for i in _INFO)
#: Per DBR type: its :class:`DbrClass`.
DBR_CLASSES: tuple[DbrClass, ...] = tuple(i.cls for i in _INFO)


class _Scalar(NamedTuple):
    """One element with STS/TIME (or no) metadata in a single struct."""

    struct: struct.Struct  # padding fields are pad bytes, not arguments
    names: tuple[str, ...]  # the metadata arguments, in order
    zeros: tuple[int, ...]
    stamped: bool


#: The metadata fields of one numeric element: plain, STS, TIME.
_SCALAR_LAYOUTS = (
    (),
    ("status", "severity"),
    ("status", "severity", "secondsSinceEpoch", "nanoseconds"),
)


def _scalar(info: _Info) -> _Scalar | None:
    # Only metadata made of numbers (plain, STS, TIME) qualifies; GR/CTRL
    # carry units and enum strings that need the general path.
    if info.value_struct is None or any(kind != "n" for _, kind, _ in info.meta_fields):
        return None
    codes = ""
    names: list[str] = []
    meta = info.meta_dtype
    for name in meta.names or () if meta is not None else ():
        field = meta.fields[name][0]  # type: ignore[union-attr,index]
        if name.startswith("RISC_pad"):
            codes += f"{field.itemsize}x"
        else:
            codes += _struct_code(field)[0]
            names.append(name)
    value_code = info.value_struct.format[1:]
    # decode_scalar builds the metadata dict of each layout by hand
    assert tuple(names) in _SCALAR_LAYOUTS, names
    return _Scalar(
        struct.Struct(">" + codes + value_code),
        tuple(names),
        (0,) * len(names),
        "secondsSinceEpoch" in names,
    )


_SCALAR: tuple[_Scalar | None, ...] = tuple(_scalar(info) for info in _INFO)


def scalar_layout(data_type: int) -> tuple[str, tuple[str, ...]] | None:
    """(struct codes, metadata field names) of one element with its metadata.

    For the types whose metadata is all numbers (plain, STS and TIME of the
    numeric types); None otherwise. Codes are big-endian without the ``>``,
    so callers can prepend a header of their own.
    """
    fast = _SCALAR[data_type] if 0 <= data_type <= _LAST_TYPE else None
    return None if fast is None else (fast.struct.format[1:], fast.names)


def decode_scalar(data_type: int, payload: bytes | memoryview) -> tuple[Any, dict[str, Any]] | None:
    """(value, metadata dict) of one numeric element, without numpy.

    The metadata dict is what :func:`metadata_dict` gives (TIME types get a
    ``timestamp`` in POSIX seconds). None when the type has metadata beyond
    numbers (GR, CTRL), holds strings, or the payload is too short: use
    :func:`decode_dbr` then.
    """
    fast = _SCALAR[data_type] if 0 <= data_type <= _LAST_TYPE else None
    if fast is None or len(payload) < fast.struct.size:
        return None
    fields = fast.struct.unpack_from(payload)
    # The value is the last field. The metadata is one of three layouts
    # (_scalar asserts it): dict displays with constant keys build faster
    # than dict(zip(names, fields)).
    if fast.stamped:  # epics_to_posix, inlined: the fields are ints already
        seconds, nanoseconds = fields[2], fields[3]
        return fields[-1], {
            "status": fields[0],
            "severity": fields[1],
            "secondsSinceEpoch": seconds,
            "nanoseconds": nanoseconds,
            "timestamp": (seconds + EPICS_EPOCH_OFFSET) + nanoseconds / 1e9,
        }
    if fast.names:
        return fields[-1], {"status": fields[0], "severity": fields[1]}
    return fields[-1], {}


def _info(data_type: int) -> _Info:
    if not 0 <= data_type <= _LAST_TYPE:
        raise DbrError(f"invalid DBR type {data_type!r} (valid: 0-{_LAST_TYPE})")
    return _INFO[data_type]


def native_type(data_type: int) -> ChannelType:
    """The plain type (0-6) whose values ``data_type`` carries (see NATIVE_TYPES)."""
    return _info(data_type).native


def dbr_class(data_type: int) -> DbrClass:
    """Whether ``data_type`` is a plain, STS, TIME, GR, CTRL or special type."""
    return _info(data_type).cls


def promote(data_type: int, cls: DbrClass) -> ChannelType:
    """The type of class ``cls`` carrying the values of ``data_type``.

    ``promote(ChannelType.DOUBLE, DbrClass.TIME)`` is TIME_DOUBLE; any
    member of a family works as input (``promote(CTRL_INT, STS)`` is
    STS_INT). The special types cannot be promoted (:class:`DbrError`).
    """
    info = _info(data_type)
    if info.cls is DbrClass.SPECIAL or cls is DbrClass.SPECIAL:
        raise DbrError(f"cannot promote DBR type {data_type} to class {DbrClass(cls).name}")
    return ChannelType(int(info.native) + 7 * int(cls))


def sts_type(data_type: int) -> ChannelType:
    """The DBR_STS_* type of ``data_type``'s native type."""
    return promote(data_type, DbrClass.STS)


def time_type(data_type: int) -> ChannelType:
    """The DBR_TIME_* type of ``data_type``'s native type."""
    return promote(data_type, DbrClass.TIME)


def gr_type(data_type: int) -> ChannelType:
    """The DBR_GR_* type of ``data_type``'s native type."""
    return promote(data_type, DbrClass.GR)


def ctrl_type(data_type: int) -> ChannelType:
    """The DBR_CTRL_* type of ``data_type``'s native type."""
    return promote(data_type, DbrClass.CTRL)


def payload_size(data_type: int, data_count: int) -> int:
    """Unpadded bytes of ``data_count`` elements of ``data_type`` (dbr_size_n).

    That is the metadata size plus ``data_count`` value elements; a count of
    0 gives the metadata alone (an empty dynamic array).
    """
    info = _info(data_type)
    if data_count < 0:
        raise DbrError(f"negative element count {data_count}")
    return info.meta_size + data_count * info.value_size


# --------------------------------------------------------------------------
# Decoding


def decode_dbr(
    data_type: int, data_count: int, payload: memoryview | bytes | bytearray
) -> tuple[np.ndarray | None, np.ndarray]:
    """(metadata, values) as zero-copy numpy views of ``payload``.

    ``metadata`` is a 0-d structured array of :data:`METADATA_DTYPES`
    (``meta["severity"]``, ``meta["units"]`` ...) or None for the types
    without metadata; ``values`` a 1-d array of ``data_count`` elements of
    :data:`VALUE_DTYPES`. Both share ``payload``'s memory (read-only for
    ``bytes``). Extra trailing bytes (the CA 8-byte padding) are ignored; a
    payload shorter than :func:`payload_size` raises
    :class:`TruncatedPayloadError`.
    """
    info = _INFO[data_type] if 0 <= data_type <= _LAST_TYPE else _info(data_type)
    if data_count < 0:
        raise DbrError(f"negative element count {data_count}")
    need = info.meta_size + data_count * info.value_size
    have = payload.nbytes if isinstance(payload, memoryview) else len(payload)
    if have < need:
        raise TruncatedPayloadError(
            f"DBR type {data_type} with {data_count} elements needs {need} bytes, "
            f"payload has {have}"
        )
    meta = None
    if info.meta_dtype is not None:
        meta = np.ndarray((), info.meta_dtype, buffer=payload)
    return meta, np.frombuffer(payload, info.value_dtype, data_count, info.meta_size)


def decode_strings(
    values: Iterable[bytes], encoding: str = "utf-8", errors: str = "surrogateescape"
) -> list[str]:
    """Python strings of DBR string elements, each cut at its first NUL.

    The default ``surrogateescape`` error handler keeps bytes that are not
    valid UTF-8, so ``encode_dbr`` with the same encoding gives them back.
    """
    out = []
    for raw in values:
        b = bytes(raw)
        nul = b.find(b"\0")
        out.append((b if nul < 0 else b[:nul]).decode(encoding, errors))
    return out


def metadata_dict(metadata: np.ndarray | np.void, encoding: str = "utf-8") -> dict[str, Any]:
    """Python values of a decoded metadata record, padding fields left out.

    Integers and floats become ``int``/``float``, ``units`` a ``str`` and
    ``strs`` the list of the first ``no_str`` state strings; TIME metadata
    also gets a ``timestamp`` entry in POSIX seconds.
    """
    out: dict[str, Any] = {}
    names = metadata.dtype.names or ()
    for name in names:
        if name.startswith("RISC_pad") or name == "value":
            continue
        v = metadata[name]
        if name == "units":
            out[name] = decode_strings([v.item()], encoding)[0]
        elif name == "strs":
            n = max(0, min(int(metadata["no_str"]), MAX_ENUM_STATES)) if "no_str" in names else 16
            out[name] = decode_strings(np.asarray(v)[:n].tolist(), encoding)
        else:
            out[name] = v.item()
    if "secondsSinceEpoch" in names:
        out["timestamp"] = epics_to_posix(out["secondsSinceEpoch"], out["nanoseconds"])
    return out


# --------------------------------------------------------------------------
# Encoding


def _cstring(value: object, size: int, encoding: str, what: str) -> bytes:
    """``value`` as bytes for a ``size``-byte char field, NUL included."""
    if value is None:
        return b""
    if isinstance(value, str):
        b = value.encode(encoding, "surrogateescape")
    elif isinstance(value, (bytes, bytearray, memoryview, np.bytes_)):
        b = bytes(value)
    else:
        raise DbrEncodeError(f"{what} must be str or bytes, not {type(value).__name__}")
    nul = b.find(b"\0")
    if nul >= 0:
        b = b[:nul]
    return b[: size - 1]


def _meta_args(info: _Info, md: Mapping[str, Any], encoding: str) -> list[Any]:
    args: list[Any] = []
    get = md.get
    for name, kind, size in info.meta_fields:
        v = get(name)
        if kind == "n":
            args.append(0 if v is None else v)
        elif kind == "s":
            args.append(_cstring(v, size, encoding, name))
        else:
            states = [] if v is None else list(v)
            if len(states) > MAX_ENUM_STATES:
                raise DbrEncodeError(f"{len(states)} enum strings, at most {MAX_ENUM_STATES}")
            args.extend(_cstring(s, size, encoding, "enum string") for s in states)
            args.extend([b""] * (MAX_ENUM_STATES - len(states)))
    return args


def _encode_meta(info: _Info, metadata: object, encoding: str) -> bytes:
    assert info.meta_struct is not None and info.meta_dtype is not None
    if metadata is None:
        return bytes(info.meta_size)
    if isinstance(metadata, (np.ndarray, np.void)):
        if metadata.dtype == info.meta_dtype:
            return metadata.tobytes()
        names = metadata.dtype.names or ()
        metadata = {name: metadata[name] for name in names}
    if not isinstance(metadata, Mapping):
        raise DbrEncodeError(f"metadata must be a mapping or numpy record, not {type(metadata)}")
    if info.cls is DbrClass.TIME and "timestamp" in metadata:
        sec, nsec = posix_to_epics(float(metadata["timestamp"]))
        metadata = {"secondsSinceEpoch": sec, "nanoseconds": nsec, **metadata}
    if "strs" in metadata and "no_str" not in metadata:
        metadata = {**metadata, "no_str": len(list(metadata["strs"] or ()))}
    args = _meta_args(info, metadata, encoding)
    try:
        return info.meta_struct.pack(*args)
    except (struct.error, OverflowError):
        pass
    # As epics-base's db_access.c: integer limits are narrowed as C does
    # (float truncated toward zero, then wrapped), doubles clamped to float32.
    try:
        for i, bits, signed in info.int_args:
            v = int(args[i]) & ((1 << bits) - 1)
            args[i] = v - (1 << bits) if signed and v >> (bits - 1) else v
        for i in info.f4_args:
            args[i] = double_to_float(float(args[i]))
        return info.meta_struct.pack(*args)
    except (struct.error, OverflowError, TypeError, ValueError) as exc:
        raise DbrEncodeError(f"metadata does not fit its DBR fields: {exc}") from exc


_FLT_MAX = float(np.finfo(np.float32).max)
_FLT_MIN = float(np.finfo(np.float32).smallest_normal)
_F32 = struct.Struct("f")


def double_to_float(value: float) -> float:
    """A double narrowed to float32 as epics-base's epicsConvertDoubleToFloat does.

    Finite values beyond the float32 range become +-FLT_MAX, non-zero values
    closer to zero than FLT_MIN become +-FLT_MIN (not 0); NaN and infinities
    pass; anything else is rounded to nearest.
    """
    if value == 0.0 or not math.isfinite(value):
        return value
    magnitude = abs(value)
    if magnitude >= _FLT_MAX:
        return math.copysign(_FLT_MAX, value)
    if magnitude <= _FLT_MIN:
        return math.copysign(_FLT_MIN, value)
    return float(_F32.unpack(_F32.pack(value))[0])


def _encode_strings(values: object, encoding: str) -> tuple[bytes, int]:
    if isinstance(values, (str, bytes, bytearray, np.bytes_, np.str_)):
        items: list[Any] = [values]
    elif isinstance(values, np.ndarray):
        flat = values.reshape(-1)
        if flat.dtype.kind == "S" and flat.dtype.itemsize <= MAX_STRING_SIZE:
            raw = flat.astype(f"S{MAX_STRING_SIZE}")
            # an element filling all 40 bytes has no terminating NUL
            if not raw.size or not raw.view(np.uint8)[MAX_STRING_SIZE - 1 :: MAX_STRING_SIZE].any():
                return raw.tobytes(), int(raw.size)
        items = flat.tolist()
    elif isinstance(values, Iterable):
        items = list(values)
    else:
        raise DbrEncodeError(f"a DBR string value must be str or bytes, not {type(values)}")
    out = []
    for item in items:
        if isinstance(item, str):
            b = item.encode(encoding, "surrogateescape")
        elif isinstance(item, (bytes, bytearray, memoryview)):
            b = bytes(item)
        else:
            raise DbrEncodeError(f"a DBR string value must be str or bytes, not {type(item)}")
        if len(b) >= MAX_STRING_SIZE:
            raise DbrEncodeError(
                f"string of {len(b)} bytes does not fit a {MAX_STRING_SIZE}-byte DBR string "
                f"(at most {MAX_STRING_SIZE - 1} bytes plus NUL): {b[:50]!r}"
            )
        out.append(b.ljust(MAX_STRING_SIZE, b"\0"))
    return b"".join(out), len(out)


def _as_payload(arr: np.ndarray) -> memoryview:
    # The converted array is private to the message, so a byte view of it
    # is the payload: no second copy into a bytes object.
    return memoryview(arr).cast("B")  # type: ignore[arg-type]  # numpy arrays are buffers


def _encode_numbers(info: _Info, values: object, encoding: str) -> tuple[bytes | memoryview, int]:
    target = info.value_dtype
    if isinstance(values, (bytes, bytearray, memoryview)) and target.itemsize == 1:
        arr = np.frombuffer(bytes(values), dtype=np.uint8)
    elif isinstance(values, str) and target.itemsize == 1:
        arr = np.frombuffer(values.encode(encoding, "surrogateescape"), dtype=np.uint8)
    else:
        try:
            arr = np.asarray(values)
        except (ValueError, TypeError) as exc:
            raise DbrEncodeError(f"cannot make an array of {values!r}: {exc}") from exc
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if not arr.size:  # [] is float64 to numpy, and fits any type
        return b"", 0
    kind = arr.dtype.kind
    if kind == "O":
        try:
            arr = arr.astype(np.float64 if target.kind == "f" else np.int64)
        except (ValueError, TypeError, OverflowError) as exc:
            raise DbrEncodeError(f"cannot store {values!r} as {target}: {exc}") from exc
        kind = arr.dtype.kind
    if target.kind == "f":
        if kind not in "biuf":
            raise DbrEncodeError(f"cannot store {arr.dtype} values as {target}")
        with np.errstate(over="ignore", invalid="ignore"):  # float32 overflow: inf
            return _as_payload(arr.astype(target)), int(arr.size)
    if kind not in "biu":
        raise DbrEncodeError(
            f"cannot store {arr.dtype} values as {target} "
            "(use caioc.ca._convert.convert_values for EPICS conversions)"
        )
    if not np.can_cast(arr.dtype, target):
        lo, hi = np.iinfo(target).min, np.iinfo(target).max
        if arr.min() < lo or arr.max() > hi:
            raise DbrEncodeError(f"values outside [{lo}, {hi}] of {target}")
    return _as_payload(arr.astype(target)), int(arr.size)


def encode_dbr(
    data_type: int, values: object, metadata: object = None, *, encoding: str = "utf-8"
) -> tuple[bytes | memoryview, int]:
    """(unpadded payload bytes, element count) for ``values`` of ``data_type``.

    Arrays without metadata come back as a byte ``memoryview`` of a private
    big-endian copy, so sending them costs no further copy.

    ``values`` is a scalar, a sequence or a numpy array of the type's value
    (no EPICS conversion is done here: integers must fit the integer type,
    floats are refused for it; see ``_convert.convert_values``). For string
    types a ``str``/``bytes`` is one element, encoded with ``encoding`` into
    a 40-byte NUL-padded field; an element of 40 bytes or more raises
    :class:`DbrEncodeError`. For CHAR types a ``bytes``/``str`` is the raw
    byte array (no NUL added). An empty sequence gives count 0.

    ``metadata`` (ignored by types without it) is a mapping of field name to
    value or a numpy record; missing fields are zero. ``units`` and the
    enum ``strs`` are truncated to leave a terminating NUL as epics-base
    does; ``no_str`` defaults to ``len(strs)``; for TIME types a
    ``timestamp`` key (POSIX seconds) stands for ``secondsSinceEpoch`` and
    ``nanoseconds``.
    """
    if (type(values) is float or type(values) is int) and 0 <= data_type <= _LAST_TYPE:
        # The hot path of a server: one number, metadata as a plain dict.
        fast = _SCALAR[data_type]
        if fast is not None:
            args: Any = None
            if metadata is None:
                args = fast.zeros
            elif type(metadata) is dict and "timestamp" not in metadata:
                get = metadata.get
                args = [get(name, 0) for name in fast.names]
            if args is not None:
                try:
                    return fast.struct.pack(*args, values), 1
                except (struct.error, OverflowError):
                    pass  # the general path narrows as C does, or explains
    info = _info(data_type)
    head = b"" if info.meta_struct is None else _encode_meta(info, metadata, encoding)
    vs = info.value_struct
    if vs is not None and type(values) in (int, float):
        try:
            return head + vs.pack(values), 1
        except (struct.error, OverflowError):
            pass  # the general path gives the precise error (or float32 inf)
    body: bytes | memoryview
    if info.is_string:
        body, count = _encode_strings(values, encoding)
    else:
        body, count = _encode_numbers(info, values, encoding)
    return (head + body if head else body), count


# --------------------------------------------------------------------------
# Timestamps

_MAX_EPICS_SECONDS = 0xFFFFFFFF


def posix_to_epics(timestamp: float) -> tuple[int, int]:
    """(secondsSinceEpoch, nanoseconds) of a POSIX time in seconds.

    Nanoseconds are rounded to nearest. Times before the EPICS epoch
    (1990-01-01) or past the unsigned 32-bit range (2126) raise ValueError.
    """
    if not math.isfinite(timestamp):
        raise ValueError(f"timestamp {timestamp!r} is not finite")
    whole = math.floor(timestamp)
    nsec = round((timestamp - whole) * 1e9)
    if nsec >= 1_000_000_000:
        whole += 1
        nsec -= 1_000_000_000
    sec = whole - EPICS_EPOCH_OFFSET
    if not 0 <= sec <= _MAX_EPICS_SECONDS:
        raise ValueError(f"timestamp {timestamp!r} outside the EPICS time range")
    return sec, nsec


def epics_to_posix(seconds_since_epoch: int, nanoseconds: int) -> float:
    """POSIX time in seconds of an EPICS (secondsSinceEpoch, nanoseconds) pair."""
    return (int(seconds_since_epoch) + EPICS_EPOCH_OFFSET) + int(nanoseconds) / 1e9


def epics_now() -> tuple[int, int]:
    """The current time as (secondsSinceEpoch, nanoseconds), from ``time.time_ns``."""
    sec, nsec = divmod(time.time_ns(), 1_000_000_000)
    return sec - EPICS_EPOCH_OFFSET, nsec

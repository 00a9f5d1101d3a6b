"""Value conversions between DBR types, as an epics-base IOC does them.

A CA client may read or write a PV in any DBR type; the server converts
between the PV's native type and the requested one. This module does those
conversions the way epics-base's database access does (``dbFastLinkConv.c``
for scalars, ``dbConvert.c`` for arrays, ``cvtFast.c``, ``epicsStdlib.c``,
``epicsConvert.c``), so that a caioc server answers like an IOC:

numbers to strings
    Integers print as ``%d`` (CHAR as ``%u``). FLOAT and DOUBLE use the
    record precision (PREC; ``precision=None`` means 6, the dbConvert
    default) exactly as cvtFloatToString / cvtDoubleToString: a fast fixed
    point path rounding half up for ``|v| <= 1e7`` and precision <= 8,
    ``%.{min(p, 3)}f`` up to 1e16 (1e8 for FLOAT), ``%{p+7}.{min(p, 17)}e``
    beyond that or for precision > 8 (``%{p+6}.{min(p, 12)}e`` for FLOAT).
    A negative precision is taken modulo 2**16, as the C cast to
    ``unsigned short`` does.
strings to numbers
    ``epicsParseInt16/Int32/UInt8/Float/Double`` semantics: leading blanks
    skipped, decimal integers (``strtol`` base 10), C ``strtod`` floats
    (hex floats, ``inf``, ``nan`` included), trailing text ignored
    (``"12 mm"`` is 12, ``"1.5"`` read as an integer is 1), out-of-range
    values rejected, except that UInt8 (DBR_CHAR) accepts ``-1`` ... ``-255``
    and wraps them as ``strtoul`` does. An empty string is 0, as dbPut's
    scalar path does (epics-base's *array* put path rejects it).
    Unparsable text raises :class:`ConversionError`.
enums
    An index converts to its state string; an index past the given states
    to ``illegal_enum``. epics-base does this per record type: bi/bo answer
    ``"Illegal_Value"`` (:data:`ILLEGAL_ENUM_STRING`, the default),
    mbbi/mbbo the (possibly empty) state string up to 15 and
    ``"Illegal Value"`` (:data:`ILLEGAL_ENUM_STRING_MBB`) beyond; menu
    fields the decimal index (``illegal_enum=None``). Without any
    ``enum_strings`` the index prints in decimal (what dbPut does when a
    DBR_ENUM is written to a string field). A string converts to the index
    of the first equal state string, else to its decimal value if that is
    below the number of states, else :class:`ConversionError`.
numbers to numbers
    C casts as compiled by gcc on x86-64 (the reference IOC's platform):
    integers wrap modulo 2**bits; a float or double converts to an integer
    by truncating toward zero to a 32-bit int, out of range and NaN giving
    INT32_MIN, then wraps (so 70000.0 as DBR_INT is 4464 and 1e10 is 0).
    DOUBLE to FLOAT is epicsConvertDoubleToFloat: clamped to +-FLT_MAX,
    non-zero values below FLT_MIN become +-FLT_MIN.
CHAR arrays and strings
    epics-base converts DBR_STRING <-> DBR_CHAR element by element as
    numbers (``"65"`` is 65), and so does :func:`convert_values`. The
    long-string convention (a CHAR waveform holding text, the ``$`` field
    modifier, ``caput -S``) is :func:`string_to_char_array` (bytes plus a
    NUL) and :func:`char_array_to_string` (text up to the first NUL).

A failed conversion is :class:`ConversionError` (a ValueError). rsrv
answers it with ECA_GETFAIL for reads and monitors and ECA_PUTFAIL for
writes (it keeps ECA_BADTYPE for an invalid DBR type number, and never
sends ECA_NOCONVERT); the class attributes ``get_eca`` and ``put_eca``
carry those codes.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ._constants import ECA, MAX_STRING_SIZE
from ._dbr import NATIVE_TYPES, VALUE_DTYPES, decode_strings, double_to_float, native_type

if TYPE_CHECKING:
    from fractions import Fraction

__all__ = [
    "ILLEGAL_ENUM_STRING",
    "ILLEGAL_ENUM_STRING_MBB",
    "ConversionError",
    "char_array_to_string",
    "convert_scalar",
    "convert_values",
    "double_to_string",
    "enum_to_string",
    "fit_count",
    "float_to_string",
    "parse_double",
    "resolve_count",
    "string_to_char_array",
    "string_to_enum",
]

#: What bi/bo records (and non-VAL enum fields) answer for an undefined state.
ILLEGAL_ENUM_STRING = "Illegal_Value"
#: What mbbi/mbbo records answer for an enum value above 15.
ILLEGAL_ENUM_STRING_MBB = "Illegal Value"


class ConversionError(ValueError):
    """A value has no conversion to the requested type (epics-base would fail too).

    ``status`` names the epics-base error: ``"noConversion"`` (no number
    in the text), ``"overflow"``, ``"underflow"``, ``"extraneous"`` (text
    after a number where none is allowed) or ``"badChoice"`` (no such enum
    state).
    """

    #: What rsrv answers when a read or monitor update fails to convert.
    get_eca = ECA.GETFAIL
    #: What rsrv answers when a write fails to convert.
    put_eca = ECA.PUTFAIL

    def __init__(self, message: str, status: str = "noConversion") -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------
# Scalar primitives

_STR, _SHORT, _FLOAT, _ENUM, _CHAR, _LONG, _DOUBLE = range(7)
#: (bits, signed) of the integer native types.
_INT_TYPES = {_SHORT: (16, True), _ENUM: (16, False), _CHAR: (8, False), _LONG: (32, True)}
_INT32_MIN = -(1 << 31)
_ULONG = 1 << 64  # x86-64 Linux: unsigned long is 64 bits
_F32 = struct.Struct("f")
_FLT_MIN = float(np.finfo(np.float32).smallest_normal)
_FLT_MAX = float(np.finfo(np.float32).max)
_DBL_MIN = float(np.finfo(np.float64).smallest_normal)


def _f32(value: float) -> float:
    """``value`` rounded to float32 (infinite when it overflows)."""
    try:
        return float(_F32.unpack(_F32.pack(value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def _wrap(value: int, bits: int, signed: bool) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if signed and value >> (bits - 1) else value


def _float_to_int(value: float, bits: int, signed: bool) -> int:
    """The C cast of a float/double to an integer type, as gcc on x86-64 does it."""
    if -2147483649.0 < value < 2147483648.0:  # False for NaN
        return _wrap(int(value), bits, signed)
    return _wrap(_INT32_MIN, bits, signed)


def _c_float_format(value: float, precision: int, width: int, conv: str) -> str:
    """C printf ``%{width}.{precision}{conv}`` (glibc prints a NaN's sign)."""
    if math.isnan(value) and math.copysign(1.0, value) < 0:
        return "-nan".rjust(width)
    return format(value, f">{width}.{precision}{conv}" if width else f".{precision}{conv}")


def _fast_fixed(value: float, precision: int, as_float32: bool) -> str:
    """cvtFast's own fixed point formatting of ``|value| <= 1e7``, precision <= 8."""
    rnd = _f32 if as_float32 else float
    sign = ""
    if value < 0:
        sign = "-"
        value = -value
    whole = int(value)
    fplace = 10**precision
    fraction = int(rnd(rnd(rnd(value - whole) * fplace) * 10))
    fraction = (fraction + 5) // 10  # round half up
    if fraction >= fplace:
        whole += 1
        fraction -= fplace
    if precision:
        return f"{sign}{whole}.{fraction:0{precision}d}"
    return f"{sign}{whole}"


def double_to_string(value: float, precision: int = 6) -> str:
    """A double as epics-base's cvtDoubleToString prints it with ``precision``."""
    value = float(value)
    precision &= 0xFFFF
    if math.isnan(value) or precision > 8 or not -1e7 <= value <= 1e7:
        if precision > 8 or value > 1e16 or value < -1e16:
            precision = min(precision, 17)
            return _c_float_format(value, precision, precision + 7, "e")
        return _c_float_format(value, min(precision, 3), 0, "f")
    return _fast_fixed(value, precision, as_float32=False)


def float_to_string(value: float, precision: int = 6) -> str:
    """A float32 as epics-base's cvtFloatToString prints it with ``precision``."""
    value = _f32(float(value))
    precision &= 0xFFFF
    if math.isnan(value) or precision > 8 or not -1e7 <= value <= 1e7:
        if precision > 8 or value >= 1e8 or value <= -1e8:
            precision = min(precision, 12)
            return _c_float_format(value, precision, precision + 6, "e")
        return _c_float_format(value, min(precision, 3), 0, "f")
    return _fast_fixed(value, precision, as_float32=True)


_BLANK = " \t\n\v\f\r"
_INT_RE = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")
_FLOAT_RE = re.compile(
    r"""[ \t\n\v\f\r]*(?P<sign>[+-]?)(?:
        (?P<hex>0[xX](?:[0-9a-fA-F]+(?:\.[0-9a-fA-F]*)?|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?)
      | (?P<dec>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
      | (?P<inf>[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)
      | (?P<nan>[nN][aA][nN](?:\([0-9A-Za-z_]*\))?))""",
    re.VERBOSE,
)


def _check_rest(text: str, end: int, units: bool) -> None:
    if not units and text[end:].strip(_BLANK):
        raise ConversionError(f"extraneous characters after number in {text!r}", "extraneous")


def _strtol(text: str, signed: bool, units: bool) -> int:
    """epicsParseLong / epicsParseULong in base 10 (C long is 64 bits)."""
    m = _INT_RE.match(text)
    if m is None:
        raise ConversionError(f"no integer in {text!r}")
    magnitude = int(m.group(2))
    negative = m.group(1) == "-"
    if signed:
        if magnitude > (1 << 63) - (0 if negative else 1):
            raise ConversionError(f"{text!r} overflows a C long", "overflow")
        value = -magnitude if negative else magnitude
    else:
        if magnitude >= _ULONG:
            raise ConversionError(f"{text!r} overflows a C unsigned long", "overflow")
        value = (_ULONG - magnitude) % _ULONG if negative else magnitude
    _check_rest(text, m.end(), units)
    return value


def _parse_int(text: str, bits: int, signed: bool, units: bool = True) -> int:
    """epicsParseInt16/Int32 (range checked) or epicsParseUInt8/UInt16 (wrapping)."""
    value = _strtol(text, signed, units)
    if signed:
        if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
            raise ConversionError(f"{text!r} does not fit {bits} bits", "overflow")
        return value
    top = (1 << bits) - 1
    if top < value <= _ULONG - 1 - top:
        raise ConversionError(f"{text!r} does not fit {bits} bits", "overflow")
    return value & top


def _nonzero_mantissa(hex_text: str | None, dec_text: str | None) -> bool:
    if hex_text:
        return any(c not in "0." for c in re.split("[pP]", hex_text[2:])[0])
    return any(c not in "0." for c in re.split("[eE]", dec_text or "")[0])


def _exact(hex_text: str | None, dec_text: str | None) -> Fraction:
    """The exact magnitude a strtod number text denotes."""
    # Imported here: fractions loads decimal, ~3 ms and 0.3 MB that every
    # caioc process would pay for the rare text this is needed for.
    from fractions import Fraction

    if not hex_text:
        return Fraction(dec_text or "0")
    mantissa, _, exponent = re.split("([pP])", hex_text[2:] + "p0")[:3]
    whole, _, frac = mantissa.partition(".")
    digits = int(whole + frac or "0", 16)
    return Fraction(digits) * Fraction(2) ** (int(exponent) - 4 * len(frac))


def _strtod(text: str, units: bool) -> float:
    """epicsParseDouble: glibc strtod, range errors reported."""
    m = _FLOAT_RE.match(text)
    if m is None:
        raise ConversionError(f"no number in {text!r}")
    sign = -1.0 if m.group("sign") == "-" else 1.0
    if m.group("nan") is not None:
        value = math.copysign(math.nan, sign)
    elif m.group("inf") is not None:
        value = sign * math.inf
    else:
        hex_text = m.group("hex")
        try:
            value = sign * (float.fromhex(hex_text) if hex_text else float(m.group("dec")))
        except OverflowError:
            value = math.inf
        if math.isinf(value):
            raise ConversionError(f"{text!r} overflows a double", "overflow")
        if value == 0.0 and _nonzero_mantissa(hex_text, m.group("dec")):
            raise ConversionError(f"{text!r} underflows a double", "underflow")
        if 0.0 < abs(value) < _DBL_MIN and _exact(hex_text, m.group("dec")) != abs(value):
            # glibc sets ERANGE for a subnormal result that is not exact
            raise ConversionError(f"{text!r} underflows to a subnormal double", "overflow")
    _check_rest(text, m.end(), units)
    return value


def parse_double(text: str | bytes) -> float:
    """A DBR_STRING written to a DOUBLE PV: empty is 0, trailing text ignored."""
    s = _text(text)
    return _strtod(s, units=True) if s else 0.0


def _parse_float(text: str) -> float:
    """epicsParseFloat: epicsParseDouble, then float32 range checks."""
    value = _strtod(text, units=True)
    magnitude = abs(value)
    if value > 0 and magnitude <= _FLT_MIN:
        raise ConversionError(f"{text!r} underflows a float", "underflow")
    if math.isfinite(value) and magnitude >= _FLT_MAX:
        raise ConversionError(f"{text!r} overflows a float", "overflow")
    return _f32(value)


def _text(value: Any) -> str:
    """A DBR string element as ``str``, cut at its first NUL (bytes kept 1:1)."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    elif not isinstance(value, (bytes, bytearray, memoryview)):
        raise ConversionError(f"{value!r} is not a string")
    b = bytes(value)
    nul = b.find(b"\0")
    return (b if nul < 0 else b[:nul]).decode("latin-1")


def _string_field(text: str) -> bytes:
    return text.encode("latin-1")[: MAX_STRING_SIZE - 1]


def _enum_text(index: int, states: Sequence[str] | None, illegal: str | None) -> str:
    if states is None:
        return str(index)
    if 0 <= index < len(states):
        return states[index]
    return str(index) if illegal is None else illegal


def enum_to_string(
    index: int,
    enum_strings: Sequence[str | bytes] | None,
    illegal_enum: str | None = ILLEGAL_ENUM_STRING,
) -> str:
    """The string an enum index reads as (see the module docstring)."""
    states = None
    if enum_strings is not None:
        states = [s if isinstance(s, str) else decode_strings([s])[0] for s in enum_strings]
    return _enum_text(int(index), states, illegal_enum)


def string_to_enum(text: str | bytes, enum_strings: Sequence[str | bytes] | None) -> int:
    """The enum index a string writes as: a state string's index or a number below len."""
    return _st_e(_text(text), _Ctx.make(None, enum_strings, None, "utf-8"))


# --------------------------------------------------------------------------
# The conversion tables


class _Ctx(NamedTuple):
    precision: int
    enums: tuple[str, ...] | None  # as latin-1 text of the encoded bytes
    illegal: str | None

    @staticmethod
    def make(
        precision: int | None,
        enum_strings: Iterable[str | bytes] | None,
        illegal: str | None,
        encoding: str,
    ) -> _Ctx:
        if enum_strings is None and (illegal is None or illegal.isascii()):
            return _Ctx(6 if precision is None else int(precision), None, illegal)
        enums = None
        if enum_strings is not None:
            enums = tuple(
                _text(s.encode(encoding, "surrogateescape") if isinstance(s, str) else s)
                for s in enum_strings
            )
        if illegal is not None:
            illegal = _text(illegal.encode(encoding, "surrogateescape"))
        return _Ctx(6 if precision is None else int(precision), enums, illegal)


def _e_st(value: int, ctx: _Ctx) -> bytes:
    return _string_field(_enum_text(value, ctx.enums, ctx.illegal))


def _st_e(text: str, ctx: _Ctx) -> int:
    enums = ctx.enums or ()
    if text in enums:
        return enums.index(text)
    try:
        value = _parse_int(text, 16, False, units=False)
    except ConversionError:
        value = len(enums)
    if value < len(enums):
        return value
    raise ConversionError(f"{text!r} is not one of the {len(enums)} enum states", "badChoice")


def _st_number(dst: int) -> Callable[[str, _Ctx], Any]:
    if dst == _DOUBLE:
        return lambda s, ctx: _strtod(s, units=True) if s else 0.0
    if dst == _FLOAT:
        return lambda s, ctx: _parse_float(s) if s else 0.0
    bits, signed = _INT_TYPES[dst]
    return lambda s, ctx: _parse_int(s, bits, signed) if s else 0


def _number_st(src: int) -> Callable[[Any, _Ctx], bytes]:
    if src == _DOUBLE:
        return lambda v, ctx: double_to_string(v, ctx.precision).encode()
    if src == _FLOAT:
        return lambda v, ctx: float_to_string(v, ctx.precision).encode()
    return lambda v, ctx: b"%d" % v


def _number_number(src: int, dst: int) -> Callable[[Any, _Ctx], Any]:
    if dst in _INT_TYPES:
        bits, signed = _INT_TYPES[dst]
        if src in _INT_TYPES:
            return lambda v, ctx: _wrap(v, bits, signed)
        return lambda v, ctx: _float_to_int(v, bits, signed)
    if dst == _FLOAT:
        return (lambda v, ctx: double_to_float(v)) if src == _DOUBLE else (lambda v, ctx: _f32(v))
    return lambda v, ctx: float(v)


def _scalar_converter(src: int, dst: int) -> Callable[[Any, _Ctx], Any]:
    if src == _STR:
        if dst == _STR:
            return lambda s, ctx: _string_field(s)
        if dst == _ENUM:
            return _st_e
        return _st_number(dst)
    if dst == _STR:
        return _e_st if src == _ENUM else _number_st(src)
    return _number_number(src, dst)


_SCALAR = {(s, d): _scalar_converter(s, d) for s in range(7) for d in range(7)}
_NO_CTX = _Ctx(6, None, None)
_N_TYPES = len(NATIVE_TYPES)


def _array_float_to_int(arr: np.ndarray, target: np.dtype) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # signalling NaNs
        t = np.trunc(arr.astype(np.float64))
        ok = (t > -2147483649.0) & (t < 2147483648.0)
    return np.where(ok, t, float(_INT32_MIN)).astype(np.int64).astype(target)


def _array_double_to_float(arr: np.ndarray) -> np.ndarray:
    a = arr.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        out = a.astype(np.float32)
    magnitude = np.abs(a)
    big = np.isfinite(a) & (magnitude >= _FLT_MAX)
    tiny = (a != 0) & (magnitude <= _FLT_MIN)
    out[big] = np.copysign(_FLT_MAX, a[big])
    out[tiny] = np.copysign(_FLT_MIN, a[tiny])
    return out


def _array_convert(arr: np.ndarray, src: int, dst: int, ctx: _Ctx) -> np.ndarray:
    target = VALUE_DTYPES[dst]
    if src != _STR and dst != _STR:
        if dst in _INT_TYPES and src in (_FLOAT, _DOUBLE):
            return _array_float_to_int(arr, target)
        if dst == _FLOAT and src == _DOUBLE:
            return _array_double_to_float(arr).astype(target)
        return arr.astype(target)  # integer wrap-around, int -> float: as C
    fn = _SCALAR[src, dst]
    items = [_text(x) for x in arr.tolist()] if src == _STR else arr.tolist()
    return np.array([fn(x, ctx) for x in items], dtype=target).reshape(arr.shape)


def _source_array(values: object, src: int, encoding: str) -> np.ndarray:
    if src != _STR:
        try:
            return np.asarray(values, dtype=VALUE_DTYPES[src]).reshape(-1)
        except (OverflowError, ValueError, TypeError) as exc:
            raise ConversionError(f"{values!r} are not {VALUE_DTYPES[src]} values: {exc}") from exc
    if isinstance(values, np.ndarray) and values.dtype.kind == "S":
        return values.reshape(-1)
    if isinstance(values, (str, bytes, bytearray, np.bytes_)):
        items: list[Any] = [values]
    elif isinstance(values, np.ndarray):
        items = values.reshape(-1).tolist()
    elif isinstance(values, Iterable):
        items = list(values)
    else:
        raise ConversionError(f"{values!r} is not a string or a sequence of strings")
    raw = [x.encode(encoding, "surrogateescape") if isinstance(x, str) else x for x in items]
    if not all(isinstance(x, (bytes, bytearray, memoryview)) for x in raw):
        raise ConversionError(f"{values!r} are not all strings")
    return np.array([bytes(x) for x in raw], dtype=bytes).reshape(-1)


def convert_values(
    values: object,
    from_type: int,
    to_type: int,
    *,
    precision: int | None = None,
    enum_strings: Iterable[str | bytes] | None = None,
    illegal_enum: str | None = ILLEGAL_ENUM_STRING,
    encoding: str = "utf-8",
) -> np.ndarray:
    """``values`` of DBR type ``from_type`` converted to DBR type ``to_type``.

    Only the native (value) part of the two types matters: TIME_DOUBLE to
    STS_STRING converts doubles to strings. ``values`` is a scalar, a
    sequence or an array (for string types: ``str``/``bytes`` elements);
    the result is a 1-d array of ``to_type``'s big-endian value dtype
    (``S40`` for strings), ready for ``encode_dbr`` (when no conversion is
    needed it may be ``values`` itself, not a copy). ``precision`` is the
    record's PREC for FLOAT/DOUBLE to string (None: 6), ``enum_strings``
    the ENUM states, ``illegal_enum`` what an index past them reads as
    (None: its decimal string). Raises :class:`ConversionError` where
    epics-base fails (see the module docstring for all rules).
    """
    if type(values) in (int, float, str, bytes):  # a scalar: skip numpy's per-call costs
        one = convert_scalar(
            values,
            from_type,
            to_type,
            precision=precision,
            enum_strings=enum_strings,
            illegal_enum=illegal_enum,
            encoding=encoding,
        )
        return np.array([one], dtype=VALUE_DTYPES[to_type])
    src, dst = native_type(from_type), native_type(to_type)
    arr = _source_array(values, src, encoding)
    if src == dst and src != _STR:
        return arr.astype(VALUE_DTYPES[dst], copy=False)
    ctx = _Ctx.make(precision, enum_strings, illegal_enum, encoding)
    return _array_convert(arr, src, dst, ctx)


def convert_scalar(
    value: Any,
    from_type: int,
    to_type: int,
    *,
    precision: int | None = None,
    enum_strings: Iterable[str | bytes] | None = None,
    illegal_enum: str | None = ILLEGAL_ENUM_STRING,
    encoding: str = "utf-8",
) -> Any:
    """One value converted as :func:`convert_values` does, without numpy.

    Returns ``int`` for the integer types, ``float`` for FLOAT/DOUBLE and
    ``bytes`` (at most 39, no NUL) for STRING: the fast path for count 1.
    """
    if 0 <= from_type < _N_TYPES and 0 <= to_type < _N_TYPES:
        src, dst = NATIVE_TYPES[from_type], NATIVE_TYPES[to_type]
    else:
        src, dst = native_type(from_type), native_type(to_type)
    if src == _STR:
        if isinstance(value, str):
            value = value.encode(encoding, "surrogateescape")
        value = _text(value)
    elif src in _INT_TYPES:
        value = _wrap(int(value), *_INT_TYPES[src])
    else:
        value = float(value) if src == _DOUBLE else _f32(float(value))
    if src == dst and src != _STR:
        return value
    if src == _STR or dst == _STR:
        return _SCALAR[src, dst](value, _Ctx.make(precision, enum_strings, illegal_enum, encoding))
    return _SCALAR[src, dst](value, _NO_CTX)


# --------------------------------------------------------------------------
# Element counts and long strings


def resolve_count(
    requested: int, current_count: int, client_minor: int, max_count: int | None = None
) -> int:
    """Element count of a read or monitor reply (the header's data_count).

    A non-zero ``requested`` count is honoured: :func:`fit_count` truncates
    the values or pads them with zeros, as rsrv does. Count 0 asks, from a
    client of protocol minor version >= 13, for the PV's current length
    (rsrv's autosize); older clients never meant that, so they get the
    fixed ``max_count`` (``current_count`` when not given).
    """
    if requested < 0:
        raise ValueError(f"negative element count {requested}")
    if requested:
        return requested
    if client_minor >= 13 or max_count is None:
        return current_count
    return max_count


def fit_count(values: np.ndarray, count: int) -> np.ndarray:
    """``values`` truncated or zero-padded (empty strings for strings) to ``count``."""
    n = len(values)
    if n == count:
        return values
    if n > count:
        return values[:count]
    out = np.zeros(count, dtype=values.dtype)
    out[:n] = values
    return out


def string_to_char_array(
    text: str | bytes, max_count: int | None = None, encoding: str = "utf-8"
) -> np.ndarray:
    """A long string as a CHAR array: its bytes plus a terminating NUL.

    With ``max_count`` the array is cut to that many elements, the last
    one still NUL, as epics-base stores a long string in a smaller field.
    """
    raw = text.encode(encoding, "surrogateescape") if isinstance(text, str) else bytes(text)
    if max_count is not None:
        if max_count < 1:
            return np.zeros(0, dtype=np.uint8)
        raw = raw[: max_count - 1]
    return np.frombuffer(raw + b"\0", dtype=np.uint8).copy()


def char_array_to_string(values: Iterable[int] | bytes, encoding: str = "utf-8") -> str:
    """The text of a CHAR array holding a long string: its bytes up to the first NUL."""
    if isinstance(values, (bytes, bytearray, memoryview)):
        raw = bytes(values)
    else:
        raw = np.asarray(values).astype(np.uint8, copy=False).tobytes()
    nul = raw.find(b"\0")
    return (raw if nul < 0 else raw[:nul]).decode(encoding, "surrogateescape")

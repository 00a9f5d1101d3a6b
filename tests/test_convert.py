"""Value conversions, checked against epics-base's own CH functions where exported.

libCom (from epicscorelibs) exports cvtDoubleToString, cvtFloatToString,
epicsParse*, epicsConvertDoubleToFloat: those are called through ctypes
and compared with caioc's versions. The CH casts dbConvert uses between
numeric types are compared with a small program compiled by gcc.
"""

from __future__ import annotations

import ctypes
import math
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from caioc.ca import _convert
from caioc.ca._constants import ECA
from caioc.ca._convert import (
    ILLEGAL_ENUM_STRING,
    ILLEGAL_ENUM_STRING_MBB,
    ConversionError,
    char_array_to_string,
    convert_scalar,
    convert_values,
    double_to_string,
    enum_to_string,
    fit_count,
    float_to_string,
    parse_double,
    resolve_count,
    string_to_char_array,
    string_to_enum,
)
from caioc.ca._dbr import VALUE_DTYPES, ChannelType, double_to_float, encode_dbr

ST, SH, FL, EN, CH, LO, DB = range(7)  # native types STRING INT FLOAT ENUM CHAR LONG DOUBLE
PARSE_ALPHABET = "0123456789.eE+-xXpPinfatyINFATY()_ \t\nabc"
ODD_NUMBERS = [
    "1e-320",
    "0x1p-1074",
    "1e400",
    "-1",
    "-255",
    "-256",
    "256",
    "65535",
    "-65535",
    "70000",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551616",
    "0e999",
    "1e-46",
    "3.4028235e38",
    "  +12 mm",
    "nan(abc",
    "-inf",
    "0x1.8p3",
    "0X.8P1",
    "1.",
    ".e1",
    "1_000",
    "12abc",
    "1.5",
    " 7 ",
]


# --------------------------------------------------------------------------
# libCom through ctypes


@pytest.fixture(scope="module")
def libcom() -> ctypes.CDLL:
    paths = pytest.importorskip("epicscorelibs.path", reason="epicscorelibs not installed")
    lib = ctypes.CDLL(paths.get_lib("Com"))
    charpp = ctypes.POINTER(ctypes.c_char_p)
    lib.cvtDoubleToString.argtypes = [ctypes.c_double, ctypes.c_char_p, ctypes.c_uint16]
    lib.cvtFloatToString.argtypes = [ctypes.c_float, ctypes.c_char_p, ctypes.c_uint16]
    lib.cvtInt32ToString.argtypes = [ctypes.c_int32, ctypes.c_char_p]
    lib.epicsConvertDoubleToFloat.argtypes = [ctypes.c_double]
    lib.epicsConvertDoubleToFloat.restype = ctypes.c_float
    lib.epicsParseDouble.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_double), charpp]
    lib.epicsParseFloat.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_float), charpp]
    for name, ctype in _C_INTS.items():
        getattr(lib, name).argtypes = [ctypes.c_char_p, ctypes.POINTER(ctype), ctypes.c_int, charpp]
    return lib


_C_INTS = {
    "epicsParseInt16": ctypes.c_int16,
    "epicsParseUInt16": ctypes.c_uint16,
    "epicsParseUInt8": ctypes.c_uint8,
    "epicsParseInt32": ctypes.c_int32,
}
_INT_ARGS = {
    "epicsParseInt16": (16, True),
    "epicsParseUInt16": (16, False),
    "epicsParseUInt8": (8, False),
    "epicsParseInt32": (32, True),
}


def _c_string(fn: Callable[..., Any], *args: Any) -> str:
    buf = ctypes.create_string_buffer(64)
    fn(*args[:1], buf, *args[1:])
    return buf.value.decode()


def _c_parse(fn: Callable[..., Any], ctype: Any, text: str, units: bool, *base: int) -> Any:
    """The value epicsParse* gives, or None when it returns an error status."""
    out = ctype()
    end = ctypes.c_char_p()
    status = fn(
        text.encode("latin-1"), ctypes.byref(out), *base, ctypes.byref(end) if units else None
    )
    return None if status else out.value


def _py_parse(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ConversionError:
        return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


_finite_or_not = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.125, 2.5, 1e7, 1e7 + 1, 1e16, 2e16, 1e8, 9999999.99999, 0.99999999, -0.0, -math.nan]
)
_precision = st.integers(0, 20) | st.sampled_from([-1, 65535, 300])


@settings(max_examples=2000, deadline=None)
@given(_finite_or_not, _precision)
@example(123456.789, 6)
def test_double_to_string_matches_cvtDoubleToString(
    libcom: ctypes.CDLL, value: float, precision: int
) -> None:
    expected = _c_string(libcom.cvtDoubleToString, value, precision & 0xFFFF)
    assert double_to_string(value, precision) == expected


@settings(max_examples=2000, deadline=None)
@given(st.floats(width=32) | st.sampled_from([1e8, 1e7, 123456.789, 0.125]), _precision)
def test_float_to_string_matches_cvtFloatToString(
    libcom: ctypes.CDLL, value: float, precision: int
) -> None:
    expected = _c_string(libcom.cvtFloatToString, value, precision & 0xFFFF)
    assert float_to_string(value, precision) == expected


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**31), 2**31 - 1))
def test_integers_print_like_cvtInt32ToString(libcom: ctypes.CDLL, value: int) -> None:
    expected = _c_string(libcom.cvtInt32ToString, value)
    assert convert_values([value], LO, ST)[0].decode() == expected
    assert convert_scalar(value, LO, ST) == expected.encode()


_parse_text = st.text(PARSE_ALPHABET, min_size=1, max_size=14) | st.sampled_from(ODD_NUMBERS)


@settings(max_examples=1500, deadline=None)
@given(_parse_text, st.booleans())
def test_parsing_matches_epicsParse(libcom: ctypes.CDLL, text: str, units: bool) -> None:
    expected = _c_parse(libcom.epicsParseDouble, ctypes.c_double, text, units)
    assert _same(_py_parse(lambda: _convert._strtod(text, units)), expected)
    for name, (bits, signed) in _INT_ARGS.items():
        expected = _c_parse(getattr(libcom, name), _C_INTS[name], text, units, 10)
        got = _py_parse(lambda b=bits, s=signed: _convert._parse_int(text, b, s, units))
        assert got == expected, name
    if units:  # dbPut always parses floats with units allowed
        expected = _c_parse(libcom.epicsParseFloat, ctypes.c_float, text, True)
        assert _same(_py_parse(lambda: _convert._parse_float(text)), expected)


@settings(max_examples=500, deadline=None)
@given(_parse_text.filter(lambda s: s.strip("\0") == s))
def test_string_puts_use_epicsParse_with_units(libcom: ctypes.CDLL, text: str) -> None:
    """A DBR_STRING written to a numeric PV converts as the dbPut scalar routines."""
    checks = [
        (DB, libcom.epicsParseDouble, ctypes.c_double, ()),
        (FL, libcom.epicsParseFloat, ctypes.c_float, ()),
        (SH, libcom.epicsParseInt16, ctypes.c_int16, (10,)),
        (CH, libcom.epicsParseUInt8, ctypes.c_uint8, (10,)),
        (LO, libcom.epicsParseInt32, ctypes.c_int32, (10,)),
    ]
    for native, fn, ctype, base in checks:
        expected = _c_parse(fn, ctype, text, True, *base)
        got = _py_parse(lambda n=native: convert_scalar(text, ST, n))
        assert _same(got, expected), native
        array = _py_parse(lambda n=native: convert_values([text, text], ST, n).tolist())
        assert array is None if expected is None else all(_same(x, expected) for x in array)


@settings(max_examples=1000, deadline=None)
@given(st.floats() | st.sampled_from([1e-50, -1e-50, 3.5e38, -1e39, 1.1754943508222875e-38]))
def test_double_to_float_matches_epicsConvertDoubleToFloat(libcom: ctypes.CDLL, x: float) -> None:
    expected = libcom.epicsConvertDoubleToFloat(x)
    assert _same(double_to_float(x), expected)
    assert _same(convert_scalar(x, DB, FL), expected)
    assert _same(float(convert_values([x], DB, FL)[0]), expected)


# --------------------------------------------------------------------------
# Numeric casts against gcc


_CASTS_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include "epicsTypes.h"
int main(void) {
    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        char *end;
        volatile double d = strtod(line, &end);
        volatile float f = (float) d;
        volatile epicsInt32 l = (epicsInt32) strtol(end, NULL, 10);
        printf("%d %u %u %d %u %d %u %u %d %u %d %u %u\n",
               (epicsInt16) d, (epicsUInt16) d, (epicsUInt8) d, (epicsInt32) d, (epicsEnum16) d,
               (epicsInt16) f, (epicsUInt16) f, (epicsUInt8) f, (epicsInt32) f, (epicsEnum16) f,
               (epicsInt16) l, (epicsUInt16) l, (epicsUInt8) l);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_casts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: cannot compile the C cast reference program")
    inc = Path(pytest.importorskip("epicscorelibs.path").include_path)
    work = tmp_path_factory.mktemp("casts")
    (work / "casts.c").write_text(_CASTS_C)
    flags = [f"-I{inc}", f"-I{inc / 'os' / 'Linux'}", f"-I{inc / 'compiler' / 'gcc'}"]
    subprocess.run(
        [gcc, "-O2", *flags, str(work / "casts.c"), "-o", str(work / "casts")], check=True
    )
    return work / "casts"


def test_numeric_conversions_are_gcc_casts(c_casts: Path) -> None:
    rng = np.random.default_rng(7)
    edges = [0.0, -0.0, 1.5, -1.5, 70000.0, -70000.0, 1e10, -1e10, math.nan, math.inf, -math.inf]
    edges += [2147483647.9, 2147483648.0, -2147483648.9, -2147483649.0, 65535.5, 65536.0, 255.9]
    doubles = np.concatenate(
        [
            edges,
            rng.uniform(-5e9, 5e9, 2000),
            rng.uniform(-70000, 70000, 2000),
            rng.integers(-(2**31), 2**31, 2000).astype(np.float64),
        ]
    )
    doubles = doubles[~(np.isfinite(doubles) & (np.abs(doubles) > 3e38))]
    with np.errstate(invalid="ignore"):
        floats = doubles.astype(np.float32)
        longs = np.where(np.isfinite(doubles), doubles, 0).astype(np.int64).astype(np.int32)
    text = "".join(
        f"{x.hex() if math.isfinite(x) else repr(x)} {n}\n"
        for x, n in zip(doubles.tolist(), longs.tolist(), strict=True)
    )
    out = subprocess.run([str(c_casts)], input=text, capture_output=True, text=True, check=True)
    expected = np.array([line.split() for line in out.stdout.splitlines()], dtype=np.int64)
    targets = [SH, EN, CH, LO, EN]
    got = [convert_values(doubles, DB, t) for t in targets]
    got += [convert_values(floats, FL, t) for t in targets]
    got += [convert_values(longs, LO, t) for t in (SH, EN, CH)]
    for column, values in enumerate(got):
        assert values.astype(np.int64).tolist() == expected[:, column].tolist(), column
    for row in range(0, len(doubles), 37):  # the scalar path agrees
        d, f, lng = float(doubles[row]), float(floats[row]), int(longs[row])
        scalars = [convert_scalar(d, DB, t) for t in targets]
        scalars += [convert_scalar(f, FL, t) for t in targets]
        scalars += [convert_scalar(lng, LO, t) for t in (SH, EN, CH)]
        assert scalars == expected[row].tolist()


def test_documented_cast_examples() -> None:
    assert convert_scalar(70000.0, DB, SH) == 4464
    assert convert_scalar(1e10, DB, SH) == 0  # INT32_MIN, low 16 bits
    assert convert_scalar(1e10, DB, LO) == -(2**31)
    assert convert_scalar(math.nan, DB, CH) == 0
    assert convert_scalar(-1.9, DB, LO) == -1
    assert convert_scalar(-1, SH, EN) == 65535
    assert convert_scalar(300, LO, CH) == 44
    assert convert_values([3.7, -3.7], FL, LO).tolist() == [3, -3]
    assert convert_values([1, 2**24 + 1], LO, FL).tolist() == [1.0, 2.0**24]


# --------------------------------------------------------------------------
# Strings, enums and the conversion matrix


def test_numbers_to_strings() -> None:
    assert convert_scalar(math.pi, DB, ST) == b"3.141593"  # default precision 6
    assert convert_scalar(math.pi, DB, ST, precision=2) == b"3.14"
    assert convert_scalar(2.5, DB, ST, precision=0) == b"3"  # cvtFast rounds half up
    assert convert_scalar(1e20, DB, ST, precision=3) == b" 1.000e+20"  # %10.3e
    assert convert_scalar(12345678.9, DB, ST, precision=6) == b"12345678.900"
    assert convert_scalar(math.pi, DB, ST, precision=-1) == b" 3.14159265358979312e+00"
    assert convert_scalar(math.pi, FL, ST, precision=9) == b"3.141592741e+00"
    assert convert_values([1, -2], SH, ST).tolist() == [b"1", b"-2"]
    assert convert_values([255], CH, ST).tolist() == [b"255"]
    out = convert_values([1.0, 2.0], DB, ChannelType.TIME_STRING, precision=1)
    assert out.dtype == VALUE_DTYPES[ChannelType.STRING] and out.tolist() == [b"1.0", b"2.0"]


def test_strings_to_numbers() -> None:
    assert convert_values(["", "1.5", " 2e3 mm"], ST, DB).tolist() == [0.0, 1.5, 2000.0]
    assert convert_values([b"12abc", b"-7", b""], ST, SH).tolist() == [12, -7, 0]
    assert convert_values(["1.9"], ST, LO).tolist() == [1]  # strtol stops at the point
    assert convert_values(["-1", "255"], ST, CH).tolist() == [255, 255]  # strtoul wraps
    assert convert_values(np.array([b"0x10", b"inf"]), ST, DB).tolist() == [16.0, math.inf]
    assert parse_double(b"  -4.25e1junk\0garbage") == -42.5
    assert parse_double("") == 0.0
    for text, native, status in [
        ("abc", DB, "noConversion"),
        ("  ", SH, "noConversion"),
        ("40000", SH, "overflow"),
        ("256", CH, "overflow"),
        ("1e39", FL, "overflow"),
        ("1e-39", FL, "underflow"),
        ("1e999", DB, "overflow"),
    ]:
        with pytest.raises(ConversionError) as info:
            convert_values([text], ST, native)
        assert info.value.status == status, text
        assert isinstance(info.value, ValueError)
    assert ConversionError.get_eca is ECA.GETFAIL
    assert ConversionError.put_eca is ECA.PUTFAIL


def test_string_to_string_truncates_like_strncpy() -> None:
    out = convert_values(["x" * 45, b"ab\0cd"], ST, ST)
    assert out.tolist() == [b"x" * 39, b"ab"]
    assert convert_scalar("\u00e9", ST, ST) == "\u00e9".encode()


def test_enums() -> None:
    states = ["Off", "On", "Fault"]
    names = convert_values([0, 1, 2], EN, ST, enum_strings=states)
    assert names.tolist() == [b"Off", b"On", b"Fault"]
    assert enum_to_string(3, states) == ILLEGAL_ENUM_STRING == "Illegal_Value"
    assert enum_to_string(17, states, ILLEGAL_ENUM_STRING_MBB) == "Illegal Value"
    assert enum_to_string(5, states, None) == "5"  # menu fields
    assert enum_to_string(2, None) == "2"  # no states: decimal
    assert enum_to_string(1, [b"a", "\u00e9t\u00e9".encode() + b"\0junk"]) == "\u00e9t\u00e9"
    utf8 = convert_values([1], EN, ST, enum_strings=["x", "\u00e9"])
    assert utf8.tolist() == ["\u00e9".encode()]
    assert convert_scalar(7, EN, ST, enum_strings=states, illegal_enum=None) == b"7"
    assert convert_scalar(1, EN, ST) == b"1"
    # strings write by name, else by a decimal index below the number of states
    assert convert_values(["On", "Fault", "0", " 2 "], ST, EN, enum_strings=states).tolist() == [
        1,
        2,
        0,
        2,
    ]
    assert string_to_enum(b"Off\0junk", states) == 0
    assert string_to_enum("On", [b"On", "On"]) == 0
    assert string_to_enum("", ["a", ""]) == 1
    for bad in ["on", "3", "1x", "", "-1", "Offf"]:
        with pytest.raises(ConversionError) as info:
            string_to_enum(bad, states)
        assert info.value.status == "badChoice"
    with pytest.raises(ConversionError):
        convert_scalar("0", ST, EN)  # no states at all
    assert convert_values([2.9, -1.0], DB, EN).tolist() == [2, 65535]
    assert convert_values([3], EN, DB).tolist() == [3.0]


SAMPLES: dict[int, Any] = {ST: "2", SH: -3, FL: 2.5, EN: 1, CH: 200, LO: 70000, DB: -1e300}


@pytest.mark.parametrize("src", range(7))
@pytest.mark.parametrize("dst", range(7))
def test_conversion_matrix(src: int, dst: int) -> None:
    """Every pair converts; scalar and array paths agree; the result encodes."""
    kw: dict[str, Any] = {"enum_strings": ["a", "b", "c"] if ST in (src, dst) else None}
    value = SAMPLES[src]
    out = convert_values([value, value], src, dst, **kw)
    assert out.dtype == VALUE_DTYPES[dst] and out.shape == (2,)
    scalar = convert_scalar(value, src, dst, **kw)
    assert _same(out[0].item(), scalar)
    for t in (dst, dst + 7, dst + 14, dst + 21, dst + 28):  # any family, same values
        assert convert_values([value], src + 14, t, **kw).tobytes() == out[:1].tobytes()
    assert convert_values(value, src, dst, **kw).tobytes() == out[:1].tobytes()  # scalar input
    payload, count = encode_dbr(dst, out)
    assert count == 2
    assert encode_dbr(dst, scalar)[0] == payload[: len(payload) // 2]


@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from([SH, EN, CH, LO]))
def test_integer_to_string_round_trip(value: int, native: int) -> None:
    wrapped = convert_scalar(value, LO, native)
    assert convert_values([value], LO, native).tolist() == [wrapped]
    text = convert_scalar(wrapped, native, ST)  # no enum strings: decimal
    assert text == str(wrapped).encode()
    if native != EN:
        assert convert_scalar(text, ST, native) == wrapped


@given(st.floats(allow_nan=False))
def test_double_survives_string_at_full_precision(value: float) -> None:
    assume(value == 0 or abs(value) >= 2.2250738585072014e-308)  # subnormals: ERANGE
    text = convert_scalar(value, DB, ST, precision=17)
    assert convert_scalar(text, ST, DB) == value or (value == 0 and float(text) == 0)


@given(
    st.lists(st.floats(allow_nan=False, width=32), max_size=5), st.sampled_from([ST, SH, LO, DB])
)
def test_scalar_and_array_paths_agree(values: list[float], dst: int) -> None:
    out = convert_values(values, FL, dst, precision=3)
    assert out.tolist() == [convert_scalar(v, FL, dst, precision=3) for v in values]


def test_bad_source_values() -> None:
    with pytest.raises(ConversionError):
        convert_values([2**40], LO, DB)
    for not_strings in (5, [5], [b"1", 2.0], np.array([1, 2])):
        with pytest.raises(ConversionError):
            convert_values(not_strings, ST, DB)
    assert convert_values(np.array([[1, 2], [3, 4]], dtype=np.int16), SH, LO).tolist() == [
        1,
        2,
        3,
        4,
    ]
    assert convert_values([], DB, ST).shape == (0,)
    assert convert_values([], ST, DB).shape == (0,)


# --------------------------------------------------------------------------
# Counts and long strings


def test_resolve_count() -> None:
    assert resolve_count(5, 10, 13) == 5  # truncate
    assert resolve_count(20, 10, 13) == 20  # zero-padded
    assert resolve_count(0, 7, 13) == 7  # dynamic: current length
    assert resolve_count(0, 7, 12, max_count=100) == 100  # old clients: fixed size
    assert resolve_count(0, 7, 11) == 7
    with pytest.raises(ValueError):
        resolve_count(-1, 7, 13)


def test_fit_count() -> None:
    values = np.array([1.0, 2.0, 3.0], dtype=">f8")
    assert fit_count(values, 3) is values
    assert fit_count(values, 2).tolist() == [1.0, 2.0]
    padded = fit_count(values, 5)
    assert padded.tolist() == [1.0, 2.0, 3.0, 0.0, 0.0] and padded.dtype == values.dtype
    strings = fit_count(np.array([b"a"], dtype="S40"), 3)
    assert strings.tolist() == [b"a", b"", b""] and strings.dtype == np.dtype("S40")


def test_long_strings() -> None:
    chars = string_to_char_array("hello")
    assert chars.tolist() == [104, 101, 108, 108, 111, 0] and chars.dtype == np.uint8
    assert string_to_char_array("hello", max_count=3).tolist() == [104, 101, 0]
    assert string_to_char_array(b"", max_count=0).tolist() == []
    assert string_to_char_array("\u00e9").tolist() == [0xC3, 0xA9, 0]
    assert char_array_to_string([104, 105, 0, 120]) == "hi"
    assert char_array_to_string(b"no nul") == "no nul"
    assert char_array_to_string(np.frombuffer(b"caf\xe9\0", np.uint8)) == "caf\udce9"
    long_text = "a path longer than forty characters, certainly"
    assert char_array_to_string(string_to_char_array(long_text)) == long_text
    # epics-base converts STRING <-> CHAR as numbers, element by element
    assert convert_values(["65", "66"], ST, CH).tolist() == [65, 66]
    assert convert_values([65], CH, ST).tolist() == [b"65"]


def test_float_rounding_helpers_agree_with_numpy() -> None:
    for x in (0.1, 1e-40, 3.4e38, 1e39, -2.5):
        expected = struct.unpack("f", struct.pack("f", x))[0] if abs(x) < 3.4e38 else None
        if expected is not None:
            assert _convert._f32(x) == expected
    assert math.isinf(_convert._f32(1e39))


def test_fractions_are_loaded_only_for_the_rare_text_that_needs_them():
    """A server does not pay for fractions (and decimal) at start-up."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "before = set(sys.modules)  # what the interpreter's start-up loaded\n"
        "import caioc.server, caioc.ioc\n"
        "assert 'fractions' in before or 'fractions' not in sys.modules, 'loaded at import'\n"
        "from caioc.ca._convert import ConversionError, _strtod\n"
        "try:\n"
        "    _strtod('4.9406564584124654e-324', False)\n"  # inexact subnormal: ERANGE
        "except ConversionError:\n"
        "    assert 'fractions' in sys.modules\n"
        "else:\n"
        "    raise AssertionError('a subnormal should be out of range')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

"""DBR layouts against epics-base's C structs and libca's tables; encode/decode."""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caioc.ca._constants import EPICS_EPOCH_OFFSET
from caioc.ca._dbr import (
    DBR_CLASSES,
    DBR_DTYPES,
    METADATA_DTYPES,
    METADATA_SIZES,
    NATIVE_TYPES,
    VALUE_DTYPES,
    ChannelType,
    DbrClass,
    DbrEncodeError,
    DbrError,
    TruncatedPayloadError,
    ctrl_type,
    dbr_class,
    decode_dbr,
    decode_scalar,
    decode_strings,
    encode_dbr,
    epics_now,
    epics_to_posix,
    gr_type,
    metadata_dict,
    native_type,
    payload_size,
    posix_to_epics,
    promote,
    sts_type,
    time_type,
)

ALL_TYPES = list(ChannelType)
N_TYPES = 39

# C type (struct or typedef) of each DBR type, from db_access.h.
C_TYPES = [
    "dbr_string_t",
    "dbr_short_t",
    "dbr_float_t",
    "dbr_enum_t",
    "dbr_char_t",
    "dbr_long_t",
    "dbr_double_t",
    *(
        f"struct dbr_{cls}_{name}"
        for cls in ("sts", "time")
        for name in ("string", "short", "float", "enum", "char", "long", "double")
    ),
    *(
        "struct dbr_sts_string" if name == "string" else f"struct dbr_{cls}_{name}"
        for cls in ("gr", "ctrl")
        for name in ("string", "short", "float", "enum", "char", "long", "double")
    ),
    "dbr_put_ackt_t",
    "dbr_put_acks_t",
    "struct dbr_stsack_string",
    "dbr_class_name_t",
]
# C member of each dtype field that is not named like it.
C_MEMBER = {"secondsSinceEpoch": "stamp.secPastEpoch", "nanoseconds": "stamp.nsec"}
# What C's _Generic says each of our field dtypes must be.
C_KIND = {"i2": "i2", "u2": "u2", "i4": "i4", "u4": "u4", "f4": "f4", "f8": "f8", "u1": "u1"}


def _kind(dt: np.dtype) -> str:
    if dt.subdtype is not None:
        return "strs"
    if dt.kind == "S":
        return "chars"
    return f"{dt.kind}{dt.itemsize}"


# --------------------------------------------------------------------------
# The C library's own tables


@pytest.fixture(scope="module")
def libca() -> dict[str, Any]:
    pytest.importorskip("epics.ca", reason="pyepics (libca) not installed")
    from epics_oracle import facts  # libca is read in a child process

    return facts()


def _table(lib: dict[str, Any], name: str, ctype: Any = None) -> list[int]:
    values = lib[name]
    assert len(values) == N_TYPES
    return list(values)


def test_sizes_match_libca(libca: dict[str, Any]) -> None:
    dbr_size = _table(libca, "dbr_size")
    value_size = _table(libca, "dbr_value_size")
    value_offset = _table(libca, "dbr_value_offset")
    for t in ALL_TYPES:
        assert DBR_DTYPES[t].itemsize == dbr_size[t], t.name
        assert VALUE_DTYPES[t].itemsize == value_size[t], t.name
        assert METADATA_SIZES[t] == value_offset[t], t.name
        assert DBR_DTYPES[t].fields["value"][1] == value_offset[t], t.name
        meta = METADATA_DTYPES[t]
        assert (meta.itemsize if meta is not None else 0) == value_offset[t], t.name
        for count in range(1, 5):  # db_access.h dbr_size_n
            assert payload_size(t, count) == dbr_size[t] + (count - 1) * value_size[t]
        assert payload_size(t, 0) == dbr_size[t] - value_size[t]


def test_native_types_and_classes_match_libca(libca: dict[str, Any]) -> None:
    # epicsType numbers (epicsTypes.h) of the C value of each DBR type
    to_epics = _table(libca, "DBR_XXXXToEpicsType", ctypes.c_int)
    value_class = _table(libca, "dbr_value_class", ctypes.c_int)  # int, float, string
    epics_type = {
        ChannelType.STRING: 10,  # epicsOldStringT
        ChannelType.INT: 2,  # epicsInt16T
        ChannelType.FLOAT: 7,
        ChannelType.ENUM: 4,  # epicsEnum16T
        ChannelType.CHAR: 1,  # epicsUInt8T
        ChannelType.LONG: 5,
        ChannelType.DOUBLE: 8,
    }
    for t in ALL_TYPES:
        expected = {35: 3, 36: 3}.get(t, epics_type[NATIVE_TYPES[t]])  # PUT_ACK*: epicsUInt16T
        assert to_epics[t] == expected, t.name
        kind = VALUE_DTYPES[t].kind
        assert value_class[t] == {"i": 0, "u": 0, "f": 1, "S": 2}[kind], t.name


# --------------------------------------------------------------------------
# Every field offset against the C structs, compiled with gcc


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, str], tuple[int, ...]]:
    """{(type, field or "__struct__"): (offset, size[, kind])} printed by a C program."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: cannot compile the offsetof() check against db_access.h")
    inc = Path(pytest.importorskip("epicscorelibs.path").include_path)
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        '#include "db_access.h"',
        '#define KIND(x) _Generic((x), short: "i2", unsigned short: "u2", int: "i4", '
        'unsigned int: "u4", float: "f4", double: "f8", unsigned char: "u1", char *: "chars", '
        'char (*)[26]: "strs", default: "other")',
        "int main(void) {",
    ]
    for t in ALL_TYPES:
        ctype = C_TYPES[t]
        lines.append(f'printf("{int(t)} __struct__ 0 %zu\\n", sizeof({ctype}));')
        if not ctype.startswith("struct"):
            continue
        for name in DBR_DTYPES[t].names or ():
            member = C_MEMBER.get(name, name)
            lvalue = f"((({ctype} *)0)->{member})"
            lines.append(
                f'printf("{int(t)} {name} %zu %zu %s\\n", offsetof({ctype}, {member}), '
                f"sizeof({lvalue}), KIND({lvalue}));"
            )
    lines += ["return 0;", "}"]
    work = tmp_path_factory.mktemp("dbr_layout")
    src = work / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    exe = work / "layout"
    flags = [f"-I{inc}", f"-I{inc / 'os' / 'Linux'}", f"-I{inc / 'compiler' / 'gcc'}"]
    subprocess.run([gcc, "-std=c11", *flags, str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    table: dict[tuple[int, str], tuple[int, ...]] = {}
    for line in out.splitlines():
        t, name, offset, size, *kind = line.split()
        table[int(t), name] = (int(offset), int(size), *kind)
    return table


@pytest.mark.parametrize("data_type", ALL_TYPES, ids=lambda t: t.name)
def test_field_offsets_match_c_structs(
    c_layout: dict[tuple[int, str], tuple[int, ...]], data_type: ChannelType
) -> None:
    dtype = DBR_DTYPES[data_type]
    assert dtype.itemsize == c_layout[data_type, "__struct__"][1]
    if not C_TYPES[data_type].startswith("struct"):
        assert dtype.names == ("value",)
        return
    c_fields = {name for t, name in c_layout if t == data_type and name != "__struct__"}
    assert c_fields == set(dtype.names or ())
    for name, (field_dtype, offset, *_) in (dtype.fields or {}).items():
        c_offset, c_size, c_kind = c_layout[data_type, name]
        assert (offset, field_dtype.itemsize) == (c_offset, c_size), (data_type.name, name)
        assert _kind(field_dtype) == c_kind, (data_type.name, name)
        if field_dtype.kind in "iuf" and field_dtype.itemsize > 1:
            assert field_dtype.byteorder == ">", (data_type.name, name)


def test_field_names() -> None:
    assert DBR_DTYPES[ChannelType.TIME_DOUBLE].names == (
        "status",
        "severity",
        "secondsSinceEpoch",
        "nanoseconds",
        "RISC_pad",
        "value",
    )
    ctrl = DBR_DTYPES[ChannelType.CTRL_DOUBLE].names or ()
    assert ctrl[:5] == ("status", "severity", "precision", "RISC_pad0", "units")
    assert ctrl[-3:] == ("upper_ctrl_limit", "lower_ctrl_limit", "value")
    gr_enum = ("status", "severity", "no_str", "strs", "value")
    assert DBR_DTYPES[ChannelType.GR_ENUM].names == gr_enum
    assert DBR_DTYPES[ChannelType.CLASS_NAME] == np.dtype([("value", "S40")])
    plain = ["|S40", ">i2", ">f4", ">u2", "|u1", ">i4", ">f8"]
    assert [VALUE_DTYPES[t].str for t in range(7)] == plain


# --------------------------------------------------------------------------
# Type families


def test_native_class_and_promotion() -> None:
    for t in range(35):
        assert native_type(t) == t % 7
        assert dbr_class(t) == DbrClass(t // 7)
        assert promote(t, DbrClass.PLAIN) == t % 7
        assert sts_type(t) == 7 + t % 7
        assert time_type(t) == 14 + t % 7
        assert gr_type(t) == 21 + t % 7
        assert ctrl_type(t) == 28 + t % 7
    assert time_type(ChannelType.DOUBLE) is ChannelType.TIME_DOUBLE
    assert native_type(ChannelType.PUT_ACKT) is ChannelType.ENUM
    assert native_type(ChannelType.STSACK_STRING) is ChannelType.STRING
    assert native_type(ChannelType.CLASS_NAME) is ChannelType.STRING
    assert all(DBR_CLASSES[t] is DbrClass.SPECIAL for t in range(35, 39))
    with pytest.raises(DbrError):
        promote(ChannelType.PUT_ACKS, DbrClass.TIME)
    with pytest.raises(DbrError):
        native_type(39)
    with pytest.raises(DbrError):
        payload_size(-1, 1)
    with pytest.raises(DbrError):
        payload_size(ChannelType.DOUBLE, -1)


# --------------------------------------------------------------------------
# Round trips


def _sample_values(t: int, count: int) -> Any:
    vt = VALUE_DTYPES[t]
    if vt.kind == "S":
        return [f"s{i}-\u00e9" for i in range(count)]
    if vt.kind == "f":
        return [1.5 * i - 0.25 for i in range(count)]
    info = np.iinfo(vt)
    return [int(info.min) if i % 2 else int(info.max) - i for i in range(count)]


def _sample_metadata(t: int) -> dict[str, Any]:
    md: dict[str, Any] = {}
    meta = METADATA_DTYPES[t]
    for i, name in enumerate(meta.names if meta is not None else ()):
        dt = meta.fields[name][0]  # type: ignore[index]
        if name == "units":
            md[name] = "mm/s"
        elif name == "strs":
            md[name] = ["zero", "one", "two \u00fc"]
        elif name == "no_str":
            continue  # defaults to len(strs)
        elif dt.kind == "f":
            md[name] = -2.5 * i
        else:
            md[name] = i + 1
    return md


@pytest.mark.parametrize("data_type", ALL_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("count", [1, 3, 0])
def test_round_trip_every_type(data_type: ChannelType, count: int) -> None:
    values = _sample_values(data_type, count)
    md = _sample_metadata(data_type)
    payload, n = encode_dbr(data_type, values, md)
    assert n == count
    assert len(payload) == payload_size(data_type, count)
    meta, decoded = decode_dbr(data_type, count, bytes(payload) + bytes(7))  # CA padding ignored
    assert decoded.dtype == VALUE_DTYPES[data_type]
    assert decoded.shape == (count,)
    if VALUE_DTYPES[data_type].kind == "S":
        assert decode_strings(decoded) == values
    else:
        assert decoded.tolist() == values
    if METADATA_DTYPES[data_type] is None:
        assert meta is None
        return
    assert meta is not None and meta.shape == ()
    got = metadata_dict(meta)
    for name, value in md.items():
        assert (meta[name].item() if name.startswith("RISC_pad") else got[name]) == value, name
    if "strs" in md:
        assert got["no_str"] == len(md["strs"])
    # a decoded record encodes back to the same bytes
    assert encode_dbr(data_type, decoded, meta)[0] == payload
    assert encode_dbr(data_type, decoded, meta[()])[0] == payload  # numpy void record


@pytest.mark.parametrize("data_type", ALL_TYPES, ids=lambda t: t.name)
def test_decode_scalar_agrees_with_the_numpy_path(data_type: ChannelType) -> None:
    """The fast one-element decode gives decode_dbr + metadata_dict's answer.

    For the types it takes (numbers with plain, STS or TIME metadata, and
    PUT_ACKT/ACKS); the others get None. TIME stamps are checked with nanoseconds that a wrong
    scale would show.
    """
    md = _sample_metadata(data_type)
    if "secondsSinceEpoch" in md:
        md["secondsSinceEpoch"], md["nanoseconds"] = 1_000_000_000, 123_456_789
    payload, _ = encode_dbr(data_type, _sample_values(data_type, 1), md)
    fast = decode_scalar(data_type, bytes(payload) + bytes(3))  # CA padding ignored
    if VALUE_DTYPES[data_type].kind == "S" or dbr_class(data_type) in (DbrClass.GR, DbrClass.CTRL):
        assert fast is None
        return
    assert fast is not None
    meta, values = decode_dbr(data_type, 1, payload)
    expected = {} if meta is None else metadata_dict(meta)
    assert fast == (values[0].item(), expected)
    assert all(type(v) is type(expected[k]) for k, v in fast[1].items())
    if "timestamp" in expected:
        stamp = EPICS_EPOCH_OFFSET + 1_000_000_000 + 0.123456789
        assert fast[1]["timestamp"] == pytest.approx(stamp, abs=1e-6)
    assert decode_scalar(data_type, bytes(payload)[:-1]) is None  # too short: the slow path


@pytest.mark.parametrize("data_type", ALL_TYPES, ids=lambda t: t.name)
def test_decode_truncated_payload_raises(data_type: ChannelType) -> None:
    payload, _ = encode_dbr(data_type, _sample_values(data_type, 2))
    decode_dbr(data_type, 2, payload)
    with pytest.raises(TruncatedPayloadError) as info:
        decode_dbr(data_type, 2, payload[:-1])
    assert isinstance(info.value, ValueError)
    with pytest.raises(TruncatedPayloadError):
        decode_dbr(data_type, 3, memoryview(payload))
    if METADATA_SIZES[data_type]:
        with pytest.raises(TruncatedPayloadError):
            decode_dbr(data_type, 0, payload[: METADATA_SIZES[data_type] - 1])


@pytest.mark.parametrize("data_type", [ChannelType.TIME_DOUBLE, ChannelType.CTRL_CHAR, 0, 24])
def test_decode_returns_views(data_type: int) -> None:
    payload = bytearray(encode_dbr(data_type, _sample_values(data_type, 4))[0])
    buf = np.frombuffer(payload, dtype=np.uint8)
    meta, values = decode_dbr(data_type, 4, payload)
    assert np.shares_memory(values, buf)
    assert meta is None or np.shares_memory(meta, buf)
    payload[METADATA_SIZES[data_type] + VALUE_DTYPES[data_type].itemsize - 1] ^= 1
    assert values.tobytes() == bytes(payload[METADATA_SIZES[data_type] :])
    # read-only payloads give read-only views
    _, frozen = decode_dbr(data_type, 4, bytes(payload))
    assert not frozen.flags.writeable
    _, view_values = decode_dbr(data_type, 4, memoryview(bytes(payload)))
    assert view_values.tobytes() == values.tobytes()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_round_trip_property(data: st.DataObject) -> None:
    t = data.draw(st.sampled_from(ALL_TYPES))
    vt = VALUE_DTYPES[t]
    count = data.draw(st.integers(0, 6))
    if vt.kind == "S":
        elem: st.SearchStrategy[Any] = st.binary(max_size=39).map(lambda b: b.replace(b"\0", b""))
    elif vt.kind == "f":
        elem = st.floats(width=vt.itemsize * 8, allow_nan=False)
    else:
        info = np.iinfo(vt)
        elem = st.integers(int(info.min), int(info.max))
    values = data.draw(st.lists(elem, min_size=count, max_size=count))
    payload, n = encode_dbr(t, values)
    _, decoded = decode_dbr(t, n, payload)
    assert n == count
    assert decoded.tolist() == values


def test_scalar_fast_path_matches_general_path() -> None:
    for t in (1, 2, 3, 4, 5, 6, 8, 16, 20, 34, 35):
        value = 3.25 if VALUE_DTYPES[t].kind == "f" else 7
        assert encode_dbr(t, value) == encode_dbr(t, [value]) == encode_dbr(t, np.array([value]))
    assert encode_dbr(ChannelType.DOUBLE, 1.5)[0] == b"\x3f\xf8" + bytes(6)
    assert encode_dbr(ChannelType.INT, -2)[0] == b"\xff\xfe"


def test_encode_strings() -> None:
    payload, count = encode_dbr(ChannelType.STRING, "hello")
    assert count == 1 and payload == b"hello".ljust(40, b"\0")
    assert encode_dbr(ChannelType.STRING, b"x" * 39)[1] == 1
    two = b"a".ljust(40, b"\0") + b"b".ljust(40, b"\0")
    assert encode_dbr(ChannelType.STRING, ["a", b"b"])[0] == two
    assert encode_dbr(ChannelType.STRING, np.array([b"a", b"bc"]))[1] == 2
    assert encode_dbr(ChannelType.STRING, []) == (b"", 0)
    latin = encode_dbr(ChannelType.STRING, "\u00e9", encoding="latin-1")[0]
    assert latin[:2] == b"\xe9\0"
    for too_long in ("x" * 40, b"y" * 41, "\u00e9" * 20, np.array([b"z" * 40])):
        with pytest.raises(DbrEncodeError):
            encode_dbr(ChannelType.STRING, too_long)
    with pytest.raises(DbrEncodeError):
        encode_dbr(ChannelType.STRING, 5)
    # bytes that are not UTF-8 survive a decode/encode round trip
    raw = b"caf\xe9\xff"
    text = decode_strings(decode_dbr(0, 1, encode_dbr(0, raw)[0])[1])[0]
    assert encode_dbr(0, text)[0][:5] == raw
    assert decode_strings([b"ab\0cd", b"", b"x" * 40]) == ["ab", "", "x" * 40]


def test_encode_numbers_refuses_what_does_not_fit() -> None:
    assert encode_dbr(ChannelType.CHAR, b"\x00\xffA") == (b"\x00\xffA", 3)
    assert encode_dbr(ChannelType.CHAR, "AB") == (b"AB", 2)
    assert encode_dbr(ChannelType.LONG, [True, False])[1] == 2
    assert encode_dbr(ChannelType.LONG, np.arange(3, dtype=np.uint8))[1] == 3
    assert encode_dbr(ChannelType.DOUBLE, [[1, 2], [3, 4]])[1] == 4
    payload, _ = encode_dbr(ChannelType.FLOAT, 1e300)  # IEEE: overflows to inf
    assert math.isinf(decode_dbr(2, 1, payload)[1][0])
    for t, bad in [(1, 40000), (1, [1, -40000]), (4, 256), (4, -1), (3, 2**16), (5, 2**31)]:
        with pytest.raises(DbrEncodeError):
            encode_dbr(t, bad)
    for t, bad in [(1, 1.5), (5, [1.0]), (6, "1.5"), (6, ["a"]), (1, [object()])]:
        with pytest.raises(DbrEncodeError):
            encode_dbr(t, bad)
    with pytest.raises(DbrError):
        encode_dbr(39, 1)


def test_encode_metadata_rules() -> None:
    t = ChannelType.CTRL_INT
    payload, _ = encode_dbr(t, 1, {"units": "very long units", "upper_disp_limit": 1e5})
    meta = metadata_dict(decode_dbr(t, 1, payload)[0])  # type: ignore[arg-type]
    assert meta["units"] == "very lo"  # 7 bytes plus NUL, as dbAccess truncates
    assert meta["upper_disp_limit"] == 100000 - 131072  # C narrowing of 1e5 to short
    assert meta["lower_disp_limit"] == 0  # missing fields are zero
    payload, _ = encode_dbr(ChannelType.GR_FLOAT, 1, {"upper_disp_limit": 1e300, "precision": 2.0})
    meta = metadata_dict(decode_dbr(ChannelType.GR_FLOAT, 1, payload)[0])  # type: ignore[arg-type]
    assert meta["upper_disp_limit"] == float(np.finfo(np.float32).max)
    assert meta["precision"] == 2
    states = [f"state{i}" * 4 for i in range(16)]
    payload, _ = encode_dbr(ChannelType.CTRL_ENUM, 1, {"strs": states})
    meta = metadata_dict(decode_dbr(ChannelType.CTRL_ENUM, 1, payload)[0])  # type: ignore[arg-type]
    assert meta["no_str"] == 16 and meta["strs"][1] == ("state1" * 4)[:25]
    with pytest.raises(DbrEncodeError):
        encode_dbr(ChannelType.CTRL_ENUM, 1, {"strs": ["x"] * 17})
    with pytest.raises(DbrEncodeError):
        encode_dbr(ChannelType.GR_INT, 1, {"upper_disp_limit": math.nan})
    with pytest.raises(DbrEncodeError):
        encode_dbr(ChannelType.STS_INT, 1, ["not", "a", "mapping"])
    assert encode_dbr(ChannelType.DOUBLE, 1.0, {"status": 3}) == encode_dbr(6, 1.0)  # ignored
    assert encode_dbr(ChannelType.TIME_LONG, 1)[0] == bytes(12) + b"\0\0\0\1"


# --------------------------------------------------------------------------
# Timestamps


def test_timestamps() -> None:
    assert posix_to_epics(EPICS_EPOCH_OFFSET) == (0, 0)
    assert posix_to_epics(EPICS_EPOCH_OFFSET + 1.5) == (1, 500_000_000)
    assert posix_to_epics(EPICS_EPOCH_OFFSET + 2 - 1e-10) == (2, 0)  # rounding carries
    assert epics_to_posix(0, 0) == EPICS_EPOCH_OFFSET
    assert epics_to_posix(10, 250_000_000) == EPICS_EPOCH_OFFSET + 10.25
    for bad in (EPICS_EPOCH_OFFSET - 1.0, EPICS_EPOCH_OFFSET + 2.0**32, math.nan, math.inf):
        with pytest.raises(ValueError):
            posix_to_epics(bad)
    sec, nsec = epics_now()
    assert abs(epics_to_posix(sec, nsec) - time.time()) < 5
    assert 0 <= nsec < 1_000_000_000
    payload, _ = encode_dbr(ChannelType.TIME_ENUM, 1, {"timestamp": EPICS_EPOCH_OFFSET + 3.75})
    meta = metadata_dict(decode_dbr(ChannelType.TIME_ENUM, 1, payload)[0])  # type: ignore[arg-type]
    assert (meta["secondsSinceEpoch"], meta["nanoseconds"]) == (3, 750_000_000)
    assert meta["timestamp"] == EPICS_EPOCH_OFFSET + 3.75


@given(st.floats(EPICS_EPOCH_OFFSET, EPICS_EPOCH_OFFSET + 2.0**32 - 1))
def test_timestamp_round_trip(posix: float) -> None:
    sec, nsec = posix_to_epics(posix)
    assert 0 <= nsec < 1_000_000_000
    assert abs(epics_to_posix(sec, nsec) - posix) <= 1e-9 + abs(posix) * 2**-52

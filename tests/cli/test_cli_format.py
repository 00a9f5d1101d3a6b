"""The C details behind caioc-get/-put/-monitor, checked without a server.

glibc getopt, sscanf and epicsScanDouble, epicsString's escapes, and the
value, metadata and timestamp formats of epics-base's tool_lib.c.
"""

from __future__ import annotations

import math
import time

import pytest

from caioc.ca import ChannelType
from caioc.cli._common import (
    Getopt,
    escaped_from_raw,
    raw_from_escaped,
    scan_double,
    scan_int,
    scan_uint,
)
from caioc.cli._format import (
    DbrValue,
    IntFormat,
    Printer,
    PvState,
    Settings,
    TimeType,
    dbr2str,
    dbr_text_to_type,
    eca_message,
    format_stamp,
    sprint_long,
    time_diff,
    val2str,
)


def parse(args: list[str], optstring: str, permute: bool) -> tuple[list[object], list[str]]:
    getopt = Getopt(args, optstring, permute)
    return list(getopt), getopt.operands


def test_getopt_combined_flags_and_arguments() -> None:
    options, operands = parse(["-#5", "-lx", "-e3", "-ta", "-w", "2", "PV"], ":ta#:l:e:w:", True)
    assert options == [("#", "5"), ("l", "x"), ("e", "3"), ("t", None), ("a", None), ("w", "2")]
    assert operands == ["PV"]


def test_getopt_permutes_unless_posix_and_stops_at_double_dash() -> None:
    assert parse(["A", "-t", "B"], ":t", True) == ([("t", None)], ["A", "B"])
    assert parse(["A", "-t", "B"], ":t", False) == ([], ["A", "-t", "B"])
    assert parse(["-t", "--", "-t", "-"], ":t", True) == ([("t", None)], ["-t", "-"])
    assert parse(["PV", "-5"], ":cnlhatsVS#:w:p:F:", False) == ([], ["PV", "-5"])


def test_getopt_errors() -> None:
    assert parse(["-z", "-w"], ":w:", True) == ([("?", "z"), (":", "w")], [])
    assert parse(["-w", "-t"], ":tw:", True) == ([("w", "-t")], [])  # glibc takes it as the value


def test_c_scanners() -> None:
    assert scan_int(" 5abc") == 5 and scan_int("-3") == -3 and scan_int("x") is None
    assert scan_uint("-1") == 0xFFFFFFFF and scan_uint("7") == 7
    assert scan_uint("-1", bits=64) == 2**64 - 1
    assert scan_double(" 1.5 ") == 1.5 and scan_double("1.5s") is None
    assert scan_double("") is None


def test_escapes_both_ways() -> None:
    assert escaped_from_raw(b"a\tb\\\"'\x07\n\xc3\xa9~") == "a\\tb\\\\\\\"\\'\\a\\n\\xc3\\xa9~"
    assert raw_from_escaped("a\\tb\\x41\\x4", 40) == b"a\tbA\x04"
    assert raw_from_escaped("\\xZ\\q\\", 40) == b"Zq"
    assert raw_from_escaped("x" * 50, 40, 40) == b"x" * 39  # one EPICS string and its NUL
    assert raw_from_escaped("ab\\0cd", 40) == b"ab\0cd"


def test_sprint_long() -> None:
    assert sprint_long(-5, IntFormat.HEX) == "0xFFFFFFFB"
    assert sprint_long(8, IntFormat.OCT) == "0o10"
    assert sprint_long(0, IntFormat.BIN) == "0"
    assert sprint_long(-1, IntFormat.BIN) == "1" * 32
    assert sprint_long(-7, IntFormat.DEC) == "-7"


def value(dbr_type: int, *values: object, **meta: object) -> DbrValue:
    return DbrValue(dbr_type, len(values), list(values), dict(meta))


def test_val2str_numbers() -> None:
    plain = Settings()
    assert val2str(value(ChannelType.CHAR, 200), 0, plain) == "-56"  # a signed char
    assert val2str(value(ChannelType.DOUBLE, 1e-7), 0, plain) == "1e-07"
    assert val2str(value(ChannelType.DOUBLE, -math.nan), 0, plain) == "-nan"
    assert val2str(value(ChannelType.FLOAT, 0.10000000149011612), 0, plain) == "0.1"
    assert val2str(value(ChannelType.DOUBLE, 2.5), 0, Settings(dbl_format="%-.3f")) == "2.500"
    rounded = Settings(out_type_f=IntFormat.HEX)
    assert val2str(value(ChannelType.DOUBLE, -2.5), 0, rounded) == "0xFFFFFFFD"
    assert val2str(value(ChannelType.DOUBLE, math.nan), 0, rounded) == "0x80000000"
    assert val2str(value(ChannelType.DOUBLE, 2.4), 0, rounded) == "0x2"
    assert val2str(value(ChannelType.TIME_INT, -2), 0, Settings(out_type_i=IntFormat.OCT)) == (
        "0o37777777776"
    )
    assert val2str(value(ChannelType.STRING, b"a\tb"), 0, plain) == "a\\tb"
    assert val2str(value(99, 1), 0, plain) == "*** invalid type"


def test_val2str_enums() -> None:
    plain = Settings()
    states = {"no_str": 2, "strs": ["Off", "On"]}
    assert val2str(value(ChannelType.CTRL_ENUM, 1, **states), 0, plain) == "On"
    assert val2str(value(ChannelType.GR_ENUM, 5, **states), 0, plain) == "Enum Index Overflow (5)"
    assert val2str(value(ChannelType.GR_ENUM, 16, **states), 0, plain) == "Illegal Value (16)"
    assert val2str(value(ChannelType.CTRL_ENUM, 1, **states), 0, Settings(enum_as_nr=True)) == "1"
    assert val2str(value(ChannelType.TIME_ENUM, 1, **states), 0, plain) == "1"


def test_dbr2str_integer_limits_and_ack() -> None:
    gr_long = value(ChannelType.GR_LONG, 1, status=3, severity=2, units="V", upper_disp_limit=10)
    assert dbr2str(gr_long, "") == (
        "    Status:           HIHI\n"
        "    Severity:         MAJOR\n"
        "    Units:            V\n"
        "    Lo disp limit:           0\n"
        "    Hi disp limit:          10\n"
        "    Lo alarm limit:          0\n"
        "    Lo warn limit:           0\n"
        "    Hi warn limit:           0\n"
        "    Hi alarm limit:          0"
    )
    stsack = value(ChannelType.STSACK_STRING, b"x", status=99, severity=1, ackt=0, acks=2)
    assert dbr2str(stsack, "") == (
        "    Status:           ??\n"
        "    Severity:         MINOR\n"
        "    Ack transient?:   NO\n"
        "    Ack severity:     MAJOR"
    )


def test_dbr_names_and_messages() -> None:
    assert dbr_text_to_type("DBR_CTRL_SHORT") == 29
    assert dbr_text_to_type("DBR_INT") == -1  # dbr_text[] only knows DBR_SHORT
    assert eca_message(192) == "Virtual circuit disconnect"


def test_timestamps() -> None:
    assert format_stamp((0, 0)) == "<undefined>"
    seconds = 1_000_000_000
    day = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds + 631152000))
    # the fraction is rounded, but never into the next second
    assert format_stamp((seconds, 1_500)) == day + ".000002"
    assert format_stamp((seconds, 999_999_600)) == day + ".999999"
    assert format_stamp((seconds, 1_000_000_000)) == day + ".OVF"
    assert time_diff((1, 0), (0xFFFFFFFF, 0)) == pytest.approx(2.0)
    assert time_diff((5, 250_000_000), (7, 0)) == pytest.approx(-1.75)


def test_relative_and_incremental_stamps() -> None:
    def line(printer: Printer, pv: PvState, seconds: int, v: int) -> str:
        pv.value = value(ChannelType.TIME_LONG, v, secondsSinceEpoch=seconds, nanoseconds=0)
        return printer.time_val_sts(pv, 0)

    settings = Settings(ts_type=TimeType.INCREMENTAL, field_separator=",")
    printer = Printer(settings)
    pv = PvState("A", dbr_type=ChannelType.TIME_LONG, n_elems=1, once_connected=True)
    day = format_stamp((1000, 0))
    assert line(printer, pv, 1000, 1) == f"A,{day},1,,\n"
    assert line(printer, pv, 1002, 2) == "A,                 +2.000000,2,,\n"
    settings.ts_type = TimeType.RELATIVE
    settings.ts_src_server = False
    settings.ts_src_client = True
    assert line(printer, pv, 1003, 3).startswith("A,              (   +0.0")

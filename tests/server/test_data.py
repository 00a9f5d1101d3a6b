"""The data behind a server's PVs (``caioc.server._data``), without a network.

Differential first: channels built like the softioc records of
``tests/data`` must answer the requests libca sent there with the bytes
rsrv answered (timestamps and C padding fields aside), take libca's put
payloads as rsrv did, and send the monitor updates rsrv sent. Then every
DBR type from every native type, counts, conversions, refusals with their
ECA codes, alarms, subscriptions and put hooks, case by case.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import caioc.server._data_channel as data_channel
from caioc.ca import (
    ECA,
    MAX_STRING_SIZE,
    METADATA_DTYPES,
    METADATA_SIZES,
    NATIVE_TYPES,
    VALUE_DTYPES,
    AccessRights,
    AlarmSeverity,
    AlarmStatus,
    ChannelType,
    Command,
    DbrClass,
    EventAddRequest,
    EventAddResponse,
    ReadNotifyRequest,
    ReadNotifyResponse,
    Role,
    StreamParser,
    SubscriptionMask,
    WriteRequest,
    dbr_class,
    decode_dbr,
    decode_strings,
    encode_dbr,
    metadata_dict,
    payload_size,
)
from caioc.ca._convert import double_to_string, float_to_string
from caioc.server._data import (
    ChannelChar,
    ChannelData,
    ChannelDouble,
    ChannelEnum,
    ChannelError,
    ChannelFloat,
    ChannelInteger,
    ChannelShort,
    ChannelString,
    ChannelValueError,
)

DATA = Path(__file__).parent.parent / "data"
T = ChannelType
MODERN = 13  # CA minor version of libca 7.0 (count 0 means the current length)
CHAR_TEXT = "".join(
    f"line {i:03d}: the quick brown fox jumps over the lazy dog. " for i in range(8)
)


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(_wrap(coroutine))


async def _wrap(coroutine: Awaitable[Any]) -> Any:
    return await coroutine


def read(channel: ChannelData, data_type: int, count: int = 0, version: int = MODERN) -> Any:
    """(metadata dict or None, values, count) of one read."""
    payload, n = run(channel.read(data_type, count, version))
    assert len(payload) == payload_size(data_type, n)
    metadata, values = decode_dbr(data_type, n, payload)
    md = None if metadata is None else metadata_dict(metadata)
    if values.dtype.kind == "S":
        return md, decode_strings(values), n
    return md, values.tolist(), n


def metadata_of(data_type: int, payload: Any) -> dict[str, Any]:
    """The metadata of a one-element payload, as Python values."""
    metadata = decode_dbr(data_type, 1, payload)[0]
    assert metadata is not None
    return metadata_dict(metadata)


def write(channel: ChannelData, data_type: int, values: Any, metadata: Any = None) -> None:
    payload, count = encode_dbr(data_type, values, metadata)
    run(channel.write(data_type, count, payload))


def refused(call: Awaitable[Any]) -> ChannelError:
    with pytest.raises(ChannelError) as info:
        run(call)
    return info.value


class BareSub:
    """A subscription as the network layer keeps one (no ``deliver_error``)."""

    def __init__(
        self,
        data_type: int,
        data_count: int = 0,
        mask: int = SubscriptionMask.VALUE | SubscriptionMask.ALARM,
        client_version: int = MODERN,
    ) -> None:
        self.data_type = data_type
        self.data_count = data_count
        self.mask = mask
        self.client_version = client_version
        self.updates: list[tuple[Any, int]] = []
        self.errors: list[tuple[ECA, bytes, int]] = []

    def deliver(self, payload: Any, count: int) -> None:
        self.updates.append((payload, count))

    def values(self) -> list[Any]:
        out = []
        for payload, count in self.updates:
            _, values = decode_dbr(self.data_type, count, payload)
            out.append(decode_strings(values) if values.dtype.kind == "S" else values.tolist())
        return out


class Sub(BareSub):
    """A subscription that also takes failed updates, as rsrv reports them."""

    def deliver_error(self, eca: ECA, payload: bytes, count: int) -> None:
        self.errors.append((eca, payload, count))


# --------------------------------------------------------------------------
# The softioc records of tests/data (tests/tools/record_ca.py, run_server)

MAJOR = AlarmSeverity.MAJOR


def softioc_records() -> dict[str, ChannelData]:
    """caioc channels defined like the records the recordings were made from."""
    return {
        "TEST:AO": ChannelDouble(
            value=3.25,
            units="mm",
            precision=3,
            lower_ctrl_limit=-100.0,
            upper_ctrl_limit=100.0,
            lower_disp_limit=-10.0,
            upper_disp_limit=10.0,
            lower_alarm_limit=-9.0,
            lower_warning_limit=-8.0,
            upper_warning_limit=8.0,
            upper_alarm_limit=9.0,
        ),
        "TEST:LO": ChannelInteger(
            value=7,
            units="cts",
            lower_ctrl_limit=-1000,
            upper_ctrl_limit=1000,
            lower_disp_limit=-100,
            upper_disp_limit=100,
            lower_alarm_limit=-90,
            lower_warning_limit=-80,
            upper_warning_limit=80,
            upper_alarm_limit=90,
        ),
        "TEST:MB": ChannelEnum(
            value=1, enum_strings=["Off", "On", "Fault"], enum_severities=[0, 0, MAJOR]
        ),
        "TEST:SO": ChannelString(value="hello"),
        # a waveform's control limits are its display limits (LOPR/HOPR)
        "TEST:WF": ChannelDouble(
            value=np.arange(10.0), units="V", precision=2, upper_disp_limit=10, upper_ctrl_limit=10
        ),
        "TEST:SHWF": ChannelShort(value=np.array([1, -2, 300, -32768, 32767])),
        "TEST:FLWF": ChannelFloat(value=[0.5, -1.25, 3e10, 1e-3], units="A", precision=4),
        "TEST:CHARWF": ChannelChar(value=CHAR_TEXT, max_length=1024),
        "TEST:BIG": ChannelDouble(value=np.arange(10_000) * 0.25),
    }


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def recorded_commands(recording: dict[str, Any], direction: str) -> list[Command]:
    """The commands of one direction of the (single) recorded TCP circuit."""
    chunks: dict[int, list[bytes]] = defaultdict(list)
    for record in recording["records"]:
        if record["channel"] == "ca_tcp" and record["direction"] == direction:
            chunks[record["conn"]].append(bytes.fromhex(record["data"]))
    out: list[Command] = []
    for conn in sorted(chunks):
        sender = Role.CLIENT if direction == "client_to_server" else Role.SERVER
        parser = StreamParser(sender, 100_000_000)  # recorded with MAX_ARRAY_BYTES=1e8
        for chunk in chunks[conn]:
            parser.receive_data(chunk)
            out.extend(parser.commands())
    return out


def comparable(data_type: int, payload: Any, count: int) -> bytes:
    """Payload bytes with what legitimately differs zeroed.

    That is timestamps, the C structs' padding fields and, in string
    values, the bytes after the terminating NUL (rsrv leaves whatever its
    buffer held there).
    """
    raw = bytearray(bytes(payload)[: payload_size(data_type, count)])
    meta = METADATA_DTYPES[data_type]
    fields = {} if meta is None or meta.fields is None else meta.fields
    for name, (field, offset, *_) in fields.items():
        if name.startswith("RISC_pad") or name in ("secondsSinceEpoch", "nanoseconds"):
            raw[offset : offset + field.itemsize] = bytes(field.itemsize)
    if VALUE_DTYPES[data_type].kind == "S":
        start = METADATA_SIZES[data_type]
        for at in range(start, len(raw), MAX_STRING_SIZE):
            nul = raw.find(0, at, at + MAX_STRING_SIZE)
            if nul >= 0:
                raw[nul : at + MAX_STRING_SIZE] = bytes(at + MAX_STRING_SIZE - nul)
    return bytes(raw)


def assert_same_reply(
    data_type: int, ours: tuple[Any, int], theirs: ReadNotifyResponse | EventAddResponse
) -> None:
    payload, count = ours
    assert count == theirs.data_count
    assert comparable(data_type, payload, count) == comparable(
        data_type, theirs.payload, theirs.data_count
    )
    assert len(bytes(payload)) == payload_size(data_type, count)  # unpadded


def test_reads_answer_what_rsrv_answered() -> None:
    recording = load("b_get_dbr_types")
    records = softioc_records()
    gets = [step for step in recording["steps"] if step["op"] == "get"]
    requests = [
        c for c in recorded_commands(recording, "client_to_server") if type(c) is ReadNotifyRequest
    ]
    responses = {
        c.ioid: c
        for c in recorded_commands(recording, "server_to_client")
        if type(c) is ReadNotifyResponse
    }
    assert len(gets) == len(requests) == 42
    for step, request in zip(gets, requests, strict=True):
        channel = records[step["pv"]]
        ours = run(channel.read(request.data_type, request.data_count, MODERN))
        assert_same_reply(request.data_type, ours, responses[request.ioid])
    assert {step["dbr_type"] for step in gets} == set(range(35))


@pytest.mark.parametrize("name", ["c_put", "e_large_array"])
def test_puts_and_reads_go_as_with_rsrv(name: str) -> None:
    recording = load(name)
    records = softioc_records()
    client = iter(
        c
        for c in recorded_commands(recording, "client_to_server")
        if isinstance(c, (WriteRequest, ReadNotifyRequest))
    )
    responses = {
        c.ioid: c
        for c in recorded_commands(recording, "server_to_client")
        if type(c) is ReadNotifyResponse
    }
    puts = gets = 0
    for step in recording["steps"]:
        if step["op"] == "put":
            request = next(client)
            assert isinstance(request, WriteRequest)
            channel = records[step["pv"]]
            # libca's own payloads: a lone DBR_STRING comes unpadded to 40 bytes
            call = channel.write(request.data_type, request.data_count, request.payload)
            if step["value"] == "Bogus":  # rsrv: ECA_PUTFAIL (an ERROR for a plain WRITE)
                assert refused(call).eca is ECA.PUTFAIL
            else:
                run(call)
            puts += 1
        elif step["op"] == "get":
            request = next(client)
            assert type(request) is ReadNotifyRequest
            ours = run(records[step["pv"]].read(request.data_type, request.data_count, MODERN))
            assert_same_reply(request.data_type, ours, responses[request.ioid])
            gets += 1
    assert (puts, gets) == {"c_put": (9, 6), "e_large_array": (2, 7)}[name]
    if name == "c_put":
        assert records["TEST:AO"].value == 7.125  # written as the DBR_STRING "7.125"
        assert records["TEST:MB"].value == 1  # "On" by name; "Bogus" refused twice
    else:
        assert records["TEST:CHARWF"].length == 11


def test_monitor_updates_are_those_rsrv_sent() -> None:
    recording = load("d_monitor")
    records = softioc_records()
    for name, value in [
        ("TEST:AO", 7.125),
        ("TEST:LO", 42),
        ("TEST:MB", 1),
        ("TEST:WF", -1.5 * np.arange(10.0)),
    ]:
        run(records[name].set(value))
    client = iter(
        c
        for c in recorded_commands(recording, "client_to_server")
        if isinstance(c, (EventAddRequest, WriteRequest))
    )
    subscriptions: dict[str, Sub] = {}
    by_id: dict[int, Sub] = {}
    for step in recording["steps"]:
        if step["op"] == "subscribe":
            request = next(client)
            assert isinstance(request, EventAddRequest)
            sub = Sub(request.data_type, request.data_count, request.mask)
            subscriptions[step["pv"]] = by_id[request.subscriptionid] = sub
            records[step["pv"]].subscribe(sub)
        elif step["op"] == "put":
            request = next(client)
            assert isinstance(request, WriteRequest)
            run(records[step["pv"]].write(request.data_type, request.data_count, request.payload))
        elif step["op"] == "unsubscribe":
            records[step["pv"]].unsubscribe(subscriptions[step["pv"]])
    theirs: dict[int, list[EventAddResponse]] = defaultdict(list)
    for command in recorded_commands(recording, "server_to_client"):
        if type(command) is EventAddResponse and command.data_count:  # not a cancel reply
            theirs[command.subscriptionid].append(command)
    assert sorted(len(v) for v in theirs.values()) == [2, 2, 2, 4]
    for subscriptionid, sub in by_id.items():
        assert len(sub.updates) == len(theirs[subscriptionid])
        for ours, response in zip(sub.updates, theirs[subscriptionid], strict=True):
            assert_same_reply(sub.data_type, ours, response)
    ao = [metadata_of(T.TIME_DOUBLE, p) for p, _ in subscriptions["TEST:AO"].updates]
    assert [(m["status"], m["severity"]) for m in ao] == [(0, 0), (0, 0), (4, 1), (3, 2)]


# --------------------------------------------------------------------------
# Every DBR type from every native type

SCALARS: dict[str, Callable[[], ChannelData]] = {
    "double": lambda: ChannelDouble(value=-2.5, precision=3, units="mm"),
    "float": lambda: ChannelFloat(value=-2.5, precision=2),
    "long": lambda: ChannelInteger(value=-70000),
    "short": lambda: ChannelShort(value=-2),
    "char": lambda: ChannelChar(value=200),
    "enum": lambda: ChannelEnum(value=1, enum_strings=["Off", "On"]),
    "string": lambda: ChannelString(value="42"),
}
#: What each scalar reads as in each plain type (as epics-base converts).
EXPECTED = {
    "double": ["-2.500", -2, -2.5, 65534, 254, -2, -2.5],
    "float": ["-2.50", -2, -2.5, 65534, 254, -2, -2.5],
    "long": ["-70000", -4464, -70000.0, 61072, 144, -70000, -70000.0],
    "short": ["-2", -2, -2.0, 65534, 254, -2, -2.0],
    "char": ["200", 200, 200.0, 200, 200, 200, 200.0],
    "enum": ["On", 1, 1.0, 1, 1, 1, 1.0],
    "string": ["42", 42, 42.0, 42, 42, 42, 42.0],
}


@pytest.mark.parametrize("kind", SCALARS)
@pytest.mark.parametrize("data_type", range(35))
def test_every_dbr_type_of_every_native_type(kind: str, data_type: int) -> None:
    channel = SCALARS[kind]()
    metadata, values, count = read(channel, data_type)
    assert count == 1
    assert values == [EXPECTED[kind][NATIVE_TYPES[data_type]]]
    cls = dbr_class(data_type)
    if cls is DbrClass.PLAIN:
        assert metadata is None
        return
    assert metadata is not None
    assert (metadata["status"], metadata["severity"]) == (0, 0)
    if cls is DbrClass.TIME:
        assert metadata["timestamp"] == pytest.approx(channel.timestamp, abs=1e-6)
    target = NATIVE_TYPES[data_type]
    if cls in (DbrClass.GR, DbrClass.CTRL) and target == T.ENUM:
        assert metadata["strs"] == (["Off", "On"] if kind == "enum" else [])
    elif cls in (DbrClass.GR, DbrClass.CTRL) and target != T.STRING:
        assert metadata["units"] == ("mm" if kind == "double" else "")
        if target in (T.FLOAT, T.DOUBLE):
            assert metadata["precision"] == {"double": 3, "float": 2}.get(kind, 0)


def test_reads_as_string_use_the_precision() -> None:
    for value in (3.25, -1e-5, 123456789.123, 1e20, math.nan):
        for precision in (0, 3, 9):
            double = ChannelDouble(value=value, precision=precision)
            assert read(double, T.STRING)[1] == [double_to_string(value, precision)]
            single = ChannelFloat(value=value, precision=precision)
            assert read(single, T.STRING)[1] == [float_to_string(value, precision)]
    assert read(ChannelDouble(value=0.5), T.STRING)[1] == ["0.500000"]  # no PREC: 6
    assert read(ChannelDouble(value=0.5), T.CTRL_DOUBLE)[0]["precision"] == 0


def test_special_types() -> None:
    channel = ChannelDouble(value=1.5, precision=1, record_type="ai", upper_alarm_limit=1.0)
    metadata, values, _ = read(channel, T.STSACK_STRING)
    assert values == ["1.5"]
    assert metadata == {"status": 3, "severity": 2, "ackt": 1, "acks": 2}
    assert read(channel, T.CLASS_NAME)[1:] == (["ai"], 1)
    assert read(ChannelString(), T.CLASS_NAME)[1] == ["caioc"]
    assert read(channel, T.CLASS_NAME, 2)[1:] == (["ai", ""], 2)
    # write-only: db_access.c has no get for them, so rsrv answers ECA_GETFAIL
    for data_type in (T.PUT_ACKT, T.PUT_ACKS):
        assert refused(channel.read(data_type, 1, MODERN)).eca is ECA.GETFAIL
    assert refused(channel.read(39, 1, MODERN)).eca is ECA.BADTYPE


def test_gr_and_ctrl_limits_are_converted_as_db_access_does() -> None:
    channel = ChannelDouble(
        value=0.0,
        upper_disp_limit=1e300,
        lower_disp_limit=-70000.7,
        upper_ctrl_limit=3e9,
        lower_warning_limit=-2.5,
        precision=70000,
    )
    long = read(channel, T.CTRL_LONG)[0]
    assert long["upper_disp_limit"] == -(2**31)  # out of int32: INT32_MIN
    assert long["lower_disp_limit"] == -70000  # truncated toward zero
    assert long["upper_ctrl_limit"] == -(2**31)
    assert long["upper_alarm_limit"] == -(2**31)  # not set: NaN
    assert long["lower_warning_limit"] == -2
    short = read(channel, T.CTRL_INT)[0]
    assert short["lower_disp_limit"] == -70000 + 65536  # int32, then wrapped
    assert short["upper_alarm_limit"] == 0  # NaN -> INT32_MIN -> 0, as rsrv sends
    char = read(channel, T.CTRL_CHAR)[0]
    assert char["lower_warning_limit"] == 254
    single = read(channel, T.CTRL_FLOAT)[0]
    assert single["upper_disp_limit"] == float(np.finfo(np.float32).max)
    assert math.isnan(single["upper_alarm_limit"])
    assert single["precision"] == 70000 - 65536  # (dbr_short_t) PREC
    double = read(channel, T.GR_DOUBLE)[0]
    assert double["upper_disp_limit"] == 1e300 and "upper_ctrl_limit" not in double


# --------------------------------------------------------------------------
# Element counts


def test_counts_of_arrays() -> None:
    wf = ChannelDouble(value=[1.0, 2.0, 3.0], max_length=5)
    assert (wf.length, wf.max_length) == (3, 5)
    assert read(wf, T.DOUBLE)[1:] == ([1.0, 2.0, 3.0], 3)  # count 0: current length
    assert read(wf, T.DOUBLE, 0, 12)[1:] == ([1.0, 2.0, 3.0, 0.0, 0.0], 5)  # old client
    assert read(wf, T.DOUBLE, 2)[1:] == ([1.0, 2.0], 2)  # truncated
    assert read(wf, T.TIME_LONG, 6)[1:] == ([1, 2, 3, 0, 0, 0], 6)  # zero padded
    assert read(wf, T.STRING, 4)[1] == ["1.000000", "2.000000", "3.000000", ""]
    scalar = ChannelInteger(value=5)
    assert read(scalar, T.LONG, 3)[1:] == ([5, 0, 0], 3)
    empty = ChannelDouble(max_length=4)
    metadata, values, count = read(empty, T.CTRL_DOUBLE)
    assert (values, count) == ([], 0) and metadata is not None
    assert read(empty, T.DOUBLE, 0, 12)[1:] == ([0.0] * 4, 4)
    strings = ChannelString(value=["a", "bc"], max_length=3)
    assert read(strings, T.STRING)[1] == ["a", "bc"]
    assert read(strings, T.STS_STRING, 0, 12)[1] == ["a", "bc", ""]
    text = ChannelChar(value="hi", max_length=10)
    assert read(text, T.CHAR)[1] == [104, 105, 0]
    assert read(text, T.STRING)[1] == ["104", "105", "0"]  # element by element, as EPICS


def test_plain_native_arrays_are_sent_without_copies_and_cached() -> None:
    wf = ChannelDouble(value=np.arange(1000.0))
    payload, count = run(wf.read(T.DOUBLE, 0, MODERN))
    assert isinstance(payload, memoryview) and count == 1000
    assert np.shares_memory(np.frombuffer(payload, ">f8"), wf.value)
    assert not wf.value.flags.writeable
    again = run(wf.read(T.DOUBLE, 0, MODERN))[0]
    assert again is payload  # cached until the value changes
    run(wf.set(np.zeros(3)))
    assert run(wf.read(T.DOUBLE, 0, MODERN))[0] is not payload


# --------------------------------------------------------------------------
# Writes


@pytest.mark.parametrize("data_type", range(35))
def test_writes_of_every_dbr_type(data_type: int) -> None:
    value: Any = "7" if NATIVE_TYPES[data_type] == T.STRING else 7
    metadata = {"status": 3, "severity": 2, "units": "x"}  # ignored, as epics-base does
    for channel in (
        ChannelDouble(),
        ChannelFloat(),
        ChannelInteger(),
        ChannelShort(),
        ChannelChar(),
        ChannelString(),
        ChannelEnum(enum_strings=[str(i) for i in range(10)]),
    ):
        write(channel, data_type, value, metadata)
        if channel.native_type != T.STRING:
            assert channel.value == 7
        elif NATIVE_TYPES[data_type] in (T.FLOAT, T.DOUBLE):
            assert channel.value == "7.000000"  # cvt_d_st: the stringout's default PREC 6
        else:
            assert channel.value == "7"
        assert (channel.alarm_status, channel.alarm_severity) == (0, 0)


def test_write_conversions() -> None:
    double = ChannelDouble(value=1.0, precision=2)
    for text, expected in [("1.5", 1.5), ("12 mm", 12.0), ("", 0.0), ("-1e3", -1000.0)]:
        write(double, T.STRING, text)
        assert double.value == expected
    run(double.write(T.STRING, 1, b"2.25\0"))  # libca sends a lone string unpadded
    assert double.value == 2.25
    short = ChannelShort()
    write(short, T.DOUBLE, 70000.0)  # C cast: truncated to int32, then wrapped
    assert short.value == 4464
    assert refused(short.write(T.STRING, 1, b"70000\0")).eca is ECA.PUTFAIL  # out of range
    single = ChannelFloat()
    write(single, T.DOUBLE, 1e300)
    assert single.value == float(np.finfo(np.float32).max)
    string = ChannelString()
    write(string, T.DOUBLE, 1.5)
    assert string.value == "1.500000"  # no PREC: 6 digits
    write(string, T.ENUM, 3)
    assert string.value == "3"
    enum = ChannelEnum(enum_strings=["Off", "On", "Fault"])
    write(enum, T.STRING, "Fault")
    assert enum.value == 2
    write(enum, T.STRING, "1")  # a number below the number of states
    assert enum.value == 1
    write(enum, T.DOUBLE, 2.9)
    assert enum.value == 2
    char = ChannelChar(max_length=8)
    write(char, T.CHAR, b"abc\0")
    assert char.value.tolist() == [97, 98, 99, 0]
    write(char, T.STRING, ["65", "66"])  # strings into CHAR: as numbers, as EPICS
    assert char.value.tolist() == [65, 66]
    write(char, T.LONG, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])  # longer than max_length: truncated
    assert char.value.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    run(char.write(T.CHAR, 0, b""))  # count 0: an empty array
    assert char.length == 0
    scalar = ChannelInteger()
    write(scalar, T.LONG, [4, 5, 6])  # a scalar keeps the first element
    assert scalar.value == 4


def test_refused_writes() -> None:
    read_only = ChannelDouble(value=1.0, read_only=True)
    assert read_only.access_rights("host", "user") == AccessRights.READ
    assert ChannelDouble().access_rights("host", "user") == AccessRights.READ_WRITE
    assert refused(read_only.write(T.DOUBLE, 1, bytes(8))).eca is ECA.NOWTACCESS
    assert read_only.value == 1.0
    double = ChannelDouble(value=1.0)
    error = refused(double.write(T.STRING, 1, b"abc\0"))
    assert error.eca is ECA.PUTFAIL and "abc" in str(error)
    assert isinstance(error, ValueError) and isinstance(error, ChannelValueError)
    assert refused(double.write(39, 1, bytes(8))).eca is ECA.BADTYPE
    assert refused(double.write(T.STSACK_STRING, 1, bytes(48))).eca is ECA.PUTFAIL
    assert refused(double.write(T.CLASS_NAME, 1, bytes(40))).eca is ECA.PUTFAIL
    assert refused(double.write(T.DOUBLE, 2, bytes(8))).eca is ECA.BADCOUNT  # short payload
    assert refused(double.write(T.DOUBLE, 0, b"")).eca is ECA.BADCOUNT
    enum = ChannelEnum(value=1, enum_strings=["Off", "On"])
    assert refused(enum.write(T.STRING, 1, b"Bogus\0")).eca is ECA.PUTFAIL
    assert refused(enum.write(T.ENUM, 1, b"\0\5")).eca is ECA.PUTFAIL  # no such state
    assert (double.value, enum.value) == (1.0, 1)


def test_scalar_puts_are_clamped_to_the_control_limits() -> None:
    ao = ChannelDouble(lower_ctrl_limit=-1.5, upper_ctrl_limit=2.5)
    write(ao, T.DOUBLE, 10.0)
    assert ao.value == 2.5
    write(ao, T.STRING, "-7")
    assert ao.value == -1.5
    lo = ChannelInteger(lower_ctrl_limit=-10.5, upper_ctrl_limit=10.5)
    write(lo, T.LONG, 99)
    assert lo.value == 10
    unlimited = ChannelDouble()  # DRVH == DRVL: no clamping
    write(unlimited, T.DOUBLE, 1e9)
    assert unlimited.value == 1e9
    run(ao.set(100.0))  # server code is not clamped
    assert ao.value == 100.0


# --------------------------------------------------------------------------
# Server-side values


def test_set_checks_values() -> None:
    short = ChannelShort()
    with pytest.raises(ChannelValueError):
        run(short.set(70000))
    run(short.set(3.0))
    assert short.value == 3 and isinstance(short.value, int)
    double = ChannelDouble()
    run(double.set("1.5"))
    assert double.value == 1.5
    with pytest.raises(ChannelValueError):
        run(double.set([1.0, 2.0]))  # more than max_length
    with pytest.raises(ChannelValueError):
        run(ChannelString().set("x" * 40))
    enum = ChannelEnum(enum_strings=["a", "b"])
    run(enum.set("b"))
    assert enum.value == 1
    with pytest.raises(ChannelValueError):
        run(enum.set(2))
    with pytest.raises(ChannelValueError):
        run(double.set(1.0, timestamp=0.0))  # before the EPICS epoch
    run(double.set(2.0, timestamp=1_700_000_000.25))
    assert read(double, T.TIME_DOUBLE)[0]["timestamp"] == 1_700_000_000.25


def test_construction() -> None:
    with pytest.raises(TypeError):
        ChannelData()
    with pytest.raises(ValueError):
        ChannelString(value="x" * 39 + "y")
    with pytest.raises(ValueError):
        ChannelDouble(units="furlongs")
    with pytest.raises(ValueError):
        ChannelEnum(enum_strings=[str(i) for i in range(17)])
    with pytest.raises(ValueError):
        ChannelDouble(value=[1.0, 2.0], max_length=1)
    with pytest.raises(ValueError):
        ChannelDouble(value=[])  # an empty array needs max_length
    assert ChannelEnum(value="On", enum_strings=["Off", "On"]).value == 1
    assert ChannelChar(value=b"ab").value.tolist() == [97, 98]
    assert ChannelString(value=["a", "b"]).value == ("a", "b")
    assert ChannelShort().value == 0 and ChannelString().value == ""
    assert ChannelDouble(value=[1.5]).value == 1.5  # max_length 1: a scalar
    pv = ChannelInteger(value=5, alarm_status=AlarmStatus.COMM, alarm_severity=3)
    assert (pv.alarm_status, pv.alarm_severity) == (AlarmStatus.COMM, AlarmSeverity.INVALID)
    assert "ChannelInteger(value=5" in repr(pv)


# --------------------------------------------------------------------------
# Alarms


def test_alarms_from_limits_like_an_ai_record() -> None:
    ai = ChannelDouble(
        lower_alarm_limit=-9, lower_warning_limit=-8, upper_warning_limit=8, upper_alarm_limit=9
    )
    expected = [
        (0.0, "NO_ALARM", "NO_ALARM"),
        (8.0, "HIGH", "MINOR"),
        (9.5, "HIHI", "MAJOR"),
        (-8.5, "LOW", "MINOR"),
        (-9.0, "LOLO", "MAJOR"),
        (math.nan, "UDF", "INVALID"),
    ]
    for value, status, severity in expected:
        write(ai, T.DOUBLE, value)
        assert (ai.alarm_status.name, ai.alarm_severity.name) == (status, severity)
    only_high = ChannelInteger(upper_warning_limit=10)
    run(only_high.set(11))
    assert only_high.alarm_status is AlarmStatus.HIGH
    run(only_high.set(-(2**31)))
    assert only_high.alarm_status is AlarmStatus.NO_ALARM
    plain = ChannelDouble()
    run(plain.set(1e300))
    assert plain.alarm_severity is AlarmSeverity.NO_ALARM


def test_explicit_alarms_and_state_alarms() -> None:
    pv = ChannelDouble(upper_alarm_limit=1.0)
    run(pv.set(5.0, status=AlarmStatus.COMM, severity=AlarmSeverity.INVALID))
    assert (pv.alarm_status, pv.alarm_severity) == (AlarmStatus.COMM, AlarmSeverity.INVALID)
    stamp = pv.timestamp
    run(pv.set_alarm(AlarmStatus.TIMEOUT, AlarmSeverity.MAJOR))
    assert pv.alarm_status is AlarmStatus.TIMEOUT and pv.timestamp == stamp and pv.value == 5.0
    run(pv.set(0.0))
    assert pv.alarm_status is AlarmStatus.NO_ALARM
    bo = ChannelEnum(enum_strings=["Ok", "Bad"], enum_severities=[0, AlarmSeverity.MINOR])
    write(bo, T.ENUM, 1)
    assert (bo.alarm_status, bo.alarm_severity) == (AlarmStatus.STATE, AlarmSeverity.MINOR)
    with pytest.raises(ChannelValueError):
        run(pv.set(1.0, status=99))


def test_alarm_acknowledgement() -> None:
    pv = ChannelDouble(upper_alarm_limit=1.0)
    sub = Sub(T.STSACK_STRING, mask=SubscriptionMask.ALARM)
    pv.subscribe(sub)
    run(pv.set(2.0))  # MAJOR
    assert (pv.ackt, pv.acks) == (1, 2)
    run(pv.set(0.0))  # ACKT set: the transient alarm still needs acknowledging
    assert (pv.acks, pv.alarm_severity) == (2, 0)
    write(pv, T.PUT_ACKS, 1)  # below ACKS: acknowledges nothing
    assert pv.acks == 2
    write(pv, T.PUT_ACKS, 2)
    assert pv.acks == 0
    run(pv.set(2.0))
    run(pv.set(0.0))
    assert pv.acks == 2
    write(pv, T.PUT_ACKT, 0)  # ACKS falls to the current severity
    assert (pv.ackt, pv.acks) == (0, 0)
    run(pv.set(2.0))
    run(pv.set(0.0))
    assert pv.acks == 0  # and now follows it
    last = metadata_of(T.STSACK_STRING, sub.updates[-1][0])
    assert (last["ackt"], last["acks"], last["severity"]) == (0, 0, 0)
    # every ACKS/ACKT change reached the ALARM subscriber
    assert len(sub.updates) == 1 + 2 + 1 + 2 + 1 + 2
    assert refused(ChannelDouble(read_only=True).write(T.PUT_ACKS, 1, bytes(2))).eca is (
        ECA.NOWTACCESS
    )


# --------------------------------------------------------------------------
# Subscriptions


def test_subscribe_sends_the_current_value_at_once_whatever_the_mask() -> None:
    pv = ChannelInteger(value=5)
    sub = Sub(T.TIME_LONG, mask=SubscriptionMask.PROPERTY)
    pv.subscribe(sub)
    assert sub.values() == [[5]]
    assert pv.subscription_count == 1
    pv.unsubscribe(sub)
    pv.unsubscribe(sub)  # twice is harmless
    run(pv.set(6))
    assert sub.values() == [[5]] and pv.subscription_count == 0


def test_updates_are_encoded_once_per_form(monkeypatch: pytest.MonkeyPatch) -> None:
    pv = ChannelDouble(value=np.arange(5.0))
    same = [Sub(T.TIME_DOUBLE), Sub(T.TIME_DOUBLE)]
    whole_old = Sub(T.TIME_DOUBLE, client_version=12)  # count 0: max_length
    other = [Sub(T.STRING, 2), Sub(T.TIME_DOUBLE, 3)]
    for sub in [*same, whole_old, *other]:
        pv.subscribe(sub)
    calls: list[int] = []
    real = data_channel.encode_dbr

    def counting(data_type: int, *args: Any, **kwargs: Any) -> Any:
        calls.append(data_type)
        return real(data_type, *args, **kwargs)

    monkeypatch.setattr(data_channel, "encode_dbr", counting)
    run(pv.write(T.DOUBLE, 5, encode_dbr(T.DOUBLE, [9.0, 8, 7, 6, 5])[0]))
    # one per distinct (type, count), not per subscriber: an old client's
    # count 0 (max_length) is the same form as a new one's (current length)
    assert len(calls) == 3
    assert same[0].updates[-1][0] is same[1].updates[-1][0] is whole_old.updates[-1][0]
    assert same[0].values()[-1] == [9.0, 8, 7, 6, 5]
    assert other[0].values()[-1] == ["9.000000", "8.000000"]
    assert other[1].values()[-1] == [9.0, 8.0, 7.0]
    run(pv.set([1.0]))
    assert same[0].updates[-1][1] == 1 and whole_old.updates[-1][1] == 5
    assert whole_old.values()[-1] == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_masks_select_updates() -> None:
    pv = ChannelDouble(upper_alarm_limit=10.0)
    value, alarm, log = (Sub(T.DOUBLE, mask=m) for m in (1, 4, 2))
    prop = Sub(T.CTRL_DOUBLE, mask=SubscriptionMask.PROPERTY)
    for sub in (value, alarm, log, prop):
        pv.subscribe(sub)
    run(pv.set(1.0))  # value change, no alarm change
    run(pv.set(11.0))  # value and alarm change
    run(pv.set_alarm(AlarmStatus.HIHI, AlarmSeverity.MAJOR))  # no change at all
    run(pv.set_alarm(AlarmStatus.COMM, AlarmSeverity.INVALID))  # alarm only
    pv.units = "V"
    assert [len(s.updates) for s in (value, alarm, log, prop)] == [3, 3, 3, 2]
    assert value.values() == [[0.0], [1.0], [11.0]]
    assert metadata_of(T.CTRL_DOUBLE, prop.updates[-1][0])["units"] == "V"


def test_failed_updates_are_reported_as_rsrv_does() -> None:
    pv = ChannelString(value="12")
    sub = Sub(T.TIME_DOUBLE, mask=SubscriptionMask.VALUE)
    fixed = Sub(T.DOUBLE, 2, mask=SubscriptionMask.VALUE)
    plain = BareSub(T.DOUBLE, mask=SubscriptionMask.VALUE)
    for s in (sub, fixed, plain):
        pv.subscribe(s)
    run(pv.set("not a number"))  # fine as a string; fails as a number
    assert sub.values() == [[12.0]] and sub.errors == [(ECA.GETFAIL, bytes(16), 0)]
    assert fixed.errors == [(ECA.GETFAIL, bytes(16), 2)]
    assert plain.values() == [[12.0]]  # without deliver_error: skipped
    assert refused(pv.read(T.DOUBLE, 1, MODERN)).eca is ECA.GETFAIL


# --------------------------------------------------------------------------
# Put hooks


def test_put_hook_can_change_or_refuse_a_put() -> None:
    seen: list[Any] = []

    async def hook(channel: ChannelData, value: Any) -> Any:
        await asyncio.sleep(0)  # a hook that really suspends
        seen.append(value)
        if value < 0:
            raise ChannelError(ECA.PUTFAIL, "negative values are not allowed")
        if value > 100:
            raise RuntimeError("the motor stalled")
        return value * 2 if value > 10 else None

    pv = ChannelDouble(value=1.0, put_hook=hook)
    sub = Sub(T.DOUBLE)
    pv.subscribe(sub)
    write(pv, T.STRING, "1.5")
    assert seen == [1.5] and pv.value == 1.5  # the hook sees the converted value
    write(pv, T.DOUBLE, 20.0)
    assert pv.value == 40.0
    error = refused(pv.write(T.DOUBLE, 1, encode_dbr(T.DOUBLE, -1.0)[0]))
    assert (error.eca, str(error)) == (ECA.PUTFAIL, "negative values are not allowed")
    error = refused(pv.write(T.DOUBLE, 1, encode_dbr(T.DOUBLE, 101.0)[0]))
    assert error.eca is ECA.PUTFAIL and "the motor stalled" in str(error)
    assert pv.value == 40.0 and sub.values() == [[1.0], [1.5], [40.0]]
    run(pv.set(-5.0))  # server code bypasses the hook
    assert pv.value == -5.0 and len(seen) == 4


def test_put_hook_results_are_checked_and_puts_stay_in_order() -> None:
    async def bad(channel: ChannelData, value: Any) -> Any:
        return 1 << 20

    short = ChannelShort(put_hook=bad)
    assert refused(short.write(T.INT, 1, bytes(2))).eca is ECA.PUTFAIL
    order: list[float] = []

    async def slow(channel: ChannelData, value: Any) -> None:
        # the first put's hook is the slow one: the second must still wait for it
        await asyncio.sleep(0.01 if value == 1.0 else 0)
        order.append(value)

    pv = ChannelDouble(put_hook=slow)

    async def both() -> None:
        await asyncio.gather(
            pv.write(T.DOUBLE, 1, encode_dbr(T.DOUBLE, 1.0)[0]),
            pv.write(T.DOUBLE, 1, encode_dbr(T.DOUBLE, 2.0)[0]),
        )

    run(both())
    assert order == [1.0, 2.0] and pv.value == 2.0


def _all_channel_classes() -> Iterator[type[ChannelData]]:
    yield from (
        ChannelChar,
        ChannelDouble,
        ChannelEnum,
        ChannelFloat,
        ChannelInteger,
        ChannelShort,
        ChannelString,
    )


def test_native_types() -> None:
    natives = {cls.native_type for cls in _all_channel_classes()}
    assert natives == set(range(7))
    assert ChannelInteger.native_type is T.LONG and ChannelShort.native_type is T.INT


def test_metadata_left_at_its_defaults_costs_an_instance_nothing() -> None:
    plain = ChannelDouble(value=1.5)
    assert not [name for name in vars(plain) if name.startswith("_meta_")]
    assert (plain.value, plain.units, plain.precision, plain.record_type) == (
        1.5,
        "",
        None,
        "caioc",
    )
    assert plain.upper_alarm_severity is AlarmSeverity.MAJOR
    given = ChannelDouble(value=2.5, units="mm", precision=0, upper_alarm_severity="MINOR")
    assert (given.value, given.units, given.precision) == (2.5, "mm", 0)
    assert given.upper_alarm_severity is AlarmSeverity.MINOR
    given.units = "V"  # set later: the instance's own, the class default untouched
    assert (given.units, plain.units, ChannelDouble(value=0.0).units) == ("V", "", "")


def test_replies_are_cached_under_reply_key() -> None:
    """encode() files each reply under reply_key, the key a run of reads looks up."""
    from caioc.server._data_support import reply_key

    data = ChannelDouble(value=1.5)
    keys = set()
    for data_type in (ChannelType.DOUBLE, ChannelType.TIME_DOUBLE, ChannelType.CTRL_DOUBLE):
        for count in (1, 3):
            reply = data.encode(data_type, count, 13)
            keys.add(reply_key(data_type, count))
            assert data._cache[reply_key(data_type, count)] is reply
    assert len(keys) == 6  # one key per (type, count)
    # no two (type, count) a request can carry share a key, valid types or not
    pairs = [(t, c) for t in (*range(40), 64, 70, 0x7FFF, 0xFFFF) for c in (0, 1, 2, 0xFFFF)]
    assert len({reply_key(t, c) for t, c in pairs}) == len(pairs)
    asyncio.run(data.set(2.5))
    assert not data._cache  # a new value: no stale reply under any key

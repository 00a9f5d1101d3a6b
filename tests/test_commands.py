"""Every CA command class: wire layout, round trip, fields, validation.

Expected bytes are written from the CA protocol specification (4.13,
"Message header", "Large messages" and the per-command tables) and the C
structs of epics-base's db_access.h, never from caioc's own encoders.
"""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caioc.ca import (
    ECA,
    NEED_DATA,
    AccessRights,
    AccessRightsResponse,
    ChannelType,
    ClearChannelRequest,
    ClearChannelResponse,
    ClientNameRequest,
    CommandId,
    CreateChanRequest,
    CreateChanResponse,
    CreateChFailResponse,
    EchoRequest,
    EchoResponse,
    ErrorResponse,
    EventAddRequest,
    EventAddResponse,
    EventCancelRequest,
    EventCancelResponse,
    EventsOffRequest,
    EventsOnRequest,
    HostNameRequest,
    LocalProtocolError,
    NotFoundResponse,
    ReadNotifyRequest,
    ReadNotifyResponse,
    ReadRequest,
    ReadSyncRequest,
    RemoteProtocolError,
    RepeaterConfirmResponse,
    RepeaterRegisterRequest,
    Role,
    RsrvIsUpResponse,
    SearchReply,
    SearchRequest,
    SearchResponse,
    ServerDisconnResponse,
    StreamParser,
    SubscriptionMask,
    VersionRequest,
    VersionResponse,
    WriteNotifyRequest,
    WriteNotifyResponse,
    WriteRequest,
    error_for,
    parse_datagram,
)
from caioc.ca._commands import REQUEST_CLASSES, RESPONSE_CLASSES

# --- the specification, written out independently ---------------------------

#: Spec "Message header": command, payload size, data type, data count,
#: parameter 1, parameter 2; network byte order.
SPEC_HEADER = struct.Struct(">HHHHII")
#: Spec "Large messages": payload size 0xFFFF and count 0 in the 16-byte
#: header, then the real payload size and count as two uint32.
SPEC_EXTENDED = struct.Struct(">HHHHIIII")
U16 = 0xFFFF
U32 = 0xFFFFFFFF

#: db_access.h dbr_size[]: sizeof the C struct of one element, types 0-38.
DBR_SIZE = (
    # plain: string, short, float, enum, char, long, double
    *(40, 2, 4, 2, 1, 4, 8),
    # dbr_sts_*: string 2+2+40; short 2+2+2; float 2+2+4; enum 2+2+2;
    # char 2+2+pad1+1; long 2+2+4; double 2+2+pad4+8
    *(44, 6, 8, 6, 6, 8, 16),
    # dbr_time_* (stamp: 2 x uint32): string 4+8+40; short 4+8+pad2+2;
    # float 4+8+4; enum 4+8+pad2+2; char 4+8+pad2+pad1+1; long; double 4+8+pad4+8
    *(52, 16, 16, 16, 16, 16, 24),
    # gr: string as dbr_sts_string; short 4+units8+6*2+2; float 4+prec2+pad2+8+6*4+4;
    # enum 4+no_str2+16*26+2; char 4+8+6+pad1+1; long 4+8+6*4+4; double 4+2+2+8+6*8+8
    *(44, 26, 44, 424, 20, 40, 72),
    # ctrl: as gr plus two more limits
    *(44, 30, 52, 424, 22, 48, 88),
    # put_ackt, put_acks (uint16), dbr_stsack_string (4 x uint16 + 40), class name
    *(2, 2, 48, 40),
)
#: db_access.h dbr_value_size[]: one value element, types 0-38.
DBR_VALUE_SIZE = (*((40, 2, 4, 2, 1, 4, 8) * 5), 2, 2, 40, 40)
assert len(DBR_SIZE) == len(DBR_VALUE_SIZE) == 39


def dbr_size_n(data_type: int, count: int) -> int:
    """db_access.h dbr_size_n for count >= 1."""
    assert count >= 1
    return DBR_SIZE[data_type] + (count - 1) * DBR_VALUE_SIZE[data_type]


def padded(raw: bytes) -> bytes:
    """Spec: payloads are padded with zeros to a multiple of 8 bytes."""
    return raw + b"\0" * (-len(raw) % 8)


def spec_wire(
    command: int, data_type: int, count: int, p1: int, p2: int, payload: bytes = b""
) -> bytes:
    """The bytes the specification prescribes for one message (payload padded here)."""
    body = padded(payload)
    if len(body) >= U16 or count >= U16:
        head = SPEC_EXTENDED.pack(command, U16, data_type, 0, p1, p2, len(body), count)
    else:
        head = SPEC_HEADER.pack(command, len(body), data_type, count, p1, p2)
    return head + body


def name_payload(name: str | bytes) -> bytes:
    raw = name if isinstance(name, bytes) else name.encode()
    return padded(raw + b"\0")


def filler(n: int, seed: int = 0) -> bytes:
    """n deterministic, non-constant bytes."""
    return ((np.arange(n, dtype=np.uint32) * 7 + 3 + seed) % 251).astype(np.uint8).tobytes()


# --- the catalogue: (command, spec bytes, fields to read back) ---------------

NAMES = [
    "A",
    "seven77",  # 7 bytes + NUL: exactly 8, no padding
    "eight888",  # 8 bytes + NUL: 9, padded to 16
    "XF:31IDA-OP{Tbl-Ax:X1}Mtr.RBV",
    "µ-é:utf8",
    b"raw:bytes",
    "PV:" + "long" * 250,
]
HUGE_NAME = "H" * 70_000  # padded payload past 0xFFFF: extended header

ADDRESSES = [("0.0.0.0", 0), ("127.0.0.1", 0x7F000001), ("255.255.255.255", U32)]


def _name_str(name: str | bytes) -> str:
    return name.decode() if isinstance(name, bytes) else name


def _header_only_cases() -> list[tuple[object, bytes, dict[str, object]]]:
    cases: list[tuple[object, bytes, dict[str, object]]] = []
    add = cases.append
    for cls in (VersionRequest, VersionResponse):
        for priority, version, seq in [(0, 13, 0), (99, 13, 0), (1, 11, 12345), (U16, U16, U32)]:
            add(
                (
                    cls(priority, version, seq),
                    spec_wire(0, priority, version, seq, 0),
                    {"priority": priority, "version": version, "sequence_id": seq},
                )
            )
    for cls, cid in [
        (EchoRequest, 23),
        (EchoResponse, 23),
        (EventsOffRequest, 8),
        (EventsOnRequest, 9),
        (ReadSyncRequest, 10),
    ]:
        add((cls(), spec_wire(cid, 0, 0, 0, 0), {}))
    for name in NAMES:
        for cid in (0, 1, U32):
            for reply in (SearchReply.DO_REPLY, SearchReply.DONT_REPLY):
                add(
                    (
                        SearchRequest(name, cid, 13, reply),
                        spec_wire(6, reply, 13, cid, cid, name_payload(name)),
                        {"name": _name_str(name), "cid": cid, "version": 13, "reply": reply},
                    )
                )
    for port in (0, 5064, U16):
        for dotted, value in ADDRESSES:
            for cid in (0, U32):
                for ip in (dotted, value):
                    add(
                        (
                            SearchResponse(port, ip, cid, 13),
                            # payload: the server's minor version, uint16, padded to 8
                            spec_wire(6, port, 0, value, cid, struct.pack(">H", 13)),
                            {"port": port, "ip": dotted, "cid": cid, "version": 13},
                        )
                    )
    for cid in (0, U32):
        for reply in (SearchReply.DO_REPLY, SearchReply.DONT_REPLY):
            add(
                (
                    NotFoundResponse(cid, 13, reply),
                    spec_wire(14, reply, 13, cid, cid),
                    {"cid": cid, "version": 13, "reply": reply},
                )
            )
    for port in (0, 5064, U16):
        for beacon_id in (0, 7, U32):
            for dotted, value in ADDRESSES:
                add(
                    (
                        RsrvIsUpResponse(port, beacon_id, dotted, 13),
                        spec_wire(13, 13, port, beacon_id, value),
                        {
                            "server_port": port,
                            "beacon_id": beacon_id,
                            "address": dotted,
                            "version": 13,
                        },
                    )
                )
    for dotted, value in ADDRESSES:
        add(
            (
                RepeaterRegisterRequest(dotted),
                spec_wire(24, 0, 0, 0, value),
                {"client_address": dotted},
            )
        )
        add(
            (
                RepeaterConfirmResponse(value),
                spec_wire(17, 0, 0, 0, value),
                {"repeater_address": dotted},
            )
        )
    for cls, number in [(ClientNameRequest, 20), (HostNameRequest, 21)]:
        for name in ["", *NAMES]:
            add(
                (
                    cls(name),
                    spec_wire(number, 0, 0, 0, 0, name_payload(name)),
                    {"name": _name_str(name)},
                )
            )
    for name in NAMES:
        for cid in (0, U32):
            add(
                (
                    CreateChanRequest(name, cid, 13),
                    spec_wire(18, 0, 0, cid, 13, name_payload(name)),
                    {"name": _name_str(name), "cid": cid, "version": 13},
                )
            )
    for data_type in range(7):
        for count in (0, 1, U16 - 1, U16, U32):
            for cid, sid in [(0, 0), (U32, U32), (1, 2)]:
                add(
                    (
                        CreateChanResponse(data_type, count, cid, sid),
                        spec_wire(18, data_type, count, cid, sid),
                        {"data_type": data_type, "data_count": count, "cid": cid, "sid": sid},
                    )
                )
    for cid in (0, 1, U32):
        add((CreateChFailResponse(cid), spec_wire(26, 0, 0, cid, 0), {"cid": cid}))
        add((ServerDisconnResponse(cid), spec_wire(27, 0, 0, cid, 0), {"cid": cid}))
        for rights in AccessRights:
            add(
                (
                    AccessRightsResponse(cid, rights),
                    spec_wire(22, 0, 0, cid, int(rights)),
                    {"cid": cid, "access_rights": rights},
                )
            )
    for cls in (ClearChannelRequest, ClearChannelResponse):
        for sid, cid in [(0, 0), (U32, 1), (1, U32)]:
            add((cls(sid, cid), spec_wire(12, 0, 0, sid, cid), {"sid": sid, "cid": cid}))
    return cases


def _operation_cases() -> list[tuple[object, bytes, dict[str, object]]]:
    cases: list[tuple[object, bytes, dict[str, object]]] = []
    add = cases.append
    counts = (0, 1, 7, U16 - 1, U16, 0x10000, U32)
    for data_type in range(39):
        for count in counts:
            for p1, p2 in [(0, 0), (U32, U32), (3, 4)]:
                fields = {"data_type": data_type, "data_count": count}
                add(
                    (
                        ReadNotifyRequest(data_type, count, p1, p2),
                        spec_wire(15, data_type, count, p1, p2),
                        {**fields, "sid": p1, "ioid": p2},
                    )
                )
                add(
                    (
                        ReadRequest(data_type, count, p1, p2),
                        spec_wire(3, data_type, count, p1, p2),
                        {**fields, "sid": p1, "ioid": p2},
                    )
                )
                add(
                    (
                        EventCancelRequest(data_type, count, p1, p2),
                        spec_wire(2, data_type, count, p1, p2),
                        {**fields, "sid": p1, "subscriptionid": p2},
                    )
                )
                add(
                    (
                        EventCancelResponse(data_type, count, p1, p2),
                        spec_wire(1, data_type, count, p1, p2),
                        {**fields, "sid": p1, "subscriptionid": p2},
                    )
                )
                add(
                    (
                        EventAddRequest(data_type, count, p1, p2),
                        # struct mon_info: float low, high, to; uint16 mask; uint16 pad.
                        # Default mask: DBE_VALUE | DBE_ALARM.
                        spec_wire(
                            1, data_type, count, p1, p2, struct.pack(">fffHH", 0, 0, 0, 5, 0)
                        ),
                        {**fields, "sid": p1, "subscriptionid": p2, "mask": 5},
                    )
                )
        for status in (*ECA, 0, U32):
            add(
                (
                    WriteNotifyResponse(data_type, 1, status, 9),
                    spec_wire(19, data_type, 1, int(status), 9),
                    {"data_type": data_type, "data_count": 1, "status": status, "ioid": 9},
                )
            )
    for mask in range(1, 16):
        for low, high, to in [(0.0, 0.0, 0.0), (-1.5, 2.25, 1024.0)]:
            add(
                (
                    EventAddRequest(6, 1, 2, 3, SubscriptionMask(mask), low, high, to),
                    spec_wire(1, 6, 1, 2, 3, struct.pack(">fffHH", low, high, to, mask, 0)),
                    {"mask": mask, "low": low, "high": high, "to": to},
                )
            )
    # Bits above DBE_PROPERTY are sent as given (libca passes the user's mask).
    add(
        (
            EventAddRequest(6, 1, 2, 3, 0xFFFF),
            spec_wire(1, 6, 1, 2, 3, struct.pack(">fffHH", 0, 0, 0, 0xFFFF, 0)),
            {"mask": 0xF},
        )
    )
    return cases


def _error_cases() -> list[tuple[object, bytes, dict[str, object]]]:
    cases: list[tuple[object, bytes, dict[str, object]]] = []
    request = ReadNotifyRequest(6, 1, 77, 88)
    original = SPEC_HEADER.pack(15, 0, 6, 1, 77, 88)
    for status in ECA:
        message = f"{status.name}: {status.message}"
        add_payload = original + message.encode() + b"\0"
        cases.append(
            (
                ErrorResponse(request, 5, status, message),
                spec_wire(11, 0, 0, 5, int(status), add_payload),
                {
                    "cid": 5,
                    "status": status,
                    "error_message": message,
                    "original_header": (15, 0, 6, 1, 77, 88),
                },
            )
        )
    for message in ["", "x", "seven77", "eight888", "é" * 300]:
        raw_original = SPEC_HEADER.pack(18, 16, 0, 0, 1, 13)
        cases.append(
            (
                ErrorResponse(raw_original, U32, ECA.ALLOCMEM, message),
                spec_wire(
                    11, 0, 0, U32, int(ECA.ALLOCMEM), raw_original + message.encode() + b"\0"
                ),
                {"cid": U32, "error_message": message, "original_header": (18, 16, 0, 0, 1, 13)},
            )
        )
    return cases


CASES = _header_only_cases() + _operation_cases() + _error_cases()


def _groups() -> dict[str, list[tuple[object, bytes, dict[str, object]]]]:
    groups: dict[str, list[tuple[object, bytes, dict[str, object]]]] = {}
    for case in CASES:
        groups.setdefault(type(case[0]).__name__, []).append(case)
    return groups


GROUPS = _groups()


GROUP_PARAMS = [pytest.param(cases, id=name) for name, cases in GROUPS.items()]


# --- data-carrying commands, for every DBR type -------------------------------

#: (class, command number, name of parameter 1, name of parameter 2)
DATA_CLASSES = [
    (ReadNotifyResponse, 15, "status", "ioid"),
    (EventAddResponse, 1, "status", "subscriptionid"),
    (WriteRequest, 4, "sid", "ioid"),
    (WriteNotifyRequest, 19, "sid", "ioid"),
]
DATA_COUNTS = (1, 5, 0x10000)


def data_case(cls: type, number: int, data_type: int, count: int, p1: int, p2: int):
    raw = filler(dbr_size_n(data_type, count), seed=data_type)
    cmd = cls.from_payload(raw, data_type, count, p1, p2)
    return cmd, spec_wire(number, data_type, count, p1, p2, raw), raw


# --- helpers -------------------------------------------------------------------


def sender_of(cmd: object) -> Role:
    return Role.CLIENT if cmd.REQUEST else Role.SERVER  # type: ignore[attr-defined]


def parse_one(wire: bytes, sender: Role):
    parser = StreamParser(sender, max_payload=max(len(wire), 16384))
    parser.receive_data(wire)
    out = parser.next_command()
    assert out is not NEED_DATA
    assert parser.next_command() is NEED_DATA
    assert parser.buffered == 0
    return out


def check_fields(cmd: object, fields: dict[str, object]) -> None:
    for name, value in fields.items():
        got = getattr(cmd, name)
        assert got == value, (name, got, value)
        assert type(got) is not bool
    repr(cmd)


def check_wire(cmd, wire: bytes) -> None:
    assert bytes(cmd) == wire
    extended = wire[2:4] == b"\xff\xff"
    header_size = 24 if extended else 16
    assert cmd.header == wire[:header_size]
    header, payload = cmd.buffers()
    assert header + bytes(payload) == wire
    assert len(cmd) == len(wire)
    # Spec: the payload is padded to a multiple of 8 and the size field counts it.
    assert cmd.payload_size == len(cmd.payload) == len(wire) - header_size
    assert cmd.payload_size % 8 == 0
    assert cmd.command == SPEC_HEADER.unpack_from(wire)[0]


def check_roundtrip(cmd, wire: bytes):
    parsed = parse_one(wire, sender_of(cmd))
    if type(cmd) is EventCancelResponse:
        # On the wire it is an EVENT_ADD response without payload; only a
        # client circuit that is cancelling the subscription renames it.
        assert type(parsed) is EventAddResponse
        assert parsed.payload_size == 0
        assert parsed[:7] == cmd[:7]
        parsed = EventCancelResponse.from_wire(*parsed[1:7])
    assert type(parsed) is type(cmd)
    assert parsed == cmd
    assert hash(parsed) == hash(cmd)
    assert bytes(parsed) == wire
    return parsed


# --- tests: every case -----------------------------------------------------------


@pytest.mark.parametrize("cases", GROUP_PARAMS)
def test_wire_layout_matches_spec(cases):
    for cmd, wire, fields in cases:
        check_wire(cmd, wire)
        check_fields(cmd, fields)


@pytest.mark.parametrize("cases", GROUP_PARAMS)
def test_roundtrip_through_stream_parser(cases):
    for cmd, wire, fields in cases:
        parsed = check_roundtrip(cmd, wire)
        check_fields(parsed, fields)


@pytest.mark.parametrize("cases", GROUP_PARAMS)
def test_pickle_roundtrip(cases):
    for cmd, wire, _ in cases:
        for obj in (cmd, parse_one(wire, sender_of(cmd))):
            back = pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
            assert type(back) is type(obj)
            assert back == obj
            assert bytes(back) == wire


@pytest.mark.parametrize("cls", [SearchRequest, CreateChanRequest, ClientNameRequest])
def test_huge_name_uses_extended_header(cls):
    args = (HUGE_NAME, 1) if cls is not ClientNameRequest else (HUGE_NAME,)
    cmd = cls(*args)
    payload = name_payload(HUGE_NAME)
    assert len(payload) > U16
    number = cls.ID
    p1, p2, data_type, count = {
        SearchRequest: (1, 1, SearchReply.DONT_REPLY, 13),
        CreateChanRequest: (1, 13, 0, 0),
        ClientNameRequest: (0, 0, 0, 0),
    }[cls]
    wire = SPEC_EXTENDED.pack(number, U16, data_type, 0, p1, p2, len(payload), count) + payload
    check_wire(cmd, wire)
    parsed = check_roundtrip(cmd, wire)
    assert parsed.name == HUGE_NAME


# --- data commands ------------------------------------------------------------------


@pytest.mark.parametrize("count", DATA_COUNTS)
@pytest.mark.parametrize("data_type", list(ChannelType))
@pytest.mark.parametrize(("cls", "number", "p1_name", "p2_name"), DATA_CLASSES)
def test_data_command_every_dbr_type(cls, number, p1_name, p2_name, data_type, count):
    p1, p2 = (U32, 1) if count == 1 else (3, U32)
    cmd, wire, raw = data_case(cls, number, data_type, count, p1, p2)
    check_wire(cmd, wire)
    # Plain ints, as a server's fan-out passes them, take from_payload's
    # shortcut for small payloads: the same bytes.
    check_wire(cls.from_payload(raw, int(data_type), count, p1, p2), wire)
    # The payload is the DBR bytes followed by zero padding.
    assert bytes(cmd.payload[: len(raw)]) == raw
    assert not any(cmd.payload[len(raw) :])
    if count >= U16:
        assert wire[2:4] == b"\xff\xff" and wire[6:8] == b"\0\0"
    parsed = check_roundtrip(cmd, wire)
    fields = {"data_type": data_type, "data_count": count, p1_name: p1, p2_name: p2}
    check_fields(parsed, fields)
    metadata, values = parsed.decode()
    assert len(values) == count
    # The values are a view of the payload right after the metadata.
    meta_size = DBR_SIZE[data_type] - DBR_VALUE_SIZE[data_type]
    assert values.tobytes() == raw[meta_size:]
    assert (metadata is None) == (meta_size == 0)
    if metadata is not None:
        assert metadata.tobytes() == raw[:meta_size]


@pytest.mark.parametrize(("cls", "number", "p1_name", "p2_name"), DATA_CLASSES)
def test_data_payload_boundary_at_64k(cls, number, p1_name, p2_name):
    # 8191 doubles: 65528 bytes, the largest padded payload a plain header
    # holds; 8192 doubles: 65536 bytes, extended header with count < 0xFFFF.
    for count, extended in [(8191, False), (8192, True), (0xFFFE, True)]:
        cmd, wire, _ = data_case(cls, number, ChannelType.DOUBLE, count, 1, 2)
        assert (wire[2:4] == b"\xff\xff") is extended
        check_wire(cmd, wire)
        check_roundtrip(cmd, wire)


@pytest.mark.parametrize("status", list(ECA))
@pytest.mark.parametrize("cls", [ReadNotifyResponse, EventAddResponse])
def test_data_response_status_values(cls, status):
    raw = struct.pack(">d", 2.5)
    cmd = cls.from_payload(raw, ChannelType.DOUBLE, 1, status, 42)
    wire = spec_wire(cls.ID, 6, 1, int(status), 42, raw)
    check_wire(cmd, wire)
    parsed = check_roundtrip(cmd, wire)
    assert parsed.status is status
    assert parsed.status.message == status.message


def test_data_constructors_encode_values_per_db_access_layout():
    values = [1.5, -2.0, 1e300]
    cmd = ReadNotifyResponse(np.array(values), ChannelType.DOUBLE, ECA.NORMAL, 7)
    assert bytes(cmd) == spec_wire(15, 6, 3, int(ECA.NORMAL), 7, struct.pack(">3d", *values))
    cmd = WriteNotifyRequest([1, -2, 3], ChannelType.INT, 4, 5)
    assert bytes(cmd) == spec_wire(19, 1, 3, 4, 5, struct.pack(">3h", 1, -2, 3))
    cmd = WriteRequest(["ab", "c"], ChannelType.STRING, 4, 5)
    strings = b"ab".ljust(40, b"\0") + b"c".ljust(40, b"\0")
    assert bytes(cmd) == spec_wire(4, 0, 2, 4, 5, strings)
    # dbr_time_double: status, severity, secPastEpoch, nsec, RISC_pad, value
    meta = {"status": 3, "severity": 2, "secondsSinceEpoch": 1000, "nanoseconds": 5}
    cmd = EventAddResponse([4.0, 8.0], ChannelType.TIME_DOUBLE, ECA.NORMAL, 9, metadata=meta)
    raw = struct.pack(">hhIIi2d", 3, 2, 1000, 5, 0, 4.0, 8.0)
    assert bytes(cmd) == spec_wire(1, 20, 2, int(ECA.NORMAL), 9, raw)
    # dbr_sts_char: status, severity, RISC_pad (char), value: 5 bytes + 3 chars
    cmd = ReadNotifyResponse(b"xyz", ChannelType.STS_CHAR, ECA.NORMAL, 1, metadata={"severity": 1})
    assert bytes(cmd) == spec_wire(
        15, 11, 3, int(ECA.NORMAL), 1, struct.pack(">hhx3s", 0, 1, b"xyz")
    )
    parsed = check_roundtrip(cmd, bytes(cmd))
    assert parsed.data.tobytes() == b"xyz"
    assert int(parsed.metadata["severity"]) == 1


METADATA_FIELDS = (
    "status",
    "severity",
    "secondsSinceEpoch",
    "nanoseconds",
    "precision",
    "upper_disp_limit",
    "lower_alarm_limit",
    "ackt",
    "acks",
    "no_str",
)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    cls=st.sampled_from([ReadNotifyResponse, EventAddResponse, WriteRequest, WriteNotifyRequest]),
    data_type=st.sampled_from(list(ChannelType)),
    value=st.one_of(
        st.integers(-(2**31), 2**31),
        st.sampled_from([0, 1, -1, 255, 256, 32767, -32768, 65535, 2**31 - 1]),
        st.floats(allow_nan=False, width=64),
    ),
    metadata=st.one_of(
        st.none(),
        st.dictionaries(
            st.sampled_from(METADATA_FIELDS),
            st.one_of(st.integers(-(2**15), 2**16), st.integers(0, 2**32 - 1)),
            max_size=4,
        ),
    ),
    p1=st.sampled_from([0, 1, U32]),
)
def test_scalar_fast_path_matches_general_encoding(cls, data_type, value, metadata, p1):
    # A Python int/float may take a one-struct fast path; a one-element list
    # goes through encode_dbr. Both must agree, or both refuse.
    def build(data):
        try:
            return cls(data, data_type, p1, 7, metadata)
        except LocalProtocolError:
            return None

    fast, general = build(value), build([value])
    assert (fast is None) == (general is None)
    if fast is None:
        return
    assert fast == general
    assert bytes(fast) == bytes(general)
    check_wire(fast, bytes(general))
    assert fast.payload_size == len(padded(b"x" * dbr_size_n(data_type, 1)))
    parsed = check_roundtrip(fast, bytes(fast))
    assert parsed.data_count == 1


def test_data_values_are_views_of_the_received_payload():
    cmd = ReadNotifyResponse(np.arange(10, dtype=">f8"), ChannelType.DOUBLE, ECA.NORMAL, 1)
    wire = bytes(cmd)
    parser = StreamParser(Role.SERVER)
    parser.receive_data(wire)
    parsed = parser.next_command()
    values = parsed.data
    assert np.shares_memory(values, np.frombuffer(wire, np.uint8))
    assert values.tolist() == list(range(10))


# --- deprecated, obsolete, unknown ------------------------------------------------


def test_deprecated_read_and_read_sync_parse_as_deprecated_requests():
    read = SPEC_HEADER.pack(3, 0, 6, 1, 10, 20)
    read_sync = SPEC_HEADER.pack(10, 0, 0, 0, 0, 0)
    commands = parse_datagram(read + read_sync, Role.CLIENT)
    assert [type(c) for c in commands] == [ReadRequest, ReadSyncRequest]
    assert all(c.DEPRECATED for c in commands)
    assert (commands[0].sid, commands[0].ioid) == (10, 20)
    parser = StreamParser(Role.CLIENT)
    parser.receive_data(read + read_sync)
    assert parser.commands() == commands
    # And nothing else is deprecated.
    others = {c for c in (*REQUEST_CLASSES, *RESPONSE_CLASSES) if c is not None}
    assert {c for c in others if c.DEPRECATED} == {ReadRequest, ReadSyncRequest}


OBSOLETE = {5: "SNAPSHOT", 7: "BUILD", 16: "READ_BUILD", 25: "SIGNAL"}


@pytest.mark.parametrize("sender", [Role.CLIENT, Role.SERVER])
@pytest.mark.parametrize("number", sorted(OBSOLETE))
def test_obsolete_commands_are_refused_by_name(number, sender):
    wire = SPEC_HEADER.pack(number, 0, 0, 0, 0, 0)
    parser = StreamParser(sender)
    parser.receive_data(wire)
    with pytest.raises(RemoteProtocolError) as info:
        parser.next_command()
    assert OBSOLETE[number] in str(info.value)
    assert str(number) in str(info.value)
    with pytest.raises(RemoteProtocolError) as info:
        parse_datagram(wire, sender)
    assert OBSOLETE[number] in str(info.value)


@pytest.mark.parametrize("sender", [Role.CLIENT, Role.SERVER])
@pytest.mark.parametrize("number", [28, 29, 100, 0x1234, U16 - 1])
def test_unknown_commands_are_refused(number, sender):
    wire = SPEC_HEADER.pack(number, 8, 0, 0, 0, 0) + bytes(8)
    parser = StreamParser(sender)
    parser.receive_data(wire)
    with pytest.raises(RemoteProtocolError, match=rf"\b{number}\b"):
        parser.next_command()
    with pytest.raises(RemoteProtocolError, match=rf"\b{number}\b"):
        parse_datagram(wire, sender)


@pytest.mark.parametrize(
    ("number", "sender"),
    [
        (13, Role.CLIENT),  # RSRV_IS_UP is a server's beacon
        (17, Role.CLIENT),  # REPEATER_CONFIRM
        (22, Role.CLIENT),  # ACCESS_RIGHTS
        (26, Role.CLIENT),  # CREATE_CH_FAIL
        (8, Role.SERVER),  # EVENTS_OFF
        (20, Role.SERVER),  # CLIENT_NAME
        (24, Role.SERVER),  # REPEATER_REGISTER
        (3, Role.SERVER),  # READ
    ],
)
def test_command_from_the_wrong_direction_is_refused(number, sender):
    wire = SPEC_HEADER.pack(number, 0, 0, 0, 0, 0)
    with pytest.raises(RemoteProtocolError, match=CommandId(number).name):
        parse_datagram(wire, sender)


def test_registries_index_by_command_number_and_direction():
    for table, request in [(REQUEST_CLASSES, True), (RESPONSE_CLASSES, False)]:
        for number, cls in enumerate(table):
            if cls is not None:
                assert number == cls.ID
                assert cls.REQUEST is request
    covered = {c.ID for c in (*REQUEST_CLASSES, *RESPONSE_CLASSES) if c is not None}
    assert covered == set(CommandId) - {CommandId(n) for n in OBSOLETE}
    assert EventCancelResponse not in RESPONSE_CLASSES


# --- ERROR and EVENT_CANCEL's confirmation -------------------------------------------


def test_error_response_carries_original_header_and_message():
    request = WriteNotifyRequest.from_payload(struct.pack(">d", 1.0), 6, 1, 31, 32)
    error = error_for(request, ECA.PUTFAIL, cid=4)
    assert error.status is ECA.PUTFAIL
    assert error.error_message == ECA.PUTFAIL.message
    assert error.original_header == (19, 8, 6, 1, 31, 32)
    assert bytes(error.payload[:16]) == bytes(request)[:16]
    parsed = parse_one(bytes(error), Role.SERVER)
    assert parsed.original_header == (19, 8, 6, 1, 31, 32)
    assert parsed.error_message == ECA.PUTFAIL.message
    assert parsed.cid == 4
    custom = error_for(request, ECA.PUTFAIL, "the motor is unplugged")
    assert custom.error_message == "the motor is unplugged"


def test_error_response_for_large_request_embeds_extended_header():
    request = EventAddRequest(ChannelType.DOUBLE, 0x10000, 31, 32)
    error = ErrorResponse(request, 0, ECA.ADDFAIL, "too big")
    # rsrv: m_postsize 0xFFFF, m_count 0, then uint32 size and count, then the text.
    expected = SPEC_EXTENDED.pack(1, U16, 6, 0, 31, 32, 16, 0x10000) + b"too big\0"
    assert bytes(error.payload) == padded(expected)
    assert error.error_message == "too big"
    assert error.original_header == (1, 16, 6, 0x10000, 31, 32)
    parsed = parse_one(bytes(error), Role.SERVER)
    assert parsed.error_message == "too big"
    assert parsed.original_header == (1, 16, 6, 0x10000, 31, 32)


def test_error_response_from_rsrv_with_extended_original_header():
    original = SPEC_EXTENDED.pack(4, U16, 6, 0, 31, 32, 80000, 10000)
    wire = spec_wire(11, 0, 0, 0, int(ECA.PUTFAIL), original + b"put failed\0")
    parsed = parse_one(wire, Role.SERVER)
    assert parsed.error_message == "put failed"
    # The real size and count, from the extended header's two uint32.
    assert parsed.original_header == (4, 80000, 6, 10000, 31, 32)


def test_event_cancel_response_is_an_empty_event_add():
    request = EventAddRequest(ChannelType.TIME_DOUBLE, 3, 11, 12)
    confirm = EventCancelResponse(request.data_type, request.data_count, request.sid, 12)
    assert bytes(confirm) == SPEC_HEADER.pack(1, 0, 20, 3, 11, 12)
    assert confirm.payload_size == 0
    assert confirm.REQUEST is False


# --- validation: constructors refuse what the wire cannot carry ------------------------

INVALID = {
    "version priority negative": lambda: VersionRequest(-1),
    "version priority > u16": lambda: VersionRequest(U16 + 1),
    "version priority bool": lambda: VersionRequest(True),
    "version priority float": lambda: VersionRequest(1.0),
    "version minor > u16": lambda: VersionResponse(0, U16 + 1),
    "version sequence > u32": lambda: VersionRequest(1, 13, U32 + 1),
    "search empty name": lambda: SearchRequest("", 1),
    "search empty bytes name": lambda: SearchRequest(b"", 1),
    "search NUL in name": lambda: SearchRequest("a\0b", 1),
    "search NUL at end": lambda: SearchRequest(b"ab\0", 1),
    "search cid negative": lambda: SearchRequest("a", -1),
    "search cid > u32": lambda: SearchRequest("a", U32 + 1),
    "search reply 0": lambda: SearchRequest("a", 1, reply=0),
    "search reply 11": lambda: SearchRequest("a", 1, reply=11),
    "search version > u16": lambda: SearchRequest("a", 1, U16 + 1),
    "search response port > u16": lambda: SearchResponse(U16 + 1, 0, 1),
    "search response bad ip": lambda: SearchResponse(5064, "1.2.3", 1),
    "search response ipv6": lambda: SearchResponse(5064, "::1", 1),
    "search response ip > u32": lambda: SearchResponse(5064, U32 + 1, 1),
    "search response ip negative": lambda: SearchResponse(5064, -1, 1),
    "search response cid > u32": lambda: SearchResponse(5064, 0, U32 + 1),
    "not found cid negative": lambda: NotFoundResponse(-1),
    "not found reply > u16": lambda: NotFoundResponse(1, 13, U16 + 1),
    "beacon port > u16": lambda: RsrvIsUpResponse(U16 + 1, 0, 0),
    "beacon id > u32": lambda: RsrvIsUpResponse(5064, U32 + 1, 0),
    "beacon bad address": lambda: RsrvIsUpResponse(5064, 0, "256.0.0.1"),
    "register bad address": lambda: RepeaterRegisterRequest("localhost"),
    "confirm address negative": lambda: RepeaterConfirmResponse(-5),
    "client name NUL": lambda: ClientNameRequest("us\0er"),
    "host name NUL": lambda: HostNameRequest(b"\0"),
    "create empty name": lambda: CreateChanRequest("", 1),
    "create NUL name": lambda: CreateChanRequest("pv\0", 1),
    "create cid > u32": lambda: CreateChanRequest("pv", U32 + 1),
    "create version > u32": lambda: CreateChanRequest("pv", 1, U32 + 1),
    "create response non-native type": lambda: CreateChanResponse(ChannelType.TIME_DOUBLE, 1, 1, 1),
    "create response bad type": lambda: CreateChanResponse(39, 1, 1, 1),
    "create response negative type": lambda: CreateChanResponse(-1, 1, 1, 1),
    "create response count > u32": lambda: CreateChanResponse(6, U32 + 1, 1, 1),
    "create response sid negative": lambda: CreateChanResponse(6, 1, 1, -1),
    "create fail cid > u32": lambda: CreateChFailResponse(U32 + 1),
    "server disconn cid negative": lambda: ServerDisconnResponse(-1),
    "access rights negative": lambda: AccessRightsResponse(1, -1),
    "access rights > u32": lambda: AccessRightsResponse(1, U32 + 1),
    "access rights cid > u32": lambda: AccessRightsResponse(U32 + 1, AccessRights.READ),
    "clear sid negative": lambda: ClearChannelRequest(-1, 1),
    "clear response cid > u32": lambda: ClearChannelResponse(1, U32 + 1),
    "read type 39": lambda: ReadNotifyRequest(39, 1, 1, 1),
    "read type negative": lambda: ReadNotifyRequest(-1, 1, 1, 1),
    "read count > u32": lambda: ReadNotifyRequest(6, U32 + 1, 1, 1),
    "read count negative": lambda: ReadNotifyRequest(6, -1, 1, 1),
    "read sid > u32": lambda: ReadNotifyRequest(6, 1, U32 + 1, 1),
    "read ioid negative": lambda: ReadNotifyRequest(6, 1, 1, -1),
    "deprecated read type 39": lambda: ReadRequest(39, 1, 1, 1),
    "cancel type 39": lambda: EventCancelRequest(39, 1, 1, 1),
    "cancel subscriptionid > u32": lambda: EventCancelRequest(6, 1, 1, U32 + 1),
    "event add mask 0": lambda: EventAddRequest(6, 1, 1, 1, 0),
    "event add mask without DBE bits": lambda: EventAddRequest(6, 1, 1, 1, 0x10),
    "event add mask > u16": lambda: EventAddRequest(6, 1, 1, 1, U16 + 1),
    "event add mask negative": lambda: EventAddRequest(6, 1, 1, 1, -1),
    "event add type 39": lambda: EventAddRequest(39, 1, 1, 1),
    "event add sid negative": lambda: EventAddRequest(6, 1, -1, 1),
    "write notify response type 39": lambda: WriteNotifyResponse(39, 1, ECA.NORMAL, 1),
    "write notify response status > u32": lambda: WriteNotifyResponse(6, 1, U32 + 1, 1),
    "write notify response ioid negative": lambda: WriteNotifyResponse(6, 1, ECA.NORMAL, -1),
    "error short original": lambda: ErrorResponse(b"short", 0, ECA.NORMAL, "x"),
    "error long original": lambda: ErrorResponse(bytes(24), 0, ECA.NORMAL, "x"),
    "error NUL message": lambda: ErrorResponse(EchoRequest(), 0, ECA.NORMAL, "a\0b"),
    "error cid negative": lambda: ErrorResponse(EchoRequest(), -1, ECA.NORMAL, "x"),
    "error status > u32": lambda: ErrorResponse(EchoRequest(), 0, U32 + 1, "x"),
    "read response bad type": lambda: ReadNotifyResponse([1.0], 39),
    "read response ioid negative": lambda: ReadNotifyResponse([1.0], 6, ECA.NORMAL, -1),
    "read response count mismatch": lambda: ReadNotifyResponse([1.0, 2.0], 6, data_count=3),
    "read response unencodable": lambda: ReadNotifyResponse(["x"], ChannelType.DOUBLE),
    "read response string too long": lambda: ReadNotifyResponse(["s" * 40], ChannelType.STRING),
    "read response int out of range": lambda: ReadNotifyResponse([70000], ChannelType.INT),
    "event response status > u32": lambda: EventAddResponse([1.0], 6, U32 + 1, 1),
    "write sid > u32": lambda: WriteRequest([1.0], 6, U32 + 1, 1),
    "write notify ioid negative": lambda: WriteNotifyRequest([1.0], 6, 1, -1),
    "write notify float into long": lambda: WriteNotifyRequest([1.5], ChannelType.LONG, 1, 1),
    "from_payload too short": lambda: WriteRequest.from_payload(bytes(7), 6, 1, 1, 1),
    "from_payload too short for count": lambda: WriteRequest.from_payload(bytes(16), 6, 3, 1, 1),
    "from_payload too short for metadata": lambda: EventAddResponse.from_payload(
        bytes(16), ChannelType.TIME_DOUBLE, 1, 1, 1
    ),
    "from_payload p1 > u32": lambda: ReadNotifyResponse.from_payload(bytes(8), 6, 1, U32 + 1, 1),
}


@pytest.mark.parametrize("build", list(INVALID.values()), ids=list(INVALID))
def test_constructors_refuse_invalid_values(build):
    with pytest.raises(LocalProtocolError):
        build()


@pytest.mark.parametrize(("data_type", "count"), [(39, 1), (-1, 1), (6, -1)])
def test_from_payload_refuses_bad_type_or_count(data_type, count):
    with pytest.raises(LocalProtocolError):
        ReadNotifyResponse.from_payload(bytes(64), data_type, count, 1, 1)


def test_local_protocol_error_is_a_value_error_with_a_message():
    with pytest.raises(ValueError, match="mask"):
        EventAddRequest(6, 1, 1, 1, 0)
    with pytest.raises(ValueError, match="NUL"):
        CreateChanRequest("a\0", 1)
    with pytest.raises(ValueError, match="cid"):
        SearchRequest("a", -1)


@pytest.mark.parametrize("kwargs", [{"low": 1e300}, {"high": -1e40}, {"to": "soon"}])
def test_event_add_refuses_unpackable_deadbands(kwargs):
    with pytest.raises(LocalProtocolError):
        EventAddRequest(6, 1, 1, 1, **kwargs)


def test_commands_are_immutable_tuples():
    cmd = CreateChanRequest("pv", 3)
    with pytest.raises((AttributeError, TypeError)):
        cmd.cid = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        cmd[4] = 4  # type: ignore[index]
    assert cmd != tuple(cmd)
    # Same fields, different class: never equal.
    assert ClearChannelRequest(1, 2) != ClearChannelResponse(1, 2)
    assert VersionRequest() != VersionResponse()


def test_no_classmethod_wraps_another_descriptor():
    # classmethod(classmethod(f)) works up to Python 3.12 and fails on 3.13,
    # where classmethod no longer chains descriptors: checked on every class.
    import importlib
    import inspect
    import pkgutil

    import caioc

    wrapped = []
    for module_info in pkgutil.walk_packages(caioc.__path__, "caioc."):
        name = module_info.name
        try:
            module = importlib.import_module(name)
        except (ImportError, AttributeError):
            if name in ("caioc.server.trio", "caioc.server.curio"):
                continue  # its library does not import here (curio 1.6 on Python 3.13)
            raise
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name:
                continue
            for attribute, value in vars(cls).items():
                if isinstance(value, classmethod) and isinstance(
                    value.__func__, (classmethod, staticmethod, property)
                ):
                    wrapped.append(f"{name}.{cls.__name__}.{attribute}")
    assert wrapped == []

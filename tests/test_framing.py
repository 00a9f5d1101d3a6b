"""Framing: TCP streams split anyhow, UDP datagrams, limits, hostile input.

Header bytes are written with ``struct`` from the CA specification's layout
(command, payload size, data type, data count, parameter 1, parameter 2,
big-endian; extended: size 0xFFFF and count 0, then uint32 size and count).
"""

from __future__ import annotations

import itertools
import pickle
import struct
import tracemalloc

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
    CreateChanRequest,
    CreateChanResponse,
    CreateChFailResponse,
    EchoRequest,
    EchoResponse,
    EventAddRequest,
    EventAddResponse,
    EventCancelRequest,
    EventCancelResponse,
    EventsOffRequest,
    EventsOnRequest,
    HostNameRequest,
    NotFoundResponse,
    ReadNotifyRequest,
    ReadNotifyResponse,
    ReadRequest,
    ReadSyncRequest,
    RemoteProtocolError,
    Role,
    SearchReply,
    SearchRequest,
    SearchResponse,
    ServerDisconnResponse,
    StreamParser,
    VersionRequest,
    VersionResponse,
    WriteNotifyRequest,
    WriteNotifyResponse,
    WriteRequest,
    error_for,
    max_payload_for,
    parse_datagram,
)

HEADER = struct.Struct(">HHHHII")
EXTENDED = struct.Struct(">HHHHIIII")
MiB = 1 << 20

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def header(command: int, size: int, data_type=0, count=0, p1=0, p2=0) -> bytes:
    if size >= 0xFFFF or count >= 0xFFFF:
        return EXTENDED.pack(command, 0xFFFF, data_type, 0, p1, p2, size, count)
    return HEADER.pack(command, size, data_type, count, p1, p2)


# --- the streams -----------------------------------------------------------------


def server_stream_commands() -> list:
    small = [
        AccessRightsResponse(1, AccessRights.READ_WRITE),
        CreateChanResponse(ChannelType.DOUBLE, 10_000, 1, 100),
        ReadNotifyResponse(np.arange(5.0), ChannelType.DOUBLE, ECA.NORMAL, 7),
        ReadNotifyResponse(["a", "bc"], ChannelType.STRING, ECA.NORMAL, 8),
        EventAddResponse(
            [1.0, 2.0],
            ChannelType.TIME_DOUBLE,
            ECA.NORMAL,
            3,
            metadata={"severity": 2, "secondsSinceEpoch": 5},
        ),
        EventAddResponse(
            2, ChannelType.CTRL_ENUM, ECA.NORMAL, 4, metadata={"strs": ["off", "on", "?"]}
        ),
        EventCancelResponse(ChannelType.DOUBLE, 1, 100, 3),
        error_for(CreateChanRequest("nope", 9), ECA.DISCONNCHID, cid=9),
        EchoResponse(),
        SearchResponse(5064, "10.0.0.1", 33),
        NotFoundResponse(34, 13, SearchReply.DO_REPLY),
        ServerDisconnResponse(1),
        CreateChFailResponse(9),
        ClearChannelResponse(100, 1),
    ]
    large = [
        # 80 000 bytes of payload: the extended header, a payload > 64 KiB
        EventAddResponse(np.arange(10_000.0), ChannelType.DOUBLE, ECA.NORMAL, 3),
        # count past 0xFFFF, 64 KiB of chars
        ReadNotifyResponse(
            np.arange(0x10000, dtype=np.uint32).astype(np.uint8),
            ChannelType.CHAR,
            ECA.NORMAL,
            12,
        ),
    ]
    commands = [VersionResponse(0, 13)]
    for i in range(6):
        commands.extend(small)
        commands.append(large[i % 2])
    return commands


def client_stream_commands() -> list:
    small = [
        HostNameRequest("host.example"),
        ClientNameRequest("operator"),
        CreateChanRequest("XF:31IDA{Tbl}X", 1),
        # count 0: "the current length" (CA 4.13), plain type: no DBR payload
        ReadNotifyRequest(ChannelType.DOUBLE, 0, 100, 1),
        EventAddRequest(ChannelType.DOUBLE, 1, 100, 2),
        WriteRequest([1.0], ChannelType.DOUBLE, 100, 3),
        WriteNotifyRequest(["text"], ChannelType.STRING, 100, 4),
        WriteNotifyRequest(np.arange(7, dtype=np.int16), ChannelType.INT, 100, 5),
        EventCancelRequest(ChannelType.DOUBLE, 1, 100, 2),
        ReadRequest(ChannelType.TIME_DOUBLE, 1, 100, 6),
        ReadSyncRequest(),
        EventsOffRequest(),
        EventsOnRequest(),
        EchoRequest(),
        SearchRequest("other:pv", 77),
        ClearChannelRequest(100, 1),
    ]
    large = WriteNotifyRequest(np.linspace(0, 1, 12_000), ChannelType.DOUBLE, 100, 9)
    commands = [VersionRequest(5, 13)]
    for _ in range(4):
        commands.extend(small)
        commands.append(large)
    return commands


def expected_after_parse(commands: list) -> list:
    # EVENT_CANCEL's confirmation is an empty EVENT_ADD on the wire.
    return [
        EventAddResponse.from_wire(*c[1:7]) if type(c) is EventCancelResponse else c
        for c in commands
    ]


STREAMS = {
    Role.SERVER: server_stream_commands(),
    Role.CLIENT: client_stream_commands(),
}
WIRES = {role: b"".join(bytes(c) for c in cmds) for role, cmds in STREAMS.items()}
SENDERS = [Role.SERVER, Role.CLIENT]


def feed(parser: StreamParser, chunks) -> list:
    out = []
    for chunk in chunks:
        parser.receive_data(chunk)
        out.extend(parser.commands())
    return out


def check_same(got: list, sender: Role) -> None:
    expected = expected_after_parse(STREAMS[sender])
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert type(a) is type(b)
        assert a == b
        assert bytes(a) == bytes(b)


def split(data: bytes, cuts) -> list[bytes]:
    points = sorted({0, len(data), *cuts})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def test_streams_hold_extended_and_large_messages():
    # Guard the fixtures themselves: the interesting framing cases are there.
    for wire in WIRES.values():
        assert len(wire) > 4 * 65536
    server = STREAMS[Role.SERVER]
    assert any(c.payload_size > 0xFFFF for c in server)
    assert any(c[3] >= 0xFFFF for c in server)


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_stream_fed_whole(sender, kind):
    parser = StreamParser(sender, max_payload=MiB)
    got = feed(parser, [kind(WIRES[sender])])
    check_same(got, sender)
    assert parser.buffered == 0
    assert parser.next_command() is NEED_DATA


@pytest.mark.parametrize("sender", SENDERS)
def test_stream_fed_one_byte_at_a_time(sender):
    wire = WIRES[sender]
    parser = StreamParser(sender, max_payload=MiB)
    got = feed(parser, (wire[i : i + 1] for i in range(len(wire))))
    check_same(got, sender)
    assert parser.buffered == 0


@pytest.mark.parametrize("sender", SENDERS)
def test_stream_commands_one_at_a_time_via_next_command(sender):
    parser = StreamParser(sender, max_payload=MiB)
    parser.receive_data(WIRES[sender])
    got = []
    while (command := parser.next_command()) is not NEED_DATA:
        got.append(command)
    check_same(got, sender)


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize("sender", SENDERS)
def test_stream_fed_in_random_chunks(sender, data):
    wire = WIRES[sender]
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=80), label="cuts")
    kind = data.draw(st.sampled_from([bytes, bytearray, memoryview]), label="kind")
    parser = StreamParser(sender, max_payload=MiB)
    got = feed(parser, [kind(c) for c in split(wire, cuts)])
    check_same(got, sender)
    assert parser.buffered == 0


@pytest.mark.parametrize("sender", SENDERS)
def test_trailing_partial_bytes_wait_for_the_rest(sender):
    commands = [c for c in STREAMS[sender] if len(c) < 4096][:12]
    wire = b"".join(bytes(c) for c in commands)
    last = bytes(commands[-1])
    body = wire[: -len(last)]
    for keep in range(1, len(last)):
        parser = StreamParser(sender)
        parser.receive_data(body + last[:keep])
        got = parser.commands()
        assert got == expected_after_parse(commands[:-1])
        assert parser.next_command() is NEED_DATA
        assert parser.buffered == keep
        parser.receive_data(last[keep:])
        assert parser.commands() == expected_after_parse(commands[-1:])
        assert parser.buffered == 0


def test_buffered_counts_bytes_not_yet_returned_for_small_messages():
    cmds = [CreateChanRequest("pv:a", 1), ClientNameRequest("x" * 300)]
    wire = b"".join(bytes(c) for c in cmds)
    parser = StreamParser(Role.CLIENT)
    fed = 0
    consumed = 0
    for i in range(0, len(wire), 5):
        chunk = wire[i : i + 5]
        parser.receive_data(chunk)
        fed += len(chunk)
        assert parser.buffered == fed - consumed
        for command in parser.commands():
            consumed += len(command)
        assert parser.buffered == fed - consumed
    assert consumed == len(wire)


def test_buffered_counts_header_of_large_message_in_progress():
    cmd = EventAddResponse(np.arange(10_000.0), ChannelType.DOUBLE, ECA.NORMAL, 3)
    wire = bytes(cmd)
    parser = StreamParser(Role.SERVER, max_payload=MiB)
    parser.receive_data(wire[:124])
    assert parser.buffered == 124
    assert parser.next_command() is NEED_DATA
    assert parser.buffered == 124


# --- large payloads --------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1000, 4096, 65536, 100_003])
def test_large_payload_assembled_from_pieces(chunk_size):
    values = np.arange(50_000, dtype=">f8") * 0.5
    cmd = ReadNotifyResponse(values, ChannelType.DOUBLE, ECA.NORMAL, 1)
    follower = EchoResponse()
    wire = bytes(cmd) + bytes(follower)
    parser = StreamParser(Role.SERVER, max_payload=MiB)
    source = bytearray(chunk_size)
    got = []
    for start in range(0, len(wire), chunk_size):
        piece = wire[start : start + chunk_size]
        # The caller reuses its receive buffer: the parser must not keep views of it.
        source[: len(piece)] = piece
        parser.receive_data(memoryview(source)[: len(piece)])
        source[:] = bytes(len(source))
        got.extend(parser.commands())
    assert [type(c) for c in got] == [ReadNotifyResponse, EchoResponse]
    assert got[0] == cmd
    assert np.array_equal(got[0].data, values)
    assert got[0].payload.readonly


def test_large_payload_is_assembled_without_repeated_copies():
    size = 4 * MiB
    wire = header(15, size, ChannelType.CHAR, size, 1, 2) + bytes(range(256)) * (size // 256)
    view = memoryview(wire)
    parser = StreamParser(Role.SERVER, max_payload=size)
    tracemalloc.start()
    try:
        for start in range(0, len(wire), 65536):
            parser.receive_data(view[start : start + 65536])
            out = parser.commands()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(out) == 1
    assert out[0].payload == wire[24:]
    # One buffer of the payload's size plus a chunk or so, not a growing concatenation.
    assert peak < size + 512 * 1024


# --- zero copy ---------------------------------------------------------------------------


@pytest.mark.parametrize("sender", SENDERS)
def test_small_payloads_are_views_of_the_received_chunk(sender):
    commands = [c for c in STREAMS[sender] if 0 < c.payload_size < 4096][:10]
    chunk = b"".join(bytes(c) for c in commands)
    parser = StreamParser(sender)
    parser.receive_data(chunk)
    got = parser.commands()
    assert len(got) == len(commands)
    for command in got:
        payload = command.payload
        assert isinstance(payload, memoryview)
        assert payload.obj is chunk
    data_commands = [c for c in got if hasattr(c, "data")]
    assert data_commands
    arena = np.frombuffer(chunk, np.uint8)
    for command in data_commands:
        assert np.shares_memory(command.data, arena)


def test_datagram_payloads_are_bytes():
    # Datagram payloads are small: copies are cheaper than views there.
    commands = [VersionRequest(1, 13, 4), SearchRequest("a:b", 1), SearchRequest("c:d", 2)]
    datagram = b"".join(bytes(c) for c in commands)
    got = parse_datagram(bytearray(datagram), Role.CLIENT)
    assert got == commands
    assert all(type(c.payload) is bytes for c in got)
    assert [c.name for c in got[1:]] == ["a:b", "c:d"]


# --- limits ----------------------------------------------------------------------------------


def test_max_payload_never_below_16k():
    assert max_payload_for(0) == 16384
    assert max_payload_for(100) == 16384
    assert max_payload_for(10 * MiB) == 10 * MiB
    assert StreamParser(Role.CLIENT, max_payload=10).max_payload == 16384


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize("announced", [16385, 0xFFFF, 64 * MiB, 0xFFFFFFF8])
def test_oversized_header_fails_at_once_without_allocating(sender, announced):
    command = 15 if sender is Role.SERVER else 4  # READ_NOTIFY response / WRITE request
    wire = header(command, announced, ChannelType.CHAR, announced, 1, 2)
    parser = StreamParser(sender)
    tracemalloc.start()
    try:
        parser.receive_data(wire)  # the header alone, nothing of the payload
        with pytest.raises(RemoteProtocolError, match=str(announced)) as info:
            parser.next_command()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    # The stream cannot be framed any more: the parser stays failed.
    with pytest.raises(RemoteProtocolError) as again:
        parser.receive_data(bytes(EchoResponse()))
    assert again.value is info.value
    with pytest.raises(RemoteProtocolError):
        parser.next_command()


def test_payload_of_exactly_the_limit_is_accepted():
    limit = 200_000
    wire = header(15, limit, ChannelType.CHAR, limit, 1, 2) + bytes(limit)
    parser = StreamParser(Role.SERVER, max_payload=limit)
    parser.receive_data(wire[:1000])
    assert parser.next_command() is NEED_DATA
    parser.receive_data(wire[1000:])
    (cmd,) = parser.commands()
    assert cmd.payload_size == limit
    one_more = header(15, limit + 8, ChannelType.CHAR, limit + 8, 1, 2)
    with pytest.raises(RemoteProtocolError):
        parse_datagram(one_more + bytes(limit + 8), Role.SERVER, max_payload=limit)


# --- datagrams ---------------------------------------------------------------------------------


def test_datagram_with_several_commands():
    commands = [
        VersionResponse(1, 13, 5),
        SearchResponse(5064, "255.255.255.255", 1),
        SearchResponse(5065, "10.1.2.3", 2),
        NotFoundResponse(3),
    ]
    datagram = b"".join(bytes(c) for c in commands)
    for kind in (bytes, bytearray, memoryview):
        assert parse_datagram(kind(datagram), Role.SERVER) == commands
    assert parse_datagram(b"", Role.SERVER) == []


@pytest.mark.parametrize("cut", [1, 8, 15])
def test_datagram_truncated_header(cut):
    datagram = bytes(EchoRequest()) + bytes(EchoRequest())[:cut]
    with pytest.raises(RemoteProtocolError, match="header"):
        parse_datagram(datagram, Role.CLIENT)


@pytest.mark.parametrize("cut", [1, 7, 8, 23])
def test_datagram_truncated_payload(cut):
    search = bytes(SearchRequest("some:pv:name:long:enough", 1))
    with pytest.raises(RemoteProtocolError):
        parse_datagram(search[:-cut], Role.CLIENT)


@pytest.mark.parametrize("cut", [1, 4, 7])
def test_datagram_truncated_extended_header(cut):
    wire = header(20, 0x10000) + bytes(0x10000)
    with pytest.raises(RemoteProtocolError):
        parse_datagram(wire[: 24 - cut], Role.CLIENT, max_payload=MiB)


def test_parse_datagram_refuses_the_repeater_as_sender():
    with pytest.raises(ValueError):
        parse_datagram(b"", Role.REPEATER)
    with pytest.raises(ValueError):
        StreamParser(Role.REPEATER)


# --- data commands too short for their DBR type -----------------------------------------------

SHORT_DATA = [
    # (sender, command, data type, count, payload bytes given); db_access.h sizes:
    (Role.SERVER, 15, ChannelType.DOUBLE, 2, 8),  # 2 x 8
    (Role.SERVER, 15, ChannelType.TIME_DOUBLE, 1, 16),  # dbr_time_double: 24
    (Role.SERVER, 1, ChannelType.CTRL_ENUM, 1, 416),  # dbr_ctrl_enum: 424
    (Role.SERVER, 1, ChannelType.STRING, 3, 112),  # 3 x 40
    (Role.CLIENT, 4, ChannelType.GR_DOUBLE, 1, 64),  # dbr_gr_double: 72
    (Role.CLIENT, 19, ChannelType.STS_STRING, 1, 40),  # dbr_sts_string: 44
    (Role.CLIENT, 19, ChannelType.LONG, 0x10000, 0x3FFF8),  # 4 x 65536
]


@pytest.mark.parametrize(("sender", "command", "data_type", "count", "size"), SHORT_DATA)
def test_data_payload_too_short_for_type_and_count(sender, command, data_type, count, size):
    wire = header(command, size, data_type, count, 1, 2) + bytes(size)
    with pytest.raises(RemoteProtocolError, match=data_type.name):
        parse_datagram(wire, sender, max_payload=MiB)
    parser = StreamParser(sender, max_payload=MiB)
    parser.receive_data(wire[:24])  # refused from the header, before the payload
    with pytest.raises(RemoteProtocolError):
        parser.next_command()


@pytest.mark.parametrize(("sender", "command"), [(Role.SERVER, 15), (Role.CLIENT, 4)])
@pytest.mark.parametrize("data_type", [39, 100, 0xFFFF])
def test_data_command_with_unknown_dbr_type(sender, command, data_type):
    wire = header(command, 8, data_type, 1, 1, 2) + bytes(8)
    with pytest.raises(RemoteProtocolError, match="0-38"):
        parse_datagram(wire, sender)


def test_single_short_string_as_libca_writes_it():
    # libca sends one DBR_STRING as its characters and a NUL, padded to 8,
    # not the whole 40-byte field (comQueSend), and rsrv takes it.
    wire = header(19, 8, ChannelType.STRING, 1, 100, 3) + b"abc\0\0\0\0\0"
    (cmd,) = parse_datagram(wire, Role.CLIENT)
    assert type(cmd) is WriteNotifyRequest
    assert cmd.data.tolist() == [b"abc"]
    assert bytes(cmd) == wire
    # Only for a single string: two need their two 40-byte fields.
    with pytest.raises(RemoteProtocolError):
        parse_datagram(header(19, 8, ChannelType.STRING, 2, 100, 3) + bytes(8), Role.CLIENT)


@pytest.mark.parametrize("size", [0, 8])
def test_event_add_request_shorter_than_mon_info_is_refused(size):
    wire = header(1, size, ChannelType.DOUBLE, 1, 100, 5) + bytes(size)
    with pytest.raises(RemoteProtocolError):
        parse_datagram(wire, Role.CLIENT)


@pytest.mark.parametrize("size", [0, 8])
def test_error_shorter_than_a_header_is_refused(size):
    wire = header(11, size, 0, 0, 1, int(ECA.GETFAIL)) + bytes(size)
    with pytest.raises(RemoteProtocolError):
        parse_datagram(wire, Role.SERVER)


def test_empty_event_add_response_is_accepted_as_cancel_confirmation():
    wire = header(1, 0, ChannelType.TIME_DOUBLE, 5, 100, 3)
    (cmd,) = parse_datagram(wire, Role.SERVER)
    assert type(cmd) is EventAddResponse
    assert cmd.payload_size == 0


# Commands that share a number with a data command but carry no DBR data
# (READ_NOTIFY and EVENT_ADD requests, WRITE_NOTIFY responses) are not
# size-checked as if they did (a regression: they once were).
NOT_DATA = [
    (Role.CLIENT, ReadNotifyRequest(ChannelType.DOUBLE, 1, 1, 2)),
    (Role.CLIENT, ReadNotifyRequest(ChannelType.TIME_DOUBLE, 0, 1, 2)),
    (Role.CLIENT, EventAddRequest(ChannelType.TIME_DOUBLE, 1, 1, 2)),
    (Role.CLIENT, EventAddRequest(ChannelType.DOUBLE, 100, 1, 2)),
    (Role.SERVER, WriteNotifyResponse(ChannelType.DOUBLE, 1, ECA.NORMAL, 2)),
]


@pytest.mark.parametrize(("sender", "cmd"), NOT_DATA)
def test_commands_without_dbr_data_are_not_size_checked_in_streams(sender, cmd):
    parser = StreamParser(sender)
    parser.receive_data(bytes(cmd))
    assert parser.next_command() == cmd


@pytest.mark.parametrize(("sender", "cmd"), NOT_DATA)
def test_commands_without_dbr_data_are_not_size_checked_in_datagrams(sender, cmd):
    assert parse_datagram(bytes(cmd), sender) == [cmd]


# --- re-encoding ---------------------------------------------------------------------------------


NON_CANONICAL = pytest.mark.parametrize(
    ("sender", "wire"),
    [
        (Role.CLIENT, EXTENDED.pack(23, 0xFFFF, 0, 0, 0, 0, 8, 0) + bytes(8)),
        (Role.SERVER, HEADER.pack(18, 0, 6, 0xFFFF, 1, 2)),
        (Role.SERVER, EXTENDED.pack(15, 0xFFFF, 6, 0, 1, 2, 8, 1) + bytes(8)),
    ],
    ids=["extended-header-small-echo", "plain-header-count-0xffff", "extended-small-read"],
)


@NON_CANONICAL
def test_received_command_reencodes_to_its_bytes_whatever_the_header_form(sender, wire):
    (cmd,) = parse_datagram(wire, sender)
    assert bytes(cmd) == wire
    parser = StreamParser(sender)
    for i in range(len(wire)):
        parser.receive_data(wire[i : i + 1])
    (streamed,) = parser.commands()
    assert bytes(streamed) == wire
    assert streamed == cmd


@NON_CANONICAL
def test_pickled_received_command_keeps_its_bytes(sender, wire):
    (cmd,) = parse_datagram(wire, sender)
    back = pickle.loads(pickle.dumps(cmd))
    assert back == cmd
    assert bytes(back) == wire


# --- hostile input (property-based) ---------------------------------------------------------------

#: What the parser may allocate beyond its limit: chunk copies and bookkeeping.
SLACK = 64 * 1024
FUZZ_LIMIT = 1 << 17


def run_stream(sender: Role, chunks: list[bytes]) -> list:
    """Feed chunks; only RemoteProtocolError may escape; the parser stays failed after one."""
    parser = StreamParser(sender, max_payload=FUZZ_LIMIT)
    out = []
    try:
        for chunk in chunks:
            parser.receive_data(chunk)
            # next_command() rather than commands(): the latter loses the good
            # commands of a chunk when a later one in it is refused.
            while (command := parser.next_command()) is not NEED_DATA:
                out.append(command)
    except RemoteProtocolError as exc:
        with pytest.raises(RemoteProtocolError):
            parser.next_command()
        with pytest.raises(RemoteProtocolError):
            parser.receive_data(b"\0" * 16)
        assert str(exc)
    return out


def run_datagram(sender: Role, data: bytes) -> list:
    try:
        return parse_datagram(data, sender, max_payload=FUZZ_LIMIT)
    except RemoteProtocolError as exc:
        assert str(exc)
        return []


def check_bounded(fn, sender, payload, total_input: int):
    tracemalloc.start()
    try:
        result = fn(sender, payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < FUZZ_LIMIT + SLACK + 4 * total_input
    return result


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    return split(data, [c % (len(data) + 1) for c in cuts])


senders = st.sampled_from(SENDERS)
cut_lists = st.lists(st.integers(0, 1 << 16), max_size=12)


@FUZZ
@given(sender=senders, data=st.binary(max_size=600), cuts=cut_lists)
def test_arbitrary_bytes_only_raise_remote_protocol_error(sender, data, cuts):
    check_bounded(run_stream, sender, chunked(data, cuts), len(data))
    check_bounded(run_datagram, sender, data, len(data))


@FUZZ
@given(
    sender=senders,
    prefix=st.integers(1, 12),
    tail=st.binary(max_size=400),
    cuts=cut_lists,
)
def test_arbitrary_bytes_after_valid_prefix(sender, prefix, tail, cuts):
    # Valid commands, then garbage: the valid ones come out first, unchanged.
    commands = [c for c in STREAMS[sender] if len(c) < 4096][:prefix]
    head = b"".join(bytes(c) for c in commands)
    data = head + tail
    out = check_bounded(run_stream, sender, chunked(data, cuts), len(data))
    assert out[: len(commands)] == expected_after_parse(commands)
    check_bounded(run_datagram, sender, data, len(data))
    # The same garbage after a valid stream cut anywhere.
    data = WIRES[sender][: len(head) + len(tail) // 2] + tail
    check_bounded(run_stream, sender, chunked(data, cuts), len(data))
    check_bounded(run_datagram, sender, data, len(data))


@st.composite
def plausible_messages(draw):
    # Weighted toward the commands with the most parsing logic: the data
    # commands (1, 4, 15, 19), extended headers, sizes around the limit.
    command = draw(
        st.one_of(st.sampled_from([1, 4, 15, 19]), st.integers(0, 30), st.integers(0, 0xFFFF))
    )
    data_type = draw(st.one_of(st.integers(0, 38), st.integers(0, 0xFFFF)))
    count = draw(
        st.one_of(
            st.integers(0, 20),
            st.integers(0xFFF0, 0x10010),
            st.integers(0, 2**32 - 1),
        )
    )
    announced = draw(
        st.one_of(
            st.integers(0, 600),
            st.integers(FUZZ_LIMIT - 8, FUZZ_LIMIT + 8),
            st.integers(0, 2**32 - 1),
        )
    )
    extended = announced >= 0xFFFF or count >= 0xFFFF or draw(st.booleans())
    p1 = draw(st.integers(0, 2**32 - 1))
    p2 = draw(st.integers(0, 2**32 - 1))
    if extended:
        head = EXTENDED.pack(command, 0xFFFF, data_type, 0, p1, p2, announced, count)
    else:
        head = HEADER.pack(command, announced, data_type, count, p1, p2)
    given_size = draw(st.sampled_from([0, min(announced, 600), draw(st.integers(0, 600))]))
    return head + draw(st.binary(min_size=given_size, max_size=given_size))


@FUZZ
@given(sender=senders, messages=st.lists(plausible_messages(), max_size=6), cuts=cut_lists)
def test_valid_headers_with_random_fields(sender, messages, cuts):
    data = b"".join(messages)
    out = check_bounded(run_stream, sender, chunked(data, cuts), len(data))
    for cmd in out:
        assert cmd.REQUEST is (sender is Role.CLIENT)
        assert len(cmd) >= 16
    # Whatever header form the peer used, what came out re-encodes to what went in.
    reencoded = b"".join(bytes(cmd) for cmd in out)
    assert data.startswith(reencoded)
    datagram = check_bounded(run_datagram, sender, data, len(data))
    if datagram or not data:
        assert b"".join(bytes(cmd) for cmd in datagram) == data


@FUZZ
@given(sender=senders, draw=st.data())
def test_a_datagram_parses_as_a_stream_of_its_bytes_does(sender, draw):
    # parse_datagram's fast and general paths together accept exactly what
    # the stream parser accepts, whole, from the same bytes, and agree on it:
    # real messages, perhaps one odd one among them, perhaps cut short.
    pool = [bytes(c) for c in STREAMS[sender] if len(c) < 2048]
    messages = draw.draw(st.lists(st.sampled_from(pool), max_size=8))
    if draw.draw(st.booleans()):
        odd = draw.draw(plausible_messages())
        messages.insert(draw.draw(st.integers(0, len(messages))), odd)
    data = b"".join(messages)
    if draw.draw(st.integers(0, 3)) == 0:
        data = data[: draw.draw(st.integers(0, len(data)))]
    parser = StreamParser(sender, max_payload=FUZZ_LIMIT)
    parser.receive_data(data)
    try:
        streamed = parser.commands()
        streamed += parser.commands()  # raises if one after the first was refused
        whole = parser.buffered == 0
    except RemoteProtocolError:
        whole = False
    if not whole:
        with pytest.raises(RemoteProtocolError):
            parse_datagram(data, sender, max_payload=FUZZ_LIMIT)
        return
    got = parse_datagram(data, sender, max_payload=FUZZ_LIMIT)
    assert got == streamed
    assert [bytes(c) for c in got] == [bytes(c) for c in streamed]


def test_datagram_beyond_16k_parses_alike():
    # Larger than any CA peer sends: every message takes the general path.
    commands = [VersionRequest(1, 13, 4)] + [SearchRequest(f"pv:{i}", i) for i in range(1500)]
    datagram = b"".join(bytes(c) for c in commands)
    assert len(datagram) > 16384 + 16
    assert parse_datagram(datagram, Role.CLIENT) == commands
    with pytest.raises(RemoteProtocolError, match="into a header"):
        parse_datagram(datagram + bytes(5), Role.CLIENT)


DATA_IDS = {Role.SERVER: [1, 15], Role.CLIENT: [4, 19]}


@FUZZ
@given(
    sender=senders,
    data_type=st.one_of(st.integers(0, 38), st.integers(39, 0xFFFF)),
    count=st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
    size=st.one_of(st.integers(0, 2048), st.integers(0, 2**32 - 1)),
    data=st.data(),
)
def test_data_headers_with_random_type_count_and_size(sender, data_type, count, size, data):
    command = data.draw(st.sampled_from(DATA_IDS[sender]))
    given = min(size, 2048)
    wire = header(command, size, data_type, count, 1, 2) + bytes(given)
    out = check_bounded(run_stream, sender, [wire], len(wire))
    for cmd in out:
        if cmd.command == 1 and cmd.payload_size == 0:
            continue  # EVENT_CANCEL's confirmation: the client circuit renames it
        # What the parser let through can be decoded.
        _, values = cmd.decode()
        assert len(values) == count
    check_bounded(run_datagram, sender, wire, len(wire))


@FUZZ
@given(sender=senders, data=st.data())
def test_parsed_commands_reencode_to_the_input(sender, data):
    # Messages with the header form a CA peer sends (extended only when needed)
    # come back out of bytes() exactly as they went in.
    pool = [c for c in STREAMS[sender] if len(c) < 4096]
    picks = data.draw(st.lists(st.sampled_from(pool), max_size=10))
    wire = b"".join(bytes(c) for c in picks)
    out = parse_datagram(wire, sender, max_payload=MiB)
    assert b"".join(bytes(c) for c in out) == wire

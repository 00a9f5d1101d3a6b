"""The batch search API agrees with the command objects it stands for.

``search_datagram``, ``search_response_datagram`` and ``read_searches`` are
checked against joining ``bytes()`` of the objects and against
``parse_datagram``: the same bytes, the same values, the same errors, on
well-formed datagrams and on arbitrary bytes. The decoded name is checked
against the original ``decode_string`` (copy, cut at the NUL, decode).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caioc.ca import (
    ADDRESS_FROM_SENDER,
    Broadcaster,
    LocalProtocolError,
    NotFoundResponse,
    RemoteProtocolError,
    Role,
    RsrvIsUpResponse,
    SearchReply,
    SearchRequest,
    SearchResponse,
    VersionRequest,
    VersionResponse,
    parse_datagram,
    read_searches,
    search_datagram,
    search_response_datagram,
)
from caioc.ca._commands import (
    _NAME_CACHE_PAYLOAD,
    _NAME_CACHE_SIZE,
    _SEARCH_NAMES,
    _SEARCH_PAYLOADS_BY_NAME,
)
from caioc.ca._wire import decode_string

HEADER = struct.Struct(">HHHHII")
FUZZ = settings(max_examples=300, deadline=None)

names = st.text(min_size=0, max_size=60)  # "" and NUL: refused
valid_names = st.text(
    st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1, max_size=60
)
cids = st.integers(0, 2**32 - 1)
searches = st.lists(st.tuples(names, cids), max_size=12)
valid_searches = st.lists(st.tuples(valid_names, cids), max_size=12)


def objects_request(pairs, version=13, reply=5, priority=0, sequence_id=0):
    parts = [bytes(VersionRequest(priority, version, sequence_id))]
    parts += [bytes(SearchRequest(name, cid, version, reply)) for name, cid in pairs]
    return b"".join(parts)


def objects_response(port, cid_list, ip=ADDRESS_FROM_SENDER, version=13, priority=0, seq=0):
    parts = [bytes(VersionResponse(priority, version, seq))]
    parts += [bytes(SearchResponse(port, ip, cid, version)) for cid in cid_list]
    return b"".join(parts)


def outcome(fn, *args):
    """What fn returns, or the class of the CA error it raises."""
    try:
        return fn(*args)
    except (LocalProtocolError, RemoteProtocolError) as error:
        return type(error)


def parsed_form(data, max_payload=16384):
    """read_searches' result, computed from parse_datagram's objects."""
    commands = parse_datagram(data, Role.CLIENT, max_payload)
    found = [(c.name, c.cid, c.reply, c.version) for c in commands if type(c) is SearchRequest]
    return found, [c for c in commands if type(c) is not SearchRequest]


# --- encode --------------------------------------------------------------------------


@FUZZ
@given(
    pairs=searches,
    reply=st.sampled_from([5, 10, SearchReply.DO_REPLY]),
    sequence_id=st.integers(0, 2**32 - 1),
)
def test_search_datagram_is_the_objects_joined(pairs, reply, sequence_id):
    expected = outcome(objects_request, pairs, 13, reply, 1, sequence_id)
    assert outcome(search_datagram, pairs, 13, reply, 1, sequence_id) == expected


@pytest.mark.parametrize(
    "pairs",
    [
        [("", 1)],
        [("a\0b", 1)],
        [("x" * 5000, 1)],  # too long for the fast path: the general rules
        [("ok", -1)],
        [("ok", 2**32)],
        [(b"raw:name", 3)],
        [("ok", 1), ("", 2)],
    ],
)
def test_search_datagram_refuses_and_accepts_as_the_objects_do(pairs):
    assert outcome(search_datagram, pairs) == outcome(objects_request, pairs)


@pytest.mark.parametrize("reply", [0, 6, 11])
def test_search_datagram_checks_the_reply_flag(reply):
    with pytest.raises(LocalProtocolError):
        search_datagram([("a", 1)], 13, reply)
    assert search_datagram([], 13, reply) == bytes(VersionRequest(0, 13))


@FUZZ
@given(
    port=st.integers(0, 0xFFFF),
    cid_list=st.lists(cids, max_size=12),
    ip=st.sampled_from([ADDRESS_FROM_SENDER, "10.0.0.5", 0x7F000001]),
    seq=st.integers(0, 2**32 - 1),
)
def test_search_response_datagram_is_the_objects_joined(port, cid_list, ip, seq):
    expected = objects_response(port, cid_list, ip, 13, 1, seq)
    assert search_response_datagram(port, cid_list, ip, 13, 1, seq) == expected


def test_search_response_datagram_other_versions_and_errors():
    assert search_response_datagram(5064, [1, 2], "1.2.3.4", 11) == objects_response(
        5064, [1, 2], "1.2.3.4", 11
    )
    for args in ((70000, [1]), (5064, [-1]), (5064, [2**32]), (5064, ["1"])):
        assert outcome(search_response_datagram, *args) is LocalProtocolError
        assert outcome(objects_response, *args) is LocalProtocolError


# --- decode --------------------------------------------------------------------------


@FUZZ
@given(pairs=valid_searches, reply=st.sampled_from([5, 10]), sequence_id=st.integers(0, 2**32 - 1))
def test_read_searches_reads_what_parse_datagram_reads(pairs, reply, sequence_id):
    data = objects_request(pairs, 13, reply, 1, sequence_id)
    found, others = read_searches(data)
    assert found == [(name, cid, reply, 13) for name, cid in pairs]
    assert others == [VersionRequest(1, 13, sequence_id)]
    assert (found, others) == parsed_form(data)


@FUZZ
@given(data=st.binary(max_size=300))
def test_read_searches_on_arbitrary_bytes_agrees_with_parse_datagram(data):
    assert outcome(read_searches, data) == outcome(parsed_form, data)


@st.composite
def plausible_datagrams(draw):
    """Headers that mostly make sense, with odd sizes, commands and names."""
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        command = draw(st.sampled_from([0, 6, 6, 6, 1, 23, 13, 99]))
        payload = draw(st.binary(max_size=40))
        size = draw(st.sampled_from([len(payload), len(payload) + 8, 0xFFFF, 3]))
        count = draw(st.sampled_from([13, 0, 0xFFFF]))
        parts.append(HEADER.pack(command, size, 5, count, draw(cids), draw(cids)) + payload)
    return b"".join(parts)


@FUZZ
@given(data=plausible_datagrams())
def test_read_searches_on_odd_datagrams_agrees_with_parse_datagram(data):
    assert outcome(read_searches, data) == outcome(parsed_form, data)


def test_read_searches_honours_the_payload_limit():
    big = HEADER.pack(6, 16392, 5, 13, 1, 1) + b"n" * 16392
    with pytest.raises(RemoteProtocolError):
        read_searches(big)
    found, _ = read_searches(big, 10**6)
    assert found == [("n" * 16392, 1, 5, 13)]


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_read_searches_takes_any_buffer(kind):
    data = objects_request([("a:b", 7)])
    assert read_searches(kind(data)) == ([("a:b", 7, 5, 13)], [VersionRequest(0, 13)])


@FUZZ
@given(payload=st.binary(max_size=64))
def test_names_decode_as_the_original_decode_string(payload):
    original = bytes(payload).partition(b"\0")[0].decode("utf-8", "surrogateescape")
    assert decode_string(payload) == original
    assert decode_string(memoryview(payload)) == original
    data = HEADER.pack(6, len(payload), 5, 13, 1, 1) + payload
    if payload:
        assert read_searches(data)[0] == [(original, 1, 5, 13)]
        (search,) = parse_datagram(data, Role.CLIENT)
        assert search.name == original
        assert search.name == original  # remembered by now
    # Payloads as views, writable (not hashable) or not, give the same name.
    for view in (memoryview(payload), memoryview(bytearray(payload))):
        search = SearchRequest.from_wire(len(payload), 5, 13, 1, 1, view)
        assert search.name == original
        assert search.name == original


def test_remembered_search_names_are_bounded():
    for i in range(_NAME_CACHE_SIZE + 10):
        assert SearchRequest(f"pv:{i}", 1).name == f"pv:{i}"
    assert 0 < len(_SEARCH_NAMES) <= _NAME_CACHE_SIZE
    long_name = "x" * _NAME_CACHE_PAYLOAD
    search = SearchRequest(long_name, 1)
    assert search.name == long_name
    assert search.payload not in _SEARCH_NAMES  # long payloads are not kept


def test_remembered_search_payloads_are_the_encoded_ones_and_bounded():
    # Each name encoded afresh (nothing remembered) and again (remembered).
    names = ["pv:1", "a" * 7, "b" * 8, "é:ü", "\udcff:raw", "x" * 120, "y" * 200]
    for name in names:
        _SEARCH_PAYLOADS_BY_NAME.clear()
        fresh = SearchRequest(name, 7, 13, SearchReply.DO_REPLY)
        again = SearchRequest(name, 7, 13, SearchReply.DO_REPLY)
        raw = name.encode("utf-8", "surrogateescape")
        assert bytes(fresh) == bytes(again)
        assert fresh.payload == raw + bytes(8 - len(raw) % 8)
        assert bytes(fresh)[:16] == struct.pack(">HHHHII", 6, len(fresh.payload), 10, 13, 7, 7)
        assert SearchRequest.from_wire(*fresh[1:6], fresh.payload).name == name
    assert "y" * 200 not in _SEARCH_PAYLOADS_BY_NAME  # long payloads are not kept
    for i in range(_NAME_CACHE_SIZE + 10):
        assert SearchRequest(f"pv:{i}", 1).name == f"pv:{i}"
    assert 0 < len(_SEARCH_PAYLOADS_BY_NAME) <= _NAME_CACHE_SIZE
    # what a remembered name skips is still refused
    with pytest.raises(LocalProtocolError):
        SearchRequest("pv:1\0tail", 1)
    with pytest.raises(LocalProtocolError):
        SearchRequest("pv:1", 1, reply=3)


# --- the broadcaster and the server's UDP handler --------------------------------------


def test_broadcaster_recv_searches_checks_as_recv_does():
    server = Broadcaster(Role.SERVER)
    data = objects_request([("a", 1), ("b", 2)], sequence_id=4)
    found, others = server.recv_searches(data)
    assert found == [("a", 1, 5, 13), ("b", 2, 5, 13)]
    assert others == server.recv(data)[:1]
    beacon = bytes(RsrvIsUpResponse(5064, 1, 0))  # a server's, never a client's
    with pytest.raises(RemoteProtocolError):
        server.recv(beacon)
    with pytest.raises(RemoteProtocolError):
        server.recv_searches(beacon)
    with pytest.raises(LocalProtocolError):
        Broadcaster(Role.CLIENT).recv_searches(data)


def test_server_answers_alike_on_the_batch_and_the_object_paths():
    from caioc.server._data import ChannelDouble
    from caioc.server._server_logic import ServerLogic

    class ObjectPath(ServerLogic):
        def search_reply(self, request):  # an override keeps the object path
            return super().search_reply(request)

    pvdb = {"A": ChannelDouble(value=1.0), "B": ChannelDouble(value=2.0)}
    batch, objects = ServerLogic(pvdb), ObjectPath(pvdb)
    batch.tcp_port = objects.tcp_port = 5064
    address = ("127.0.0.1", 5065)
    datagrams = [
        objects_request([("A", 1), ("nope", 2), ("B", 3), ("A.VAL", 4)], sequence_id=9),
        objects_request([("nope", 2), ("A", 5)], reply=10, priority=1, sequence_id=3),
        objects_request([("nope", 2)]),  # nothing to say: silence
        objects_request([("nope", 2)], reply=10),
        b"".join(bytes(SearchRequest(n, c)) for n, c in [("A", 1), ("B", 2)]),  # no VERSION
        bytes(SearchRequest("A", 1)) + bytes(VersionRequest(1, 13, 2)),  # VERSION last
        objects_request([("A", 1)]) + bytes(VersionRequest(1, 13, 2)),  # two VERSIONs
        b"\0\0\0",  # truncated: ignored
        bytes(RsrvIsUpResponse(5064, 1, 0)),  # not from a client: ignored
    ]
    for data in datagrams:
        assert batch.answer_datagram(data, address) == objects.answer_datagram(data, address)
    answer = batch.answer_datagram(datagrams[1], address)
    assert answer == b"".join(
        [
            bytes(VersionResponse(1, 13, 3)),
            bytes(NotFoundResponse(2, reply=SearchReply.DO_REPLY)),
            bytes(SearchResponse(5064, ADDRESS_FROM_SENDER, 5)),
        ]
    )

"""The core's shortcuts for a server's busiest moments, each the same as the usual path.

VirtualCircuit.read_notify_run: a run of reads checked as next_command
checks each. VirtualCircuit.accept: ACCESS_RIGHTS + CREATE_CHAN made as
send(*channel.create(...)) makes them.
"""

from __future__ import annotations

import pytest
from test_state import CID, SID, Link, drain

from caioc.ca import (
    ECA,
    NEED_DATA,
    AccessRights,
    ChannelState,
    ChannelType,
    ClearChannelRequest,
    EchoRequest,
    EventAddResponse,
    ProtocolError,
    ReadNotifyRequest,
    ReadNotifyResponse,
    RemoteProtocolError,
    Role,
    VirtualCircuit,
)


@pytest.fixture
def link() -> Link:
    link = Link()
    link.connect()
    for i in range(3):
        link.open_channel(f"PV{i}", cid=CID + i, sid=SID + i)
    return link


def reads(count: int, sid: int = SID, first_ioid: int = 1) -> bytes:
    return b"".join(
        bytes(ReadNotifyRequest(ChannelType.DOUBLE, 1, sid + i % 3, first_ioid + i))
        for i in range(count)
    )


def reads_of(sid: int, count: int, first_ioid: int = 1) -> bytes:
    """``count`` reads of one channel."""
    return b"".join(
        bytes(ReadNotifyRequest(ChannelType.DOUBLE, 1, sid, first_ioid + i)) for i in range(count)
    )


def test_a_run_is_taken_checked_and_recorded(link: Link) -> None:
    data = reads(10) + bytes(EchoRequest())
    run = link.server.read_notify_run(data)
    assert run is not None
    assert run.headers.tobytes() == data[: 16 * 10]  # the requests, as received
    assert [(ch.cid, t, c, sid, ioid) for ch, t, c, sid, ioid in run.reads()] == [
        (CID + i % 3, ChannelType.DOUBLE, 1, SID + i % 3, 1 + i) for i in range(10)
    ]
    # the reads await their replies, as next_command would have recorded them
    assert link.server.pending_ioids == frozenset(range(1, 11))
    # the rest goes the usual way
    link.server.receive_data(data[16 * len(run.ioids) :])
    assert link.server.next_command() == EchoRequest()
    assert link.server.next_command() is NEED_DATA
    # a reply sent the usual way is one of them; the others are replied to as a batch
    link.server.send(ReadNotifyResponse([1.0], ChannelType.DOUBLE, ECA.NORMAL, 1))
    link.server.replied(list(range(2, 11)))
    assert not link.server.pending_ioids


@pytest.mark.parametrize(
    ("ioids", "taken"),
    [
        (list(range(10)), True),  # libca's order: rising
        (list(range(10, 0, -1)), True),  # distinct, falling
        ([5, 1, 9, 2, 8, 3, 7, 4, 6, 0], True),  # distinct, shuffled
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 0xFFFFFFFF], True),  # rising, the largest last
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 1], False),  # one repeated, not adjacent
        ([1, 2, 3, 4, 5, 5, 6, 7, 8, 9], False),  # one repeated, adjacent
        ([9, 8, 7, 6, 5, 4, 3, 2, 1, 9], False),
    ],
)
def test_a_run_needs_distinct_ioids_in_any_order(link: Link, ioids: list[int], taken: bool) -> None:
    data = b"".join(
        bytes(ReadNotifyRequest(ChannelType.DOUBLE, 1, SID + i % 3, ioid))
        for i, ioid in enumerate(ioids)
    )
    run = link.server.read_notify_run(data)
    if taken:
        assert run is not None and run.ioids == ioids
        assert link.server.pending_ioids == frozenset(ioids)
    else:
        assert run is None
        assert not link.server.pending_ioids


def test_a_run_says_whether_every_read_asks_the_same(link: Link) -> None:
    run = link.server.read_notify_run(reads(10))
    assert run is not None and run.uniform
    assert run.data_types == [ChannelType.DOUBLE] * 10 and run.data_counts == [1] * 10
    assert all(type(value) is int for value in run.data_types + run.data_counts)
    link.server.replied(run.ioids)
    mixed = reads(4, first_ioid=20) + bytes(ReadNotifyRequest(ChannelType.LONG, 1, SID, 30))
    mixed += reads(4, first_ioid=40) + bytes(ReadNotifyRequest(ChannelType.DOUBLE, 2, SID, 50))
    run = link.server.read_notify_run(mixed)
    assert run is not None and not run.uniform
    assert run.data_types == [6] * 4 + [5] + [6] * 5
    assert run.data_counts == [1] * 9 + [2]


def test_a_run_keeps_its_requests_when_the_buffer_changes(link: Link) -> None:
    buffer = bytearray(reads(10))
    run = link.server.read_notify_run(memoryview(buffer))
    assert run is not None
    buffer[:] = bytes(len(buffer))  # the caller reads the next segment into it
    assert run.headers.tobytes() == reads(10)


def test_replied_forgets_the_run_and_only_the_run(link: Link) -> None:
    # another read, received the usual way, awaits its reply meanwhile
    link.server.receive_data(reads(1, first_ioid=100))
    assert isinstance(link.server.next_command(), ReadNotifyRequest)
    run = link.server.read_notify_run(reads(10))
    assert run is not None
    link.server.replied(run.ioids)
    assert link.server.pending_ioids == frozenset({100})
    link.server.send(ReadNotifyResponse([1.0], ChannelType.DOUBLE, ECA.NORMAL, 100))
    # the run alone awaits its replies: all forgotten at once
    run = link.server.read_notify_run(reads(10, first_ioid=200))
    assert run is not None
    link.server.replied(run.ioids)
    assert not link.server.pending_ioids
    # two of the run answered the usual way, two others waiting: as many
    # awaiting replies as the run has reads, and the others stay
    link.server.receive_data(reads(2, first_ioid=300))
    for _ in range(2):
        assert isinstance(link.server.next_command(), ReadNotifyRequest)
    run = link.server.read_notify_run(reads(8, first_ioid=400))
    assert run is not None
    link.server.send(ReadNotifyResponse([1.0], ChannelType.DOUBLE, ECA.NORMAL, 400))
    link.server.send(ReadNotifyResponse([1.0], ChannelType.DOUBLE, ECA.NORMAL, 407))
    assert len(link.server.pending_ioids) == len(run.ioids)
    link.server.replied(run.ioids)
    assert link.server.pending_ioids == frozenset({300, 301})


def test_a_run_awaits_its_replies_before_the_next_command_is_checked(link: Link) -> None:
    # Nothing asks for pending_ioids here: the next command checked or sent
    # must still see the run's reads as awaiting their replies.
    server = link.server
    run = server.read_notify_run(reads(10))
    assert run is not None
    server.receive_data(reads(1, first_ioid=5))  # an ioid of the run, the usual way
    with pytest.raises(RemoteProtocolError, match="ioid 5 is already in use"):
        server.next_command()


def test_a_reply_the_usual_way_finds_its_read_in_the_run(link: Link) -> None:
    server = link.server
    run = server.read_notify_run(reads(10))
    assert run is not None
    server.send(ReadNotifyResponse([1.0], ChannelType.DOUBLE, ECA.NORMAL, 3))
    with pytest.raises(ProtocolError, match="ioid 3"):  # not twice
        server.send(ReadNotifyResponse([1.0], ChannelType.DOUBLE, ECA.NORMAL, 3))
    server.replied(run.ioids)
    assert not server.pending_ioids


def test_a_second_run_sees_the_first_one_s_reads(link: Link) -> None:
    server = link.server
    first = server.read_notify_run(reads(10))
    assert first is not None
    assert server.read_notify_run(reads(10, first_ioid=10)) is None  # ioid 10 awaits its reply
    second = server.read_notify_run(reads(10, first_ioid=11))
    assert second is not None
    server.replied(first.ioids)
    assert server.pending_ioids == frozenset(second.ioids)
    server.replied(second.ioids)
    assert not server.pending_ioids


def test_a_run_keeps_its_channels_as_they_were_when_checked(link: Link) -> None:
    server = link.server
    expected = [server.channels_by_sid[SID + i % 3] for i in range(10)]
    run = server.read_notify_run(reads(10))
    assert run is not None
    link.c2s(ClearChannelRequest(SID + 1, CID + 1))  # being cleared while the run waits
    server.disconnect()  # and then every channel is gone
    assert run.channels == expected
    assert [channel for channel, *_ in run.reads()] == expected
    # the circuit gone before anything else passed
    other = Link()
    other.connect()
    other.open_channel("PV", cid=CID, sid=SID)
    expected = [other.server.channels_by_sid[SID]] * 8
    run = other.server.read_notify_run(reads_of(SID, 8))
    assert run is not None
    other.server.disconnect()
    assert run.channels == expected


def test_a_run_is_checked_against_each_channel_as_it_is_now(link: Link) -> None:
    server = link.server

    def taken(sid: int) -> bool:
        """Whether a run of eight reads of ``sid`` is taken (and then answered)."""
        run = server.read_notify_run(reads_of(sid, 8, first_ioid=1000))
        if run is not None:
            server.replied(run.ioids)
        return run is not None

    client_channel = link.client.channels[CID + 1]
    assert taken(SID + 1)
    link.c2s(client_channel.clear())  # the client clears it: no more reads
    assert not taken(SID + 1)
    link.s2c(server.channels[CID + 1].clear())  # the server answers: it is gone
    assert not taken(SID + 1)
    # a channel connected by accept(), with the sid the cleared one had
    link.c2s(link.client.create_channel("again", CID + 9).create())
    link.client.receive_data(
        server.accept(server.channels[CID + 9], ChannelType.DOUBLE, 1, SID + 1)
    )
    drain(link.client)
    assert taken(SID + 1)
    assert taken(SID) and not taken(SID + 50)
    server.disconnect()
    assert not taken(SID)


def test_the_run_stops_at_the_first_other_command_and_at_most(link: Link) -> None:
    data = reads(9) + bytes(EchoRequest()) + reads(9, first_ioid=100)
    run = link.server.read_notify_run(data)
    assert run is not None and len(run.ioids) == 9
    capped = link.server.read_notify_run(reads(30, first_ioid=200), most=12)
    assert capped is not None and capped.ioids == list(range(200, 212))


@pytest.mark.parametrize(
    "why",
    [
        "too few",
        "not a read first",
        "bytes buffered before",
        "unknown sid",
        "ioid twice",
        "ioid pending",
        "channel being cleared",
        "client role",
    ],
)
def test_anything_unusual_is_left_to_the_usual_path(link: Link, why: str) -> None:
    server = link.server
    data = reads(10)
    if why == "too few":
        data = reads(7)
    elif why == "not a read first":
        data = bytes(EchoRequest()) + reads(10)
    elif why == "bytes buffered before":
        server.receive_data(bytes(EchoRequest())[:8])
    elif why == "unknown sid":
        data = reads(5) + bytes(ReadNotifyRequest(ChannelType.DOUBLE, 1, 999, 50)) + reads(5)
    elif why == "ioid twice":
        data = reads(5) + reads(5)
    elif why == "ioid pending":
        link.c2s(link.client.channels[CID].read(ChannelType.DOUBLE, 1))
        data = reads(10, first_ioid=max(server.pending_ioids))
    elif why == "channel being cleared":
        link.c2s(ClearChannelRequest(SID + 1, CID + 1))
    elif why == "client role":
        server = VirtualCircuit(Role.CLIENT)
    before = server.pending_ioids
    assert server.read_notify_run(data) is None
    assert server.pending_ioids == before
    if why in ("unknown sid", "ioid twice", "channel being cleared"):
        # and the usual path refuses what the run would have refused
        server.receive_data(data)
        with pytest.raises(RemoteProtocolError):
            while server.next_command() is not NEED_DATA:
                pass


@pytest.mark.parametrize(
    ("native_type", "count", "sid", "rights"),
    [
        (ChannelType.DOUBLE, 1, 5, AccessRights.READ_WRITE),
        (int(ChannelType.STRING), 0, 0xFFFFFFFF, 1),
        (ChannelType.ENUM, 0xFFFE, 77, AccessRights.NO_ACCESS),
        (ChannelType.CHAR, 0xFFFF, 78, AccessRights.READ),  # extended header: send()'s path
        (ChannelType.LONG, 2_000_000, 79, AccessRights.WRITE),
    ],
)
def test_accept_is_send_of_create(native_type: int, count: int, sid: int, rights: int) -> None:
    links = [Link(), Link()]
    channels = []
    for each in links:
        each.connect()
        client_channel = each.client.create_channel("PV", CID)
        each.c2s(client_channel.create())
        channels.append(each.server.channels[CID])
    usual = links[0].server.send(*channels[0].create(native_type, count, sid, rights))
    shortcut = links[1].server.accept(channels[1], native_type, count, sid, rights)
    assert shortcut == usual
    for each, channel in zip(links, channels, strict=True):
        assert each.server.channels_by_sid[sid] is channel
        assert (channel.state, channel.sid, channel.native_data_count) == (
            ChannelState.CONNECTED,
            sid,
            count,
        )
        assert channel.native_data_type is ChannelType(native_type)
        assert channel.access_rights is AccessRights(rights)
        # and the client end takes what it was sent: its channel is connected
        each.client.receive_data(shortcut)
        kinds = [type(command).__name__ for command in drain(each.client)]
        assert kinds == ["AccessRightsResponse", "CreateChanResponse"]
        assert each.client.channels[CID].state is ChannelState.CONNECTED


def test_accept_refuses_what_send_refuses(link: Link) -> None:
    channel = link.server.channels[CID]  # connected already: no second CREATE_CHAN reply
    with pytest.raises(Exception) as usual:
        link.server.send(*channel.create(ChannelType.DOUBLE, 1, 9))
    with pytest.raises(type(usual.value)):
        link.server.accept(channel, ChannelType.DOUBLE, 1, 9)


def test_updatable_says_whether_send_would_take_each_update(link: Link) -> None:
    server = link.server
    client_channel = link.client.channels[CID]
    request = client_channel.subscribe(ChannelType.DOUBLE)
    link.c2s(request)
    subscriptionid = request.subscriptionid
    # each id answered in its place; an unknown one (no such subscription) is not
    assert server.updatable([subscriptionid, subscriptionid + 1, subscriptionid]) == [
        True,
        False,
        True,
    ]
    assert server.updatable({subscriptionid: None}) == [True]  # any iterable of ids
    assert server.updatable([]) == []
    assert VirtualCircuit(Role.CLIENT).updatable([subscriptionid]) == [False]
    # a channel being cleared still takes the updates in flight, as send() does
    link.c2s(client_channel.clear())
    assert server.updatable([subscriptionid]) == [True]
    update = EventAddResponse([1.0], ChannelType.DOUBLE, ECA.NORMAL, subscriptionid)
    server.send(update)
    # once the clear is answered, nothing more
    server.send(server.channels[CID].clear())
    assert server.updatable([subscriptionid]) == [False]
    with pytest.raises(ProtocolError):
        server.send(update)

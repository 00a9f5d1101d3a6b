"""Field modifiers and channel filters: names, lookups, and each filter's effect.

The expected answers come from epics-base 7.0.10 (softioc's rsrv), asked the
same questions; test_filters_with_libca.py asks both servers side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from peers import server_config
from test_server_robustness import RawClient
from waiting import run

from caioc.ca import (
    ChannelType,
    CreateChFailResponse,
    EchoRequest,
    EchoResponse,
    EventAddResponse,
    NotFoundResponse,
    ReadNotifyResponse,
    SearchReply,
    SearchRequest,
    SearchResponse,
    VersionRequest,
    WriteNotifyResponse,
    epics_to_posix,
)
from caioc.server import Server
from caioc.server._data import ChannelChar, ChannelDouble, ChannelEnum, ChannelString
from caioc.server._filters import FilteredChannel, States, deadband_exceeded
from caioc.server._names import (
    ArrayFilter,
    ChannelName,
    ChannelNameError,
    DeadbandFilter,
    DecimateFilter,
    SyncFilter,
    TimestampFilter,
    parse_channel_name,
)

# -- names ----------------------------------------------------------------------------


def arr(start: int = 0, end: int = -1, increment: int = 1) -> tuple[ArrayFilter, ...]:
    return (ArrayFilter(start, end, increment),)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("PV", None),
        ("PV.", ChannelName("PV")),
        ("PV.VAL", ChannelName("PV", "VAL")),
        ("PV.EGU", ChannelName("PV", "EGU")),
        ("PV.$", ChannelName("PV", "", True)),
        ("PV.VAL$", ChannelName("PV", "VAL", True)),
        ("PV$", ChannelName("PV", "", True)),
        ("PV.[1:3]", ChannelName("PV", filters=arr(1, 3))),
        ("PV.VAL[1:3]", ChannelName("PV", "VAL", filters=arr(1, 3))),
        ("PV[2:5]", ChannelName("PV", filters=arr(2, 5))),
        ("PV[2:1:5]", ChannelName("PV", filters=arr(2, 5, 1))),
        ("PV[-3:]", ChannelName("PV", filters=arr(-3))),
        ("PV.[2]", ChannelName("PV", filters=arr(2, 2))),
        ("PV.[:]", ChannelName("PV", filters=arr())),
        ("PV.[2:-1:5]", ChannelName("PV", filters=arr(2, 5))),  # increment <= 0 is 1
        ("PV.[0x2:3]", ChannelName("PV", filters=arr(2, 3))),  # strtol base 0
        ("PV.[ 2:3]", ChannelName("PV", filters=arr(2, 3))),
        ("X[1][2:3]", ChannelName("X[1]", filters=arr(2, 3))),
        ('PV.{"arr":{"s":1,"e":5,"i":2}}', ChannelName("PV", filters=arr(1, 5, 2))),
        ('PV.{"arr":{s:1,e:2}}', ChannelName("PV", filters=arr(1, 2))),  # JSON5 keys
        ("PV.{'arr':{'s':1}}", ChannelName("PV", filters=arr(1))),
        ('PV.{"arr":{"s":"2","e":3.7}}', ChannelName("PV", filters=arr(2, 3))),
        ('PV.{"arr":{"s":true}}', ChannelName("PV", filters=arr(1))),
        ('PV.{"arr":{"i":-2}}', ChannelName("PV", filters=arr())),
        ('PV.{"arr":{"s":1}} ', ChannelName("PV", filters=arr(1))),
        ('PV.{"arr":{"s":1},"arr":{"s":2}}', ChannelName("PV", filters=arr(1) + arr(2))),
        ('PV.[1:3]{"arr":{"s":1}}', ChannelName("PV", filters=arr(1, 3) + arr(1))),
        ('PV.$[1:2]{"ts":{}}', ChannelName("PV", "", True, (*arr(1, 2), TimestampFilter()))),
        ("PV.{}", ChannelName("PV")),
        ('PV.{"dbnd":{"d":0.5}}', ChannelName("PV", filters=(DeadbandFilter(0.5),))),
        ('PV.{"dbnd":{}}', ChannelName("PV", filters=(DeadbandFilter(0.0),))),
        ('PV.{"dbnd":{"abs":0.5}}', ChannelName("PV", filters=(DeadbandFilter(0.5),))),
        ('PV.{"dbnd":{"rel":10}}', ChannelName("PV", filters=(DeadbandFilter(10, True),))),
        ('PV.{"dbnd":{"m":"rel","d":1}}', ChannelName("PV", filters=(DeadbandFilter(1, True),))),
        ('PV.{"ts":{}}', ChannelName("PV", filters=(TimestampFilter(),))),
        ('PV.{"dec":{"n":3}}', ChannelName("PV", filters=(DecimateFilter(3),))),
        (
            'PV.{"sync":{"m":"while","s":"st"}}',
            ChannelName("PV", filters=(SyncFilter("while", "st"),)),
        ),
    ],
)
def test_valid_names(name: str, expected: ChannelName | None) -> None:
    assert parse_channel_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "PV.[2:3 ]",
        "PV.[]",
        "PV.[a]",
        "PV.[1]x",
        "PV.[1:2:3:4]",
        "PV.[1:2][0]",
        ".VAL",
        "PV.VAL.X",
        "PV.$$",
        'PV.{"arr":{"s":1,"x":2}}',
        'PV.{"foo":{}}',
        'PV.{"arr":1}',
        'PV.{"arr":[1]}',
        'PV.{"arr":{"s":"x"}}',
        'PV.{"dec":{"n":0}}',
        'PV.{"dec":{}}',
        'PV.{"dec":{"n":2.5}}',
        'PV.{"dec":{"n":"3"}}',
        'PV.{"ts":null}',
        'PV.{"ts":{"num":"dbl"}}',
        'PV.{"dbnd":{"m":"foo"}}',
        'PV.{"dbnd":{"d":"x"}}',
        'PV.{"sync":{"m":"while"}}',
        'PV.{"sync":{"m":"bogus","s":"st"}}',
        'PV.{"ts":{}}x',
        'PV.{"ts":{}',
        'PV.{"ts":{}}{"ts":{}}',
        'PV.{"ts":{"a" 1}}',
        "PV.{'ts:{}}",
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(ChannelNameError):
        parse_channel_name(name)


def test_dotless_modifiers_are_a_caioc_extension() -> None:
    assert parse_channel_name("PV[1:2]", dotless=False) is None
    assert parse_channel_name("PV$", dotless=False) is None
    assert parse_channel_name("PV.[1:2]", dotless=False) == ChannelName("PV", filters=arr(1, 2))


@pytest.mark.parametrize(
    ("spec", "length", "expected"),
    [
        (ArrayFilter(1, 3), 10, (1, 3)),
        (ArrayFilter(1, 5, 2), 10, (1, 3)),
        (ArrayFilter(-3, -1), 10, (7, 3)),
        (ArrayFilter(20, -1), 10, (10, 0)),
        (ArrayFilter(5, 2), 10, (5, 0)),
        (ArrayFilter(1, 8), 5, (1, 4)),
        (ArrayFilter(-20, 2), 10, (0, 3)),
        (ArrayFilter(0, -1), 0, (0, 0)),
        (ArrayFilter(0, 9, 4), 10, (0, 3)),
    ],
)
def test_array_indices_wrap_as_epics_does(
    spec: ArrayFilter, length: int, expected: tuple[int, int]
) -> None:
    assert spec.indices(length) == expected


def test_deadband_check_is_recgbl_check_deadband() -> None:
    nan, inf = math.nan, math.inf
    assert deadband_exceeded(nan, 1.0, 0.5)
    assert not deadband_exceeded(nan, nan, 0.0)
    assert not deadband_exceeded(1.0, 1.0, 0.0)
    assert deadband_exceeded(1.0, 1.5001, 0.5)
    assert not deadband_exceeded(1.0, 1.5, 0.5)
    assert deadband_exceeded(1.0, inf, 0.5)
    assert deadband_exceeded(inf, -inf, 0.5)
    assert not deadband_exceeded(inf, -inf, inf)
    assert not deadband_exceeded(inf, 2.0, inf)


# -- lookups and searches ---------------------------------------------------------------


def make_pvdb() -> dict[str, Any]:
    return {
        "AO": ChannelDouble(value=3.25, units="mm", precision=3, timestamp=1e9),
        "WF": ChannelDouble(value=np.arange(10.0)),
        "SWF": ChannelDouble(value=np.arange(5.0), max_length=10),
        "SO": ChannelString(value="hello"),
        "LS": ChannelChar(value="y" * 50 + "END", max_length=100),
        "MB": ChannelEnum(value=1, enum_strings=["Off", "On"]),
        "AO.EGU": ChannelString(value="mm"),
    }


def test_lookup_finds_fields_and_views() -> None:
    pvdb = make_pvdb()
    server = Server(pvdb, server_config())
    server.states.create("st")
    assert server.lookup("AO") is pvdb["AO"]
    assert server.lookup("AO.VAL") is pvdb["AO"]
    assert server.lookup("AO.") is pvdb["AO"]
    assert server.lookup('AO.{"dbnd":{}}') is not pvdb["AO"]
    assert server.lookup("AO.EGU") is pvdb["AO.EGU"]
    assert isinstance(server.lookup("AO.EGU$"), FilteredChannel)
    assert server.lookup("AO.DESC") is None
    assert server.lookup("NOPE.[1:2]") is None
    assert server.lookup("AO.$") is None  # '$' needs a string
    assert server.lookup("WF.$") is None
    assert server.lookup('AO.{"sync":{"m":"while","s":"other"}}') is None
    assert server.lookup('AO.{"sync":{"m":"while","s":"st"}}') is not None
    assert server.lookup('AO.{"bogus":{}}') is None
    view = server.lookup("WF.[1:3]")
    assert view is not None and (view.native_type, view.max_length, view.length) == (6, 3, 3)
    view = server.lookup("SWF.[1:8]")
    assert view is not None and (view.max_length, view.length) == (8, 4)
    view = server.lookup("SO.$")
    assert view is not None and (view.native_type, view.max_length, view.length) == (4, 40, 6)
    view = server.lookup("AO.[1:3]")  # arr passes scalars
    assert view is not None and (view.native_type, view.max_length) == (6, 1)
    assert server.lookup("WF.[20:]").max_length == 0  # type: ignore[union-attr]
    only_val = Server({"X.VAL": pvdb["WF"]}, server_config())
    assert only_val.lookup("X") is None
    assert only_val.lookup("X.") is pvdb["WF"]
    assert only_val.lookup("X.[1:2]").max_length == 2  # type: ignore[union-attr]
    server.dotless_modifiers = False
    assert server.lookup("WF[1:3]") is None
    assert server.lookup("WF.[1:3]") is not None


def test_search_replies_for_decorated_names_only_when_valid() -> None:
    server = Server(make_pvdb(), server_config())
    server.dotless_modifiers = True  # "WF[1:3]" below is the caioc extension
    do_reply = SearchReply.DO_REPLY
    for name in ("WF.[1:3]", 'WF.{"arr":{"s":1}}', "SO.$", "AO.VAL", 'AO.{"ts":{}}', "WF[1:3]"):
        assert type(server.search_reply(SearchRequest(name, 1))) is SearchResponse, name
    for name in ("WF.[1:", 'WF.{"arr":{"x":1}}', "AO.$", "NOPE.[1:2]", 'AO.{"dec":{"n":0}}'):
        assert server.search_reply(SearchRequest(name, 1)) is None, name
        reply = server.search_reply(SearchRequest(name, 1, reply=do_reply))
        assert type(reply) is NotFoundResponse, name


def test_states_registry() -> None:
    states = States()
    states.create("a")
    assert "a" in states and not states.get("a") and list(states) == ["a"]
    states.set("a")
    states.create("a")  # creating again keeps the value
    assert states.get("a") and len(states) == 1
    states.clear("a")
    assert not states.get("a")
    with pytest.raises(KeyError):
        states.set("b")
    with pytest.raises(KeyError):
        states.get("b")


# -- through the network, in process ---------------------------------------------------------


class Client(RawClient):
    """A raw CA client with reads, writes and filtered subscriptions."""

    async def open(self, name: str) -> Any:
        """The connected channel, or None after CREATE_CH_FAIL."""
        channel = self.core.create_channel(name)
        self.send(channel.create())

        def failed() -> bool:
            return any(
                isinstance(c, CreateChFailResponse) and c.cid == channel.cid for c in self.received
            )

        await self.receive(lambda: channel.sid is not None or failed())
        return None if failed() else channel

    async def read(
        self, channel: Any, data_type: int | None = None, count: int | None = None
    ) -> Any:
        request = channel.read(data_type, count)
        self.send(request)

        def reply() -> Any:
            return next(
                (
                    c
                    for c in self.received
                    if isinstance(c, ReadNotifyResponse) and c.ioid == request.ioid
                ),
                None,
            )

        await self.receive(lambda: reply() is not None)
        return reply()

    async def write(self, channel: Any, data: Any, data_type: int) -> int:
        request = channel.write(data, data_type)
        self.send(request)

        def reply() -> Any:
            return next(
                (
                    c
                    for c in self.received
                    if isinstance(c, WriteNotifyResponse) and c.ioid == request.ioid
                ),
                None,
            )

        await self.receive(lambda: reply() is not None)
        return int(reply().status)

    def subscribe(
        self, channel: Any, data_type: int | None = None, count: int | None = None
    ) -> int:
        request = channel.subscribe(data_type, count)
        self.send(request)
        return int(request.subscriptionid)

    def updates(self, subscriptionid: int) -> list[Any]:
        return [
            c.to_python()[0]
            for c in self.received
            if isinstance(c, EventAddResponse) and c.subscriptionid == subscriptionid
        ]

    async def sync(self) -> None:
        """Round trip an ECHO: every update sent before it has arrived."""
        seen = sum(isinstance(c, EchoResponse) for c in self.received)
        self.send(EchoRequest())
        await self.receive(lambda: sum(isinstance(c, EchoResponse) for c in self.received) > seen)


@contextlib.asynccontextmanager
async def connected(pvdb: dict[str, Any]) -> AsyncIterator[tuple[Server, Client]]:
    server = Server(pvdb, server_config())
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp_port)
    client = Client(reader, writer)
    client.send(VersionRequest(0))
    try:
        yield server, client
    finally:
        writer.close()
        await server.stop()


async def put(client: Client, data: Any, value: Any) -> None:
    """Set ``data`` and wait until the client has its update (none coalesce)."""
    await data.set(value)
    await client.sync()


def as_list(value: Any) -> list[Any]:
    return list(np.atleast_1d(value).tolist())


def test_array_filter_reads() -> None:
    async def scenario() -> None:
        async with connected(make_pvdb()) as (_, client):
            answers = {}
            for name in (
                "WF.[1:3]",
                'WF.{"arr":{"s":1,"e":5,"i":2}}',
                "WF.[-3:]",
                "WF.[2]",
                "WF.[2:-1:5]",
                "WF.[2:1:5]",
                "SWF.[1:8]",
                "SWF.[-2:]",
                'WF.{"arr":{"s":1},"arr":{"s":2}}',
                "AO.[1:3]",
            ):
                channel = await client.open(name)
                reply = await client.read(channel)
                answers[name] = (channel.native_data_count, as_list(reply.to_python()[0]))
            assert answers == {
                "WF.[1:3]": (3, [1.0, 2.0, 3.0]),
                'WF.{"arr":{"s":1,"e":5,"i":2}}': (3, [1.0, 3.0, 5.0]),
                "WF.[-3:]": (3, [7.0, 8.0, 9.0]),
                "WF.[2]": (1, [2.0]),
                "WF.[2:-1:5]": (4, [2.0, 3.0, 4.0, 5.0]),
                "WF.[2:1:5]": (4, [2.0, 3.0, 4.0, 5.0]),
                "SWF.[1:8]": (8, [1.0, 2.0, 3.0, 4.0]),
                "SWF.[-2:]": (2, [3.0, 4.0]),
                'WF.{"arr":{"s":1},"arr":{"s":2}}': (7, [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]),
                "AO.[1:3]": (1, [3.25]),
            }
            channel = await client.open("WF.[1:3]")
            padded = await client.read(channel, ChannelType.DOUBLE, 5)
            assert padded.data.tolist() == [1.0, 2.0, 3.0, 0.0, 0.0]
            text = await client.read(channel, ChannelType.STRING)
            assert text.to_python()[0] == ["1.000000", "2.000000", "3.000000"]
            timed = await client.read(channel, ChannelType.TIME_LONG)
            value, metadata = timed.to_python()
            assert value.tolist() == [1, 2, 3] and metadata["severity"] == 0
            empty = await client.open("WF.[20:]")
            assert empty.native_data_count == 0
            assert (await client.read(empty)).data_count == 0

    run(scenario)


def test_array_filter_monitors_and_puts() -> None:
    async def scenario() -> None:
        pvdb = make_pvdb()
        async with connected(pvdb) as (_, client):
            channel = await client.open("WF.[1:3]")
            sub = client.subscribe(channel)
            await client.sync()
            await put(client, pvdb["WF"], np.arange(10.0) * 10)
            await put(client, pvdb["WF"], [5.0, 6.0])
            await client.sync()
            updates = [as_list(u) for u in client.updates(sub)]
            assert updates == [[1.0, 2.0, 3.0], [10.0, 20.0, 30.0], [6.0]]
            # a put goes to the whole PV, as dbChannelPut ignores filters
            assert await client.write(channel, [100.0, 200.0], ChannelType.DOUBLE) == 1
            assert pvdb["WF"].value.tolist() == [100.0, 200.0]
            await client.sync()
            assert as_list(client.updates(sub)[-1]) == [200.0]

    run(scenario)


def test_long_string_of_a_string_channel() -> None:
    async def scenario() -> None:
        pvdb = make_pvdb()
        async with connected(pvdb) as (_, client):
            channel = await client.open("SO.$")
            assert (channel.native_data_type, channel.native_data_count) == (4, 40)
            reply = await client.read(channel)
            assert bytes(reply.data) == b"hello\0"
            full = await client.read(channel, ChannelType.CHAR, 40)
            assert bytes(full.data) == b"hello" + bytes(35)
            as_string = await client.read(channel, ChannelType.STRING)
            assert as_string.to_python()[0] == ["104", "101", "108", "108", "111", "0"]
            ctrl = await client.read(channel, ChannelType.CTRL_CHAR)
            assert ctrl.to_python()[1]["units"] == "" and ctrl.data_count == 6
            # every CHAR reply ends in a NUL, as epics-base sends a string field's
            sliced = await client.read(await client.open("SO.$[1:2]"))
            assert bytes(sliced.data) == b"e\0"
            short = await client.read(channel, ChannelType.TIME_CHAR, 3)
            assert bytes(short.data) == b"he\0"
            numbers = await client.read(channel, ChannelType.INT, 3)
            assert numbers.data.tolist() == [104, 101, 108]
            sub = client.subscribe(channel, ChannelType.TIME_CHAR)
            text = np.frombuffer(b"goodbye world\0", np.uint8)
            assert await client.write(channel, text, ChannelType.CHAR) == 1
            assert pvdb["SO"].value == "goodbye world"
            assert await client.write(channel, np.full(60, 120, np.uint8), ChannelType.CHAR) == 1
            assert pvdb["SO"].value == "x" * 39  # truncated to the field, as epics does
            await client.sync()
            updates = [bytes(np.asarray(u, np.uint8)) for u in client.updates(sub)]
            assert updates == [b"hello\0", b"goodbye world\0", b"x" * 39 + b"\0"]

    run(scenario)


def test_long_string_of_a_char_array() -> None:
    async def scenario() -> None:
        pvdb = make_pvdb()
        async with connected(pvdb) as (_, client):
            channel = await client.open("LS.$")
            assert (channel.native_data_type, channel.native_data_count) == (4, 100)
            reply = await client.read(channel)
            assert bytes(reply.data) == b"y" * 50 + b"END\0"
            text = np.frombuffer(b"short\0", np.uint8)
            assert await client.write(channel, text, ChannelType.CHAR) == 1
            assert bytes((await client.read(channel)).data) == b"short\0"

    run(scenario)


def test_deadband_filters_monitors_not_reads() -> None:
    async def scenario() -> None:
        pvdb = make_pvdb()
        async with connected(pvdb) as (_, client):
            subs = {}
            for key, name in (
                ("abs", 'AO.{"dbnd":{"d":0.5}}'),
                ("zero", 'AO.{"dbnd":{}}'),
                ("rel", 'AO.{"dbnd":{"rel":10}}'),
                ("string", 'AO.{"dbnd":{"abs":0.5}}'),
            ):
                channel = await client.open(name)
                kind = ChannelType.STRING if key == "string" else ChannelType.TIME_DOUBLE
                subs[key] = client.subscribe(channel, kind)
            await client.sync()
            for value in (3.3, 3.5, 3.8, 4.0, 4.2, 5, 6, 7, 8, 9, 10, 10, 11, 1e-3, 0, 0, 0.2):
                await put(client, pvdb["AO"], value)
            await client.sync()
            # what softioc's dbnd sends for the same puts (see the module doc)
            assert client.updates(subs["abs"]) == [3.25, 3.8, 5, 6, 7, 8, 9, 10, 11, 0.001]
            assert client.updates(subs["zero"]) == [
                *(3.25, 3.3, 3.5, 3.8, 4.0, 4.2, 5, 6, 7, 8, 9, 10, 11, 0.001, 0, 0.2)
            ]
            assert client.updates(subs["rel"]) == [
                *(3.25, 3.8, 4.2, 5, 6, 7, 8, 9, 10, 0.001, 0, 0.2)
            ]
            assert client.updates(subs["string"]) == [
                *("3.250", "3.800", "5.000", "6.000", "7.000", "8.000", "9.000", "10.000"),
                *("11.000", "0.001"),
            ]
            channel = await client.open('AO.{"dbnd":{"d":100}}')
            assert (await client.read(channel)).to_python()[0] == 0.2
            await put(client, pvdb["AO"], 0.3)
            assert (await client.read(channel)).to_python()[0] == 0.3

    run(scenario)


def test_relative_deadband_of_negative_and_special_values() -> None:
    async def scenario() -> None:
        pvdb = make_pvdb()
        async with connected(pvdb) as (_, client):
            rel = client.subscribe(await client.open('AO.{"dbnd":{"rel":10}}'))
            absolute = client.subscribe(await client.open('AO.{"dbnd":{"d":0.5}}'))
            await client.sync()
            await put(client, pvdb["AO"], 0.2)
            await client.sync()
            del client.received[:]
            nan, inf = math.nan, math.inf
            for value in (-5.0, -5.2, -5.4, -6.0, -6.1, nan, 1.0, inf, -inf, 2.0):
                await put(client, pvdb["AO"], value)
            await client.sync()
            # epics-base: value * d / 100 is negative below zero, so all pass;
            # after +inf the deadband is infinite and nothing passes any more
            assert str(client.updates(rel)) == str([-5.0, -5.2, -5.4, -6.0, -6.1, nan, 1.0, inf])
            assert str(client.updates(absolute)) == str([-5.0, -6.0, nan, 1.0, inf, -inf, 2.0])

    run(scenario)


def test_decimate_passes_every_nth_update() -> None:
    async def scenario() -> None:
        pvdb = make_pvdb()
        async with connected(pvdb) as (_, client):
            three = client.subscribe(await client.open('AO.{"dec":{"n":3}}'))
            two = client.subscribe(await client.open('AO.{"dec":{"n":2}}'))
            await client.sync()
            for value in range(1, 10):
                await put(client, pvdb["AO"], float(value))
            await client.sync()
            assert client.updates(three) == [3.25, 3, 6, 9]
            assert client.updates(two) == [3.25, 2, 4, 6, 8]

    run(scenario)


def test_sync_modes_follow_the_named_state() -> None:
    async def scenario() -> None:
        pvdb = make_pvdb()
        async with connected(pvdb) as (server, client):
            server.states.create("st")
            modes = ("before", "first", "last", "after", "while", "unless")
            subs = {}
            for mode in modes:
                channel = await client.open(f'AO.{{"sync":{{"m":"{mode}","s":"st"}}}}')
                subs[mode] = client.subscribe(channel)
            await client.sync()
            for step in (3.3, 3.5, 3.8, 4.0, 4.2, "set", 5, 6, 7, "clear", 8, 9, "set", 10):
                if step == "set":
                    server.states.set("st")
                elif step == "clear":
                    server.states.clear("st")
                else:
                    await put(client, pvdb["AO"], step)
            server.states.clear("st")
            for value in (11, 1e-3, 0.2):
                await put(client, pvdb["AO"], value)
            await client.sync()
            # what softioc's sync filter sends for the same sequence
            assert {mode: client.updates(subs[mode]) for mode in modes} == {
                "before": [4.2, 9],
                "first": [5, 10],
                "last": [7, 10],
                "after": [8, 11],
                "while": [5, 6, 7, 10],
                "unless": [3.25, 3.3, 3.5, 3.8, 4.0, 4.2, 8, 9, 11, 0.001, 0.2],
            }

    run(scenario)


def test_timestamp_filter_stamps_reads_and_updates_with_now() -> None:
    async def scenario() -> None:
        pvdb = make_pvdb()
        async with connected(pvdb) as (_, client):
            plain = await client.open("AO")
            stamped = await client.open('AO.{"ts":{}}')
            old = (await client.read(plain, ChannelType.TIME_DOUBLE)).to_python()[1]
            assert old["timestamp"] == pytest.approx(1e9)
            before = time.time()
            new = (await client.read(stamped, ChannelType.TIME_DOUBLE)).to_python()
            assert new[0] == 3.25 and before - 1 <= new[1]["timestamp"] <= time.time() + 1
            sub = client.subscribe(stamped, ChannelType.TIME_DOUBLE)
            await client.sync()
            (update,) = (c for c in client.received if isinstance(c, EventAddResponse))
            meta = update.metadata
            assert meta is not None
            stamp = epics_to_posix(int(meta["secondsSinceEpoch"]), int(meta["nanoseconds"]))
            assert stamp >= before - 1 and update.subscriptionid == sub
            # types without a timestamp are unchanged
            assert (await client.read(stamped, ChannelType.CTRL_DOUBLE)).to_python()[1][
                "units"
            ] == "mm"

    run(scenario)


def test_invalid_specs_fail_to_create_and_unsubscribing_frees_the_pv() -> None:
    async def scenario() -> None:
        pvdb = make_pvdb()
        async with connected(pvdb) as (_, client):
            for name in ('AO.{"dec":{"n":0}}', "AO.$", 'WF.{"arr":{"x":1}}', "WF.[1:", "NO.[1]"):
                assert await client.open(name) is None, name
            channel = await client.open('AO.{"dec":{"n":2}}')
            sub = client.subscribe(channel)
            client.subscribe(channel)
            await client.sync()
            assert pvdb["AO"].subscription_count == 2
            client.send(channel.unsubscribe(sub))
            await client.sync()
            assert pvdb["AO"].subscription_count == 1
            client.send(channel.clear())
            await client.sync()
            assert pvdb["AO"].subscription_count == 0

    run(scenario)


def test_enum_and_special_types_pass_through() -> None:
    async def scenario() -> None:
        pvdb = make_pvdb()
        async with connected(pvdb) as (_, client):
            channel = await client.open('MB.{"dbnd":{"d":0.5}}')
            assert (await client.read(channel, ChannelType.STRING)).to_python()[0] == "On"
            sub = client.subscribe(channel, ChannelType.CTRL_ENUM)
            await client.sync()
            await put(client, pvdb["MB"], 0)
            await put(client, pvdb["MB"], 0)
            await client.sync()
            assert client.updates(sub) == [1, 0]
            name = await client.read(channel, ChannelType.CLASS_NAME)
            assert name.to_python()[0] == "caioc"

    run(scenario)

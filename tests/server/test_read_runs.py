"""Reads that arrive back to back are answered as a run, byte for byte as one by one.

A client reading many channels at once (libca's ``ca_array_get`` for each,
then one flush) sends its READ_NOTIFY requests in one segment; the server
answers such a run from the channels' caches in one pass. These tests send
the same requests once as one segment (the run) and once one at a time,
each after the previous reply (never a run), and compare the bytes.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import numpy as np
import pytest
from peers import serving
from waiting import run, until

from caioc.ca import AccessRights, ChannelType, ReadRun, VirtualCircuit
from caioc.server import _circuit
from caioc.server._data import ChannelDouble, ChannelEnum, ChannelInteger, ChannelString

TIMEOUT = 10.0
HEADER = struct.Struct(">HHHHII")
VERSION, CREATE_CHAN, READ_NOTIFY, ERROR = 0, 18, 15, 11


class Unreadable(ChannelDouble):
    """A channel nobody may read (its CREATE_CHAN grants no rights)."""

    def access_rights(self, host: str, user: str) -> AccessRights:
        return AccessRights.NO_ACCESS


def with_getter(data: ChannelDouble, value: float) -> ChannelDouble:
    """``data`` with a read that awaits before answering, as a PVGroup getter does."""
    read = data.read

    async def read_after_getter(data_type: int, data_count: int, client_version: int) -> Any:
        await asyncio.sleep(0)
        await data.set(value)
        return await read(data_type, data_count, client_version)

    data.read = read_after_getter  # type: ignore[method-assign]
    return data


def database() -> dict[str, Any]:
    return {
        "D": ChannelDouble(value=1.5, units="mm", precision=3),
        "I": ChannelInteger(value=-7),
        "S": ChannelString(value="text"),
        "E": ChannelEnum(value=1, enum_strings=("off", "on")),
        "W": ChannelDouble(value=np.arange(10, dtype=np.float64)),
        "N": Unreadable(value=2.0),
        "G": with_getter(ChannelDouble(value=0.0), 42.0),
    }


# (name, data type, count): plain reads, every DBR class, counts 0 / short /
# long, no read access (an error), a getter.
READS = [
    ("D", ChannelType.DOUBLE, 1),
    ("D", ChannelType.TIME_DOUBLE, 1),
    ("D", ChannelType.CTRL_DOUBLE, 1),
    ("D", ChannelType.STRING, 1),
    ("I", ChannelType.LONG, 1),
    ("I", ChannelType.STS_INT, 1),
    ("S", ChannelType.STRING, 1),
    ("E", ChannelType.CTRL_ENUM, 1),
    ("E", ChannelType.STRING, 1),
    ("W", ChannelType.DOUBLE, 0),
    ("W", ChannelType.DOUBLE, 3),
    ("W", ChannelType.LONG, 20),
    ("W", ChannelType.TIME_DOUBLE, 10),
    ("N", ChannelType.DOUBLE, 1),
    ("G", ChannelType.DOUBLE, 1),
    ("D", ChannelType.CLASS_NAME, 1),
    ("D", ChannelType.DOUBLE, 1),
]


class Raw:
    """A socket speaking just enough CA: version, create, raw requests, raw replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.sids: dict[str, int] = {}

    @classmethod
    async def open(cls, port: int, names: list[str]) -> Raw:
        raw = cls(*await asyncio.open_connection("127.0.0.1", port))
        out = HEADER.pack(VERSION, 0, 0, 13, 0, 0)
        for cid, name in enumerate(names):
            padded = name.encode() + bytes(8 - len(name) % 8)
            out += HEADER.pack(CREATE_CHAN, len(padded), 0, 0, cid, 13) + padded
        raw.writer.write(out)
        replies = await raw.replies(len(names), skip=(VERSION, 22))  # 22: ACCESS_RIGHTS
        for header, _ in replies:
            assert header[0] == CREATE_CHAN, header
            raw.sids[names[header[4]]] = header[5]
        return raw

    async def replies(self, count: int, skip: tuple[int, ...] = ()) -> list[tuple[tuple, bytes]]:
        """The next ``count`` messages (header values, whole bytes), not counting ``skip``."""
        found: list[tuple[tuple, bytes]] = []
        while len(found) < count:
            head = await asyncio.wait_for(self.reader.readexactly(16), TIMEOUT)
            header = HEADER.unpack(head)
            body = await asyncio.wait_for(self.reader.readexactly(header[1]), TIMEOUT)
            if header[0] not in skip:
                found.append((header, head + body))
        return found

    def request(self, name: str, data_type: int, count: int, ioid: int) -> bytes:
        return HEADER.pack(READ_NOTIFY, 0, data_type, count, self.sids[name], ioid)

    def close(self) -> None:
        self.writer.close()


async def answers(raw: Raw, reads: list[tuple[str, int, int]], together: bool) -> bytes:
    requests = [raw.request(name, t, c, ioid) for ioid, (name, t, c) in enumerate(reads)]
    got: list[bytes] = []
    if together:
        raw.writer.write(b"".join(requests))
        got = [whole for _, whole in await raw.replies(len(requests))]
    else:
        for request in requests:
            raw.writer.write(request)
            got += [whole for _, whole in await raw.replies(1)]
    return b"".join(got)


@pytest.fixture
def runs_taken(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Lengths of the runs the server took (to know the shortcut really ran)."""
    taken: list[int] = []
    original = VirtualCircuit.read_notify_run

    def counting(self: Any, *args: Any, **kwargs: Any) -> ReadRun | None:
        run = original(self, *args, **kwargs)
        if run is not None:
            taken.append(len(run.ioids))
        return run

    monkeypatch.setattr(VirtualCircuit, "read_notify_run", counting)
    return taken


def test_a_run_is_answered_as_each_read_alone(runs_taken: list[int]) -> None:
    got: dict[str, bytes] = {}

    async def scenario() -> None:
        async with serving(database()) as server:
            # one circuit for both, so that the sids echoed in the ERRORs agree
            raw = await Raw.open(server.tcp_port, sorted({name for name, _, _ in READS}))
            got["alone"] = await answers(raw, READS, together=False)
            assert runs_taken == []
            got["together"] = await answers(raw, READS, together=True)
            raw.close()

    run(scenario)
    alone, together = got["alone"], got["together"]
    assert sum(runs_taken) == len(READS)
    assert together == alone
    # the read of the unreadable channel really is refused
    commands = [HEADER.unpack_from(message)[0] for message in split(together)]
    assert commands.count(ERROR) == 1


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize(
    "data_type",
    [ChannelType.DOUBLE, ChannelType.LONG, ChannelType.TIME_DOUBLE, ChannelType.STRING],
)
def test_a_uniform_run_is_answered_at_once_as_each_read_alone(
    data_type: int, count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same type, same size replies: the whole run at once (the case of libca's batch)."""
    at_once: list[bool] = []
    original = _circuit.CircuitLogic._answer_at_once

    def spying(self: Any, run: ReadRun) -> bool:
        at_once.append(original(self, run))
        return at_once[-1]

    monkeypatch.setattr(_circuit.CircuitLogic, "_answer_at_once", spying)
    reads = [(name, data_type, count) for name in ("D", "I", "E", "W", "G")[:4] * 5]
    got: dict[str, bytes] = {}

    async def scenario() -> None:
        pvdb = database()
        async with serving(pvdb) as server:
            raw = await Raw.open(server.tcp_port, ["D", "E", "I", "W"])
            await answers(raw, reads, together=False)
            await pvdb["D"].set(2.25)  # new values: their cached replies are gone
            await pvdb["I"].set(11)
            # first the changed ones from the encoder, then all from the caches
            got["together"] = await answers(raw, reads, together=True)
            got["alone"] = await answers(raw, reads, together=False)
            got["again"] = await answers(raw, reads, together=True)
            raw.close()

    run(scenario)
    assert at_once == [True, True]
    assert got["together"] == got["alone"] == got["again"]


def test_an_unknown_type_in_a_run_is_refused_and_the_circuit_closed(
    runs_taken: list[int],
) -> None:
    got: dict[str, Any] = {}

    async def scenario() -> None:
        async with serving(database()) as server:
            raw = await Raw.open(server.tcp_port, ["D"])
            reads = [raw.request("D", ChannelType.DOUBLE, 1, ioid) for ioid in range(20)]
            reads[12] = raw.request("D", 99, 1, 12)
            raw.writer.write(b"".join(reads))
            got["replies"] = await raw.replies(13)
            got["rest"] = await asyncio.wait_for(raw.reader.read(), TIMEOUT)  # b"": closed
            raw.close()

    run(scenario)
    replies, rest = got["replies"], got["rest"]
    assert runs_taken == [20]
    assert [h[0] for h, _ in replies] == [READ_NOTIFY] * 12 + [ERROR]
    assert replies[-1][0][4] == 0  # the ERROR's cid: the channel's
    assert HEADER.unpack_from(replies[-1][1], 16)[0] == READ_NOTIFY  # the request it refuses
    assert b"invalid DBR type 99" in replies[-1][1]
    assert rest == b""


def test_a_long_run_of_reads_is_answered_in_order() -> None:
    names = [f"PV{i}" for i in range(1500)]

    got: list[tuple[tuple, bytes]] = []

    async def scenario() -> None:
        pvdb = {name: ChannelDouble(value=float(i)) for i, name in enumerate(names)}
        async with serving(pvdb) as server:
            raw = await Raw.open(server.tcp_port, names)
            raw.writer.write(
                b"".join(raw.request(n, ChannelType.DOUBLE, 1, 10 + i) for i, n in enumerate(names))
            )
            got.extend(await raw.replies(len(names)))
            raw.close()

    run(scenario)
    replies = got
    assert [h[5] for h, _ in replies] == [10 + i for i in range(len(names))]
    assert all(h[:5] == (READ_NOTIFY, 8, ChannelType.DOUBLE, 1, 1) for h, _ in replies)
    assert [struct.unpack(">d", w[16:])[0] for _, w in replies] == [float(i) for i in range(1500)]


def test_a_value_changed_between_runs_is_read_fresh() -> None:
    async def scenario() -> None:
        data = {f"V{i}": ChannelDouble(value=1.0) for i in range(10)}
        async with serving(dict(data)) as server:
            raw = await Raw.open(server.tcp_port, list(data))
            batch = b"".join(raw.request(n, ChannelType.DOUBLE, 1, i) for i, n in enumerate(data))
            raw.writer.write(batch)
            first = [struct.unpack(">d", w[16:])[0] for _, w in await raw.replies(10)]
            for i, channel in enumerate(data.values()):
                await channel.set(float(i))
            raw.writer.write(batch)
            second = [struct.unpack(">d", w[16:])[0] for _, w in await raw.replies(10)]
            raw.close()
            assert first == [1.0] * 10
            assert second == [float(i) for i in range(10)]


def split(stream: bytes) -> list[bytes]:
    messages = []
    while stream:
        size = 16 + HEADER.unpack_from(stream)[1]
        messages.append(stream[:size])
        stream = stream[size:]
    return messages


class Switchable(ChannelDouble):
    """A channel whose readers can be shut out (as an .acf rule change would)."""

    readable = True

    def access_rights(self, host: str, user: str) -> AccessRights:
        return AccessRights.READ_WRITE if self.readable else AccessRights.NO_ACCESS


def test_a_run_follows_read_access_taken_away_and_given_back(runs_taken: list[int]) -> None:
    async def scenario() -> None:
        pvdb: dict[str, Any] = {f"P{i}": ChannelDouble(value=float(i)) for i in range(9)}
        pvdb["L"] = locked = Switchable(value=-1.0)
        names = sorted(pvdb)
        async with serving(pvdb) as server:
            raw = await Raw.open(server.tcp_port, names)
            batch = b"".join(raw.request(n, ChannelType.DOUBLE, 1, i) for i, n in enumerate(names))

            async def commands() -> list[int]:
                raw.writer.write(batch)
                return [header[0] for header, _ in await raw.replies(len(names))]

            assert await commands() == [READ_NOTIFY] * len(names)
            Switchable.readable = False
            for circuit in server.circuits:
                circuit.recheck_rights()  # what an access security change does
            await raw.replies(1)  # the ACCESS_RIGHTS it pushes
            got = await commands()
            assert got[names.index("L")] == ERROR
            assert got.count(READ_NOTIFY) == len(names) - 1
            Switchable.readable = True
            for circuit in server.circuits:
                circuit.recheck_rights()
            await raw.replies(1)
            assert await commands() == [READ_NOTIFY] * len(names)
            assert locked.value == -1.0
            raw.close()

    try:
        run(scenario)
    finally:
        Switchable.readable = True
    assert runs_taken == [10, 10, 10]


WRITE_NOTIFY = 19


def test_a_read_after_a_put_still_in_progress_waits_for_it() -> None:
    """Reads are answered at once only when nothing is in progress before them."""
    got: list[tuple[tuple, bytes]] = []

    async def scenario() -> None:
        release = asyncio.Event()

        async def slow_put(channel: Any, value: Any) -> Any:
            await release.wait()
            return value

        pvdb: dict[str, Any] = {"X": ChannelDouble(value=1.0, put_hook=slow_put)}
        async with serving(pvdb) as server:
            raw = await Raw.open(server.tcp_port, ["X"])
            sid = raw.sids["X"]
            put = HEADER.pack(WRITE_NOTIFY, 8, ChannelType.DOUBLE, 1, sid, 1)
            raw.writer.write(put + struct.pack(">d", 5.0))
            (circuit,) = server.circuits
            await until(lambda: circuit.busy, "the put to be in progress")
            raw.writer.write(raw.request("X", ChannelType.DOUBLE, 1, 2))
            await until(lambda: len(circuit.queue) == 1, "the read to be queued behind it")
            release.set()
            got.extend(await raw.replies(2))
            raw.close()

    run(scenario)
    assert [(header[0], header[5]) for header, _ in got] == [(WRITE_NOTIFY, 1), (READ_NOTIFY, 2)]
    assert struct.unpack(">d", got[1][1][16:])[0] == 5.0


def test_a_read_with_nothing_before_it_is_answered_in_the_receiving_callback() -> None:
    async def scenario() -> None:
        async with serving({"X": ChannelDouble(value=2.5)}) as server:
            raw = await Raw.open(server.tcp_port, ["X"])
            (circuit,) = server.circuits
            flushed: list[list[bytes]] = []
            flush = circuit.flush

            def spying() -> None:
                flushed.append(list(circuit.out))
                flush()

            circuit.flush = spying  # type: ignore[method-assign]
            receive = circuit.data_received

            def receiving(data: bytes) -> None:
                receive(data)
                # answered before this callback returns: no task in between
                assert flushed and struct.unpack(">d", flushed[-1][-1])[0] == 2.5

            circuit.data_received = receiving  # type: ignore[method-assign]
            raw.writer.write(raw.request("X", ChannelType.DOUBLE, 1, 7))
            ((header, whole),) = await raw.replies(1)
            assert header[5] == 7 and struct.unpack(">d", whole[16:])[0] == 2.5
            raw.close()

    run(scenario)


@pytest.mark.parametrize("together", [False, True], ids=["alone", "as a run"])
def test_a_read_of_an_invalid_type_is_refused_whatever_the_cache_holds(together: bool) -> None:
    """An invalid type never finds a cached reply of a valid (type, count).

    Replies are cached under one int per (type, count): type 70 (0b1000110)
    with count 1 must not find DOUBLE (6) with count 1, cached just before,
    as ``count << 6 | type`` would. The invalid read gets an ERROR (and the
    circuit ends, as for any unknown type).
    """
    reads = [("W", ChannelType.DOUBLE, 1)] * 8 + [("W", 70, 1)]
    got: list[tuple[tuple, bytes]] = []

    async def scenario() -> None:
        async with serving(database()) as server:
            raw = await Raw.open(server.tcp_port, ["W"])
            await answers(raw, reads[:1], together=False)  # the DOUBLE x 1 reply is cached
            requests = [raw.request(n, t, c, ioid) for ioid, (n, t, c) in enumerate(reads)]
            if together:
                raw.writer.write(b"".join(requests))
                got.extend(await raw.replies(len(requests)))
            else:
                for request in requests:
                    raw.writer.write(request)
                    got.extend(await raw.replies(1))
            raw.close()

    run(scenario)
    assert [header[0] for header, _ in got] == [READ_NOTIFY] * 8 + [ERROR]
    assert all(header[2:4] == (ChannelType.DOUBLE, 1) for header, _ in got[:8])

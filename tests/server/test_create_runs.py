"""CREATE_CHAN requests that arrive back to back are taken as a run: same replies, same state.

A client connecting many channels (libca after each batch of search
replies) sends their CREATE_CHAN requests in one segment; the server takes
such a run without a command object per request. These tests send the same
requests once as one segment (a run) and once one at a time, each after
the previous reply (never a run), and compare the replies byte for byte
(but for the server ids, which count on from one circuit to the next).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import ca_environment, free_port, run_pyepics, server_config, serving
from waiting import run

from caioc.ca import AccessRights, VirtualCircuit
from caioc.server._data import ChannelDouble, ChannelInteger, ChannelString

TIMEOUT = 10.0
HEADER = struct.Struct(">HHHHII")
VERSION, ERROR, CREATE_CHAN, ACCESS_RIGHTS, CREATE_CH_FAIL = 0, 11, 18, 22, 26


def database() -> dict[str, Any]:
    names = {f"pv:{i}": ChannelDouble(value=float(i)) for i in range(20)}
    names["ro"] = ChannelInteger(value=3, read_only=True)
    names["text"] = ChannelString(value="hello")
    names["wave"] = ChannelDouble(value=[1.0, 2.0, 3.0])
    names["é"] = ChannelDouble(value=1.0)
    return names


def create(cid: int, name: bytes, *, pad: bytes | None = None) -> bytes:
    """A CREATE_CHAN request; ``pad`` replaces the NUL padding (junk after the NUL)."""
    body = name + b"\0"
    body += (pad if pad is not None else bytes(8))[: -len(body) % 8]
    return HEADER.pack(CREATE_CHAN, len(body), 0, 0, cid, 13) + body


# Known names, an unknown one (CREATE_CH_FAIL), a read-only one, junk after
# the NUL, UTF-8 and non-UTF-8 bytes, a string and an array channel.
REQUESTS = [
    create(1, b"pv:0"),
    create(2, b"pv:1"),
    create(3, b"missing"),
    create(4, b"ro"),
    create(5, b"pv:2", pad=b"\0junkjunk"),
    create(6, "é".encode()),
    create(7, b"\xff\xfe"),
    create(8, b"text"),
    create(9, b"wave"),
    *(create(10 + i, f"pv:{i}".encode()) for i in range(3, 20)),
]


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Raw:
        raw = cls(*await asyncio.open_connection("127.0.0.1", port))
        raw.writer.write(HEADER.pack(VERSION, 0, 0, 13, 0, 0))
        assert (await raw.replies(1))[0][0][0] == VERSION  # the server is idle from here
        return raw

    async def replies(self, count: int) -> list[tuple[tuple[int, ...], bytes]]:
        found = []
        while len(found) < count:
            head = await asyncio.wait_for(self.reader.readexactly(16), TIMEOUT)
            header = HEADER.unpack(head)
            body = await asyncio.wait_for(self.reader.readexactly(header[1]), TIMEOUT)
            found.append((header, head + body))
        return found

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), TIMEOUT) == b""


def expected_replies(request: bytes) -> int:
    """ACCESS_RIGHTS + CREATE_CHAN for a PV served, CREATE_CH_FAIL for another."""
    name = request[16:].split(b"\0")[0]
    return 2 if name.decode("utf-8", "surrogateescape") in database() else 1


def normalised(replies: list[tuple[tuple[int, ...], bytes]]) -> list[bytes]:
    """The replies with the server's channel id of each CREATE_CHAN zeroed."""
    out = []
    for header, whole in replies:
        if header[0] == CREATE_CHAN:
            whole = HEADER.pack(*header[:5], 0) + whole[16:]
        out.append(whole)
    return out


async def replies_to(port: int, requests: list[bytes], together: bool) -> list[bytes]:
    raw = await Raw.open(port)
    got = []
    if together:
        raw.writer.write(b"".join(requests))
        got = await raw.replies(sum(map(expected_replies, requests)))
    else:
        for request in requests:
            raw.writer.write(request)
            got += await raw.replies(expected_replies(request))
    raw.writer.close()
    return normalised(got)


@pytest.fixture
def runs_taken(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Lengths of the create runs the server took (to know the shortcut really ran)."""
    taken: list[int] = []
    original = VirtualCircuit.create_chan_run

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if result is not None:
            taken.append(len(result[0]))
        return result

    monkeypatch.setattr(VirtualCircuit, "create_chan_run", counting)
    return taken


def test_a_run_of_creates_is_answered_as_each_create_alone(runs_taken: list[int]) -> None:
    async def scenario() -> None:
        async with serving(database()) as server:
            alone = await replies_to(server.tcp_port, REQUESTS, together=False)
            assert runs_taken == []
            together = await replies_to(server.tcp_port, REQUESTS, together=True)
            assert sum(runs_taken) == len(REQUESTS)
            assert together == alone
            kinds = [HEADER.unpack_from(reply)[0] for reply in together]
            assert kinds.count(CREATE_CH_FAIL) == 2  # "missing" and the non-UTF-8 name
            rights = [HEADER.unpack_from(r)[5] for r in together if r[1] == ACCESS_RIGHTS]
            assert int(AccessRights.READ) in rights  # "ro"

    run(scenario)


def test_the_channels_of_a_run_serve_reads(runs_taken: list[int]) -> None:
    """The core records a run's channels as it records created ones: reads work on them."""

    async def scenario() -> None:
        async with serving(database()) as server:
            raw = await Raw.open(server.tcp_port)
            raw.writer.write(b"".join(create(cid, f"pv:{cid}".encode()) for cid in range(10)))
            sids = {}
            for header, _ in await raw.replies(20):
                if header[0] == CREATE_CHAN:
                    sids[header[4]] = header[5]
            assert runs_taken == [10]
            raw.writer.write(HEADER.pack(15, 0, 6, 1, sids[7], 99))  # READ_NOTIFY DOUBLE
            ((header, whole),) = await raw.replies(1)
            assert header[0] == 15 and header[5] == 99
            assert struct.unpack(">d", whole[16:24]) == (7.0,)
            raw.writer.close()

    run(scenario)


def test_a_cid_used_twice_in_a_segment_is_no_run_and_ends_the_circuit(
    runs_taken: list[int],
) -> None:
    """No run: the usual path answers the first four, refuses the reuse and hangs up."""
    requests = [create(1, b"pv:0"), create(2, b"pv:1"), create(3, b"pv:2"), create(4, b"pv:3")]
    requests += [create(2, b"pv:4"), create(5, b"pv:5")]

    async def scenario() -> None:
        async with serving(database()) as server:
            raw = await Raw.open(server.tcp_port)
            raw.writer.write(b"".join(requests))
            replies = await raw.replies(9)
            kinds = [header[0] for header, _ in replies]
            assert kinds == [ACCESS_RIGHTS, CREATE_CHAN] * 4 + [ERROR]
            assert await raw.closed()
            assert runs_taken == []
            raw.writer.close()

    run(scenario)


def test_a_long_name_or_other_commands_end_the_run(runs_taken: list[int]) -> None:
    long_name = b"x" * 1100  # over the run's 1 kB: the usual path takes it (and fails it)
    requests = [create(1, b"pv:0"), create(2, b"pv:1"), create(3, b"pv:2"), create(4, b"pv:3")]
    requests += [create(5, long_name), create(6, b"pv:4")]

    async def scenario() -> None:
        async with serving(database()) as server:
            together = await replies_to(server.tcp_port, requests, together=True)
            assert runs_taken == [4]
            alone = await replies_to(server.tcp_port, requests, together=False)
            assert together == alone

    run(scenario)


class Transport:
    """Just enough of an asyncio transport for a circuit fed by hand."""

    def __init__(self) -> None:
        self.sent = bytearray()
        self.closed = False
        self.limits = (16384, 65536)

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5064) if name == "peername" else None

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.sent += chunk

    def write(self, chunk: bytes) -> None:
        self.sent += chunk

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.limits

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.limits = (low, high)  # nothing is ever buffered here: never paused

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def message(cid: int, name: bytes, command: int, size_delta: int) -> bytes:
    body = name + bytes(-len(name) % 8 or 8)
    return HEADER.pack(command, len(body) + size_delta, 0, 0, cid, 13) + body


messages = st.lists(
    st.builds(
        message,
        st.integers(0, 6),  # cids: reuses are likely
        st.sampled_from([b"pv:0", b"pv:1", b"ro", b"missing", b"\xff", b"", b"x" * 1030]),
        st.sampled_from([CREATE_CHAN] * 6 + [23]),  # 23: ECHO among the creates
        # Sizes that lie would garble the rest of the segment: then the
        # circuit closes either way, but the creates of a run before the
        # garbage have had their replies, which one by one they never get.
        st.just(0),
    ),
    min_size=1,
    max_size=12,
)


def outcome(chunk: bytes, runs: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    """What a circuit sends and keeps after VERSION and then ``chunk`` in one segment."""
    from caioc.server import Server
    from caioc.server._server import _Circuit

    with monkeypatch.context() as patch:
        if not runs:
            patch.setattr(VirtualCircuit, "create_chan_run", lambda *args, **kwargs: None)

        async def feed() -> tuple[Any, ...]:
            server = Server(database(), server_config())
            circuit = _Circuit(server)
            transport = Transport()
            circuit.connection_made(transport)  # type: ignore[arg-type]
            circuit.data_received(HEADER.pack(VERSION, 0, 0, 13, 0, 0))
            await asyncio.sleep(0)
            circuit.data_received(chunk)
            for _ in range(20):  # let the command task finish what was queued
                await asyncio.sleep(0)
            channels = {
                cid: (channel.name, channel.state, channel.access_rights, channel.sid is None)
                for cid, channel in circuit.core.channels.items()
            }
            circuit.connection_lost(None)
            # server ids count on from one server to the next: compare without them
            replies = []
            sent = bytes(transport.sent)
            while len(sent) >= 16:
                header = HEADER.unpack_from(sent)
                whole = sent[: 16 + header[1]]
                if header[0] == CREATE_CHAN:
                    whole = HEADER.pack(*header[:5], 0) + whole[16:]
                replies.append(whole)
                sent = sent[16 + header[1] :]
            return replies, channels, transport.closed

        return asyncio.run(feed())


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(messages)
def test_any_run_of_creates_ends_as_one_by_one_would(
    monkeypatch: pytest.MonkeyPatch, chunk: list[bytes]
) -> None:
    data = b"".join(chunk)
    assert outcome(data, True, monkeypatch) == outcome(data, False, monkeypatch)


LIBCA_CONNECT = """
import ctypes
libca = epics.ca.initialize_libca()
# as an IOC client connecting a list of PVs: every ca_create_channel, then one
# ca_pend_io (libca sends the creates of each batch of search replies together)
chids = [ctypes.c_void_p() for _ in range(200)]
for i, chid in enumerate(chids):
    assert libca.ca_create_channel(f"many:{i}".encode(), None, None, 0, ctypes.byref(chid)) == 1
assert libca.ca_pend_io(10.0) == 1
values = (ctypes.c_double * len(chids))()
for i, chid in enumerate(chids):
    libca.ca_array_get(6, 1, chid, ctypes.byref(values, 8 * i))  # DBR_DOUBLE
assert libca.ca_pend_io(10.0) == 1
result = list(values)
"""


def test_libca_connects_a_batch_through_create_runs(runs_taken: list[int]) -> None:
    """The C client's creates arrive back to back: runs are taken, every channel serves."""
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    from caioc.server import ServerConfig

    env = ca_environment(free_port(), free_port())
    pvdb = {f"many:{i}": ChannelDouble(value=float(i)) for i in range(200)}

    async def scenario() -> None:
        async with serving(pvdb, ServerConfig.from_environment(env)):
            loop = asyncio.get_running_loop()
            values = await loop.run_in_executor(None, run_pyepics, LIBCA_CONNECT, env)
            assert values == [float(i) for i in range(200)]
            assert sum(runs_taken) > 100  # most of the 200 creates came in runs

    run(scenario, timeout=60.0)


def test_a_circuits_opening_messages_and_creates_in_one_segment(runs_taken: list[int]) -> None:
    """VERSION, HOST_NAME, CLIENT_NAME then creates (libca's first segment): still a run."""
    opening = HEADER.pack(VERSION, 0, 0, 13, 0, 0)
    for command, text in ((21, b"console"), (20, b"alice")):  # HOST_NAME, CLIENT_NAME
        body = text + bytes(8 - len(text) % 8)
        opening += HEADER.pack(command, len(body), 0, 0, 0, 0) + body

    async def scenario() -> None:
        async with serving(database()) as server:
            raw = Raw(*await asyncio.open_connection("127.0.0.1", server.tcp_port))
            raw.writer.write(opening + b"".join(REQUESTS))
            got = await raw.replies(1 + sum(map(expected_replies, REQUESTS)))
            raw.writer.close()
            assert got[0][0][0] == VERSION
            assert runs_taken == [len(REQUESTS)]
            alone = await replies_to(server.tcp_port, REQUESTS, together=False)
            assert normalised(got[1:]) == alone

    run(scenario)


def test_a_segment_of_many_creates_is_one_run_then_the_queue(runs_taken: list[int]) -> None:
    """At most 256 in the run; the rest wait their turn in the queue, all answered."""
    requests = [create(cid, f"pv:{cid % 20}".encode()) for cid in range(600)]

    async def scenario() -> None:
        async with serving(database()) as server:
            raw = await Raw.open(server.tcp_port)
            raw.writer.write(b"".join(requests))
            got = await raw.replies(1200)
            raw.writer.close()
            assert runs_taken[0] == 256
            created = [header[4] for header, _ in got if header[0] == CREATE_CHAN]
            assert sorted(created) == list(range(600))

    run(scenario)

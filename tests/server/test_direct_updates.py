"""Updates that go straight into a circuit's next write (no per-subscription queue).

A subscription with nothing pending, on a circuit that can take updates,
packs its update into the circuit's outgoing list at once, within a budget
per flush; the rest queue per subscription as before. Each subscription's
updates must be those of the queued path, byte for byte and in the same
order (only their interleaving with other subscriptions' updates and
replies may differ: straight ones go out in the order they happened), and
a burst must stay bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from typing import Any

import pytest
from test_create_runs import Transport
from waiting import until

from caioc.ca import ChannelState
from caioc.server import Server, ServerConfig, _data_channel
from caioc.server import _circuit as circuit_module
from caioc.server._data import ChannelChar, ChannelDouble, ChannelShort, ChannelString
from caioc.server._server import _Circuit

HEADER = struct.Struct(">HHHHII")
VERSION, EVENT_ADD, EVENTS_OFF, EVENTS_ON, CREATE_CHAN = 0, 1, 8, 9, 18
DOUBLE, SHORT, CHAR, STRING, TIME_DOUBLE, CTRL_DOUBLE = 6, 1, 4, 0, 20, 34
WAVE_LENGTH = 10_000  # 80 kB of doubles: past a plain header's payload size


def database() -> dict[str, Any]:
    stamp = {"timestamp": 1_700_000_000.0}  # fixed: two runs compare byte for byte
    return {
        "d": ChannelDouble(value=0.0, precision=3, units="mm", **stamp),
        "s": ChannelShort(value=1, **stamp),
        "c": ChannelChar(value=[1, 2, 3], max_length=4, **stamp),
        "t": ChannelString(value="x", **stamp),
        "w": ChannelDouble(value=[0.0] * WAVE_LENGTH, **stamp),
    }


# (PV, DBR type, count): payloads of every padding, and one too big for the
# plain header (extended header, never taken straight).
SUBSCRIPTIONS = [
    ("d", DOUBLE, 1),
    ("d", TIME_DOUBLE, 1),
    ("d", CTRL_DOUBLE, 1),
    ("s", SHORT, 1),
    ("s", STRING, 1),
    ("c", CHAR, 3),
    ("c", CHAR, 0),
    ("t", STRING, 1),
    ("w", DOUBLE, 0),
]


def opening(names: list[str]) -> bytes:
    out = HEADER.pack(VERSION, 0, 0, 13, 0, 0)
    for cid, name in enumerate(names):
        body = name.encode() + bytes(8 - len(name) % 8)
        out += HEADER.pack(CREATE_CHAN, len(body), 0, 0, cid, 13) + body
    return out


def event_add(sid: int, subscriptionid: int, data_type: int, count: int) -> bytes:
    body = bytes(12) + struct.pack(">HH", 1 | 4, 0)  # DBE_VALUE | DBE_ALARM
    return HEADER.pack(EVENT_ADD, len(body), data_type, count, sid, subscriptionid) + body


async def turns(n: int = 10) -> None:
    """Let the loop run its ready callbacks ``n`` times (no time passes: sleep(0))."""
    for _ in range(n):
        await asyncio.sleep(0)


async def subscribed_circuit(server: Server) -> tuple[_Circuit, Transport]:
    circuit = _Circuit(server)
    transport = Transport()
    circuit.connection_made(transport)  # type: ignore[arg-type]
    names = [name for name, _, _ in SUBSCRIPTIONS]
    circuit.data_received(opening(names))
    channels = circuit.core.channels
    await until(
        lambda: all(channels[cid].sid is not None for cid in range(len(names))), "connected"
    )
    circuit.data_received(
        b"".join(
            event_add(circuit.core.channels[cid].sid, 100 + cid, data_type, count)
            for cid, (_, data_type, count) in enumerate(SUBSCRIPTIONS)
        )
    )
    await until(lambda: not circuit.ready and not circuit.out, "the first updates sent")
    return circuit, transport


async def changes(pvdb: dict[str, Any], circuit: _Circuit) -> None:
    """Bursts of changes with loop turns between, flow control among them."""
    d, s, c, t, w = (pvdb[name] for name in "dsctw")
    for burst in range(6):
        if burst == 3:
            circuit.data_received(HEADER.pack(EVENTS_OFF, 0, 0, 0, 0, 0))
            await turns()
        for step in range(4):
            value = burst * 10 + step
            d.set_nowait(float(value) / 3)
            s.set_nowait(value)
            c.set_nowait([value % 7, step, burst, 9][: 1 + value % 4])
            t.set_nowait(f"v{value}")
            if step == 1:
                w.set_nowait([float(value)] * WAVE_LENGTH)
            d.set_nowait(float(value), severity=2, status=3)  # an alarm, then none
        if burst == 4:
            circuit.data_received(HEADER.pack(EVENTS_ON, 0, 0, 0, 0, 0))
        await turns()


def messages(data: bytes) -> list[tuple[tuple[int, ...], bytes]]:
    """(header, payload) of each message in ``data`` (extended headers included)."""
    found = []
    while data:
        header = HEADER.unpack_from(data)
        start, size = 16, header[1]
        if size == 0xFFFF:
            size, count = struct.unpack_from(">II", data, 16)
            header = (header[0], size, header[2], count, *header[4:])
            start = 24
        found.append((header, data[start : start + size]))
        data = data[start + size :]
    return found


def doubles(sent: list[tuple[tuple[int, ...], bytes]]) -> list[float]:
    """The values of the DBR_DOUBLE messages in ``sent``."""
    return [struct.unpack(">d", payload)[0] for header, payload in sent if header[2] == DOUBLE]


def by_subscription(data: bytes) -> tuple[dict[int, list[Any]], list[Any]]:
    """Each subscription's updates in order, and the other messages in order."""
    updates: dict[int, list[Any]] = {}
    others = []
    for header, payload in messages(data):
        if header[0] == EVENT_ADD:
            updates.setdefault(header[5], []).append((header, payload))
        else:
            others.append((header, payload))
    return updates, others


def stream(direct: bool, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """What a subscribed client gets for :func:`changes`, updates taken straight or not."""
    clock = itertools.count(1_000_000_000)
    with monkeypatch.context() as patch:
        patch.setattr(_data_channel, "epics_now", lambda: (next(clock), 0))
        if not direct:
            patch.setattr(circuit_module, "DIRECT_BYTES", 0)

        async def scenario() -> bytes:
            pvdb = database()
            server = Server(pvdb, ServerConfig(max_array_bytes=1_000_000))
            circuit, transport = await subscribed_circuit(server)
            if not direct:
                circuit.direct_budget = 0
            await changes(pvdb, circuit)
            await until(lambda: not circuit.ready and not circuit.out, "the last updates sent")
            circuit.connection_lost(None)
            return bytes(transport.sent)

        return asyncio.run(scenario())


def test_updates_taken_straight_are_the_bytes_of_the_queued_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    direct, direct_others = by_subscription(stream(True, monkeypatch))
    queued, queued_others = by_subscription(stream(False, monkeypatch))
    assert direct == queued
    assert direct_others == queued_others
    assert set(direct) == {100 + cid for cid in range(len(SUBSCRIPTIONS))}
    # the waveform's updates (extended headers) are among them
    assert max(header[1] for header, _ in direct[100 + len(SUBSCRIPTIONS) - 1]) > 0xFFFF
    assert all(len(updates) >= 3 for updates in direct.values())


def test_a_burst_past_the_budget_queues_the_rest_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(circuit_module, "DIRECT_BYTES", 10 * 24)  # ten DBR_DOUBLE updates

    async def scenario() -> None:
        pvdb = database()
        server = Server(pvdb)
        circuit, transport = await subscribed_circuit(server)
        circuit.direct_budget = circuit_module.DIRECT_BYTES
        sent_before = len(transport.sent)
        for value in range(1, 101):
            pvdb["d"].set_nowait(float(value))
        # Before the loop turns: the budget's worth went straight, the rest waits.
        straight = sum(map(len, circuit.out))
        assert 0 < straight <= circuit_module.DIRECT_BYTES
        waiting = {
            subscriptionid: len(subscription.pending)
            for subscriptionid, subscription in circuit.subscriptions.items()
            if subscription.pending
        }
        # Three subscriptions on "d" share the budget: all 100 updates of
        # each are either in the write or queued, none merged.
        assert sum(waiting.values()) + straight // 24 >= 3 * 100 - len(waiting) * 10
        await until(lambda: not circuit.ready and not circuit.out, "the burst sent")
        sent = messages(bytes(transport.sent[sent_before:]))
        assert {header[0] for header, _ in sent} == {EVENT_ADD}
        assert doubles(sent) == [float(value) for value in range(1, 101)]
        assert circuit.direct_budget == circuit_module.DIRECT_BYTES  # reset by the flush
        circuit.connection_lost(None)

    asyncio.run(scenario())


def test_a_slow_client_still_gets_merged_updates() -> None:
    async def scenario() -> None:
        pvdb = database()
        server = Server(pvdb)
        circuit, transport = await subscribed_circuit(server)
        sent_before = len(transport.sent)
        circuit.pause_writing()  # the socket is full
        for value in range(1, 101):
            pvdb["d"].set_nowait(float(value))
        assert circuit.out == []  # nothing taken straight
        await turns()  # the loop runs its flushes: still nothing may go out
        assert len(transport.sent) == sent_before
        circuit.resume_writing()
        await until(lambda: len(transport.sent) > sent_before, "the newest sent")
        sent = messages(bytes(transport.sent[sent_before:]))
        assert doubles(sent) == [100.0]  # the newest only
        circuit.connection_lost(None)

    asyncio.run(scenario())


def test_no_update_for_a_channel_the_core_has_closed(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        pvdb = database()
        server = Server(pvdb)
        circuit, transport = await subscribed_circuit(server)
        sent_before = len(transport.sent)
        channel = circuit.core.channels[0]  # "d" as DBR_DOUBLE
        channel.state = ChannelState.CLOSED
        with caplog.at_level(logging.ERROR, logger="caioc.server"):
            pvdb["d"].set_nowait(5.0)
            await until(lambda: not circuit.ready and not circuit.out, "the updates sent")
        subscriptionids = [header[5] for header, _ in messages(bytes(transport.sent[sent_before:]))]
        assert 100 not in subscriptionids
        assert {101, 102} <= set(subscriptionids)  # the channel's other subscriptions
        assert "refusing to send" in caplog.text
        circuit.connection_lost(None)

    asyncio.run(scenario())


def test_one_failing_circuit_does_not_keep_updates_from_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        pvdb = database()
        server = Server(pvdb)
        pairs = [await subscribed_circuit(server) for _ in range(3)]
        before = [len(transport.sent) for _, transport in pairs]

        def broken() -> None:
            raise RuntimeError("a bug")

        pairs[0][0]._flush_updates = broken  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="caioc.server"):
            pvdb["d"].set_nowait(7.0)
            await until(
                lambda: all(len(pairs[i][1].sent) > before[i] for i in (1, 2)),
                "the others' updates",
            )
        assert "error sending updates" in caplog.text
        assert len(pairs[1][1].sent) > before[1]
        assert len(pairs[2][1].sent) > before[2]
        for circuit, _ in pairs:
            circuit.connection_lost(None)

    asyncio.run(scenario())

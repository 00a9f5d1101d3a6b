"""Puts that need no waiting are made in the read callback, without a coroutine.

A put to a ChannelData with no ``put_hook`` (and no subclass ``write``) is
stored, posted and answered as soon as its segment is read; a put that must
await (a hook, an overridden ``write``) still goes through the command task.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from test_create_runs import Transport
from test_direct_updates import HEADER, messages, opening
from waiting import until

from caioc.server import Server
from caioc.server._data import ChannelDouble, ChannelError
from caioc.server._server import _Circuit

WRITE_NOTIFY, DOUBLE, ECA_NORMAL = 19, 6, 1


class Recorded(ChannelDouble):
    """A channel whose subclass overrides write (it may await anything)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.writes: list[bytes] = []

    async def write(self, data_type: int, data_count: int, payload: Any) -> None:
        self.writes.append(bytes(payload))
        await super().write(data_type, data_count, payload)


def put_notify(sid: int, ioid: int, value: float) -> bytes:
    return HEADER.pack(WRITE_NOTIFY, 8, DOUBLE, 1, sid, ioid) + struct.pack(">d", value)


def test_write_now_stores_without_a_hook_and_leaves_hooked_puts_to_write() -> None:
    hooked: list[float] = []

    async def hook(channel: Any, value: float) -> None:
        hooked.append(value)

    plain = ChannelDouble(value=1.0)
    assert plain.write_now(DOUBLE, 1, struct.pack(">d", 2.5))
    assert plain.value == 2.5
    with_hook = ChannelDouble(value=1.0, put_hook=hook)
    assert not with_hook.write_now(DOUBLE, 1, struct.pack(">d", 2.5))
    assert with_hook.value == 1.0 and hooked == []  # nothing done
    asyncio.run(with_hook.write(DOUBLE, 1, struct.pack(">d", 3.5)))
    assert with_hook.value == 3.5 and hooked == [3.5]
    with pytest.raises(ChannelError, match="read-only"):
        ChannelDouble(value=1.0, read_only=True).write_now(DOUBLE, 1, struct.pack(">d", 2.5))


def test_a_put_to_a_plain_channel_is_answered_in_the_read_callback() -> None:
    hooked: list[float] = []

    async def hook(channel: Any, value: float) -> None:
        hooked.append(value)

    async def scenario() -> None:
        pvdb = {
            "plain": ChannelDouble(value=0.0),
            "hooked": ChannelDouble(value=0.0, put_hook=hook),
            "override": Recorded(value=0.0),
        }
        circuit = _Circuit(Server(pvdb))
        transport = Transport()
        circuit.connection_made(transport)  # type: ignore[arg-type]
        circuit.data_received(opening(list(pvdb)))
        channels = circuit.core.channels
        await until(lambda: all(channels[cid].sid is not None for cid in range(3)), "connected")
        sids = [circuit.core.channels[cid].sid for cid in range(3)]

        def replies_since(start: int) -> list[tuple[int, ...]]:
            return [header for header, _ in messages(bytes(transport.sent[start:]))]

        start = len(transport.sent)
        circuit.data_received(put_notify(sids[0], 7, 4.5))
        # no loop turn: stored and answered already
        assert replies_since(start) == [(WRITE_NOTIFY, 0, DOUBLE, 1, ECA_NORMAL, 7)]
        assert pvdb["plain"].value == 4.5

        for index, name in ((1, "hooked"), (2, "override")):
            start = len(transport.sent)
            circuit.data_received(put_notify(sids[index], 8 + index, 5.5))
            assert replies_since(start) == []  # waits for the command task
            sent = len(transport.sent)
            await until(lambda sent=sent: len(transport.sent) > sent, "the reply")
            assert replies_since(start) == [(WRITE_NOTIFY, 0, DOUBLE, 1, ECA_NORMAL, 8 + index)]
            assert pvdb[name].value == 5.5
        assert hooked == [5.5]
        assert pvdb["override"].writes == [struct.pack(">d", 5.5)]
        circuit.connection_lost(None)

    asyncio.run(scenario())

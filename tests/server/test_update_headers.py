"""Monitor updates packed by the circuit are the bytes send() would make of them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from peers import serving
from test_read_runs import HEADER, Raw
from waiting import run

from caioc.ca import ChannelType, VirtualCircuit
from caioc.server._data import ChannelDouble, ChannelString

EVENT_ADD = 1


async def updates(plain: bool, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A subscriber's bytes for the same puts, with or without the circuit's packing."""
    if not plain:
        monkeypatch.setattr(VirtualCircuit, "updatable", lambda self, ids: [False for _ in ids])
    pvdb: dict[str, Any] = {
        "D": ChannelDouble(value=0.0),
        "S": ChannelString(value=""),
        "W": ChannelDouble(value=np.zeros(5)),
    }
    subscriptions = [("D", ChannelType.DOUBLE, 1), ("S", ChannelType.STRING, 1)]
    subscriptions += [("W", ChannelType.LONG, 0), ("W", ChannelType.DOUBLE, 3)]
    async with serving(pvdb) as server:
        raw = await Raw.open(server.tcp_port, ["D", "S", "W"])
        raw.writer.write(
            b"".join(
                HEADER.pack(EVENT_ADD, 16, data_type, count, raw.sids[name], 100 + i)
                + bytes(12)
                + (5).to_bytes(2, "big")
                + bytes(2)
                for i, (name, data_type, count) in enumerate(subscriptions)
            )
        )
        await raw.replies(len(subscriptions))  # the first updates
        for step in range(3):
            await pvdb["D"].set(float(step) + 0.5)
            await pvdb["S"].set(f"step {step}")
            await pvdb["W"].set(np.arange(step + 1, dtype=np.float64))
        got = await raw.replies(3 * len(subscriptions))
        raw.close()
    return b"".join(whole for _, whole in got)


def test_packed_updates_are_what_send_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    got: dict[bool, bytes] = {}

    async def scenario() -> None:
        got[True] = await updates(True, monkeypatch)
        got[False] = await updates(False, monkeypatch)

    run(scenario)
    assert got[True] == got[False]
    assert len(got[True]) > 12 * 16

"""A client that stops reading pauses its circuit, whatever writelines() does.

CPython 3.12.0-3.12.8 and 3.13.0-3.13.1 (python/cpython#127655) never call
the protocol's pause_writing() from a socket transport's writelines(): a
client that stops reading would then never pause its circuit, and its
updates would pile up in the transport's buffer without bound instead of
merging. The server asks the transport to check its buffer after
writelines() on those versions; here the bug is reproduced on any Python
and the circuit must still pause with a bounded backlog.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import pytest
from peers import serving
from soak_support import CoreClient
from waiting import run, until

from caioc.ca import ChannelType
from caioc.server import ChannelDouble
from caioc.server import _server as server_module

VERSION = sys.version_info[:3]
AFFECTED = (3, 12) <= VERSION < (3, 12, 9) or (3, 13) <= VERSION < (3, 13, 2)


def writelines_without_pause(transport: Any, chunks: list[bytes]) -> None:
    """writelines() as the affected versions have it: buffered, never pausing."""
    data = b"".join(chunks)
    if not transport.get_write_buffer_size():
        try:
            sent = transport._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        data = data[sent:]
        if not data:
            return
        transport._loop._add_writer(transport._sock_fd, transport._write_ready)
    transport._buffer.extend(data)


@pytest.mark.skipif(
    sys.version_info >= (3, 12) and not AFFECTED,
    reason="emulates the bug with 3.11's transport internals; fixed versions need no help",
)
@pytest.mark.parametrize("helped", [True, False])
def test_a_silent_client_pauses_its_circuit(helped: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not AFFECTED:  # reproduce the affected versions' writelines
        transport_class = asyncio.selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
        monkeypatch.setattr(transport_class, "writelines", writelines_without_pause)
    monkeypatch.setattr(server_module, "_WRITELINES_PAUSES", not helped)
    outcome: dict[str, Any] = {}

    async def scenario() -> None:
        pvdb = {f"P{i:02d}": ChannelDouble(value=0.0) for i in range(20)}
        async with serving(pvdb) as server:
            client = await CoreClient.connect(server.tcp_port, receive_buffer=16384)
            for channel in await client.open(list(pvdb)):
                client.subscribe(channel, ChannelType.TIME_DOUBLE)
            await until(lambda: len(client.latest) == 20, "20 first updates")
            (circuit,) = server.circuits
            transport = circuit.transport
            transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 16384
            )
            client.pause()
            value = 0.0
            while circuit.can_write and value < 2000:
                value += 1.0
                for data in pvdb.values():
                    data.set_nowait(value)
                await asyncio.sleep(0)  # one loop turn: the circuit flushes
            outcome["paused"] = not circuit.can_write
            outcome["backlog"] = transport.get_write_buffer_size()
            client.close()

    run(scenario)
    if helped:
        assert outcome["paused"]
        assert outcome["backlog"] < 256 * 1024  # the high-water mark and one flush
    else:  # without the check the bug shows: this test can see it
        assert not outcome["paused"]
        assert outcome["backlog"] > 1024 * 1024

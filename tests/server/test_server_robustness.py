"""The server is impossible to knock over: bad bytes, dead and slow clients.

These run the server and raw clients (built on caioc's own core) in one
event loop, so they can look inside the server while it is under stress.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from peers import serving
from waiting import run, until

from caioc.ca import (
    ECA,
    NEED_DATA,
    ChannelType,
    Command,
    EventAddResponse,
    ReadNotifyResponse,
    Role,
    VersionRequest,
    VersionResponse,
    VirtualCircuit,
)
from caioc.server._data import ChannelDouble, ChannelInteger

TIMEOUT = 10.0


class RawClient:
    """A CA client made of the core and a socket, with no manners imposed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.core = VirtualCircuit(Role.CLIENT, max_payload=10**8)
        self.received: list[Command] = []

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, *commands: Command) -> None:
        self.writer.write(self.core.send(*commands))

    async def receive(self, done: Callable[[], bool]) -> None:
        async def pump() -> None:
            while not done():
                data = await self.reader.read(1 << 16)
                if not data:
                    raise ConnectionError("server closed the circuit")
                self.core.receive_data(data)
                while (command := self.core.next_command()) is not NEED_DATA:
                    self.received.append(command)  # type: ignore[arg-type]

        await asyncio.wait_for(pump(), TIMEOUT)

    async def open(self, name: str) -> Any:
        channel = self.core.create_channel(name)
        self.send(VersionRequest(0), channel.create())
        await self.receive(lambda: channel.sid is not None)
        return channel

    def close(self) -> None:
        self.writer.close()


def test_garbage_closes_only_that_circuit() -> None:
    async def scenario() -> None:
        async with serving({"X": ChannelDouble(value=1.5)}) as server:
            good = await RawClient.connect(server.tcp_port)
            channel = await good.open("X")
            bad = await RawClient.connect(server.tcp_port)
            # a header announcing an obsolete command: the stream is unusable
            bad.writer.write(bytes.fromhex("0005000000000000000000000000000000"))
            await until(lambda: len(server.circuits) == 1, "the bad circuit to close")
            # the server said its VERSION, then hung up: nothing else
            leftover = await asyncio.wait_for(bad.reader.read(), TIMEOUT)
            assert leftover == bytes(VersionResponse(0))
            good.send(channel.read(ChannelType.DOUBLE))
            await good.receive(
                lambda: any(isinstance(c, ReadNotifyResponse) for c in good.received)
            )
            reply = next(c for c in good.received if isinstance(c, ReadNotifyResponse))
            assert reply.to_python()[0] == 1.5
            good.close()
            bad.close()

    run(scenario)


@pytest.mark.parametrize("fault", ["unknown sid", "unknown type"])
def test_a_bad_id_or_type_gets_an_error_then_the_circuit_closes(fault: str) -> None:
    """As rsrv does: ERROR, then the circuit closes (never one that goes on but no
    longer answers); what came before is answered, other clients are served."""

    async def scenario() -> None:
        async with serving({"X": ChannelInteger(value=7)}) as server:
            other = await RawClient.connect(server.tcp_port)
            other_channel = await other.open("X")
            client = await RawClient.connect(server.tcp_port)
            channel = await client.open("X")
            client.send(channel.read(ChannelType.LONG))  # answered: it came first
            raw = bytes(channel.read(ChannelType.LONG))
            if fault == "unknown sid":  # a read for a channel id the server never gave out
                forged = raw[:8] + (channel.sid + 1000).to_bytes(4, "big") + raw[12:]
            else:  # a DBR type past 38
                forged = raw[:4] + (99).to_bytes(2, "big") + raw[6:]
            client.writer.write(forged)
            with pytest.raises(ConnectionError):
                await client.receive(lambda: False)
            kinds = [type(c).__name__ for c in client.received]
            assert kinds[-2:] == ["ReadNotifyResponse", "ErrorResponse"]
            error = client.received[-1]
            assert error.status is (ECA.BADCHID if fault == "unknown sid" else ECA.BADTYPE)
            await until(lambda: len(server.circuits) == 1, "the bad circuit to go")
            other.send(other_channel.read(ChannelType.LONG))
            await other.receive(
                lambda: any(isinstance(c, ReadNotifyResponse) for c in other.received)
            )
            client.close()
            other.close()

    run(scenario)


def test_dead_client_mid_subscription_frees_everything() -> None:
    async def scenario() -> None:
        data = ChannelDouble(value=0.0)
        async with serving({"X": data}) as server:
            client = await RawClient.connect(server.tcp_port)
            channel = await client.open("X")
            client.send(channel.subscribe(ChannelType.TIME_DOUBLE))
            await client.receive(
                lambda: any(isinstance(c, EventAddResponse) for c in client.received)
            )
            assert data.subscription_count == 1
            # the client vanishes without a word (RST) while updates flow
            sock = client.writer.get_extra_info("socket")
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            client.writer.transport.abort()
            for i in range(1000):
                await data.set(float(i))
                if i % 100 == 0:
                    await asyncio.sleep(0)  # let the server meet the reset meanwhile
            await until(lambda: data.subscription_count == 0, "the subscription to go")
            await until(lambda: not server.circuits, "the circuit to go")
            # and the server still serves newcomers
            other = await RawClient.connect(server.tcp_port)
            await other.open("X")
            other.close()

    run(scenario)


def test_slow_client_costs_bounded_memory_and_gets_the_final_value() -> None:
    async def scenario() -> None:
        data = ChannelDouble(value=np.zeros(1000), max_length=1000)
        async with serving({"X": data}) as server:
            client = await RawClient.connect(server.tcp_port)
            channel = await client.open("X")
            client.send(channel.subscribe(ChannelType.DOUBLE, 1000))
            await client.receive(
                lambda: any(isinstance(c, EventAddResponse) for c in client.received)
            )
            # the client stops reading; the server keeps publishing 8 kB updates
            (circuit,) = server.circuits
            transport = circuit.transport
            assert transport is not None
            for i in range(3000):
                await data.set(np.full(1000, float(i)))
                await asyncio.sleep(0)  # one loop turn: the server tries to write each
            backlog = transport.get_write_buffer_size()
            pending = sum(len(s.pending) for s in circuit.subscriptions.values())
            # 3000 updates of 8 kB were published: 24 MB if nothing coalesced
            assert pending <= 4
            assert backlog < 4 * 1024 * 1024, backlog
            # once the client reads again, the newest value arrives
            await client.receive(
                lambda: any(
                    isinstance(c, EventAddResponse) and c.payload_size and c.data[0] == 2999.0
                    for c in client.received
                )
            )
            client.close()

    run(scenario)

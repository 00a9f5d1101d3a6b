"""Short versions of the soak runs, in one event loop with the server (a few seconds).

They check what the slow runs check, without the clock: subscriptions come
and go while updates flow, many connections sit idle or trickle bytes, and
a client with 1000 subscriptions stops reading — and afterwards nothing is
left behind and a well-behaved client is still served.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable

from peers import serving
from soak_support import CoreClient
from waiting import background, run, until

from caioc.ca import ChannelType, Command, EventAddResponse, EventCancelResponse, VersionRequest
from caioc.server import ChannelDouble


@contextlib.asynccontextmanager
async def updating(*channels: ChannelDouble) -> AsyncIterator[None]:
    """Set the channels over and over (a new value each loop turn) meanwhile."""

    async def forever() -> None:
        value = 0.0
        while True:
            value += 1.0
            for channel in channels:
                await channel.set(value)
            await asyncio.sleep(0)  # a new value each loop turn

    async with background(forever()):
        yield


class LoggingClient(CoreClient):
    """A CoreClient that also keeps the order of updates and cancel confirmations."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, int]] = []
        self.counts: collections.Counter[int] = collections.Counter()

    def take(self, command: Command) -> None:
        if type(command) is EventAddResponse:
            self.latest[command.subscriptionid] = command.to_python()[0]
            self.updates += 1
            self.log.append(("update", command.subscriptionid))
            self.counts[command.subscriptionid] += 1
        elif type(command) is EventCancelResponse:
            self.log.append(("cancelled", command.subscriptionid))
        else:
            self.others.append(command)


def test_subscriptions_added_and_cleared_while_updates_flow() -> None:
    async def scenario() -> None:
        a, b = ChannelDouble(value=0.0), ChannelDouble(value=0.0)
        async with serving({"A": a, "B": b}) as server:
            client = await LoggingClient.connect(server.tcp_port)
            channel_a, channel_b = await client.open(["A", "B"])
            cancelled: list[int] = []

            def lived(ids: list[int]) -> Callable[[], bool]:
                """Whether each of ``ids`` has had a change after its first update."""
                return lambda: all(client.counts[i] >= 2 for i in ids)

            async with updating(a, b):
                for round_ in range(100):
                    ids = [
                        client.subscribe(channel, data_type)
                        for channel in (channel_a, channel_b)
                        for data_type in (ChannelType.DOUBLE, ChannelType.TIME_DOUBLE)
                    ]
                    if round_ % 2:
                        # live long enough for a change or two to reach them
                        await until(lived(ids), "updates to the new subscriptions")
                    for channel, subscriptionid in zip(
                        (channel_a, channel_a, channel_b, channel_b), ids, strict=True
                    ):
                        client.send(channel.unsubscribe(subscriptionid))
                    cancelled += ids
                    if round_ % 10 == 0:
                        # a channel opened, subscribed and cleared with its
                        # subscription still live
                        (extra,) = await client.open(["A"])
                        client.subscribe(extra, ChannelType.DOUBLE)
                        client.send(extra.clear())
                await until(
                    lambda: (
                        sum(1 for kind, _ in client.log if kind == "cancelled") == len(cancelled)
                    ),
                    "every cancel to be confirmed",
                )
                await until(
                    lambda: a.subscription_count == 0 and b.subscription_count == 0,
                    "the cleared channels' subscriptions to go",
                )
            # no update for a subscription after its cancel was confirmed
            done: set[int] = set()
            for kind, subscriptionid in client.log:
                if kind == "cancelled":
                    done.add(subscriptionid)
                else:
                    assert subscriptionid not in done, "an update after EVENT_CANCEL"
            (circuit,) = server.circuits
            assert not circuit.subscriptions and not circuit.ready
            # and the circuit still serves a new subscription its newest value
            newest = client.subscribe(channel_a, ChannelType.DOUBLE)
            await a.set(12345.0)
            await until(lambda: client.latest.get(newest) == 12345.0, "a new subscription")
            client.close()
            await until(lambda: not server.circuits, "the circuit to go")
            assert a.subscription_count == 0

    run(scenario)


#: What a trickling client sends, a byte at a time: a VERSION, then the
#: header of a WRITE announcing 1 kB of payload that never comes.
TRICKLE = bytes(VersionRequest(0)) + struct.pack(">HHHHII", 4, 1024, 6, 128, 1, 1)


async def raw_connection(port: int) -> socket.socket:
    """A plain socket connected without blocking the loop the server runs in."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


def test_idle_and_trickling_connections_do_not_stop_service() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        data = ChannelDouble(value=2.5)
        async with serving({"X": data}) as server:
            idle: list[socket.socket] = []
            tricklers: list[socket.socket] = []
            try:
                for group, count in ((idle, 100), (tricklers, 20)):
                    for _ in range(count):
                        group.append(await raw_connection(server.tcp_port))
                await until(lambda: len(server.circuits) == 120, "every connection accepted")
                for index in range(len(TRICKLE)):
                    for sock in tricklers:
                        await loop.sock_sendall(sock, TRICKLE[index : index + 1])
                    await asyncio.sleep(0)  # one byte a loop turn: the trickle
                client = await CoreClient.connect(server.tcp_port)
                (channel,) = await client.open(["X"])
                subscriptionid = client.subscribe(channel)
                await until(lambda: client.latest.get(subscriptionid) == 2.5, "a newcomer served")
                client.close()
            finally:
                for sock in idle + tricklers:
                    sock.close()
            await until(lambda: not server.circuits, "every circuit to go")
            assert data.subscription_count == 0

    run(scenario)


def test_thousand_subscriptions_of_a_silent_client_merge_then_deliver() -> None:
    async def scenario() -> None:
        pvdb = {f"P{i:03d}": ChannelDouble(value=0.0) for i in range(100)}
        async with serving(pvdb) as server:
            client = await CoreClient.connect(server.tcp_port, receive_buffer=16384)
            channels = await client.open(list(pvdb))
            names: dict[int, str] = {}
            for channel in channels:
                for kind in range(10):
                    data_type = ChannelType.TIME_DOUBLE if kind % 2 else ChannelType.DOUBLE
                    names[client.subscribe(channel, data_type)] = channel.name
            await until(lambda: len(client.latest) == 1000, "1000 first updates")
            (circuit,) = server.circuits
            # Small kernel buffers on both ends: the backlog shows within a
            # few hundred kB instead of the megabytes loopback would take.
            transport = getattr(circuit, "transport", None)
            assert transport is not None
            server_socket = transport.get_extra_info("socket")
            server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            client.pause()
            value = 0.0
            # publish until the silent client's socket is full ...
            while circuit.can_write:
                value += 1.0
                for data in pvdb.values():
                    await data.set(value)
                await asyncio.sleep(0)  # one loop turn: the server tries to write
                assert value < 100_000, "the socket never filled"
            # ... and well beyond: each subscription holds only the newest update
            for _ in range(200):
                value += 1.0
                for data in pvdb.values():
                    await data.set(value)
            pending = [len(s.pending) for s in circuit.subscriptions.values()]
            assert len(pending) == 1000 and max(pending) <= 1
            client.resume()
            await until(
                lambda: all(client.latest[s] == value for s in names),
                "every subscription's final value",
                10.0,
            )
            client.close()
            await until(lambda: not server.circuits, "the circuit to go")
            assert all(data.subscription_count == 0 for data in pvdb.values())

    run(scenario)

"""Connecting a batch of channels: search slices, queued answers, a circuit opening.

The connect path batches work (searches packed and sent in slices, search
answers already queued read in one go, channels found while their circuit
opens created together); these tests check that no channel is lost on the
way, whatever the batch size.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from peers import free_port, server_config
from waiting import run, until

from caioc.ca import Broadcaster, Role, SearchRequest, SearchResponse
from caioc.client import ClientConfig, Context
from caioc.client._context import SEARCH_CHUNKS, _chunks
from caioc.server import ChannelDouble, Server


def config(port: int) -> ClientConfig:
    return ClientConfig(
        search_addresses=[("127.0.0.1", port)], use_repeater=False, max_search_interval=0.1
    )


def test_search_slices_keep_every_name_in_order() -> None:
    names = {cid: f"N{cid}" for cid in range(1000)}
    slices = list(_chunks(names, SEARCH_CHUNKS))
    assert len(slices[0]) == SEARCH_CHUNKS[0]
    assert all(len(part) <= SEARCH_CHUNKS[-1] for part in slices[1:])
    joined: dict[int, str] = {}
    for part in slices:
        joined.update(part)
    assert list(joined.items()) == list(names.items())
    assert list(_chunks({}, SEARCH_CHUNKS)) == []


def test_a_large_batch_connects_on_one_circuit() -> None:
    count = 700  # many search datagrams, answers queued while the circuit opens

    async def scenario() -> None:
        names = [f"BATCH:{index:04d}" for index in range(count)]
        server = Server(
            {name: ChannelDouble(value=float(index)) for index, name in enumerate(names)},
            server_config(),
        )
        await server.start()
        try:
            async with Context(config(server.tcp_port)) as ctx:
                channels = await ctx.connect(*names, timeout=20)
                assert all(channel.is_connected for channel in channels)
                assert len(ctx.circuits) == 1
                (circuit,) = ctx.circuits.values()
                assert circuit.waiting == []
                assert len(circuit.channels) == count
                assert not ctx._searching
                reading = await channels[-1].read()
                assert reading.value == float(count - 1)
                # a second batch on the open circuit: created at once
                more = await ctx.connect(*names[:10], timeout=5)
                assert more == channels[:10]
        finally:
            await server.stop()

    run(scenario)


def test_channels_waiting_for_a_circuit_that_cannot_open_search_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "caioc.client")

    async def scenario() -> None:
        # A fake server: answers every search with a TCP port nobody listens on.
        dead_port = free_port()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.setblocking(False)
        loop = asyncio.get_running_loop()
        answered = 0

        async with Context(config(udp.getsockname()[1])) as ctx:
            server = Broadcaster(Role.SERVER)

            def answer() -> None:
                nonlocal answered
                try:
                    data, addr = udp.recvfrom(65536)
                except BlockingIOError:
                    return
                replies = [
                    SearchResponse(dead_port, "127.0.0.1", command.cid)
                    for command in server.recv(data)
                    if type(command) is SearchRequest
                ]
                if replies:
                    answered += len(replies)
                    udp.sendto(server.send(*replies), addr)

            loop.add_reader(udp.fileno(), answer)
            try:
                channels = [ctx.channel(f"X{index}") for index in range(50)]
                await until(
                    lambda: sum("cannot connect" in r.getMessage() for r in caplog.records) >= 2,
                    "two failed attempts to open the circuit",
                )
                # Nothing connected, and no channel lost on the way: each is
                # either being searched for or waiting for a circuit opening.
                waiting = {id(c) for circuit in ctx.circuits.values() for c in circuit.waiting}
                for channel in channels:
                    assert not channel.is_connected
                    assert channel._search_cid in ctx._searching or id(channel) in waiting
            finally:
                loop.remove_reader(udp.fileno())
                udp.close()

    run(scenario)

"""ServerConfig.idle_timeout closes silent circuits; max_circuits caps how many."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from waiting import run, until

from caioc.ca import ChannelType
from caioc.client import ClientConfig, Context
from caioc.server import ChannelDouble, Server, ServerConfig


def config(**options: float) -> ServerConfig:
    base = ServerConfig(
        port=0,
        interfaces=["127.0.0.1"],
        beacon_addresses=[("127.0.0.1", 9)],
        auto_beacon_addresses=False,
    )
    return dataclasses.replace(base, **options)


async def hang_up(reader: asyncio.StreamReader) -> bytes | None:
    """What the server sent before it hung up; None if it did not within 5 s."""
    received = b""
    try:
        while data := await asyncio.wait_for(reader.read(1024), 5.0):
            received += data
    except asyncio.TimeoutError:
        return None
    except ConnectionError:
        pass
    return received


def test_silent_and_trickling_circuits_are_closed_and_talkers_kept() -> None:
    async def scenario() -> None:
        server = Server({"pv": ChannelDouble(value=1.5)}, config(idle_timeout=0.6))
        await server.start()
        try:
            silent = await asyncio.open_connection("127.0.0.1", server.tcp_port)
            trickle = await asyncio.open_connection("127.0.0.1", server.tcp_port)
            client = ClientConfig(search_addresses=[("127.0.0.1", server.tcp_port)])
            async with Context(client) as ctx:
                (pv,) = await ctx.connect("pv")
                await until(lambda: len(server.circuits) == 3, "three circuits")
                # a byte at a time never completes a message: still idle
                for byte in b"\x00\x00\x00\x00":
                    trickle[1].write(bytes([byte]))
                    assert (await pv.read(ChannelType.DOUBLE)).value == 1.5  # a talker
                    await asyncio.sleep(0.25)  # the trickle's pace
                assert await hang_up(silent[0]) is not None
                assert await hang_up(trickle[0]) is not None
                await until(lambda: len(server.circuits) == 1, "only the talker left")
                assert (await pv.read(ChannelType.DOUBLE)).value == 1.5
            for _, writer in (silent, trickle):
                writer.close()
        finally:
            await server.stop()

    run(scenario)


def test_no_idle_timeout_by_default() -> None:
    assert ServerConfig().idle_timeout == 0
    assert ServerConfig().max_circuits == 0
    environment = {"CAIOC_CAS_IDLE_TIMEOUT": "90", "CAIOC_CAS_MAX_CIRCUITS": "200"}
    configured = ServerConfig.from_environment(environment)
    assert (configured.idle_timeout, configured.max_circuits) == (90.0, 200)
    with pytest.raises(ValueError, match="CAIOC_CAS_MAX_CIRCUITS"):
        ServerConfig.from_environment({"CAIOC_CAS_MAX_CIRCUITS": "lots"})


def test_connections_over_the_cap_are_closed_at_once() -> None:
    async def scenario() -> None:
        server = Server({"pv": ChannelDouble(value=2.5)}, config(max_circuits=2))
        await server.start()
        try:
            held = [await asyncio.open_connection("127.0.0.1", server.tcp_port) for _ in "ab"]
            await until(lambda: len(server.circuits) == 2, "the cap's worth")
            reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp_port)
            assert await hang_up(reader) == b""  # closed before even a VERSION
            writer.close()
            assert len(server.circuits) == 2
            held.pop()[1].close()  # a place comes free
            await until(lambda: len(server.circuits) == 1, "a place to come free")
            client = ClientConfig(search_addresses=[("127.0.0.1", server.tcp_port)])
            async with Context(client) as ctx:
                (pv,) = await ctx.connect("pv")
                assert (await pv.read(ChannelType.DOUBLE)).value == 2.5
            for _, other in held:
                other.close()
        finally:
            await server.stop()

    run(scenario)

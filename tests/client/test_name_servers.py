"""EPICS_CA_NAME_SERVERS: searching over TCP, with no UDP search at all.

The client's UDP search list is empty in every test here, so a channel
that connects was found through the name server's circuit.
"""

from __future__ import annotations

import logging

import pytest
from peers import ca_environment, free_port, process_until_ready, server_config
from test_client_peers import SOFTIOC
from waiting import run, until

from caioc.client import ClientConfig, Context
from caioc.server import ChannelDouble, Server


def tcp_only(port: int) -> ClientConfig:
    return ClientConfig(
        search_addresses=[],
        name_servers=[("127.0.0.1", port)],
        use_repeater=False,
        max_search_interval=0.1,
    )


def test_channels_are_found_through_a_caioc_name_server() -> None:
    async def scenario() -> None:
        server = Server({"X": ChannelDouble(value=2.5)}, server_config())
        await server.start()
        port = server.tcp_port
        try:
            async with Context(tcp_only(port)) as ctx:
                (x,) = await ctx.connect("X", timeout=5)
                assert (await x.read()).value == 2.5
                assert list(ctx.name_servers) == [("127.0.0.1", port)]
                # an unknown name stays unanswered, and the circuit stays up
                nobody = ctx.channel("NOBODY")
                updates = []
                await x.subscribe(callback=updates.append)
                await until(lambda: updates, "the first update")

                # the server restarts: name server circuit and channel come back
                await server.stop()
                await until(lambda: not x.is_connected, "the disconnect")
                server = Server({"X": ChannelDouble(value=7.0)}, server_config(port))
                await server.start()
                await x.wait_for_connection(5)
                await until(lambda: updates[-1].value == 7.0, "the re-established subscription")
                assert not nobody.is_connected
        finally:
            await server.stop()

    run(scenario)


def test_a_name_server_that_starts_later_is_used(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "caioc.client")

    async def scenario() -> None:
        port = free_port()
        async with Context(tcp_only(port)) as ctx:
            x = ctx.channel("X")
            await until(
                lambda: any("name server" in r.getMessage() for r in caplog.records),
                "a failed attempt to reach the name server",
            )
            server = Server({"X": ChannelDouble(value=1.0)}, server_config(port))
            await server.start()
            try:
                await x.wait_for_connection(10)
                assert (await x.read()).value == 1.0
            finally:
                await server.stop()

    run(scenario)


def test_softioc_answers_searches_over_tcp() -> None:
    """rsrv (EPICS 7) answers SEARCH on a circuit: the C server as a name server."""
    pytest.importorskip("softioc", reason="softioc (the C IOC) not installed")
    port = free_port()

    async def scenario() -> None:
        async with Context(tcp_only(port)) as ctx:
            ao, lo = await ctx.connect("T:AO", "T:LO", timeout=10)
            assert (await ao.read()).value == 3.25
            assert (await lo.read()).value == 7

    with process_until_ready(SOFTIOC, ca_environment(port, free_port())):
        run(scenario)


def test_name_servers_from_the_environment() -> None:
    config = ClientConfig.from_environment(
        {
            "EPICS_CA_NAME_SERVERS": "10.0.0.1 ns.example:5999,10.0.0.1",
            "EPICS_CA_SERVER_PORT": "6064",
            "EPICS_CA_AUTO_ADDR_LIST": "NO",
        }
    )
    assert config.name_servers == [("10.0.0.1", 6064), ("ns.example", 5999)]
    assert config.search_addresses == []

"""EPICS_CA_CONN_TMO with ECHO probes, and beacon anomalies.

A server frozen with SIGSTOP keeps its TCP connection open but says
nothing: only the ECHO probe can tell, and the client must then drop the
circuit and find the server again once SIGCONT wakes it. Beacons that say
"this server restarted" or "this server is back" must restart the searches
of channels still looking for a server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Iterator

import pytest
from peers import ca_environment, free_port, process_until_ready, server_config
from test_client_peers import CAIOC, SOFTIOC
from waiting import run, until

from caioc.ca import Broadcaster, ChannelType, Role, RsrvIsUpResponse
from caioc.client import Channel, ChannelTimeout, ClientConfig, Context, Reading
from caioc.client._beacons import BeaconHistory
from caioc.server import ChannelDouble, Server


@pytest.fixture(params=["caioc", "softioc"])
def frozen_server(request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    """A server process of its own (it will be stopped): (port, pid)."""
    code = {"caioc": CAIOC, "softioc": SOFTIOC}[request.param]
    if request.param == "softioc":
        pytest.importorskip("softioc", reason="softioc (the C IOC) not installed")
    port = free_port()
    with process_until_ready(code, ca_environment(port, free_port())) as process:
        try:
            yield port, process.pid
        finally:
            os.kill(process.pid, signal.SIGCONT)  # a stopped process dies too, but cleanly


def test_a_frozen_server_is_dropped_and_found_again(frozen_server: tuple[int, int]) -> None:
    port, pid = frozen_server
    config = ClientConfig(
        search_addresses=[("127.0.0.1", port)],
        use_repeater=False,
        connection_timeout=0.4,
        echo_timeout=0.4,
        max_search_interval=0.2,
    )

    async def scenario() -> None:
        async with Context(config) as ctx:
            (lo,) = await ctx.connect("T:LO", timeout=5)
            changes: list[bool] = []
            lo.add_connection_callback(lambda channel, up: changes.append(up))
            updates: list[Reading] = []
            await lo.subscribe(ChannelType.LONG, callback=updates.append)
            await until(lambda: updates, "the first update")
            # quiet but alive: ECHO answers keep the circuit through probes
            circuit = lo.circuit
            assert circuit is not None
            quiet_since = circuit.last_heard
            await until(lambda: circuit.last_heard > quiet_since + 0.4, "an ECHO answer")
            assert changes == [] and lo.is_connected

            os.kill(pid, signal.SIGSTOP)
            await until(lambda: changes == [False], "the ECHO timeout", timeout=5)
            assert not lo.is_connected
            with pytest.raises(ChannelTimeout):
                await lo.read(timeout=0.1)

            os.kill(pid, signal.SIGCONT)
            await lo.wait_for_connection(timeout=5)
            assert changes == [False, True]
            # the subscription came back by itself
            await lo.write(1234)
            await until(lambda: updates[-1].value == 1234, "the update after the freeze")

    run(scenario)


def test_beacon_history_judges_anomalies_as_libca() -> None:
    history = BeaconHistory(0.0, 10)
    assert not history.update(1.0, 11)  # the period is learnt
    assert not history.update(2.0, 12)
    assert not history.update(2.0, 12)  # the same beacon by a second path
    assert not history.update(3.05, 13)  # a little late is normal
    assert history.update(3.2, 14)  # much earlier than the period
    history = BeaconHistory(0.0, 10)
    for step in range(1, 5):
        assert not history.update(float(step), 10 + step)
    assert history.update(20.0, 15)  # beacons stopped, now back
    assert not history.update(21.0, 16)  # and the rhythm goes on
    history = BeaconHistory(0.0, 500)
    assert not history.update(1.0, 501)
    assert history.update(2.0, 0)  # the ids started again: a restart
    # a start-up burst (intervals doubling) is no anomaly by itself
    history = BeaconHistory(0.0, 0)
    now = 0.0
    for beacon_id in range(1, 10):
        now += 0.02 * 2**beacon_id
        assert not history.update(now, beacon_id)
    assert not history.update(now + 0.02 * 2**9, 10)  # the period reached


def test_a_beacon_anomaly_restarts_searches() -> None:
    """A restarted server's beacon makes every pending search go out at once."""
    searches: list[float] = []
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    config = ClientConfig(
        search_addresses=[listener.getsockname()], use_repeater=False, max_search_interval=30.0
    )

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(listener, lambda: (listener.recv(2048), searches.append(loop.time())))
        async with Context(config) as ctx:
            assert ctx._udp is not None
            client = ctx._udp.get_extra_info("sockname")
            beacons = Broadcaster(Role.SERVER)

            def beacon(beacon_id: int) -> None:
                datagram = beacons.send(RsrvIsUpResponse(5064, beacon_id, "127.0.0.1"))
                listener.sendto(datagram, client)

            channel = ctx.channel("NOBODY:HAS:THIS")
            beacon(100)  # a new server: one anomaly
            await until(lambda: ctx.beacon_anomalies == 1, "the new server's anomaly")
            # let the back-off grow past a second between searches
            await until(lambda: len(searches) >= 8, "the back-off", timeout=10)
            beacon(101)
            beacon(0)  # the same server, restarted
            await until(lambda: ctx.beacon_anomalies == 2, "the restart anomaly")
            before = len(searches)
            await until(lambda: len(searches) > before, "a search after the anomaly", timeout=1.0)
            assert not channel.is_connected

    try:
        run(scenario)
    finally:
        listener.close()


def test_beacons_keep_a_quiet_circuit_without_echo() -> None:
    """A beacon from the circuit's server counts as hearing from it (libca)."""

    async def scenario() -> None:
        server = Server(
            {"X": ChannelDouble(value=1.0)},
            server_config(),
        )
        await server.start()
        config = ClientConfig(
            search_addresses=[("127.0.0.1", server.tcp_port)],
            use_repeater=False,
            connection_timeout=30.0,
        )
        try:
            async with Context(config) as ctx:
                (x,) = await ctx.connect("X")
                circuit = x.circuit
                assert circuit is not None and ctx._udp is not None
                before = circuit.last_heard
                loop = asyncio.get_running_loop()
                await until(lambda: loop.time() > before, "the loop's clock to move on")
                datagram = Broadcaster(Role.SERVER).send(
                    RsrvIsUpResponse(server.tcp_port, 1, "127.0.0.1")
                )
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                    sender.sendto(datagram, ctx._udp.get_extra_info("sockname"))
                await until(lambda: circuit.last_heard > before, "the beacon")
                assert isinstance(x, Channel) and x.is_connected
        finally:
            await server.stop()

    run(scenario)


def test_a_restarted_server_is_a_beacon_anomaly_and_is_used_again() -> None:
    """Through a repeater: the restart's first beacons restart the searches."""
    repeater_port = free_port()
    argv = [sys.executable, "-m", "caioc.cli.repeater", "--port", str(repeater_port), "-v"]

    def serve(port: int) -> Server:
        return Server(
            {"X": ChannelDouble(value=float(port))},
            server_config(port, ("127.0.0.1", repeater_port)),
        )

    async def scenario() -> None:
        server = serve(0)
        await server.start()
        port = server.tcp_port
        config = ClientConfig(
            search_addresses=[("127.0.0.1", port)],
            repeater_port=repeater_port,
            max_search_interval=30.0,  # only a beacon can make it quick
        )
        try:
            async with Context(config) as ctx:
                (x,) = await ctx.connect("X", timeout=5)
                await until(lambda: ("127.0.0.1", port) in ctx.servers_seen, "the first beacon")
                seen = ctx.beacon_anomalies
                await server.stop()
                await until(lambda: not x.is_connected, "the disconnect")
                server = serve(port)
                await server.start()
                await until(lambda: ctx.beacon_anomalies > seen, "the restart's anomaly")
                await x.wait_for_connection(5)
                assert (await x.read()).value == float(port)
        finally:
            await server.stop()

    env = ca_environment(free_port(), repeater_port)
    with process_until_ready("", env, ready="", argv=argv):
        run(scenario)

"""Connection and access-rights callbacks, as libca's handlers report them.

Against caioc's server in this process: a server that goes away and comes
back on the same port drives the disconnect and reconnect transitions.
"""

from __future__ import annotations

import asyncio
import select
import sys
import threading
import time
from typing import Any

from peers import ca_environment, free_port, process_until_ready, server_config
from test_client_peers import CAIOC
from waiting import run, until

from caioc.ca import AccessRights
from caioc.client import Channel, ClientConfig, Context, ThreadedContext
from caioc.client.pyepics_compat import PV
from caioc.server import ChannelDouble, ChannelInteger, Server


def client_config(port: int) -> ClientConfig:
    return ClientConfig(
        search_addresses=[("127.0.0.1", port)], use_repeater=False, max_search_interval=0.1
    )


def pvdb() -> dict[str, Any]:
    return {"X": ChannelDouble(value=1.5), "RO": ChannelInteger(value=3, read_only=True)}


def test_connection_and_access_callbacks_follow_the_server() -> None:
    async def scenario() -> None:
        server = Server(pvdb(), server_config())
        await server.start()
        port = server.tcp_port
        events: list[tuple[str, str, object]] = []

        def connection(channel: Channel, up: bool) -> None:
            # the state is already the new one when the callback runs
            assert channel.is_connected is up
            events.append((channel.name, "conn", up))

        def access(channel: Channel, rights: AccessRights) -> None:
            events.append((channel.name, "access", rights))

        try:
            async with Context(client_config(port)) as ctx:
                x, ro = ctx.channel("X"), ctx.channel("RO")
                for channel in (x, ro):
                    channel.add_connection_callback(connection)
                    channel.add_access_callback(access)
                await x.wait_for_connection(5)
                await ro.wait_for_connection(5)
                assert sorted(events, key=str) == sorted(
                    [
                        ("X", "access", AccessRights.READ_WRITE),
                        ("X", "conn", True),
                        ("RO", "access", AccessRights.READ),
                        ("RO", "conn", True),
                    ],
                    key=str,
                )
                assert ro.access_rights == AccessRights.READ

                # the server changes its mind about RO: the client hears it
                events.clear()
                server.pvdb["RO"].read_only = False  # type: ignore[attr-defined]
                server.recheck_rights()
                await until(lambda: events, "the access-rights change")
                assert events == [("RO", "access", AccessRights.READ_WRITE)]

                # the server goes away: disconnected, rights gone
                events.clear()
                await server.stop()
                await until(lambda: len(events) == 4, "the disconnect callbacks")
                assert sorted(events, key=str) == sorted(
                    [
                        ("X", "conn", False),
                        ("X", "access", AccessRights.NO_ACCESS),
                        ("RO", "conn", False),
                        ("RO", "access", AccessRights.NO_ACCESS),
                    ],
                    key=str,
                )

                # a removed callback hears nothing more; the other one does
                events.clear()
                ro.remove_connection_callback(connection)
                server = Server(pvdb(), server_config(port))
                await server.start()
                await x.wait_for_connection(5)
                await ro.wait_for_connection(5)
                await until(lambda: len(events) == 3, "the reconnect callbacks")
                assert sorted(events, key=str) == sorted(
                    [
                        ("X", "access", AccessRights.READ_WRITE),
                        ("X", "conn", True),
                        ("RO", "access", AccessRights.READ),
                    ],
                    key=str,
                )
                # closing a channel is no connection news
                events.clear()
                await x.clear()
                # a barrier: by the time a read on the other channel is
                # answered, any callback the clear set off has run
                await ro.read()
                assert events == []
        finally:
            await server.stop()

    run(scenario)


def test_a_failing_callback_does_not_stop_the_others() -> None:
    async def scenario() -> None:
        server = Server(pvdb(), server_config())
        await server.start()
        seen: list[bool] = []

        def broken(channel: Channel, up: bool) -> None:
            raise RuntimeError("a user's bug")

        try:
            async with Context(client_config(server.tcp_port)) as ctx:
                x = ctx.channel("X")
                x.add_connection_callback(broken)
                x.add_connection_callback(lambda channel, up: seen.append(up))
                await x.wait_for_connection(5)
                assert seen == [True]
                assert (await x.read()).value == 1.5  # the circuit is fine
        finally:
            await server.stop()

    run(scenario)


def test_threaded_callbacks_report_a_connected_channel_at_once() -> None:
    async def scenario() -> None:
        server = Server(pvdb(), server_config())
        await server.start()
        threaded = ThreadedContext(client_config(server.tcp_port))
        seen: list[tuple[str, object, bool]] = []
        threads: set[str] = set()

        def connection(channel: Channel, up: bool) -> None:
            threads.add(threading.current_thread().name)
            seen.append(("conn", up, channel.is_connected))

        def access(channel: Channel, rights: AccessRights) -> None:
            seen.append(("access", rights, channel.is_connected))

        try:
            loop = asyncio.get_running_loop()
            (x,) = await loop.run_in_executor(None, threaded.connect, "X")
            threaded.add_connection_callback(x, connection)
            threaded.add_access_callback(x, access)
            await until(lambda: len(seen) == 2, "the present state")
            assert sorted(seen, key=str) == sorted(
                [("conn", True, True), ("access", AccessRights.READ_WRITE, True)], key=str
            )
            assert threads == {"caioc-client"}
            seen.clear()
            await server.stop()
            await until(lambda: len(seen) == 2, "the disconnect")
            assert sorted(seen, key=str) == sorted(
                [("conn", False, False), ("access", AccessRights.NO_ACCESS, False)], key=str
            )
        finally:
            await loop.run_in_executor(None, threaded.close)
            await server.stop()

    run(scenario)


def test_pyepics_pv_connection_and_access_callbacks(monkeypatch: Any) -> None:
    async def scenario() -> None:
        server = Server(pvdb(), server_config())
        await server.start()
        threaded = ThreadedContext(client_config(server.tcp_port))
        monkeypatch.setattr("caioc.client.pyepics_compat.shared_context", lambda: threaded)
        connections: list[tuple[str, bool]] = []
        rights: list[tuple[bool, bool, str]] = []
        loop = asyncio.get_running_loop()
        try:

            def make() -> PV:
                return PV(
                    "RO",
                    connection_callback=lambda pvname, conn, pv: connections.append((pvname, conn)),
                    access_callback=lambda read, write, pv: rights.append((read, write, pv.access)),
                )

            pv = await loop.run_in_executor(None, make)
            await until(lambda: connections and rights, "the PV's callbacks")
            assert connections == [("RO", True)]
            assert rights == [(True, False, "read-only")]
            assert pv.read_access and not pv.write_access
            # reading does not report the connection again (pyepics does not)
            assert await loop.run_in_executor(None, pv.get) == 3
            assert connections == [("RO", True)]
            await server.stop()
            await until(lambda: len(connections) == 2, "the disconnect")
            assert connections[-1] == ("RO", False)
            await until(lambda: len(rights) == 2, "the lost rights")
            assert rights[-1] == (False, False, "no access")
        finally:
            await loop.run_in_executor(None, threaded.close)
            await server.stop()

    run(scenario)


def test_camonitor_reports_a_lost_server_through_the_callback() -> None:
    """caioc-monitor's "*** disconnected" comes from a connection callback."""
    port = free_port()
    env = ca_environment(port, free_port())
    env["CAIOC_CA_SPAWN_REPEATER"] = "NO"
    argv = [sys.executable, "-m", "caioc.cli.monitor", "-w", "5", "T:LO"]
    with (
        process_until_ready(CAIOC, env) as server,
        process_until_ready("", env, ready="T:LO", argv=argv) as monitor,
    ):
        server.kill()
        assert monitor.stdout is not None
        deadline = time.monotonic() + 10
        lines: list[str] = []
        while not any("disconnected" in line for line in lines):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no disconnect report in {lines}"
            ready, _, _ = select.select([monitor.stdout], [], [], remaining)
            if ready:
                lines.append(monitor.stdout.readline())
        assert lines[-1].split()[0] == "T:LO" and "*** disconnected" in lines[-1]

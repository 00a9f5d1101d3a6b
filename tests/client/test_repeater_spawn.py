"""A client starts the CA repeater when none runs, as libca does.

Each test uses a repeater port of its own and makes sure the repeater it
caused is gone before it ends, so no test run leaves repeaters behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from peers import ca_environment, free_port, process_until_ready, server_config
from waiting import run, until

from caioc.ca import BroadcasterState
from caioc.client import ClientConfig, Context
from caioc.client._repeater import repeater_port_held
from caioc.server import ChannelDouble, Server


@pytest.fixture
def repeater_port() -> int:
    """A repeater port for this test alone."""
    return free_port()


def test_a_client_starts_a_repeater_and_hears_beacons_through_it(repeater_port: int) -> None:
    config = ClientConfig(
        search_addresses=[("127.0.0.1", free_port())],
        repeater_port=repeater_port,
        spawn_repeater=True,
    )
    assert not repeater_port_held(repeater_port)

    async def scenario() -> None:
        async with Context(config) as ctx:
            await until(
                lambda: ctx.broadcaster.state is BroadcasterState.REGISTERED,
                "the spawned repeater's confirmation",
                timeout=10,
            )
            pid = ctx.spawned_repeater_pid
            assert pid is not None and repeater_port_held(repeater_port)
            try:
                # a server's beacon reaches the client through that repeater
                server = Server(
                    {"X": ChannelDouble(value=1.0)},
                    server_config(beacons=("127.0.0.1", repeater_port)),
                )
                await server.start()
                try:
                    await until(
                        lambda: ("127.0.0.1", server.tcp_port) in ctx.servers_seen,
                        "the beacon through the repeater",
                    )
                finally:
                    await server.stop()
            finally:
                os.kill(pid, signal.SIGTERM)
                await until(lambda: not repeater_port_held(repeater_port), "the repeater's end")

    run(scenario)


def test_no_second_repeater_when_one_runs(repeater_port: int) -> None:
    config = ClientConfig(
        search_addresses=[("127.0.0.1", free_port())],
        repeater_port=repeater_port,
        spawn_repeater=True,
    )
    argv = [sys.executable, "-m", "caioc.cli.repeater", "--port", str(repeater_port), "-v"]

    async def scenario() -> None:
        async with Context(config) as ctx:
            await until(
                lambda: ctx.broadcaster.state is BroadcasterState.REGISTERED,
                "the running repeater's confirmation",
            )
            assert ctx.spawned_repeater_pid is None

    with process_until_ready("", ca_environment(free_port(), repeater_port), ready="", argv=argv):
        run(scenario)


def test_a_spawned_repeater_exits_once_its_clients_are_gone(repeater_port: int) -> None:
    """What clients ask of the repeaters they start (``--exit-when-idle``)."""
    config = ClientConfig(
        search_addresses=[("127.0.0.1", free_port())], repeater_port=repeater_port
    )
    argv = [sys.executable, "-m", "caioc.cli.repeater", "--port", str(repeater_port)]
    argv += ["--exit-when-idle", "0.5", "-v"]
    env = ca_environment(free_port(), repeater_port)

    async def scenario() -> None:
        async with Context(config) as ctx:
            await until(
                lambda: ctx.broadcaster.state is BroadcasterState.REGISTERED,
                "the repeater's confirmation",
            )
            # registered clients keep it alive well past its idle time: a
            # negative check, so time passing (twice the 0.5 s) is the test
            await asyncio.sleep(1.0)
            assert repeater.poll() is None
        await until(lambda: repeater.poll() is not None, "the idle exit")
        assert repeater.returncode == 0

    with process_until_ready("", env, ready="", argv=argv) as repeater:
        run(scenario)


def test_spawning_is_on_from_the_environment_and_off_by_hand() -> None:
    assert not ClientConfig().spawn_repeater
    assert ClientConfig.from_environment({}).spawn_repeater
    assert not ClientConfig.from_environment({"CAIOC_CA_SPAWN_REPEATER": "NO"}).spawn_repeater
    assert ClientConfig.from_environment({"CAIOC_CA_SPAWN_REPEATER": "YES"}).spawn_repeater

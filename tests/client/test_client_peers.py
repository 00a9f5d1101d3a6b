"""caioc's asyncio client against the C server (softioc) and caioc's own.

The same tests run against both: EPICS itself is the oracle for what a
server answers, and our server must answer our client the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import numpy as np
import pytest
from peers import SERVE_PVDB, ca_environment, free_port, process_until_ready
from waiting import run, until

from caioc.ca import ChannelType
from caioc.client import ChannelTimeout, ClientConfig, Context

SOFTIOC = """
import numpy
from softioc import asyncio_dispatcher, builder, softioc
builder.SetDeviceName("T")
builder.aOut("AO", initial_value=3.25, EGU="mm", PREC=3, DRVH=100, DRVL=-100)
builder.longOut("LO", initial_value=7)
builder.mbbOut("MB", "Off", "On", initial_value=1)
builder.stringOut("SO", initial_value="hello")
builder.WaveformOut("WF", initial_value=numpy.arange(10.0))
builder.WaveformOut("BIG", initial_value=numpy.arange(2_000_000.0))  # 16 MB
builder.LoadDatabase()
softioc.iocInit(asyncio_dispatcher.AsyncioDispatcher(), enable_pva=False)
print("READY", flush=True)
softioc.non_interactive_ioc()
"""

CAIOC = (
    """
import numpy
from caioc.server import ChannelDouble, ChannelInteger, ChannelEnum, ChannelString
pvdb = {
    "T:AO": ChannelDouble(value=3.25, units="mm", precision=3,
                          upper_ctrl_limit=100.0, lower_ctrl_limit=-100.0),
    "T:LO": ChannelInteger(value=7),
    "T:MB": ChannelEnum(value=1, enum_strings=["Off", "On"]),
    "T:SO": ChannelString(value="hello"),
    "T:WF": ChannelDouble(value=numpy.arange(10.0)),
    "T:BIG": ChannelDouble(value=numpy.arange(2_000_000.0)),  # 16 MB
}
"""
    + SERVE_PVDB
)

SERVERS = {"softioc": SOFTIOC, "caioc": CAIOC}


def client_config(port: int) -> ClientConfig:
    return ClientConfig(search_addresses=[("127.0.0.1", port)], max_array_bytes=10**8)


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int, dict[str, str]]]:
    if request.param == "softioc":
        pytest.importorskip("softioc", reason="softioc (the C IOC) not installed")
    port = free_port()
    env = ca_environment(port, free_port())
    with process_until_ready(SERVERS[request.param], env):
        yield request.param, port, env


def test_reads_of_every_class(server: tuple[str, int, dict[str, str]]) -> None:
    _, port, _ = server

    async def scenario() -> None:
        async with Context(client_config(port)) as ctx:
            ao, lo, mb, so, wf = await ctx.connect("T:AO", "T:LO", "T:MB", "T:SO", "T:WF")
            assert ao.native_type == ChannelType.DOUBLE and lo.native_type == ChannelType.LONG
            assert (await ao.read()).value == 3.25
            timed = await ao.read(ChannelType.TIME_DOUBLE)
            assert timed.severity == 0 and timed.timestamp is not None
            ctrl = await ao.read(ChannelType.CTRL_DOUBLE)
            assert ctrl.metadata["units"] == "mm" and ctrl.metadata["precision"] == 3
            assert ctrl.metadata["upper_ctrl_limit"] == 100.0
            assert (await ao.read(ChannelType.STRING)).value == "3.250"
            assert (await lo.read()).value == 7
            assert (await mb.read(ChannelType.STRING)).value == "On"
            assert (await mb.read(ChannelType.CTRL_ENUM)).metadata["strs"][:2] == ["Off", "On"]
            assert (await so.read()).value == "hello"
            assert list((await wf.read()).value) == list(np.arange(10.0))
            assert list((await wf.read(data_count=3)).value) == [0.0, 1.0, 2.0]

    run(scenario)


def test_large_array(server: tuple[str, int, dict[str, str]]) -> None:
    _, port, _ = server

    async def scenario() -> None:
        async with Context(client_config(port)) as ctx:
            (big,) = await ctx.connect("T:BIG")
            value = (await big.read(timeout=10)).value
            assert len(value) == 2_000_000 and value[-1] == 1_999_999.0  # 16 MB

    run(scenario)


def test_writes_with_completion_and_conversion(server: tuple[str, int, dict[str, str]]) -> None:
    _, port, _ = server

    async def scenario() -> None:
        async with Context(client_config(port)) as ctx:
            ao, lo, mb = await ctx.connect("T:AO", "T:LO", "T:MB")
            await lo.write(42)
            assert (await lo.read()).value == 42
            await ao.write("1.5")  # a string, converted by the server
            assert (await ao.read()).value == 1.5
            await mb.write("Off")
            assert (await mb.read()).value == 0
            await lo.write(7, wait=False)
            # plain WRITE has no reply; a read sent after it on the same
            # circuit is answered after the write is done
            assert (await lo.read()).value == 7

    run(scenario)


def test_subscription_gets_every_update(server: tuple[str, int, dict[str, str]]) -> None:
    _, port, _ = server

    async def scenario() -> None:
        async with Context(client_config(port)) as ctx:
            (lo,) = await ctx.connect("T:LO")
            subscription = await lo.subscribe()
            first = await asyncio.wait_for(subscription.__anext__(), 5)
            assert isinstance(first.value, int)
            for value in range(100, 120):
                await lo.write(value)
            seen = []
            while not seen or seen[-1] != 119:
                seen.append((await asyncio.wait_for(subscription.__anext__(), 5)).value)
            assert seen == list(range(100, 120))
            await subscription.clear()

    run(scenario)


def test_missing_pv_times_out_naming_it_and_the_addresses(
    server: tuple[str, int, dict[str, str]],
) -> None:
    _, port, _ = server

    async def scenario() -> None:
        async with Context(client_config(port)) as ctx:
            with pytest.raises(ChannelTimeout, match=rf"'T:NOPE'.*127\.0\.0\.1:{port}"):
                await ctx.connect("T:NOPE", timeout=0.5)

    run(scenario)


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_server_started_after_the_client_and_restarted_mid_subscription(name: str) -> None:
    if name == "softioc":
        pytest.importorskip("softioc", reason="softioc (the C IOC) not installed")
    port = free_port()
    env = ca_environment(port, free_port())

    async def scenario() -> None:
        async with Context(client_config(port)) as ctx:
            # searching before any server exists: a search reaches the port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nobody:
                nobody.bind(("127.0.0.1", port))
                nobody.setblocking(False)
                lo = ctx.channel("T:LO")
                loop = asyncio.get_running_loop()
                await asyncio.wait_for(loop.sock_recv(nobody, 16384), 5)
            stack = contextlib.ExitStack()
            with stack:
                stack.enter_context(process_until_ready(SERVERS[name], env))
                await lo.wait_for_connection(timeout=5)
                subscription = await lo.subscribe()
                assert (await asyncio.wait_for(subscription.__anext__(), 5)).value == 7
            # the server is gone; a new one comes up on the same port
            await until(lambda: not lo.connected.is_set(), "the client to see the server go")
            with process_until_ready(SERVERS[name], env):
                await lo.wait_for_connection(timeout=10)
                # the subscription was re-established by itself
                reading = await asyncio.wait_for(subscription.__anext__(), 5)
                assert reading.value == 7
                await lo.write(99)
                while (await asyncio.wait_for(subscription.__anext__(), 5)).value != 99:
                    pass

    run(scenario)


def test_a_new_servers_beacon_restarts_the_search() -> None:
    """Through the repeater, a beacon finds the server long before the back-off would."""
    import sys
    import time

    port, repeater = free_port(), free_port()
    env = ca_environment(port, repeater)
    argv = [sys.executable, "-m", "caioc.cli.repeater", "--port", str(repeater), "-v"]

    async def scenario() -> None:
        config = ClientConfig(
            search_addresses=[("127.0.0.1", port)],
            repeater_port=repeater,
            max_search_interval=30.0,
        )
        async with Context(config) as ctx:
            lo = ctx.channel("T:LO")
            # Time passing is the scenario: searches back off (doubling)
            # while no server answers; after 4 s the next search is seconds
            # away. No event marks that, and waiting longer only helps.
            await asyncio.sleep(4.0)
            with process_until_ready(CAIOC, env):
                ready = time.monotonic()
                await lo.wait_for_connection(timeout=10)
                found_after = time.monotonic() - ready
            assert ctx.servers_seen, "no beacon reached the client"
            # the next search was seconds away; the beacon made it now
            assert found_after < 1.5, found_after

    with process_until_ready("", env, ready="", argv=argv):
        run(scenario)

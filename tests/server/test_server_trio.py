"""caioc's server under trio, driven by caioc's asyncio client and by libca.

The server runs with trio on a thread of its own; the clients run on the
test's thread (caioc's asyncio client, raw circuits built on the core) or in
a child process (pyepics over the C libca). The scenarios take the back-end
as a parameter: ``test_server_curio`` runs the same ones under curio.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from peers import ca_environment, free_port, run_pyepics, server_config
from test_server_robustness import RawClient
from waiting import run, until

from caioc.ca import (
    AccessRights,
    AccessRightsResponse,
    ChannelType,
    ClientNameRequest,
    EventAddResponse,
    HostNameRequest,
    ServerDisconnResponse,
    VersionRequest,
)
from caioc.client import ClientConfig, Context
from caioc.server import ChannelDouble, ChannelInteger, ServerConfig
from caioc.server._access import AccessSecurity

trio = pytest.importorskip("trio")

#: Seconds a server thread may take to start or to stop.
THREAD_TIMEOUT = 10.0
#: Seconds a put hook sleeps (in the back-end's own sleep) before it returns.
HOOK_SLEEP = 0.05


class ServedInThread:
    """A caioc server of one back-end serving on a thread of its own.

    ``call`` runs a plain function on the server's thread (to change or look
    at server state safely), ``stop`` asks the server to stop gracefully and
    waits for its thread to end.
    """

    #: The back-end's module (``caioc.server.trio`` ...) and its sleep.
    library = "?"

    def __init__(
        self, pvdb: dict[str, Any], server_config: ServerConfig, access_security: Any = None
    ) -> None:
        self.server: Any = self.make_server(pvdb, server_config, access_security)
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name=f"{self.library} server")

    def make_server(
        self, pvdb: dict[str, Any], server_config: ServerConfig, access_security: Any
    ) -> Any:
        raise NotImplementedError

    def run_loop(self) -> None:
        raise NotImplementedError

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def request_stop(self) -> None:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def _main(self) -> None:
        try:
            self.run_loop()
        except BaseException as error:  # reported by the test, not lost on the thread
            self.failure = error
            self.ready.set()

    def __enter__(self) -> ServedInThread:
        self.thread.start()
        assert self.ready.wait(THREAD_TIMEOUT), "the server did not start"
        if self.failure is not None:
            raise self.failure
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.request_stop()
        self.thread.join(THREAD_TIMEOUT)
        assert not self.thread.is_alive(), "the server did not stop"
        if self.failure is not None:
            raise self.failure

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class TrioServer(ServedInThread):
    library = "trio"

    def make_server(
        self, pvdb: dict[str, Any], server_config: ServerConfig, access_security: Any
    ) -> Any:
        from caioc.server.trio import Server

        return Server(pvdb, server_config, access_security)

    def run_loop(self) -> None:
        trio.run(self._serve)

    async def _serve(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await nursery.start(self.server.serve)
            self.ready.set()

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return trio.from_thread.run_sync(function, *args, trio_token=self.token)

    def request_stop(self) -> None:
        self.call(self.nursery.start_soon, self.server.stop)

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


Backend = Callable[[dict[str, Any], ServerConfig], ServedInThread]


def client_config(served: ServedInThread) -> ClientConfig:
    """Find the server by a UDP search of its port (it serves searches there too)."""
    return ClientConfig(search_addresses=[("127.0.0.1", served.server.tcp_port)])


def hooked_channel(events: list[str], sleep: Callable[[float], Awaitable[None]]) -> ChannelDouble:
    """A channel whose put hook sleeps in the back-end's sleep and logs its calls."""

    async def hook(channel: Any, value: float) -> float:
        events.append(f"start {value}")
        await sleep(HOOK_SLEEP)
        events.append(f"end {value}")
        return value

    return ChannelDouble(value=1.0, put_hook=hook)


# -- the scenarios, for any back-end ------------------------------------------------


def check_search_connect_get_put_and_monitor(backend: type[ServedInThread]) -> None:
    events: list[str] = []
    holder: list[ServedInThread] = []

    async def sleep(seconds: float) -> None:
        await holder[0].sleep(seconds)

    data = hooked_channel(events, sleep)
    waveform = ChannelDouble(value=np.arange(5.0))
    with backend({"X": data, "WF": waveform}, server_config()) as served:
        holder.append(served)

        async def scenario() -> None:
            async with Context(client_config(served)) as ctx:
                x, wf = await ctx.connect("X", "WF")
                assert (await x.read()).value == 1.0
                assert list((await wf.read()).value) == [0, 1, 2, 3, 4]
                subscription = await x.subscribe()
                first = await asyncio.wait_for(subscription.queue.get(), 5)
                assert first.value == 1.0
                await x.write(2.5)  # completes once the hook has slept and returned
                assert events == ["start 2.5", "end 2.5"]
                # the update the put caused was sent ahead of its completion
                assert subscription.queue.qsize() == 1
                assert (await subscription.queue.get()).value == 2.5
                # an update published by server code reaches the subscriber
                served.call(data.set_nowait, 7.0)
                assert (await asyncio.wait_for(subscription.queue.get(), 5)).value == 7.0
                reading = await x.read(ChannelType.CTRL_DOUBLE)
                assert reading.value == 7.0 and reading.metadata["units"] == ""

        run(scenario)


def check_puts_from_two_clients_pass_the_hook_in_turn(backend: type[ServedInThread]) -> None:
    events: list[str] = []
    holder: list[ServedInThread] = []

    async def sleep(seconds: float) -> None:
        await holder[0].sleep(seconds)

    data = hooked_channel(events, sleep)
    with backend({"X": data}, server_config()) as served:
        holder.append(served)

        async def scenario() -> None:
            async with Context(client_config(served)) as one, Context(client_config(served)) as two:
                (x1,) = await one.connect("X")
                (x2,) = await two.connect("X")
                first = asyncio.ensure_future(x1.write(10.0))
                await until(lambda: events == ["start 10.0"], "the first put in its hook")
                # the second put contends for the channel's lock while the
                # first sleeps in the hook: it waits its turn
                await x2.write(20.0)
                await first
                assert events == ["start 10.0", "end 10.0", "start 20.0", "end 20.0"]
                assert (await x1.read()).value == 20.0

        run(scenario)


def check_stop_sends_server_disconn(backend: type[ServedInThread]) -> None:
    with backend({"X": ChannelDouble(value=1.0)}, server_config()) as served:

        async def scenario() -> None:
            client = await RawClient.connect(served.server.tcp_port)
            channel = await client.open("X")
            await asyncio.get_running_loop().run_in_executor(None, served.stop)
            with contextlib.suppress(ConnectionError):  # then the server closes the circuit
                await client.receive(
                    lambda: any(isinstance(c, ServerDisconnResponse) for c in client.received)
                )
            goodbyes = [c for c in client.received if isinstance(c, ServerDisconnResponse)]
            assert [c.cid for c in goodbyes] == [channel.cid]
            assert await asyncio.wait_for(client.reader.read(), 5) == b""  # closed after it
            client.close()

        run(scenario)


def check_a_client_that_leaves_is_cleaned_up(backend: type[ServedInThread]) -> None:
    data = ChannelDouble(value=1.0)
    with backend({"X": data}, server_config()) as served:
        server = served.server

        async def scenario() -> None:
            client = await RawClient.connect(server.tcp_port)
            channel = await client.open("X")
            client.send(channel.subscribe(ChannelType.DOUBLE, 1))
            await client.receive(
                lambda: any(isinstance(c, EventAddResponse) for c in client.received)
            )
            assert served.call(lambda: (len(server.circuits), data.subscription_count)) == (1, 1)
            client.close()
            await until(
                lambda: (
                    served.call(lambda: (len(server.circuits), data.subscription_count)) == (0, 0)
                ),
                "the circuit and its subscription to go",
            )
            # the server still serves the next client
            other = await RawClient.connect(server.tcp_port)
            await other.open("X")
            other.close()

        run(scenario)


def check_a_slow_client_costs_bounded_memory(backend: type[ServedInThread]) -> None:
    data = ChannelDouble(value=np.zeros(1000), max_length=1000)
    with backend({"X": data}, server_config()) as served:
        server = served.server

        def backlog() -> tuple[int, int]:
            (circuit,) = server.circuits
            pending = sum(len(s.pending) for s in circuit.subscriptions.values())
            return pending, circuit.outgoing_bytes

        async def scenario() -> None:
            client = await RawClient.connect(server.tcp_port)
            channel = await client.open("X")
            client.send(channel.subscribe(ChannelType.DOUBLE, 1000))
            await client.receive(
                lambda: any(isinstance(c, EventAddResponse) for c in client.received)
            )
            # the client stops reading; the server keeps publishing 8 kB updates
            for i in range(3000):
                served.call(data.set_nowait, np.full(1000, float(i)))
            pending, waiting = served.call(backlog)
            # 3000 updates of 8 kB were published: 24 MB if nothing coalesced
            assert pending <= 4
            assert waiting < 4 * 1024 * 1024, waiting
            # once the client reads again, the newest value arrives
            await client.receive(
                lambda: any(
                    isinstance(c, EventAddResponse) and c.payload_size and c.data[0] == 2999.0
                    for c in client.received
                )
            )
            client.close()

        run(scenario)


ACF = """
HAG(control) { console }
ASG(DEFAULT) {
    RULE(1, READ)
}
ASG(guarded) {
    INPA("mode")
    RULE(1, READ)
    RULE(1, WRITE) { HAG(control) CALC("A=1") }
}
"""


def check_access_rights_are_rechecked(backend: type[ServedInThread], tmp_path: Path) -> None:
    acf = tmp_path / "rules.acf"
    acf.write_text(ACF)
    valve = ChannelDouble(value=0.0)
    valve.access_group = "guarded"
    mode = ChannelInteger(value=0)
    security = AccessSecurity.from_file(acf)
    with backend({"valve": valve, "mode": mode}, server_config(), security) as served:

        async def scenario() -> None:
            client = await RawClient.connect(served.server.tcp_port)
            channel = client.core.create_channel("valve")
            client.send(
                VersionRequest(0),
                HostNameRequest("console"),
                ClientNameRequest("bob"),
                channel.create(),
            )
            await client.receive(lambda: channel.sid is not None)
            assert channel.access_rights == AccessRights.READ  # the CALC is false: A=0
            # the input PV moves the CALC: pushed to the client
            served.call(mode.set_nowait, 1)
            await client.receive(lambda: channel.access_rights == AccessRights.READ_WRITE)
            # the client says it moved to another host: rights re-checked
            client.send(HostNameRequest("laptop"))
            await client.receive(lambda: channel.access_rights == AccessRights.READ)
            pushed = [c.access_rights for c in client.received if type(c) is AccessRightsResponse]
            # the first came with the channel's creation
            assert pushed == [AccessRights.READ, AccessRights.READ_WRITE, AccessRights.READ]
            client.close()

        run(scenario)


LIBCA_CLIENT = """
import time
values = []
monitor = epics.PV("T:X", auto_monitor=True, callback=lambda value=None, **kw: values.append(value))
assert monitor.wait_for_connection(timeout=5)
until(lambda: values, "the first monitor update")
got = epics.caget("T:X", timeout=5)
ctrl = epics.PV("T:X", form="ctrl")
ctrl.wait_for_connection(timeout=5)
started = time.monotonic()
status = epics.caput("T:X", 4.5, wait=True, timeout=5)
put_seconds = time.monotonic() - started
epics.caput("T:X", 5.5, wait=True, timeout=5)
until(lambda: values[-1:] == [5.5], "the monitor update of the last put")
result = {
    "got": got, "status": status, "put_seconds": put_seconds, "values": values,
    "units": ctrl.get_ctrlvars(timeout=5)["units"], "wf": list(epics.caget("T:WF", timeout=5)),
}
"""


def check_libca_searches_gets_puts_and_monitors(backend: type[ServedInThread]) -> None:
    events: list[str] = []
    holder: list[ServedInThread] = []

    async def sleep(seconds: float) -> None:
        await holder[0].sleep(seconds)

    env = ca_environment(free_port(), free_port())
    data = hooked_channel(events, sleep)
    data.units = "mm"
    pvdb = {"T:X": data, "T:WF": ChannelDouble(value=np.arange(4.0))}
    with backend(pvdb, ServerConfig.from_environment(env)) as served:
        holder.append(served)
        result = run_pyepics(LIBCA_CLIENT, env)
    assert result["got"] == 1.0 and result["status"] == 1
    # put with completion waited for the hook's sleep
    assert result["put_seconds"] >= HOOK_SLEEP
    assert events == ["start 4.5", "end 4.5", "start 5.5", "end 5.5"]
    assert result["values"] == [1.0, 4.5, 5.5]
    assert result["units"] == "mm" and result["wf"] == [0.0, 1.0, 2.0, 3.0]


# -- under trio -----------------------------------------------------------------------


def test_trio_search_connect_get_put_and_monitor() -> None:
    check_search_connect_get_put_and_monitor(TrioServer)


def test_trio_puts_from_two_clients_pass_the_hook_in_turn() -> None:
    check_puts_from_two_clients_pass_the_hook_in_turn(TrioServer)


def test_trio_stop_sends_server_disconn() -> None:
    check_stop_sends_server_disconn(TrioServer)


def test_trio_a_client_that_leaves_is_cleaned_up() -> None:
    check_a_client_that_leaves_is_cleaned_up(TrioServer)


def test_trio_a_slow_client_costs_bounded_memory() -> None:
    check_a_slow_client_costs_bounded_memory(TrioServer)


def test_trio_access_rights_are_rechecked(tmp_path: Path) -> None:
    check_access_rights_are_rechecked(TrioServer, tmp_path)


@pytest.mark.peers
def test_trio_with_libca() -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    check_libca_searches_gets_puts_and_monitors(TrioServer)


def test_serving_from_a_nursery_and_cancelling_it_says_goodbye() -> None:
    """Cancelling the server (not stop()) still sends SERVER_DISCONN first."""
    from caioc.server.trio import Server

    server = Server({"X": ChannelDouble(value=1.0)}, server_config())
    received: list[Any] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            stream = await trio.open_tcp_stream("127.0.0.1", server.tcp_port)
            client = RawCircuit()
            channel = client.core.create_channel("X")
            await stream.send_all(client.version() + client.core.send(channel.create()))
            with trio.fail_after(5):
                while channel.sid is None:
                    received.extend(client.take(await stream.receive_some(65536)))
            nursery.cancel_scope.cancel()  # the server task is cancelled from outside
            with trio.CancelScope(shield=True), trio.fail_after(5):
                while data := await stream.receive_some(65536):
                    received.extend(client.take(data))
            await stream.aclose()

    trio.run(main)
    assert any(isinstance(c, ServerDisconnResponse) for c in received)
    assert not server.circuits


class RawCircuit:
    """The client side of the core, fed by hand (for a trio-side client)."""

    def __init__(self) -> None:
        from caioc.ca import Role, VirtualCircuit

        self.core = VirtualCircuit(Role.CLIENT, max_payload=10**6)

    def version(self) -> bytes:
        from caioc.ca import VersionRequest

        return self.core.send(VersionRequest(0))

    def take(self, data: bytes) -> Iterator[Any]:
        from caioc.ca import NEED_DATA

        self.core.receive_data(data)
        while (command := self.core.next_command()) is not NEED_DATA:
            yield command

"""caioc's server under curio, driven by caioc's asyncio client and by libca.

The scenarios are ``test_server_trio``'s, run with a curio server on a
thread of its own.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from peers import server_config
from test_server_trio import (
    THREAD_TIMEOUT,
    ServedInThread,
    check_a_client_that_leaves_is_cleaned_up,
    check_a_slow_client_costs_bounded_memory,
    check_access_rights_are_rechecked,
    check_libca_searches_gets_puts_and_monitors,
    check_puts_from_two_clients_pass_the_hook_in_turn,
    check_search_connect_get_put_and_monitor,
    check_stop_sends_server_disconn,
)

from caioc.server import ServerConfig

try:
    import curio
except ImportError:
    pytest.skip("curio is not installed", allow_module_level=True)
except AttributeError as error:  # curio 1.6 does not import on Python 3.13
    pytest.skip(f"curio does not import on this Python: {error}", allow_module_level=True)

_STOP = object()


class CurioServer(ServedInThread):
    """A curio server; requests from the test thread go through a UniversalQueue.

    curio has no call-into-the-kernel-from-a-thread API like trio's
    ``from_thread``: a task of the kernel takes (function, arguments,
    future) from a queue that plain threads may put to.
    """

    library = "curio"

    def make_server(
        self, pvdb: dict[str, Any], server_config: ServerConfig, access_security: Any
    ) -> Any:
        from caioc.server.curio import Server

        self.requests = curio.UniversalQueue()
        return Server(pvdb, server_config, access_security)

    def run_loop(self) -> None:
        curio.run(self._serve)

    async def _serve(self) -> None:
        async with curio.TaskGroup() as group:
            await group.spawn(self.server.serve)
            await self.server.started.wait()
            self.ready.set()
            while True:
                function, args, future = await self.requests.get()
                if function is _STOP:
                    await self.server.stop()
                    future.set_result(None)
                    return
                try:
                    future.set_result(function(*args))
                except Exception as error:
                    future.set_exception(error)

    def _put(self, function: Any, args: tuple[Any, ...]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.requests.put((function, args, future))  # a plain caller: curio's plain put
        return future

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return self._put(function, args).result(THREAD_TIMEOUT)

    def request_stop(self) -> None:
        self._put(_STOP, ())

    async def sleep(self, seconds: float) -> None:
        await curio.sleep(seconds)


def test_curio_search_connect_get_put_and_monitor() -> None:
    check_search_connect_get_put_and_monitor(CurioServer)


def test_curio_puts_from_two_clients_pass_the_hook_in_turn() -> None:
    check_puts_from_two_clients_pass_the_hook_in_turn(CurioServer)


def test_curio_stop_sends_server_disconn() -> None:
    check_stop_sends_server_disconn(CurioServer)


def test_curio_a_client_that_leaves_is_cleaned_up() -> None:
    check_a_client_that_leaves_is_cleaned_up(CurioServer)


def test_curio_a_slow_client_costs_bounded_memory() -> None:
    check_a_slow_client_costs_bounded_memory(CurioServer)


def test_curio_access_rights_are_rechecked(tmp_path: Path) -> None:
    check_access_rights_are_rechecked(CurioServer, tmp_path)


@pytest.mark.peers
def test_curio_with_libca() -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    check_libca_searches_gets_puts_and_monitors(CurioServer)


def test_cancelling_the_serving_task_says_goodbye() -> None:
    """Cancelling the server's task (not stop()) still sends SERVER_DISCONN first."""
    from test_server_trio import RawCircuit

    from caioc.ca import ServerDisconnResponse
    from caioc.server import ChannelDouble
    from caioc.server.curio import Server

    server = Server({"X": ChannelDouble(value=1.0)}, server_config())
    received: list[Any] = []

    async def main() -> None:
        task = await curio.spawn(server.serve)
        await server.started.wait()
        sock = await curio.open_connection("127.0.0.1", server.tcp_port)
        client = RawCircuit()
        channel = client.core.create_channel("X")
        await sock.sendall(client.version() + client.core.send(channel.create()))
        async with curio.timeout_after(5):
            while channel.sid is None:
                received.extend(client.take(await sock.recv(65536)))
            await task.cancel()  # the server task is cancelled from outside
            while data := await sock.recv(65536):
                received.extend(client.take(data))
        await sock.close()

    curio.run(main)
    assert any(isinstance(c, ServerDisconnResponse) for c in received)
    assert not server.circuits

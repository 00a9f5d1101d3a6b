"""The one-shot API for scripts (caioc.client.sync), against caioc's server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from peers import server_config

from caioc.ca import ChannelType
from caioc.client import (
    ChannelTimeout,
    ClientConfig,
    Reading,
    ServerError,
    ThreadedContext,
    sync,
)
from caioc.server import ChannelDouble, ChannelError, Server


class ServerThread:
    """caioc's server on an event loop of its own thread, as another process would be."""

    def __init__(self) -> None:
        async def refuse(channel: object, value: float) -> float:
            if value < 0:
                raise ChannelError(message="negative values are refused")
            return value

        self.value = ChannelDouble(value=1.25, units="mm", precision=2)
        self.setpoint = ChannelDouble(value=0.0, put_hook=refuse)
        self.loop = asyncio.new_event_loop()
        self.server = Server(
            {"sync:value": self.value, "sync:setpoint": self.setpoint}, server_config()
        )
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def set(self, value: float) -> None:
        self.loop.call_soon_threadsafe(self.value.set_nowait, value)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def served() -> Iterator[tuple[ServerThread, ThreadedContext]]:
    server = ServerThread()
    config = ClientConfig(search_addresses=[("127.0.0.1", server.server.tcp_port)])
    with ThreadedContext(config) as context:
        yield server, context
    server.stop()


def test_read_and_write(served: tuple[ServerThread, ThreadedContext]) -> None:
    server, context = served
    reading = sync.read("sync:value", context=context)
    assert reading.value == 1.25
    assert (
        sync.read("sync:value", ChannelType.CTRL_DOUBLE, context=context).metadata["units"] == "mm"
    )
    sync.write("sync:setpoint", 7.5, context=context)  # returns once completed
    assert server.setpoint.value == 7.5
    with pytest.raises(ServerError, match=r"sync:setpoint.* failed"):  # ECA_PUTFAIL
        sync.write("sync:setpoint", -1.0, context=context)
    assert server.setpoint.value == 7.5
    values = sync.read_many(["sync:value", "sync:nothing"], timeout=0.5, context=context)
    assert values[0] is not None and values[0].value == 1.25 and values[1] is None
    with pytest.raises(ChannelTimeout, match="sync:nothing"):
        sync.read("sync:nothing", timeout=0.3, context=context)


def test_monitor_collects_updates_for_a_while(
    served: tuple[ServerThread, ThreadedContext],
) -> None:
    server, context = served
    seen: list[float] = []

    def on_update(update: Reading) -> None:
        seen.append(update.value)
        if len(seen) == 1:  # subscribed: now the value moves
            for value in (2.0, 3.0, 4.0):
                server.set(value)

    updates = sync.monitor("sync:value", 2.0, context=context, callback=on_update)
    assert [update.value for update in updates] == [1.25, 2.0, 3.0, 4.0]
    assert seen == [1.25, 2.0, 3.0, 4.0]
    server.set(5.0)  # after the monitor: nobody listens any more
    assert sync.read("sync:value", context=context).value == 5.0
    with pytest.raises(ValueError):
        sync.monitor("sync:value", -1, context=context)

"""A circuit over a stream whose sends are awaited: the part trio and curio share.

asyncio hands writes to a transport that buffers them and calls back when
its buffer fills or drains. trio and curio instead await each send, so
their circuits keep that buffer themselves: replies go to :attr:`outgoing`
and one sender task writes them, a batch per send, pausing the updates
(``pause_writing``) while more than :data:`HIGH_WATER` bytes wait and
resuming them below :data:`LOW_WATER`, as asyncio's transports do. A
flusher task runs the scheduled update flushes (asyncio's ``call_soon``),
so the updates published during one task step leave together, and keeps
moving them to the buffer while a send is blocked: that is what lets a
client that stops reading trip the high-water mark and collapse its
updates, rather than grow a backlog per subscription.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._circuit import CircuitLogic, Wakeup

if TYPE_CHECKING:
    from ._server_logic import ServerLogic

__all__ = ["HIGH_WATER", "LOW_WATER", "RECEIVE_SIZE", "StreamCircuit"]

log = logging.getLogger("caioc.server")

#: Bytes waiting to be sent above which updates collapse to the newest
#: (asyncio's default high-water mark of a transport).
HIGH_WATER = 64 * 1024
#: ... and below which they flow again.
LOW_WATER = 16 * 1024
#: Bytes asked for per receive.
RECEIVE_SIZE = 256 * 1024


class StreamCircuit(CircuitLogic):
    """A circuit whose back-end runs :meth:`receive_loop`, :meth:`send_loop`,
    :meth:`flush_loop` and :meth:`process` as tasks, and ends them all once
    the sender has sent the last reply of a closing circuit, the client has
    closed its side, or any of them failed."""

    def __init__(self, server: ServerLogic, new_wakeup: Callable[[], Wakeup]) -> None:
        super().__init__(server, new_wakeup())
        #: Flushed replies the sender has not written yet.
        self.outgoing: list[bytes] = []
        self.outgoing_bytes = 0
        self.closing = False
        self.send_wakeup = new_wakeup()
        self.read_wakeup = new_wakeup()
        self.flush_wakeup = new_wakeup()

    def flush(self) -> None:
        out = self.out
        if out and not self.closing:
            self.outgoing += out
            self.outgoing_bytes += sum(map(len, out))
            if self.can_write and self.outgoing_bytes > HIGH_WATER:
                self.pause_writing()
            self.send_wakeup.set()
        self.out = []

    def close(self) -> None:
        if not self.closing:
            self.closing = True  # the sender writes what was flushed, then ends
            self.send_wakeup.set()
            self.read_wakeup.set()
            self.flush_wakeup.set()

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
        self.read_wakeup.set()

    def _schedule_flush(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.flush_wakeup.set()

    async def receive_loop(self, receive: Callable[[int], Awaitable[bytes]]) -> None:
        """Read until the client closes (returns) or we close."""
        wakeup = self.read_wakeup
        while not self.closing:
            if not self.reading:
                await wakeup.wait()  # back-pressure: the command task catches up
                wakeup.clear()
                continue
            data = await receive(RECEIVE_SIZE)
            if not data:
                return
            self.data_received(data)

    async def flush_loop(self) -> None:
        """Run the scheduled update flushes until the circuit closes."""
        wakeup = self.flush_wakeup
        while not self.closing:
            await wakeup.wait()
            wakeup.clear()
            if self.flush_scheduled:
                self._flush_updates()

    async def send_loop(self, send: Callable[[Any], Awaitable[Any]]) -> None:
        """Write flushed replies and updates; return once closed and all sent."""
        wakeup = self.send_wakeup
        while True:
            await wakeup.wait()
            wakeup.clear()
            while self.outgoing:
                chunks, self.outgoing = self.outgoing, []
                size = sum(map(len, chunks))
                await send(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                self.outgoing_bytes -= size
                if not self.can_write and self.outgoing_bytes <= LOW_WATER:
                    self.resume_writing()
            if self.closing:
                return

"""The asyncio CA server: a thin loop around the shared server logic.

One UDP endpoint per interface answers searches; one TCP listener per
interface accepts virtual circuits; a task sends beacons. Each circuit is an
``asyncio.Protocol`` over :class:`~caioc.server._circuit.CircuitLogic`:
``data_received`` feeds the core's :class:`~caioc.ca.VirtualCircuit`, the
commands it yields are handled in order by one task per circuit, and the
replies of a batch leave in one ``writelines``. Library exceptions are
translated here and nowhere else. The same logic runs under trio
(:mod:`caioc.server.trio`) and curio (:mod:`caioc.server.curio`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._circuit import CircuitLogic
from ._config import ServerConfig
from ._data import ChannelData
from ._server_logic import Beacons, ServerLogic

if TYPE_CHECKING:
    from ._access import AccessSecurity

__all__ = ["Server", "run"]

log = logging.getLogger("caioc.server")

#: Whether asyncio's socket transport pauses its protocol (pause_writing)
#: from writelines(): CPython 3.12.0-3.12.8 and 3.13.0-3.13.1 only do so
#: from write() (python/cpython#127655).
_WRITELINES_PAUSES = not (
    (3, 12) <= sys.version_info[:3] < (3, 12, 9) or (3, 13) <= sys.version_info[:3] < (3, 13, 2)
)


async def _sleep0() -> None:
    await asyncio.sleep(0)


class _Circuit(CircuitLogic, asyncio.Protocol):
    """One client's TCP connection: asyncio's transport under the circuit logic."""

    checkpoint = staticmethod(_sleep0)
    server: Server  # the asyncio server, with its list of circuits to flush

    def __init__(self, server: Server) -> None:
        super().__init__(server, asyncio.Event())
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(peer[:2] if peer else None)
        self.task = asyncio.get_running_loop().create_task(self.process())

    def connection_lost(self, exc: Exception | None = None) -> None:
        super().connection_lost(exc)
        if self.task is not None:
            self.task.cancel()

    # -- the I/O the logic asks for --------------------------------------------------

    def flush(self) -> None:
        transport = self.transport
        if self.out and transport is not None and not transport.is_closing():
            transport.writelines(self.out)
            if not _WRITELINES_PAUSES:
                # Have the transport compare its buffer with the high-water
                # mark, as writelines() should have: else a client that stops
                # reading never pauses the circuit, and its backlog grows
                # without bound instead of merging.
                low, high = transport.get_write_buffer_limits()
                transport.set_write_buffer_limits(high, low)
        self.out = []

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()
        self.reading = False

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()
        self.reading = True

    def _schedule_flush(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            # One callback flushes every circuit a burst of updates reached
            # (a put to a PV with 20 subscribed clients: one, not 20).
            server = self.server
            server.to_flush.append(self)
            if len(server.to_flush) == 1:
                asyncio.get_running_loop().call_soon(server.flush_circuits)


class _SearchProtocol(asyncio.DatagramProtocol):
    """The UDP side: answers searches."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.server.answer_datagram(data, addr)
        if reply is not None and self.transport is not None:
            with contextlib.suppress(OSError):
                self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)  # an ICMP error for an earlier reply


class Server(ServerLogic):
    """A CA server for the channels in ``pvdb`` (name -> ChannelData), on asyncio.

    Names with field modifiers and channel filters open views of the PVs,
    as an IOC's do (``PV.VAL``, ``PV.$``, ``PV.[1:3]``,
    ``PV.{"dbnd":{"d":0.5}}`` ...: see :mod:`caioc.server._filters`);
    ``states`` holds the named states of the ``sync`` filter.
    """

    def __init__(
        self,
        pvdb: Mapping[str, ChannelData],
        config: ServerConfig | None = None,
        access_security: AccessSecurity | None = None,
    ) -> None:
        super().__init__(pvdb, config, access_security)
        self._servers: list[asyncio.AbstractServer] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.started = asyncio.Event()
        #: Circuits with a flush scheduled, for the next :meth:`flush_circuits`.
        self.to_flush: list[_Circuit] = []

    def flush_circuits(self) -> None:
        """Send the pending updates of every circuit that scheduled a flush."""
        circuits, self.to_flush = self.to_flush, []
        for circuit in circuits:
            if circuit.flush_scheduled:  # else flushed meanwhile (a put's own updates)
                try:
                    circuit._flush_updates()
                except Exception:  # a bug of ours: the other circuits still get theirs
                    log.exception("error sending updates to %s", circuit.core.address)

    async def start(self) -> None:
        """Bind the TCP and UDP endpoints and start beaconing."""
        loop = asyncio.get_running_loop()
        for sock in self.bind_tcp():
            self._servers.append(await loop.create_server(lambda: _Circuit(self), sock=sock))
        for sock in self.bind_udp():
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _SearchProtocol(self), sock=sock
            )
            self._udp.append(transport)
        self._tasks.append(loop.create_task(self._beacons()))
        if self.config.idle_timeout > 0:
            self._tasks.append(loop.create_task(self.reap_idle_circuits(asyncio.sleep)))
        self.serving()
        if self.access_security is not None and self.access_security.watched:
            self._tasks.append(loop.create_task(self.access_security.watch()))
        self.started.set()

    async def _beacons(self) -> None:
        beacons = Beacons(self)
        sock = beacons.open_socket()
        try:
            while True:
                beacon, interval = beacons.next()
                beacons.send(sock, beacon)
                await asyncio.sleep(interval)
        finally:
            sock.close()

    async def stop(self) -> None:
        """Tell clients the channels are gone and close everything."""
        for task in self._tasks:
            task.cancel()
        self.say_goodbye()
        for server in self._servers:
            server.close()
        for transport in self._udp:
            transport.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def serve_forever(self) -> None:
        """Start, then serve until cancelled."""
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.stop()


async def run(pvdb: Mapping[str, ChannelData], config: ServerConfig | None = None) -> None:
    """Serve ``pvdb`` until cancelled (the entry point of IOC scripts)."""
    await Server(pvdb, config).serve_forever()

"""The CA server under curio: the shared server logic in curio's idioms.

::

    import curio
    from caioc.server import ChannelDouble
    from caioc.server.curio import Server, run

    curio.run(run, {"X": ChannelDouble(value=1.0)})  # serve until cancelled

    async with curio.TaskGroup() as group:            # or alongside other tasks
        server = Server(pvdb)
        await group.spawn(server.serve)
        await server.started.wait()                   # bound: server.tcp_port is known
        ...
        await server.stop()                           # clients hear SERVER_DISCONN

Put hooks and ``ChannelData.set`` run as curio code here: a hook may await
``curio.sleep`` and the like. curio is imported only by this module, so
caioc works without it (``pip install caioc[curio]``). :data:`async_lib` is
what :mod:`caioc.ioc` runs a :class:`~caioc.ioc.PVGroup` on under curio
(``caioc.ioc.run(group, async_lib="curio")``, ``curio.run(caioc.ioc.serve, group)``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

try:
    import curio  # type: ignore[import-untyped]  # curio ships no type hints
    import curio.io  # type: ignore[import-untyped]
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError("caioc.server.curio needs curio: pip install 'caioc[curio]'") from error

from ._config import ServerConfig
from ._data import ChannelData
from ._server_logic import Beacons, ServerLogic
from ._stream_circuit import StreamCircuit

if TYPE_CHECKING:
    from ..ioc._async_lib import AsyncLib
    from ._access import AccessSecurity

__all__ = ["Server", "async_lib", "run"]

log = logging.getLogger("caioc.server")

#: Seconds clients get to take their SERVER_DISCONN before circuits are cut.
GOODBYE_TIMEOUT = 2.0
#: Seconds the accept loop rests after running out of file descriptors.
ACCEPT_RETRY = 0.1


class _Wakeup:
    """A settable, clearable event whose ``set`` plain code may call.

    curio wakes tasks only from inside a coroutine (its traps are awaited),
    while monitor updates are published from plain code; its
    ``UniversalEvent`` can be set from anywhere, so it carries the wake-up.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = curio.UniversalEvent()

    def set(self) -> None:
        self._event.set()  # called from plain code: curio picks the plain set

    def clear(self) -> None:
        self._event.clear()

    async def wait(self) -> None:
        await self._event.wait()


async def _checkpoint() -> None:
    await curio.sleep(0)


class _Circuit(StreamCircuit):
    """One client's TCP connection on a curio socket."""

    checkpoint = staticmethod(_checkpoint)

    def __init__(self, server: Server, sock: Any, peer: tuple[str, int] | None) -> None:
        super().__init__(server, _Wakeup)
        self.sock = sock
        self.peer = peer

    async def run(self) -> None:
        """Serve the circuit until either side closes it."""
        sock = self.sock
        with contextlib.suppress(OSError):  # already gone: the reader will see it
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection_made(self.peer)
        done = curio.Event()
        try:
            async with curio.TaskGroup() as group:
                receive = functools.partial(self.receive_loop, sock.recv)
                await group.spawn(self._task, receive, done, False)
                await group.spawn(self._task, self.process, done, False)
                await group.spawn(self._task, self.flush_loop, done, False)
                send = functools.partial(self.send_loop, sock.sendall)
                await group.spawn(self._task, send, done, True)
                await done.wait()
                await group.cancel_remaining()
        finally:
            self.closing = True
            self.connection_lost(None)
            await sock.close()

    async def _task(self, loop: Any, done: Any, sender: bool) -> None:
        """Run one of the circuit's loops; end the circuit when it has to.

        A closing circuit ends when its sender has written the last reply
        (the goodbye), so the others just stop; an error, or the client
        closing its side, ends the circuit at once.
        """
        try:
            await loop()
        except OSError as error:
            log.debug("circuit from %s ended: %r", self.core.address, error)
        except Exception:
            log.exception("circuit from %s failed", self.core.address)
        else:
            if self.closing and not sender:
                return
        await done.set()


class Server(ServerLogic):
    """A CA server for the channels in ``pvdb`` (name -> ChannelData), on curio.

    Spawn :meth:`serve` in a TaskGroup and wait for :attr:`started`; end it
    with :meth:`stop` or by cancelling its task. Either way every client
    hears SERVER_DISCONN for its channels before the circuits close.
    """

    def __init__(
        self,
        pvdb: Mapping[str, ChannelData],
        config: ServerConfig | None = None,
        access_security: AccessSecurity | None = None,
    ) -> None:
        super().__init__(pvdb, config, access_security)
        #: Set once the server is bound and answering.
        self.started = curio.Event()
        self._stopping = curio.Event()
        self._stopped = curio.Event()
        self._circuit_ended = curio.Event()
        self._accepting = False
        self._running: set[_Circuit] = set()

    async def serve(self) -> None:
        """Bind, then serve until :meth:`stop` or cancellation."""
        listeners = [curio.io.Socket(sock) for sock in self.bind_tcp()]
        udp: list[Any] = []
        try:
            udp = [curio.io.Socket(sock) for sock in self.bind_udp()]
            async with curio.TaskGroup() as circuits:
                services = curio.TaskGroup()
                try:
                    self._accepting = True
                    for listener in listeners:
                        await services.spawn(self._accept, listener, circuits)
                    for sock in udp:
                        await services.spawn(self._answer_searches, sock)
                    await services.spawn(self._beacons)
                    if self.config.idle_timeout > 0:
                        await services.spawn(self.reap_idle_circuits, curio.sleep)
                    security = self.access_security
                    if security is not None and security.watched:
                        await services.spawn(functools.partial(security.watch, sleep=curio.sleep))
                    self.serving()
                    await self.started.set()
                    await self._stopping.wait()
                finally:
                    async with curio.disable_cancellation():
                        self._accepting = False
                        await services.cancel_remaining()
                        await services.join()
                        await self._goodbye(circuits)
        finally:
            for sock in listeners + udp:
                await sock.close()
            await self._stopped.set()

    async def serve_forever(self) -> None:
        """:meth:`serve`, under asyncio's name."""
        await self.serve()

    async def stop(self) -> None:
        """Say goodbye to every client, close everything and let :meth:`serve` return."""
        if not self.started.is_set():
            return
        await self._stopping.set()
        await self._stopped.wait()

    async def _accept(self, listener: Any, circuits: Any) -> None:
        while True:
            try:
                sock, peer = await listener.accept()
            except OSError as error:  # out of file descriptors: let some close
                log.warning("cannot accept a circuit: %s", error)
                await curio.sleep(ACCEPT_RETRY)
                continue
            if not self._accepting:
                await sock.close()  # accepted as the server stops
                continue
            await circuits.spawn(self._serve_circuit, sock, peer)

    async def _serve_circuit(self, sock: Any, peer: tuple[str, int]) -> None:
        circuit = _Circuit(self, sock, peer[:2])
        self._running.add(circuit)
        try:
            await circuit.run()
        finally:
            self._running.discard(circuit)
            await self._circuit_ended.set()

    async def _answer_searches(self, sock: Any) -> None:
        while True:
            try:
                data, address = await sock.recvfrom(65536)
            except OSError as error:  # an ICMP error for an earlier reply
                log.debug("UDP error: %s", error)
                continue
            reply = self.answer_datagram(data, address)
            if reply is not None:
                try:
                    await sock.sendto(reply, address)
                except OSError as error:
                    log.debug("cannot answer %s: %s", address, error)

    async def _beacons(self) -> None:
        beacons = Beacons(self)
        sock: socket.socket = beacons.open_socket()
        with sock:
            while True:
                beacon, interval = beacons.next()
                beacons.send(sock, beacon)
                await curio.sleep(interval)

    async def _goodbye(self, circuits: Any) -> None:
        """Send SERVER_DISCONN, give circuits a moment to close, then cut them."""
        self.say_goodbye()

        async def all_ended() -> None:
            while self._running:
                self._circuit_ended.clear()
                await self._circuit_ended.wait()

        await curio.ignore_after(GOODBYE_TIMEOUT, all_ended)
        await circuits.cancel_remaining()  # a client that does not read: cut it


async def run(pvdb: Mapping[str, ChannelData], config: ServerConfig | None = None) -> None:
    """Serve ``pvdb`` until cancelled (``curio.run(run, pvdb)``)."""
    await Server(pvdb, config).serve()


# -- what caioc.ioc runs on under curio -----------------------------------------------


class _CurioLib:
    """curio's :class:`caioc.ioc._async_lib.AsyncLib`."""

    name = "curio"
    sleep = staticmethod(curio.sleep)
    #: curio's kernel clock (what its sleeps and timeouts count in).
    time = staticmethod(time.monotonic)
    new_event = staticmethod(_Wakeup)

    async def sleep_forever(self) -> None:
        await curio.Event().wait()

    async def wait_event(self, event: Any, timeout: float) -> bool:
        async with curio.ignore_after(timeout) as waited:
            await event.wait()
        return not waited.expired

    async def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        # A daemon: the kernel does not wait for it, as asyncio does not
        # for a task; the spawner stops it with stop_tasks.
        return await curio.spawn(function, *args, daemon=True)

    async def stop_tasks(self, tasks: Iterable[Any]) -> None:
        for task in tasks:
            await task.cancel()  # returns once the task has ended

    def shielded(self) -> Any:
        return curio.disable_cancellation()

    @contextlib.asynccontextmanager
    async def serving(
        self,
        pvdb: Mapping[str, ChannelData],
        config: ServerConfig,
        access_security: AccessSecurity | None = None,
    ) -> AsyncIterator[Server]:
        server = Server(pvdb, config, access_security)
        task = await curio.spawn(server.serve)
        try:
            async with curio.TaskGroup(wait=any) as first:  # bound, or failed to bind
                await first.spawn(server.started.wait)
                await first.spawn(task.wait)
            if not server.started.is_set():  # it ended before it was bound: say why
                raise task.exception or RuntimeError("the server ended before serving")
            yield server
        finally:
            async with curio.disable_cancellation():
                await server.stop()
                await task.cancel()  # ended by now, unless it never started

    def run(self, function: Callable[[], Awaitable[Any]]) -> Any:
        return curio.run(function)


#: How :mod:`caioc.ioc` runs under curio: sleeps, events, tasks, the server.
async_lib: AsyncLib = _CurioLib()

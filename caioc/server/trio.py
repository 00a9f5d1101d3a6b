"""The CA server under trio: the shared server logic in trio's idioms.

::

    import trio
    from caioc.server import ChannelDouble
    from caioc.server.trio import Server, run

    trio.run(run, {"X": ChannelDouble(value=1.0)})   # serve until cancelled

    async with trio.open_nursery() as nursery:       # or alongside other tasks
        server = Server(pvdb)
        await nursery.start(server.serve)            # returns once bound
        ...
        await server.stop()                          # clients hear SERVER_DISCONN

Put hooks and ``ChannelData.set`` run as trio code here: a hook may await
``trio.sleep`` and the like. trio is imported only by this module, so caioc
works without it (``pip install caioc[trio]``). :data:`async_lib` is what
:mod:`caioc.ioc` runs a :class:`~caioc.ioc.PVGroup` on under trio
(``caioc.ioc.run(group, async_lib="trio")``, ``trio.run(caioc.ioc.serve, group)``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

try:
    import trio
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError("caioc.server.trio needs trio: pip install 'caioc[trio]'") from error

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
    """A settable, clearable event whose ``set`` plain code may call."""

    __slots__ = ("_flag", "_lot")

    def __init__(self) -> None:
        self._flag = False
        self._lot = trio.lowlevel.ParkingLot()

    def set(self) -> None:
        self._flag = True
        if self._lot:
            self._lot.unpark_all()

    def clear(self) -> None:
        self._flag = False

    async def wait(self) -> None:
        if self._flag:
            await trio.lowlevel.checkpoint()
        else:
            await self._lot.park()


class _Circuit(StreamCircuit):
    """One client's TCP connection on a trio stream."""

    checkpoint = staticmethod(trio.lowlevel.checkpoint)

    def __init__(self, server: Server, stream: trio.SocketStream) -> None:
        super().__init__(server, _Wakeup)
        self.stream = stream
        #: Cancelling it ends the circuit; it shields the circuit from the
        #: server's own cancellation so clients still hear the goodbye.
        self.scope = trio.CancelScope(shield=True)

    async def run(self) -> None:
        """Serve the circuit until either side closes it."""
        stream = self.stream
        try:
            peer = stream.socket.getpeername()
        except OSError:
            peer = None  # already gone
        self.connection_made(peer[:2] if peer else None)
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    scope = nursery.cancel_scope
                    receive = functools.partial(self.receive_loop, stream.receive_some)
                    nursery.start_soon(self._task, receive, scope, False)
                    nursery.start_soon(self._task, self.process, scope, False)
                    nursery.start_soon(self._task, self.flush_loop, scope, False)
                    send = functools.partial(self.send_loop, stream.send_all)
                    nursery.start_soon(self._task, send, scope, True)
        finally:
            self.closing = True
            self.connection_lost(None)
            await trio.aclose_forcefully(stream)

    async def _task(self, loop: Any, scope: trio.CancelScope, sender: bool) -> None:
        """Run one of the circuit's loops; end the circuit when it has to.

        A closing circuit ends when its sender has written the last reply
        (the goodbye), so the others just stop; an error, or the client
        closing its side, ends the circuit at once.
        """
        try:
            await loop()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            log.debug("circuit from %s ended: %r", self.core.address, error)
        except Exception:
            log.exception("circuit from %s failed", self.core.address)
        else:
            if self.closing and not sender:
                return
        scope.cancel()


class Server(ServerLogic):
    """A CA server for the channels in ``pvdb`` (name -> ChannelData), on trio.

    Run :meth:`serve` in a nursery (``await nursery.start(server.serve)``
    returns once the server is bound and :attr:`tcp_port` is known); end it
    with :meth:`stop` or by cancelling it. Either way every client hears
    SERVER_DISCONN for its channels before the circuits close.
    """

    def __init__(
        self,
        pvdb: Mapping[str, ChannelData],
        config: ServerConfig | None = None,
        access_security: AccessSecurity | None = None,
    ) -> None:
        super().__init__(pvdb, config, access_security)
        #: Set once the server is bound and answering.
        self.started = trio.Event()
        self._stopping = trio.Event()
        self._stopped = trio.Event()
        self._circuit_ended = _Wakeup()
        self._services: trio.CancelScope | None = None
        self._running: set[_Circuit] = set()

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, then serve until :meth:`stop` or cancellation."""
        listeners = [
            trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in self.bind_tcp()
        ]
        try:
            udp = [trio.socket.from_stdlib_socket(sock) for sock in self.bind_udp()]
        except BaseException:
            for listener in listeners:
                listener.socket.close()
            raise
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._run_services, listeners, udp, nursery)
                self.serving()
                self.started.set()
                task_status.started()
                try:
                    await self._stopping.wait()
                finally:
                    with trio.CancelScope(shield=True):
                        await self._goodbye()
        finally:
            for listener in listeners:
                listener.socket.close()
            for sock in udp:
                sock.close()
            self._stopped.set()

    async def serve_forever(self) -> None:
        """:meth:`serve`, under asyncio's name."""
        await self.serve()

    async def stop(self) -> None:
        """Say goodbye to every client, close everything and let :meth:`serve` return."""
        if not self.started.is_set():
            return
        self._stopping.set()
        await self._stopped.wait()

    async def _run_services(
        self,
        listeners: list[trio.SocketListener],
        udp: list[Any],
        circuits: trio.Nursery,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept circuits (into ``circuits``), answer searches, beacon."""
        async with trio.open_nursery() as services:
            self._services = services.cancel_scope
            for listener in listeners:
                services.start_soon(self._accept, listener, circuits)
            for sock in udp:
                services.start_soon(self._answer_searches, sock)
            services.start_soon(self._beacons)
            if self.config.idle_timeout > 0:
                services.start_soon(self.reap_idle_circuits, trio.sleep)
            if self.access_security is not None and self.access_security.watched:
                services.start_soon(functools.partial(self.access_security.watch, sleep=trio.sleep))
            task_status.started()

    async def _accept(self, listener: trio.SocketListener, circuits: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as error:  # out of file descriptors: let some close
                log.warning("cannot accept a circuit: %s", error)
                await trio.sleep(ACCEPT_RETRY)
                continue
            circuits.start_soon(self._serve_circuit, stream)

    async def _serve_circuit(self, stream: trio.SocketStream) -> None:
        if self._services is None or self._services.cancel_called:
            await trio.aclose_forcefully(stream)  # accepted as the server stops
            return
        circuit = _Circuit(self, stream)
        self._running.add(circuit)
        try:
            await circuit.run()
        finally:
            self._running.discard(circuit)
            self._circuit_ended.set()

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
                await trio.sleep(interval)

    async def _goodbye(self) -> None:
        """Stop accepting, send SERVER_DISCONN, give circuits a moment to close."""
        if self._services is not None:
            self._services.cancel()
        self.say_goodbye()
        with trio.move_on_after(GOODBYE_TIMEOUT):
            while self._running:
                await self._circuit_ended.wait()
                self._circuit_ended.clear()
        for circuit in list(self._running):
            circuit.scope.cancel()  # a client that does not read: cut it


async def run(pvdb: Mapping[str, ChannelData], config: ServerConfig | None = None) -> None:
    """Serve ``pvdb`` until cancelled (``trio.run(run, pvdb)``)."""
    await Server(pvdb, config).serve()


# -- what caioc.ioc runs on under trio ------------------------------------------------


class _SystemTask:
    """A background task of an IOC (a scan loop, autosave), stopped by ``stop_tasks``.

    ``PVGroup.startup`` returns with its scan loops running and no nursery
    is passed to it, so they run as trio system tasks: each in a cancel
    scope of its own, cancelled and awaited when the group shuts down (and
    cancelled with the run at the latest). A system task must not raise, so
    an error is logged, as asyncio does for a task nobody awaits.
    """

    __slots__ = ("done", "scope")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    async def run(self, function: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            with self.scope:
                await function(*args)
        except Exception:
            log.exception("%r failed", function)
        finally:
            self.done.set()


class _TrioLib:
    """trio's :class:`caioc.ioc._async_lib.AsyncLib`."""

    name = "trio"
    sleep = staticmethod(trio.sleep)
    sleep_forever = staticmethod(trio.sleep_forever)
    time = staticmethod(trio.current_time)
    new_event = staticmethod(_Wakeup)

    async def wait_event(self, event: Any, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            await event.wait()
            return True
        return False

    async def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> _SystemTask:
        task = _SystemTask()
        trio.lowlevel.spawn_system_task(
            task.run, function, args, name=function, context=contextvars.copy_context()
        )
        return task

    async def stop_tasks(self, tasks: Iterable[_SystemTask]) -> None:
        tasks = list(tasks)
        for task in tasks:
            task.scope.cancel()
        for task in tasks:
            await task.done.wait()

    @contextlib.asynccontextmanager
    async def shielded(self) -> AsyncIterator[None]:
        with trio.CancelScope(shield=True):
            yield

    @contextlib.asynccontextmanager
    async def serving(
        self,
        pvdb: Mapping[str, ChannelData],
        config: ServerConfig,
        access_security: AccessSecurity | None = None,
    ) -> AsyncIterator[Server]:
        try:
            async with trio.open_nursery() as nursery:
                server = Server(pvdb, config, access_security)
                await nursery.start(server.serve)
                try:
                    yield server
                finally:
                    with trio.CancelScope(shield=True):
                        await server.stop()
        except BaseException as error:
            # The nursery wraps what the block raised (Ctrl-C's KeyboardInterrupt
            # included) in a group: the caller gets it as asyncio's would.
            inner: tuple[BaseException, ...] = getattr(error, "exceptions", ())
            if len(inner) == 1:
                raise inner[0] from None
            raise

    def run(self, function: Callable[[], Awaitable[Any]]) -> Any:
        return trio.run(function)


#: How :mod:`caioc.ioc` runs under trio: sleeps, events, tasks, the server.
async_lib: AsyncLib = _TrioLib()

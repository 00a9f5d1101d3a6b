"""One client TCP circuit: bytes in and out of the core, and a watchdog.

A :class:`Circuit` belongs to a :class:`~caioc.client.Context` and carries
the channels of one (server, priority); name-server circuits carry only
searches. It hands what the server says to the channels, subscriptions and
pending requests, and probes a silent server with ECHO as libca does.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import socket
from typing import TYPE_CHECKING

from ..ca import (
    NEED_DATA,
    AccessRightsResponse,
    ClearChannelResponse,
    ClientNameRequest,
    Command,
    CommandId,
    CreateChanResponse,
    CreateChFailResponse,
    EchoRequest,
    EchoResponse,
    ErrorResponse,
    EventAddResponse,
    EventCancelResponse,
    HostNameRequest,
    ReadNotifyResponse,
    RemoteProtocolError,
    Role,
    SearchResponse,
    ServerDisconnResponse,
    VersionRequest,
    VirtualCircuit,
    WriteNotifyResponse,
)
from ._errors import Disconnected, ECA_text, ServerError

if TYPE_CHECKING:
    from ._context import Channel, Context, Subscription

__all__ = ["Circuit", "CircuitProtocol"]

log = logging.getLogger("caioc.client")


class CircuitProtocol(asyncio.Protocol):
    def __init__(self, circuit: Circuit) -> None:
        self.circuit = circuit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.circuit.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.circuit.received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.circuit.lost()


class Circuit:
    """One TCP connection to a server, shared by its channels."""

    def __init__(self, context: Context, address: tuple[str, int], priority: int) -> None:
        self.context = context
        self.address = address
        self.core = VirtualCircuit(
            Role.CLIENT, address, priority, max_payload=context.config.max_array_bytes
        )
        self.transport: asyncio.Transport | None = None
        self.channels: dict[int, Channel] = {}  # cid -> channel
        self.pending: dict[int, asyncio.Future[Command]] = {}  # ioid -> reply
        self.subscriptions: dict[int, Subscription] = {}
        self._loop = asyncio.get_running_loop()
        self.ready = self._loop.create_future()
        #: Loop time of the last bytes (or beacon) heard from the server.
        self.last_heard = self._loop.time()
        self._watchdog: asyncio.Task[None] | None = None
        #: Done when the connection is gone.
        self.closed: asyncio.Future[None] = self._loop.create_future()
        #: Search ids already sent on this circuit (name-server circuits).
        self.searched: set[int] = set()
        self._outgoing: list[bytes] = []
        #: Channels found on this server while the circuit opens.
        self.waiting: list[Channel] = []
        #: The task opening the circuit (held: the loop keeps tasks weakly).
        self.opening: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._loop.create_connection(lambda: CircuitProtocol(self), *self.address)
        self.send(
            VersionRequest(self.core.priority),
            HostNameRequest(socket.gethostname()),
            ClientNameRequest(_user()),
        )
        self.last_heard = self._loop.time()
        self._watchdog = self._loop.create_task(self._watch())

    async def _watch(self) -> None:
        """libca's receive watchdog: probe a silent circuit with ECHO.

        After ``connection_timeout`` seconds without a byte from the server
        an ECHO goes out; if still nothing has arrived ``echo_timeout``
        seconds later the server is unresponsive (frozen, cable pulled,
        host gone without a FIN) and the circuit is dropped: its channels
        disconnect and search again, as after a server restart.
        """
        config = self.context.config
        while True:
            silence = self._loop.time() - self.last_heard
            if silence < config.connection_timeout:
                await asyncio.sleep(config.connection_timeout - silence)
                continue
            probed = self._loop.time()
            try:
                self.send(EchoRequest())
            except Disconnected:
                return
            await asyncio.sleep(config.echo_timeout)
            if self.last_heard < probed:
                log.warning(
                    "server %s:%d did not answer ECHO within %g s: dropping its circuit",
                    *self.address,
                    config.echo_timeout,
                )
                self.abort()
                return

    def abort(self) -> None:
        """Drop the connection now; ``lost`` follows from the transport."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def send(self, *commands: Command) -> None:
        if self.transport is None or self.transport.is_closing():
            raise Disconnected(f"circuit to {self.address[0]}:{self.address[1]} is closed")
        data = self.core.send(*commands)
        if self._outgoing:  # what send_soon held goes first, in order
            self._outgoing.append(data)
            data = b"".join(self._outgoing)
            self._outgoing.clear()
        self.transport.write(data)

    def send_soon(self, command: Command) -> None:
        """Send with whatever else this loop iteration sends: one write.

        For bursts (a thousand CREATE_CHANs after one search reply, every
        subscription after a reconnect): a syscall per message would cost
        more than the messages.
        """
        if self.transport is None or self.transport.is_closing():
            raise Disconnected(f"circuit to {self.address[0]}:{self.address[1]} is closed")
        self._outgoing.append(self.core.send(command))
        if len(self._outgoing) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        if not self._outgoing:
            return
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def received(self, data: bytes) -> None:
        self.last_heard = self._loop.time()
        core = self.core
        try:
            core.receive_data(data)
            while True:
                try:
                    command = core.next_command()
                except RemoteProtocolError as error:
                    if getattr(error, "command", None) is None:
                        raise
                    log.warning("server %s: %s", self.address, error)
                    continue
                if command is NEED_DATA:
                    return
                try:
                    self.dispatch(command)  # type: ignore[arg-type]
                except Exception:  # a bug of ours must not cost the circuit
                    log.exception("error handling %r from %s", command, self.address)
        except RemoteProtocolError as error:
            log.error("closing circuit to %s: %s", self.address, error)
            if self.transport is not None:
                self.transport.close()

    def dispatch(self, command: Command) -> None:
        kind = type(command)
        if kind is EventAddResponse:
            subscription = self.subscriptions.get(command.subscriptionid)  # type: ignore[attr-defined]
            if subscription is not None and subscription.active:
                subscription._deliver(command)  # type: ignore[arg-type]
        elif kind is ReadNotifyResponse or kind is WriteNotifyResponse:
            future = self.pending.pop(command.ioid, None)  # type: ignore[attr-defined]
            if future is not None and not future.done():
                future.set_result(command)
        elif kind is CreateChanResponse or kind is AccessRightsResponse:
            channel = self.channels.get(command.cid)  # type: ignore[attr-defined]
            if channel is not None:
                channel._update(command)
        elif kind is ErrorResponse:
            self._error(command)  # type: ignore[arg-type]
        elif kind is SearchResponse:  # a name server's answer
            self.context._search_found(command, self.address[0])  # type: ignore[arg-type]
        elif kind is CreateChFailResponse or kind is ServerDisconnResponse:
            channel = self.channels.pop(command.cid, None)  # type: ignore[attr-defined]
            if channel is not None:
                channel._lost(f"the server dropped {channel.name!r}")
        elif kind is EventCancelResponse or kind is ClearChannelResponse or kind is EchoResponse:
            pass  # bookkeeping done by the core; any bytes reset the watchdog

    def _error(self, command: ErrorResponse) -> None:
        original = command.original_header
        error = ServerError(command.status, f"{ECA_text(command.status)}: {command.error_message}")
        if original[0] in (CommandId.READ_NOTIFY, CommandId.WRITE_NOTIFY):
            future = self.pending.pop(original[5], None)
            if future is not None and not future.done():
                future.set_exception(error)
        else:
            log.warning("server %s reports: %s", self.address, error)

    def lost(self) -> None:
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        self.core.disconnect()
        if not self.closed.done():
            self.closed.set_result(None)
        self.context._circuit_lost(self)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(Disconnected(f"lost the circuit to {self.address}"))
        self.pending.clear()
        for channel in list(self.channels.values()):
            channel._lost(f"lost the circuit to {self.address[0]}:{self.address[1]}")
        self.channels.clear()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database (containers): CA still works
        return "unknown"

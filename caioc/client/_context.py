"""The asyncio CA client: a context that searches, circuits, channels.

A :class:`Context` owns one UDP socket for name searches and one TCP
circuit per (server, priority), shared by every channel on that server. All
protocol decisions are the core's (:mod:`caioc.ca`); this module moves
bytes, keeps futures and retries searches.

When a circuit is lost its channels go back to searching, and when they
find a server again every subscription is re-established on the new
circuit, so a server restart costs subscribers a gap, never their
subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..ca import (
    ECA,
    NEED_DATA,
    AccessRightsResponse,
    Broadcaster,
    BroadcasterState,
    ChannelType,
    ClearChannelResponse,
    ClientChannel,
    ClientNameRequest,
    Command,
    CommandId,
    CreateChanResponse,
    CreateChFailResponse,
    ErrorResponse,
    EventAddResponse,
    EventCancelResponse,
    HostNameRequest,
    ProtocolError,
    ReadNotifyResponse,
    RemoteProtocolError,
    Role,
    RsrvIsUpResponse,
    SearchResponse,
    ServerDisconnResponse,
    SubscriptionMask,
    VersionRequest,
    VirtualCircuit,
    WriteNotifyResponse,
    ipv4_from_int,
)
from ..ca._errors import CaiocError
from ._config import ClientConfig

__all__ = [
    "Channel",
    "ChannelTimeout",
    "ClientError",
    "Context",
    "Disconnected",
    "Reading",
    "ServerError",
    "Subscription",
]

log = logging.getLogger("caioc.client")

#: Seconds between search rounds for a name not found yet: fast at first,
#: then doubling up to ClientConfig.max_search_interval, as libca backs off.
FIRST_SEARCH_INTERVAL = 0.03
#: Seconds between registrations with the repeater until it confirms.
REPEATER_RETRY = 1.0
#: Updates a subscription keeps for a consumer that has not taken them.
SUBSCRIPTION_BACKLOG = 1000


class ClientError(CaiocError):
    """Something a CA client operation could not do."""


class ChannelTimeout(ClientError, TimeoutError):
    """No server answered in time."""


class Disconnected(ClientError, ConnectionError):
    """The circuit carrying the channel went away."""


class ServerError(ClientError):
    """The server refused a request; ``eca`` says why, as libca would."""

    def __init__(self, eca: int, message: str) -> None:
        super().__init__(message)
        self.eca = eca


@dataclass
class Reading:
    """A value read or received, with its metadata as Python objects."""

    value: Any
    metadata: dict[str, Any]
    data_type: ChannelType
    data_count: int
    status: int = ECA.NORMAL

    @property
    def severity(self) -> int:
        """Alarm severity (0 when the DBR type carries none)."""
        return int(self.metadata.get("severity", 0))

    @property
    def timestamp(self) -> float | None:
        """POSIX time of the value, for TIME types."""
        return self.metadata.get("timestamp")


def _reading(command: ReadNotifyResponse | EventAddResponse) -> Reading:
    value, metadata = command.to_python()
    return Reading(
        value, metadata, ChannelType(command.data_type), command.data_count, command.status
    )


@dataclass(eq=False)
class Subscription:
    """Monitor updates of one channel: iterate, or add callbacks."""

    channel: Channel
    data_type: int | None
    data_count: int | None
    mask: int
    callbacks: list[Callable[[Reading], None]] = field(default_factory=list)
    queue: asyncio.Queue[Reading] = field(default_factory=asyncio.Queue)
    subscriptionid: int | None = None
    active: bool = True

    def _deliver(self, command: EventAddResponse) -> None:
        reading = _reading(command)
        if self.queue.qsize() >= SUBSCRIPTION_BACKLOG:
            self.queue.get_nowait()  # keep the newest: a slow consumer loses the oldest
        self.queue.put_nowait(reading)
        for callback in list(self.callbacks):
            try:
                callback(reading)
            except Exception:
                log.exception("subscription callback %r failed", callback)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Reading:
        if not self.active and self.queue.empty():
            raise StopAsyncIteration
        return await self.queue.get()

    async def clear(self) -> None:
        """End the subscription."""
        self.active = False
        await self.channel._unsubscribe(self)


class _CircuitProtocol(asyncio.Protocol):
    def __init__(self, circuit: _Circuit) -> None:
        self.circuit = circuit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.circuit.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.circuit.received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.circuit.lost()


class _Circuit:
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
        self.ready = asyncio.get_running_loop().create_future()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: _CircuitProtocol(self), *self.address)
        self.send(
            VersionRequest(self.core.priority),
            HostNameRequest(socket.gethostname()),
            ClientNameRequest(_user()),
        )

    def send(self, *commands: Command) -> None:
        if self.transport is None or self.transport.is_closing():
            raise Disconnected(f"circuit to {self.address[0]}:{self.address[1]} is closed")
        self.transport.write(self.core.send(*commands))

    def received(self, data: bytes) -> None:
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
        elif kind is CreateChFailResponse or kind is ServerDisconnResponse:
            channel = self.channels.pop(command.cid, None)  # type: ignore[attr-defined]
            if channel is not None:
                channel._lost(f"the server dropped {channel.name!r}")
        elif kind is EventCancelResponse or kind is ClearChannelResponse:
            pass  # bookkeeping done by the core

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
        self.core.disconnect()
        self.context._circuit_lost(self)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(Disconnected(f"lost the circuit to {self.address}"))
        self.pending.clear()
        for channel in list(self.channels.values()):
            channel._lost(f"lost the circuit to {self.address[0]}:{self.address[1]}")
        self.channels.clear()


def ECA_text(code: int) -> str:
    """libca's message for an ECA code."""
    try:
        return ECA(code).message  # type: ignore[call-arg]
    except ValueError:
        return f"ECA status {code}"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database (containers): CA still works
        return "unknown"


class Channel:
    """A named PV as the client sees it; connects, reconnects by itself."""

    def __init__(self, context: Context, name: str, priority: int = 0) -> None:
        self.context = context
        self.name = name
        self.priority = priority
        self.circuit: _Circuit | None = None
        self.core: ClientChannel | None = None
        self.native_type: ChannelType | None = None
        self.native_count = 0
        self.access_rights = 0
        self.connected = asyncio.Event()
        self.subscriptions: list[Subscription] = []
        self.closed = False

    def __repr__(self) -> str:
        state = "connected" if self.connected.is_set() else "searching"
        return f"<Channel {self.name!r} {state}>"

    async def wait_for_connection(self, timeout: float = 2.0) -> None:
        """Wait until connected, or raise :class:`ChannelTimeout`."""
        try:
            await asyncio.wait_for(self.connected.wait(), timeout)
        except asyncio.TimeoutError:
            searched = ", ".join(f"{h}:{p}" for h, p in self.context.config.search_addresses)
            raise ChannelTimeout(
                f"{self.name!r} did not connect within {timeout} s "
                f"(searched {searched or 'no addresses: set EPICS_CA_ADDR_LIST'})"
            ) from None

    def _found(self, circuit: _Circuit) -> None:
        self.circuit = circuit
        self.core = circuit.core.create_channel(self.name)
        circuit.channels[self.core.cid] = self
        circuit.send(self.core.create())

    def _update(self, command: Command) -> None:
        if type(command) is AccessRightsResponse:
            self.access_rights = int(command.access_rights)
            return
        self.native_type = ChannelType(command.data_type)  # type: ignore[attr-defined]
        self.native_count = command.data_count  # type: ignore[attr-defined]
        self.connected.set()
        for subscription in self.subscriptions:  # re-establish after a reconnect
            self._send_subscribe(subscription)

    def _lost(self, why: str) -> None:
        self.connected.clear()
        self.circuit = None
        self.core = None
        log.info("%s disconnected: %s", self.name, why)
        if not self.closed:
            self.context._search(self)

    def _live(self) -> tuple[_Circuit, ClientChannel]:
        if not self.connected.is_set() or self.circuit is None or self.core is None:
            raise Disconnected(f"{self.name!r} is not connected")
        return self.circuit, self.core

    async def _request(self, circuit: _Circuit, command: Command, timeout: float) -> Command:
        future: asyncio.Future[Command] = asyncio.get_running_loop().create_future()
        circuit.pending[command[5]] = future
        circuit.send(command)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            circuit.pending.pop(command[5], None)
            raise ChannelTimeout(f"{self.name!r}: no reply within {timeout} s") from None

    async def read(
        self, data_type: int | None = None, data_count: int | None = None, timeout: float = 2.0
    ) -> Reading:
        """Read once (READ_NOTIFY); the type defaults to the native one."""
        await self.wait_for_connection(timeout)
        circuit, core = self._live()
        reply = await self._request(circuit, core.read(data_type, data_count), timeout)
        return _reading(reply)  # type: ignore[arg-type]

    async def write(
        self,
        value: Any,
        data_type: int | None = None,
        *,
        wait: bool = True,
        timeout: float = 2.0,
    ) -> None:
        """Write (WRITE_NOTIFY, or plain WRITE with ``wait=False``).

        Strings go to numeric channels as DBR_STRING and the server converts
        them, as caput does; floats to integer channels as DBR_DOUBLE.
        """
        await self.wait_for_connection(timeout)
        circuit, core = self._live()
        if data_type is None:
            data_type, value = self._put_type(value)
        request = core.write(value, data_type, notify=wait)
        if not wait:
            circuit.send(request)
            return
        reply = await self._request(circuit, request, timeout)
        if reply.status != ECA.NORMAL:  # type: ignore[attr-defined]
            status = reply.status  # type: ignore[attr-defined]
            raise ServerError(status, f"put to {self.name!r} failed: {ECA_text(status)}")

    def _put_type(self, value: Any) -> tuple[int, Any]:
        native = self.native_type
        assert native is not None
        if isinstance(value, str):
            if native == ChannelType.CHAR and self.native_count > 1:
                return ChannelType.CHAR, value.encode() + b"\0"  # a long string
            return ChannelType.STRING, value
        if isinstance(value, bytes):
            return ChannelType.CHAR, value
        values = value if isinstance(value, Iterable) else [value]
        floats = any(isinstance(item, float) for item in values)
        if floats and native in (ChannelType.INT, ChannelType.LONG, ChannelType.CHAR):
            return ChannelType.DOUBLE, value
        return native, value

    async def subscribe(
        self,
        data_type: int | None = None,
        data_count: int | None = None,
        mask: int = SubscriptionMask.VALUE | SubscriptionMask.ALARM,
        callback: Callable[[Reading], None] | None = None,
    ) -> Subscription:
        """Start a subscription; it survives reconnects until cleared."""
        subscription = Subscription(self, data_type, data_count, int(mask))
        if callback is not None:
            subscription.callbacks.append(callback)
        self.subscriptions.append(subscription)
        if self.connected.is_set():
            self._send_subscribe(subscription)
        return subscription

    def _send_subscribe(self, subscription: Subscription) -> None:
        circuit, core = self.circuit, self.core
        if circuit is None or core is None or core.sid is None:
            return  # sent when the channel connects
        request = core.subscribe(subscription.data_type, subscription.data_count, subscription.mask)
        subscription.subscriptionid = request.subscriptionid
        circuit.subscriptions[request.subscriptionid] = subscription
        circuit.send(request)

    async def _unsubscribe(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self.subscriptions.remove(subscription)
        circuit, core = self.circuit, self.core
        if circuit is None or core is None or subscription.subscriptionid is None:
            return
        circuit.subscriptions.pop(subscription.subscriptionid, None)
        with contextlib.suppress(ProtocolError, Disconnected):
            circuit.send(core.unsubscribe(subscription.subscriptionid))

    async def clear(self) -> None:
        """Close the channel (CLEAR_CHANNEL) and stop searching for it."""
        self.closed = True
        self.context._forget(self)
        circuit, core = self.circuit, self.core
        if circuit is not None and core is not None and core.sid is not None:
            with contextlib.suppress(ProtocolError, Disconnected):
                circuit.send(core.clear())
            circuit.channels.pop(core.cid, None)
        self.connected.clear()


class _SearchProtocol(asyncio.DatagramProtocol):
    def __init__(self, context: Context) -> None:
        self.context = context

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.context._search_reply(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("search socket: %s", exc)


class Context:
    """One client: a search socket and circuits shared by its channels."""

    def __init__(self, config: ClientConfig | None = None) -> None:
        self.config = config or ClientConfig.from_environment()
        self.broadcaster = Broadcaster(Role.CLIENT, self.config.max_array_bytes)
        self.channels: dict[str, Channel] = {}
        self.circuits: dict[tuple[str, int, int], _Circuit] = {}
        self._searching: dict[int, Channel] = {}  # search cid -> channel
        self._search_wakeup: asyncio.Event | None = None
        #: (address, port) of every server whose beacon we heard.
        self.servers_seen: set[tuple[str, int]] = set()
        self._restart_searches = False
        self._repeater_task: asyncio.Task[None] | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Context:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the search socket and start the search loop."""
        if self._udp is not None:
            return
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind(("0.0.0.0", 0))
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _SearchProtocol(self), sock=sock)
        self._search_wakeup = asyncio.Event()
        self._task = loop.create_task(self._search_loop())
        if self.config.use_repeater:
            self._repeater_task = loop.create_task(self._register_with_repeater())

    async def close(self) -> None:
        """Clear every channel and close every circuit."""
        for channel in list(self.channels.values()):
            await channel.clear()
        for circuit in list(self.circuits.values()):
            if circuit.transport is not None:
                circuit.transport.close()
        for task in (self._task, self._repeater_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    def channel(self, name: str, priority: int = 0) -> Channel:
        """The channel for ``name`` (one per name and context); starts searching."""
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = Channel(self, name, priority)
            self._search(channel)
        return channel

    async def connect(self, *names: str, timeout: float = 2.0) -> list[Channel]:
        """Channels for ``names``, all connected (searched as one batch)."""
        await self.start()
        channels = [self.channel(name) for name in names]
        await asyncio.gather(*(channel.wait_for_connection(timeout) for channel in channels))
        return channels

    # -- searching --------------------------------------------------------------

    def _search(self, channel: Channel) -> None:
        cid = self.broadcaster.new_search_id()
        self._searching[cid] = channel
        if self._search_wakeup is not None:
            self._search_wakeup.set()

    def _forget(self, channel: Channel) -> None:
        self.channels.pop(channel.name, None)
        for cid, searching in list(self._searching.items()):
            if searching is channel:
                del self._searching[cid]

    async def _search_loop(self) -> None:
        assert self._search_wakeup is not None
        attempts: dict[int, int] = {}
        loop = asyncio.get_running_loop()
        due: dict[int, float] = {}
        ceiling = self.config.max_search_interval
        while True:
            now = loop.time()
            if self._restart_searches:  # a new server appeared: ask again now
                self._restart_searches = False
                due.clear()
                attempts.clear()
            batch = [cid for cid in self._searching if due.get(cid, 0.0) <= now]
            if batch:
                self._send_searches(batch)
                for cid in batch:
                    step = attempts.get(cid, 0) + 1
                    attempts[cid] = step
                    interval = min(FIRST_SEARCH_INTERVAL * 2 ** min(step - 1, 30), ceiling)
                    due[cid] = now + interval
            for cid in [cid for cid in due if cid not in self._searching]:
                due.pop(cid)
                attempts.pop(cid, None)
            pending = [when for cid, when in due.items() if cid in self._searching]
            delay = max(0.0, min(pending) - loop.time()) if pending else None
            self._search_wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._search_wakeup.wait(), delay)

    def _send_searches(self, cids: list[int]) -> None:
        assert self._udp is not None
        names = {cid: self._searching[cid].name for cid in cids}
        # Pack as libca does: VERSION, then as many SEARCHes as fit 1 kB.
        for datagram in _search_datagrams(self.broadcaster, names):
            for address in self.config.search_addresses:
                with contextlib.suppress(OSError):
                    self._udp.sendto(datagram, address)

    def _search_reply(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            commands = self.broadcaster.recv(data)
        except ProtocolError as error:
            log.debug("ignoring datagram from %s: %s", addr, error)
            return
        for command in commands:
            if type(command) is RsrvIsUpResponse:
                self._beacon(command, addr)
                continue
            if type(command) is not SearchResponse:
                continue
            channel = self._searching.pop(command.cid, None)
            if channel is None or channel.closed:
                continue  # a late duplicate answer
            for cid, other in list(self._searching.items()):
                if other is channel:
                    del self._searching[cid]
            ip = command.parameter1
            host = addr[0] if ip == 0xFFFFFFFF else ipv4_from_int(ip)
            port = command.port
            asyncio.get_running_loop().create_task(self._attach(channel, (host, port)))

    def _beacon(self, beacon: RsrvIsUpResponse, addr: tuple[str, int]) -> None:
        host = beacon.address if beacon.address != "0.0.0.0" else addr[0]
        server = (host, beacon.server_port)
        if server in self.servers_seen:
            return
        self.servers_seen.add(server)
        if self._searching and self._search_wakeup is not None:
            # libca's reaction to a new server: search again at once
            # rather than at the back-off's leisure.
            self._restart_searches = True
            self._search_wakeup.set()

    async def _register_with_repeater(self) -> None:
        """Register until the repeater confirms (it then forwards beacons)."""
        target = ("127.0.0.1", self.config.repeater_port)
        while self.broadcaster.state is not BroadcasterState.REGISTERED:
            if self._udp is not None:
                with contextlib.suppress(OSError, ProtocolError):
                    self._udp.sendto(self.broadcaster.send(self.broadcaster.register()), target)
            await asyncio.sleep(REPEATER_RETRY)

    async def _attach(self, channel: Channel, address: tuple[str, int]) -> None:
        key = (*address, channel.priority)
        circuit = self.circuits.get(key)
        if circuit is None:
            circuit = self.circuits[key] = _Circuit(self, address, channel.priority)
            try:
                await circuit.open()
            except OSError as error:
                log.warning("cannot connect to %s:%d: %s", *address, error)
                self.circuits.pop(key, None)
                circuit.ready.set_exception(Disconnected(str(error)))
                circuit.ready.exception()  # retrieved: waiters search again below
                self._search(channel)
                return
            circuit.ready.set_result(None)
        else:
            try:
                await circuit.ready
            except Disconnected:
                self._search(channel)
                return
        if not channel.closed:
            channel._found(circuit)

    def _circuit_lost(self, circuit: _Circuit) -> None:
        key = (*circuit.address, circuit.core.priority)
        if self.circuits.get(key) is circuit:
            del self.circuits[key]


def _search_datagrams(broadcaster: Broadcaster, names: dict[int, str]) -> list[bytes]:
    """Search datagrams for ``names`` (cid -> name), as libca packs them."""
    groups = broadcaster.search(names.values(), cids=names.keys())
    return [broadcaster.send(*group) for group in groups]

"""The asyncio CA client: a context that searches, circuits, channels.

A :class:`Context` owns one UDP socket for name searches and one TCP
circuit per (server, priority), shared by every channel on that server. All
protocol decisions are the core's (:mod:`caioc.ca`); this module moves
bytes, keeps futures and retries searches.

When a circuit is lost its channels go back to searching, and when they
find a server again every subscription is re-established on the new
circuit, so a server restart costs subscribers a gap, never their
subscription. The circuit itself (and its ECHO watchdog) is in
:mod:`._circuit`, beacon anomalies in :mod:`._beacons`, starting a repeater
in :mod:`._repeater`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..ca import (
    ECA,
    AccessRights,
    AccessRightsResponse,
    Broadcaster,
    BroadcasterState,
    ChannelType,
    ClientChannel,
    Command,
    EventAddResponse,
    ProtocolError,
    ReadNotifyResponse,
    Role,
    RsrvIsUpResponse,
    SearchReply,
    SearchRequest,
    SearchResponse,
    SubscriptionMask,
    ipv4_from_int,
)
from ._beacons import BeaconHistory
from ._circuit import Circuit
from ._config import ClientConfig
from ._errors import ChannelTimeout, ClientError, Disconnected, ECA_text, ServerError
from ._repeater import repeater_port_held, spawn_repeater

__all__ = [
    "AccessCallback",
    "Channel",
    "ChannelTimeout",
    "ClientError",
    "ConnectionCallback",
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
#: Names per slice of a search pass, each packed and sent before the next is
#: encoded: the first slice about fills one datagram (1 kB), so the server
#: starts answering at once; later ones are larger (fewer, fuller datagrams).
SEARCH_CHUNKS = (24, 256)
#: CREATE_CHANs per write when a new circuit opens with many channels
#: waiting for it (a write per slice, so the server starts early).
CREATE_CHUNK = 200
#: Datagrams already queued on the search socket taken in one go after
#: the one the loop delivers (bounded, so that circuits get their turn).
DRAIN_DATAGRAMS = 64
#: Largest datagram read (a UDP payload is at most 64 kB).
MAX_DATAGRAM = 65536
#: Seconds between registrations with the repeater until it confirms:
#: from the first to the longest.
FIRST_REPEATER_RETRY = 0.05
REPEATER_RETRY = 1.0
#: Longest pause between attempts to reach a name server.
NAME_SERVER_RETRY = 5.0
#: Updates a subscription keeps for a consumer that has not taken them.
SUBSCRIPTION_BACKLOG = 1000

#: The access rights by their two bits, made once.
_RIGHTS = tuple(AccessRights(bits) for bits in range(4))

#: Every ChannelType by its number, for the connect path.
_CHANNEL_TYPES = {int(member): member for member in ChannelType}

#: ``callback(channel, connected)``: called on each connection change.
ConnectionCallback = Callable[["Channel", bool], None]
#: ``callback(channel, rights)``: called when the access rights change.
AccessCallback = Callable[["Channel", AccessRights], None]


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


class Channel:
    """A named PV as the client sees it; connects, reconnects by itself."""

    def __init__(self, context: Context, name: str, priority: int = 0) -> None:
        self.context = context
        self.name = name
        self.priority = priority
        self.circuit: Circuit | None = None
        self.core: ClientChannel | None = None
        self.native_type: ChannelType | None = None
        self.native_count = 0
        self.access_rights = AccessRights.NO_ACCESS
        self.connected = asyncio.Event()
        self.subscriptions: list[Subscription] = []
        self.closed = False
        self._connection_callbacks: list[ConnectionCallback] = []
        self._access_callbacks: list[AccessCallback] = []
        self._search_cid: int | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connected.is_set() else "searching"
        return f"<Channel {self.name!r} {state}>"

    @property
    def is_connected(self) -> bool:
        """Whether the channel is connected now."""
        return self.connected.is_set()

    def add_connection_callback(self, callback: ConnectionCallback) -> None:
        """Call ``callback(channel, connected)`` on every connection change.

        libca's connection handler: True when the channel connects (first
        time and after each reconnect), False when its circuit is lost or
        the server drops it. Closing the channel calls nothing. Callbacks
        run on the context's event loop and must not block; a callback
        added while the channel is connected hears of the next change only
        (look at :attr:`is_connected` for the present).
        """
        self._connection_callbacks.append(callback)

    def remove_connection_callback(self, callback: ConnectionCallback) -> None:
        """Stop calling ``callback`` (no error if it was not added)."""
        callbacks = self._connection_callbacks
        if callback in callbacks:  # cheaper than suppressing: once per channel in connect()
            callbacks.remove(callback)

    def add_access_callback(self, callback: AccessCallback) -> None:
        """Call ``callback(channel, rights)`` whenever the access rights change.

        libca's access-rights handler: the server's rights as they arrive
        (on connection, and when access security changes them), and
        :attr:`AccessRights.NO_ACCESS` when the channel disconnects.
        """
        self._access_callbacks.append(callback)

    def remove_access_callback(self, callback: AccessCallback) -> None:
        """Stop calling ``callback`` (no error if it was not added)."""
        with contextlib.suppress(ValueError):
            self._access_callbacks.remove(callback)

    def _notify(self, callbacks: list[Callable[[Channel, Any], None]], value: Any) -> None:
        for callback in list(callbacks):
            try:
                callback(self, value)
            except Exception:  # a user's bug must not cost the circuit
                log.exception("callback %r of %s failed", callback, self.name)

    def _set_access_rights(self, bits: int) -> None:
        rights = _RIGHTS[bits & 3]
        if rights is not self.access_rights:
            self.access_rights = rights
            self._notify(self._access_callbacks, rights)

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

    def _found(self, circuit: Circuit) -> None:
        circuit.send_soon(self._create_on(circuit))

    def _create_on(self, circuit: Circuit) -> Command:
        """Make this channel the circuit's; the CREATE_CHAN to send for it."""
        self.circuit = circuit
        core = self.core = circuit.core.create_channel(self.name)
        circuit.channels[core.cid] = self
        return core.create()

    def _update(self, command: Command) -> None:
        if type(command) is AccessRightsResponse:
            self._set_access_rights(command[5])  # the raw field: cheaper than the property
            return
        data_type = command.data_type  # type: ignore[attr-defined]
        try:
            self.native_type = _CHANNEL_TYPES[data_type]  # an enum call costs more
        except KeyError:
            self.native_type = ChannelType(data_type)  # raises, naming the number
        self.native_count = command.data_count  # type: ignore[attr-defined]
        self.connected.set()
        for subscription in self.subscriptions:  # re-establish after a reconnect
            self._send_subscribe(subscription)
        self._notify(self._connection_callbacks, True)

    def _lost(self, why: str) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.circuit = None
        self.core = None
        log.info("%s disconnected: %s", self.name, why)
        if not self.closed:
            self.context._search(self)
            if was_connected:
                self._notify(self._connection_callbacks, False)
            self._set_access_rights(AccessRights.NO_ACCESS)

    def _live(self) -> tuple[Circuit, ClientChannel]:
        if not self.connected.is_set() or self.circuit is None or self.core is None:
            raise Disconnected(f"{self.name!r} is not connected")
        return self.circuit, self.core

    async def _request(self, circuit: Circuit, command: Command, timeout: float) -> Command:
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
        circuit.send_soon(request)

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
        self.access_rights = AccessRights.NO_ACCESS


class _SearchProtocol(asyncio.DatagramProtocol):
    def __init__(self, context: Context, sock: socket.socket) -> None:
        self.context = context
        self.sock = sock  # non-blocking, as the transport made it

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        handle = self.context._search_reply
        handle(data, addr)
        # The loop hands over one datagram per wake-up, and the answers to
        # a batch of searches arrive as dozens: take those queued already,
        # so that the CREATE_CHANs they cause leave in one write, not one
        # write (and one loop iteration) per datagram.
        for _ in range(DRAIN_DATAGRAMS):
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self.error_received(error)
                return
            handle(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("search socket: %s", exc)


class Context:
    """One client: a search socket and circuits shared by its channels."""

    def __init__(self, config: ClientConfig | None = None) -> None:
        self.config = config or ClientConfig.from_environment()
        self.broadcaster = Broadcaster(Role.CLIENT, self.config.max_array_bytes)
        self.channels: dict[str, Channel] = {}
        self.circuits: dict[tuple[str, int, int], Circuit] = {}
        self._searching: dict[int, Channel] = {}  # search cid -> channel
        self._search_wakeup: asyncio.Event | None = None
        #: (address, port) of every server whose beacon we heard.
        self.servers_seen: set[tuple[str, int]] = set()
        #: Beacon anomalies seen (new server, restart, beacons resumed).
        self.beacon_anomalies = 0
        self._beacons: dict[tuple[str, int], BeaconHistory] = {}
        self._priorities: set[int] = {0}
        self._restart_searches = False
        #: Loop time of the latest search answer (UDP).
        self._last_search_reply = float("-inf")
        self._repeater_task: asyncio.Task[None] | None = None
        #: Process id of the repeater this context started, if it did.
        self.spawned_repeater_pid: int | None = None
        #: Connected circuits to name servers (EPICS_CA_NAME_SERVERS).
        self.name_servers: dict[tuple[str, int], Circuit] = {}
        self._name_server_tasks: list[asyncio.Task[None]] = []
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
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _SearchProtocol(self, sock), sock=sock
        )
        self._search_wakeup = asyncio.Event()
        self._task = loop.create_task(self._search_loop())
        if self.config.use_repeater:
            self._repeater_task = loop.create_task(self._register_with_repeater())
        self._name_server_tasks = [
            loop.create_task(self._name_server(address)) for address in self.config.name_servers
        ]

    async def close(self) -> None:
        """Clear every channel and close every circuit."""
        for channel in list(self.channels.values()):
            await channel.clear()
        for circuit in list(self.circuits.values()):
            if circuit._watchdog is not None:
                circuit._watchdog.cancel()
            if circuit.transport is not None:
                circuit.transport.close()
        for circuit in list(self.name_servers.values()):
            circuit.abort()
        for task in (self._task, self._repeater_task, *self._name_server_tasks):
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
        pending = {channel for channel in channels if not channel.is_connected}
        if not pending:
            return channels
        # One future for the batch, not a task per channel.
        done = asyncio.get_running_loop().create_future()

        def connected(channel: Channel, up: bool) -> None:
            if up:
                pending.discard(channel)
                if not pending and not done.done():
                    done.set_result(None)

        waited = list(pending)
        for channel in waited:
            channel.add_connection_callback(connected)
        try:
            await asyncio.wait_for(done, timeout)
        except asyncio.TimeoutError:
            for channel in channels:
                await channel.wait_for_connection(0)  # names the first one missing
        finally:
            for channel in waited:
                channel.remove_connection_callback(connected)
        return channels

    # -- searching --------------------------------------------------------------

    def _search(self, channel: Channel) -> None:
        if channel._search_cid in self._searching:
            return  # searched for already
        cid = channel._search_cid = self.broadcaster.new_search_id()
        self._searching[cid] = channel
        if self._search_wakeup is not None:
            self._search_wakeup.set()

    def _forget(self, channel: Channel) -> None:
        self.channels.pop(channel.name, None)
        if channel._search_cid is not None:
            self._searching.pop(channel._search_cid, None)
            channel._search_cid = None

    async def _search_loop(self) -> None:
        assert self._search_wakeup is not None
        attempts: dict[int, int] = {}
        loop = asyncio.get_running_loop()
        due: dict[int, float] = {}
        ceiling = self.config.max_search_interval
        while True:
            now = loop.time()
            if self._restart_searches:  # a beacon anomaly: ask again now
                self._restart_searches = False
                due.clear()
                attempts.clear()
            # While answers are still arriving, first retries wait: a server
            # busy answering a big batch is not asked everything again
            # (libca holds back its search frames the same way). Later
            # retries keep their pace whatever arrives.
            hold_until = self._last_search_reply + FIRST_SEARCH_INTERVAL
            held = now < hold_until
            batch = [
                cid
                for cid in self._searching
                if cid not in due or (due[cid] <= now and not (held and attempts[cid] == 1))
            ]
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
            delay = None
            if pending:
                delay = max(0.0, max(min(pending), hold_until) - loop.time())
            self._search_wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._search_wakeup.wait(), delay)

    def _send_searches(self, cids: list[int]) -> None:
        assert self._udp is not None
        names = {cid: self._searching[cid].name for cid in cids}
        if self.config.search_addresses:
            # Pack as libca does: VERSION, then as many SEARCHes as fit 1 kB.
            # Each slice goes out as soon as it is packed, the first one
            # small: the server answers the first names while the rest are
            # still being encoded (a thousand names take milliseconds).
            udp, addresses = self._udp, self.config.search_addresses
            for chunk in _chunks(names, SEARCH_CHUNKS):
                for datagram in _search_datagrams(self.broadcaster, chunk):
                    for address in addresses:
                        with contextlib.suppress(OSError):
                            udp.sendto(datagram, address)
        for circuit in list(self.name_servers.values()):
            self._search_over_tcp(circuit, names)

    def _search_over_tcp(self, circuit: Circuit, names: dict[int, str]) -> None:
        """Send each search once on a name server's circuit (TCP loses nothing)."""
        fresh = [
            SearchRequest(name, cid, reply=SearchReply.DONT_REPLY)
            for cid, name in names.items()
            if cid not in circuit.searched
        ]
        if not fresh:
            return
        try:
            circuit.send(*fresh)
        except (Disconnected, ProtocolError) as error:
            log.debug("name server %s:%d: %s", *circuit.address, error)
            return
        circuit.searched.update(request.cid for request in fresh)

    async def _name_server(self, address: tuple[str, int]) -> None:
        """Keep a circuit to one name server open and search through it.

        A name server (or any CA server: rsrv and caioc answer SEARCH over
        TCP) replies on the circuit with the address of the server that has
        the name. Connection failures are retried with a growing pause.
        """
        pause = FIRST_SEARCH_INTERVAL
        while True:
            circuit = Circuit(self, address, 0)
            try:
                await circuit.open()
            except OSError as error:
                log.info("name server %s:%d: %s", *address, error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, NAME_SERVER_RETRY)
                continue
            pause = FIRST_SEARCH_INTERVAL
            self.name_servers[address] = circuit
            names = {cid: channel.name for cid, channel in self._searching.items()}
            self._search_over_tcp(circuit, names)
            try:
                await circuit.closed
            finally:
                if self.name_servers.get(address) is circuit:
                    del self.name_servers[address]
            await asyncio.sleep(pause)

    def _search_reply(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            commands = self.broadcaster.recv(data)
        except ProtocolError as error:
            log.debug("ignoring datagram from %s: %s", addr, error)
            return
        answered = False
        for command in commands:
            if type(command) is SearchResponse:
                answered = True
                self._search_found(command, addr[0])
            elif type(command) is RsrvIsUpResponse:
                self._beacon(command, addr)
        if answered:
            self._last_search_reply = asyncio.get_running_loop().time()

    def _search_found(self, command: SearchResponse, sender: str) -> None:
        """A server has the name searched as ``command.cid``: connect to it."""
        channel = self._searching.pop(command.cid, None)
        if channel is None or channel.closed:
            return  # a late duplicate answer
        channel._search_cid = None
        ip = command.parameter1
        host = sender if ip == 0xFFFFFFFF else ipv4_from_int(ip)
        key = (host, command.port, channel.priority)
        circuit = self.circuits.get(key)
        if circuit is None:
            # The first answer from this server: open its circuit; channels
            # found meanwhile wait in a list on it, not in a task each.
            self._priorities.add(channel.priority)
            circuit = self.circuits[key] = Circuit(self, key[:2], channel.priority)
            circuit.waiting.append(channel)
            circuit.opening = asyncio.get_running_loop().create_task(self._open(circuit, key))
        elif not circuit.ready.done():
            circuit.waiting.append(channel)
        elif circuit.ready.exception() is None:
            channel._found(circuit)  # the usual case
        else:  # pragma: no cover  (a failed circuit leaves self.circuits at once)
            self._search(channel)

    def _beacon(self, beacon: RsrvIsUpResponse, addr: tuple[str, int]) -> None:
        host = beacon.address if beacon.address != "0.0.0.0" else addr[0]
        server = (host, beacon.server_port)
        now = asyncio.get_running_loop().time()
        for key in ((host, beacon.server_port, priority) for priority in self._priorities):
            circuit = self.circuits.get(key)
            if circuit is not None:  # the server lives: as good as bytes heard
                circuit.last_heard = now
        history = self._beacons.get(server)
        if history is None:
            self._beacons[server] = BeaconHistory(now, beacon.beacon_id)
            self.servers_seen.add(server)
            anomaly = True  # a server not seen before
        else:
            anomaly = history.update(now, beacon.beacon_id)
        if anomaly:
            self.beacon_anomalies += 1
            if self._searching and self._search_wakeup is not None:
                # libca's reaction to a beacon anomaly: search again at
                # once rather than at the back-off's leisure.
                self._restart_searches = True
                self._search_wakeup.set()

    async def _register_with_repeater(self) -> None:
        """Register until the repeater confirms (it then forwards beacons).

        With ``spawn_repeater``, a repeater is started first if none holds
        the port, as libca does. Registrations are retried quickly at first
        (a repeater just started needs a moment to bind), then every
        ``REPEATER_RETRY`` seconds.
        """
        port = self.config.repeater_port
        if self.config.spawn_repeater and not repeater_port_held(port):
            self.spawned_repeater_pid = await spawn_repeater(port)
        target = ("127.0.0.1", port)
        interval = FIRST_REPEATER_RETRY
        while self.broadcaster.state is not BroadcasterState.REGISTERED:
            if self._udp is not None:
                with contextlib.suppress(OSError, ProtocolError):
                    self._udp.sendto(self.broadcaster.send(self.broadcaster.register()), target)
            await asyncio.sleep(interval)
            interval = min(interval * 2, REPEATER_RETRY)

    async def _open(self, circuit: Circuit, key: tuple[str, int, int]) -> None:
        """Open a new circuit, then create on it every channel waiting for it."""
        try:
            await circuit.open()
        except OSError as error:
            log.warning("cannot connect to %s:%d: %s", *circuit.address, error)
            if self.circuits.get(key) is circuit:
                del self.circuits[key]
            circuit.ready.set_exception(Disconnected(str(error)))
            circuit.ready.exception()  # retrieved: the waiters search again
            waiting, circuit.waiting = circuit.waiting, []
            for channel in waiting:
                if not channel.closed:
                    self._search(channel)
            return
        circuit.ready.set_result(None)
        waiting, circuit.waiting = circuit.waiting, []
        # CREATE_CHANs in slices, one write each: the server starts on the
        # first while the rest are encoded.
        try:
            for start in range(0, len(waiting), CREATE_CHUNK):
                requests = [
                    channel._create_on(circuit)
                    for channel in waiting[start : start + CREATE_CHUNK]
                    if not channel.closed
                ]
                if requests:
                    circuit.send(*requests)
        except Disconnected as error:  # gone as soon as opened: search again
            for channel in waiting:
                if not channel.closed and not channel.connected.is_set():
                    channel._lost(str(error))

    def _circuit_lost(self, circuit: Circuit) -> None:
        key = (*circuit.address, circuit.core.priority)
        if self.circuits.get(key) is circuit:
            del self.circuits[key]


def _chunks(names: dict[int, str], sizes: tuple[int, ...]) -> Iterator[dict[int, str]]:
    """``names`` in slices of ``sizes[0]``, ``sizes[1]`` ..., the last size repeated."""
    items = list(names.items())
    start, index = 0, 0
    while start < len(items):
        size = sizes[min(index, len(sizes) - 1)]
        yield dict(items[start : start + size])
        start, index = start + size, index + 1


def _search_datagrams(broadcaster: Broadcaster, names: dict[int, str]) -> list[bytes]:
    """Search datagrams for ``names`` (cid -> name), as libca packs them."""
    groups = broadcaster.search(names.values(), cids=names.keys())
    return [broadcaster.send(*group) for group in groups]

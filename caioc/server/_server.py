"""The asyncio CA server: a thin loop around the sans-I/O core.

One UDP endpoint per interface answers searches; one TCP listener per
interface accepts virtual circuits; a task sends beacons. Each circuit is an
``asyncio.Protocol``: ``data_received`` feeds the core's
:class:`~caioc.ca.VirtualCircuit`, the commands it yields are handled in
order by one task per circuit, and the replies of a batch leave in one
``writelines``. Library exceptions are translated here and nowhere else.

Monitors never lose the newest value: each subscription keeps at most a few
pending updates and, when more arrive before the client takes them,
overwrites the newest, so a slow or paused (EVENTS_OFF) client costs memory
in proportion to its subscriptions, never to the update rate.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import Mapping
from typing import Any

from .._netif import broadcast_address_of, interfaces
from ..ca import (
    ADDRESS_FROM_SENDER,
    ECA,
    NEED_DATA,
    AccessRights,
    AccessRightsResponse,
    AlarmSeverity,
    Broadcaster,
    ChannelType,
    ClearChannelRequest,
    ClientNameRequest,
    Command,
    CreateChanRequest,
    EchoRequest,
    EchoResponse,
    EventAddRequest,
    EventAddResponse,
    EventCancelRequest,
    EventCancelResponse,
    EventsOnRequest,
    HostNameRequest,
    NotFoundResponse,
    ReadNotifyRequest,
    ReadNotifyResponse,
    ReadRequest,
    ReadSyncRequest,
    RemoteProtocolError,
    Role,
    RsrvIsUpResponse,
    SearchReply,
    SearchRequest,
    SearchResponse,
    ServerChannel,
    SubscriptionMask,
    VersionRequest,
    VersionResponse,
    VirtualCircuit,
    WriteNotifyRequest,
    WriteNotifyResponse,
    WriteRequest,
    decode_scalar,
    error_for,
    max_payload_for,
    payload_size,
)
from ..ca import ProtocolError as _ProtocolError
from ._access import AccessSecurity
from ._config import ServerConfig
from ._data import ChannelData, ChannelError
from ._filters import ServedChannel, States, channel_for

__all__ = ["Server", "run"]

log = logging.getLogger("caioc.server")

#: Updates a subscription queues while its client keeps up (the socket is
#: writable and events are on); past either bound the newest pending one is
#: overwritten, so memory stays bounded even under a burst of puts.
PENDING_PER_SUBSCRIPTION = 4096
PENDING_BYTES_PER_SUBSCRIPTION = 4 * 1024 * 1024
#: Commands handled in a row before other circuits get a turn.
FAIRNESS_BATCH = 64
#: Commands a circuit may have waiting before we stop reading its socket.
MAX_QUEUED_COMMANDS = 2048
#: First beacon interval; it doubles up to the configured period.
FIRST_BEACON_INTERVAL = 0.02


class _Subscription:
    """One EVENT_ADD: what the channel data delivers to, and its backlog."""

    __slots__ = (
        "channel",
        "circuit",
        "client_version",
        "data",
        "data_count",
        "data_type",
        "mask",
        "pending",
        "pending_bytes",
        "subscriptionid",
    )
    # pending holds (payload, count, status): status is ECA.NORMAL but for
    # updates the channel could not convert (rsrv sends those zeroed).

    def __init__(
        self,
        circuit: _Circuit,
        channel: ServerChannel,
        data: ServedChannel,
        request: EventAddRequest,
    ) -> None:
        self.circuit = circuit
        self.channel = channel
        self.data = data
        self.data_type = request.data_type
        self.data_count = request.data_count
        self.mask = request.mask
        self.subscriptionid = request.subscriptionid
        self.client_version = circuit.core.their_version
        self.pending: collections.deque[tuple[Any, int, int]] = collections.deque()
        self.pending_bytes = 0

    def deliver(self, payload: Any, count: int, status: int = ECA.NORMAL) -> None:
        """Take an encoded update (called by the channel data, encode-once).

        A client that keeps up gets every update. One that does not (its
        socket is full, or it sent EVENTS_OFF) holds only the newest, as
        rsrv collapses its event queue, so a slow or dead client costs one
        update per subscription, never one per change.
        """
        pending = self.pending
        size = len(payload)
        if pending and (
            not self.circuit.flowing
            or len(pending) >= PENDING_PER_SUBSCRIPTION
            or self.pending_bytes + size > PENDING_BYTES_PER_SUBSCRIPTION
        ):
            if not self.circuit.flowing and len(pending) > 1:
                self.collapse()
            self.pending_bytes += size - len(pending[-1][0])
            pending[-1] = (payload, count, status)  # latest value wins
        else:
            pending.append((payload, count, status))
            self.pending_bytes += size
        self.circuit.updates_ready(self)

    def collapse(self) -> None:
        """Keep only the newest pending update."""
        if len(self.pending) > 1:
            newest = self.pending[-1]
            self.pending.clear()
            self.pending.append(newest)
            self.pending_bytes = len(newest[0])

    def deliver_error(self, eca: int, payload: Any, count: int) -> None:
        """An update the channel could not convert: sent with ``eca`` as status."""
        self.deliver(payload, count, int(eca))


class _Circuit(asyncio.Protocol):
    """One client's TCP connection."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.core_limit = max_payload_for(server.config.max_array_bytes)
        self.core = VirtualCircuit(Role.SERVER, max_payload=self.core_limit)
        self.transport: asyncio.Transport | None = None
        self.queue: collections.deque[Command] = collections.deque()
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.out: list[bytes] = []
        self.subscriptions: dict[int, _Subscription] = {}
        #: cid -> the data behind each channel this client opened.
        self.data: dict[int, ServedChannel] = {}
        self.ready: dict[int, _Subscription] = {}
        self.flush_scheduled = False
        self.can_write = True
        self.reading = True

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        peer = transport.get_extra_info("peername")
        self.core.address = peer[:2] if peer else None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.circuits.add(self)
        # CA 4.11+: the server says its version as soon as the circuit opens.
        self.send(VersionResponse(0))
        self.flush()
        self.task = asyncio.get_running_loop().create_task(self._process())

    def data_received(self, data: bytes) -> None:
        core = self.core
        try:
            core.receive_data(data)
            while True:
                try:
                    command = core.next_command()
                except RemoteProtocolError as error:
                    offending = getattr(error, "command", None)
                    if offending is None:
                        raise  # the stream cannot be framed any more
                    self._refuse(offending, error)
                    continue
                if command is NEED_DATA:
                    break
                self.queue.append(command)  # type: ignore[arg-type]
        except RemoteProtocolError as error:
            log.warning("closing circuit from %s: %s", core.address, error)
            self.close()
            return
        self.wakeup.set()
        if len(self.queue) > MAX_QUEUED_COMMANDS and self.reading and self.transport:
            self.transport.pause_reading()  # back-pressure on a flooding client
            self.reading = False

    @property
    def flowing(self) -> bool:
        """Whether updates can go out now (socket writable, events on)."""
        return self.can_write and self.core.events_on

    def pause_writing(self) -> None:
        self.can_write = False
        for subscription in self.subscriptions.values():
            subscription.collapse()

    def resume_writing(self) -> None:
        self.can_write = True
        self._schedule_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.circuits.discard(self)
        for subscription in self.subscriptions.values():
            subscription.data.unsubscribe(subscription)
        self.subscriptions.clear()
        self.ready.clear()
        self.core.disconnect()
        if self.task is not None:
            self.task.cancel()

    # -- output -------------------------------------------------------------------

    def send(self, *commands: Command) -> None:
        """Queue commands for the next flush, checked by the core."""
        try:
            self.out.append(self.core.send(*commands))
        except _ProtocolError as error:  # a bug of ours: say so, keep serving
            log.error("refusing to send %r: %s", commands, error)

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(self.out)
        self.out = []

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def updates_ready(self, subscription: _Subscription) -> None:
        self.ready[subscription.subscriptionid] = subscription
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_updates)

    def _flush_updates(self, in_order: bool = False) -> None:
        """Send pending updates (``in_order``: even to a backed-up socket, so
        the updates a put caused go out ahead of its completion)."""
        self.flush_scheduled = False
        writable = self.can_write or in_order
        if not (writable and self.core.events_on) or self.transport is None:
            return  # kept, coalesced, until the client can take them
        ready, self.ready = self.ready, {}
        for subscriptionid, subscription in ready.items():
            if self.subscriptions.get(subscriptionid) is not subscription:
                continue  # cancelled meanwhile
            while subscription.pending:
                payload, count, status = subscription.pending.popleft()
                subscription.pending_bytes -= len(payload)
                self.send(
                    EventAddResponse.from_payload(
                        payload, subscription.data_type, count, status, subscriptionid
                    )
                )
        self.flush()

    # -- requests -------------------------------------------------------------------

    async def _process(self) -> None:
        queue = self.queue
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            handled = 0
            while queue:
                if self.transport is None or self.transport.is_closing():
                    queue.clear()  # the client is gone: nothing to answer
                    return
                command = queue.popleft()
                try:
                    await self._handle(command)
                except Exception:  # never let one request take the circuit down
                    log.exception("error handling %r", command)
                    self.send(error_for(command, ECA.INTERNAL, cid=self._cid_of(command)))
                if len(self.out) > 64:
                    self.flush()
                handled += 1
                if handled % FAIRNESS_BATCH == 0:
                    # A client flooding requests must not starve the others:
                    # let their circuits (and monitor flushes) run.
                    self.flush()
                    await asyncio.sleep(0)
            self.flush()
            if not self.reading and self.transport is not None:
                self.transport.resume_reading()
                self.reading = True
            if not self.core.events_on:
                continue
            if self.ready:
                self._schedule_flush()

    def _cid_of(self, command: Command) -> int:
        sid = getattr(command, "sid", None)
        channel = self.core.channels_by_sid.get(sid) if sid is not None else None
        return channel.cid if channel is not None else 0

    def _refuse(self, command: Command, error: Exception) -> None:
        status = ECA.BADCHID
        if isinstance(command, (ReadRequest, ReadSyncRequest)):
            status = ECA.ANACHRONISM
        self.out.append(bytes(error_for(command, status, str(error), cid=0xFFFFFFFF)))
        self.flush()

    async def _handle(self, command: Command) -> None:
        kind = type(command)
        if kind is ReadNotifyRequest:
            await self._read(command)  # type: ignore[arg-type]
        elif kind is EventAddRequest:
            self._subscribe(command)  # type: ignore[arg-type]
        elif kind is WriteNotifyRequest or kind is WriteRequest:
            await self._write(command)  # type: ignore[arg-type]
        elif kind is EventCancelRequest:
            self._unsubscribe(command)  # type: ignore[arg-type]
        elif kind is CreateChanRequest:
            self._create(command)  # type: ignore[arg-type]
        elif kind is ClearChannelRequest:
            self._clear(command)  # type: ignore[arg-type]
        elif kind is EchoRequest:
            self.send(EchoResponse())
        elif kind is SearchRequest:
            reply = self.server.search_reply(command)  # type: ignore[arg-type]
            if reply is not None:
                self.send(reply)
        elif kind is ReadRequest or kind is ReadSyncRequest:
            # Retired in CA 4.4 (READ) and never needed since: refuse clearly.
            self.send(error_for(command, ECA.ANACHRONISM, cid=self._cid_of(command)))
        elif kind is EventsOnRequest:
            self._schedule_flush()  # send what waited while events were off
        elif (
            kind is HostNameRequest or kind is ClientNameRequest
        ) and self.server.access_security is not None:
            self.recheck_rights()  # rsrv re-evaluates rights when a client renames itself
        # VERSION, EVENTS_OFF: the core records them.

    def _create(self, request: CreateChanRequest) -> None:
        channel: ServerChannel = self.core.channels[request.cid]
        data = self.server.lookup(request.name)
        if data is None:
            self.send(channel.create_failed())
            return
        self.data[request.cid] = data
        rights = self.rights_for(request.name, data)
        sid = self.server.next_sid()
        self.send(*channel.create(data.native_type, data.max_length, sid, rights))

    def rights_for(self, name: str, data: ServedChannel) -> int:
        """This client's rights on ``data``: the channel's, narrowed by the .acf."""
        host, user = self.core.host_name or "", self.core.client_name or ""
        rights = int(data.access_rights(host, user))
        security = self.server.access_security
        if security is not None:
            if security.check_client_ip and self.core.address is not None:
                host = self.core.address[0]
            group = getattr(data, "access_group", "DEFAULT")
            level = getattr(data, "access_level", 0)
            rights &= int(security.rights(group, level, user, host))
        return rights

    def recheck_rights(self) -> None:
        """Push ACCESS_RIGHTS for every channel whose rights changed."""
        for channel in list(self.core.channels.values()):
            data = self.data.get(channel.cid)
            if data is None or channel.sid is None:
                continue
            rights = self.rights_for(channel.name, data)
            if rights != int(channel.access_rights):
                self.send(AccessRightsResponse(channel.cid, rights))
        self.flush()

    def _channel(self, sid: int) -> tuple[ServerChannel, ServedChannel]:
        channel = self.core.channels_by_sid[sid]
        return channel, self.data[channel.cid]

    def _too_large(self, request: ReadNotifyRequest | EventAddRequest, data: ServedChannel) -> bool:
        """Refuse a request whose reply could not fit EPICS_CA_MAX_ARRAY_BYTES."""
        count = request.data_count or data.length
        if payload_size(request.data_type, count) <= self.core_limit:
            return False
        self.send(error_for(request, ECA.TOLARGE, cid=self.core.channels_by_sid[request.sid].cid))
        return True

    async def _read(self, request: ReadNotifyRequest) -> None:
        channel, data = self._channel(request.sid)
        if not channel.access_rights & AccessRights.READ:
            self.send(error_for(request, ECA.NORDACCESS, cid=channel.cid))
            return
        if self._too_large(request, data):
            return
        try:
            payload, count = await data.read(
                request.data_type, request.data_count, self.core.their_version
            )
        except ChannelError as error:
            self.send(error_for(request, error.eca, str(error), cid=channel.cid))
            return
        self.send(
            ReadNotifyResponse.from_payload(
                payload, request.data_type, count, ECA.NORMAL, request.ioid
            )
        )

    async def _write(self, request: WriteRequest) -> None:
        channel, data = self._channel(request.sid)
        notify = type(request) is WriteNotifyRequest
        status: ECA = ECA.NORMAL
        message = ""
        if not channel.access_rights & AccessRights.WRITE:
            status, message = ECA.NOWTACCESS, ECA.NOWTACCESS.message
        else:
            try:
                await data.write(request.data_type, request.data_count, request.payload)
            except ChannelError as error:
                status, message = error.eca, str(error)
        if self.ready:
            # As rsrv posts monitors while processing the put, updates the
            # put caused reach the client before its completion does.
            self._flush_updates(in_order=True)
        if notify:
            self.send(
                WriteNotifyResponse(request.data_type, request.data_count, status, request.ioid)
            )
        elif status is not ECA.NORMAL:
            # A plain WRITE has no reply of its own; rsrv reports failure by ERROR.
            self.send(error_for(request, status, message or channel.name, cid=channel.cid))

    def _subscribe(self, request: EventAddRequest) -> None:
        channel, data = self._channel(request.sid)
        if not channel.access_rights & AccessRights.READ:
            self.send(error_for(request, ECA.NORDACCESS, cid=channel.cid))
            return
        if self._too_large(request, data):
            return
        subscription = _Subscription(self, channel, data, request)
        self.subscriptions[request.subscriptionid] = subscription
        data.subscribe(subscription)

    def _unsubscribe(self, request: EventCancelRequest) -> None:
        subscription = self.subscriptions.pop(request.subscriptionid, None)
        if subscription is not None:
            subscription.data.unsubscribe(subscription)
            self.ready.pop(request.subscriptionid, None)
        self.send(
            EventCancelResponse(
                request.data_type, request.data_count, request.sid, request.subscriptionid
            )
        )

    def _clear(self, request: ClearChannelRequest) -> None:
        channel = self.core.channels.get(request.cid)
        if channel is None:
            return  # the circuit closed meanwhile
        for subscriptionid in list(channel.subscriptions):
            subscription = self.subscriptions.pop(subscriptionid, None)
            if subscription is not None:
                subscription.data.unsubscribe(subscription)
                self.ready.pop(subscriptionid, None)
        self.data.pop(request.cid, None)
        self.send(channel.clear())


class _AccessInput:
    """Feeds one served PV into access security's CALC inputs."""

    data_type = ChannelType.TIME_DOUBLE
    data_count = 1
    mask = SubscriptionMask.VALUE | SubscriptionMask.ALARM
    client_version = 13

    def __init__(self, security: AccessSecurity, name: str) -> None:
        self.security = security
        self.name = name

    def deliver(self, payload: Any, count: int) -> None:
        decoded = decode_scalar(ChannelType.TIME_DOUBLE, payload)
        if decoded is None:
            self.security.set_pv(self.name, None)
            return
        value, metadata = decoded
        invalid = metadata.get("severity") == AlarmSeverity.INVALID
        self.security.set_pv(self.name, None if invalid else float(value))

    def deliver_error(self, eca: int, payload: Any, count: int) -> None:
        self.security.set_pv(self.name, None)


class _SearchProtocol(asyncio.DatagramProtocol):
    """The UDP side: answers searches."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        # The server's UDP side has one state: one broadcaster serves all.
        self.broadcaster = Broadcaster(Role.SERVER, server.config.max_array_bytes)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] in self.server.config.ignore_addresses:
            return
        try:
            commands = self.broadcaster.recv(data)
        except _ProtocolError as error:
            log.debug("ignoring datagram from %s: %s", addr, error)
            return
        replies: list[Command] = []
        for command in commands:
            if type(command) is VersionRequest:
                replies.append(VersionResponse(command.priority, 13, command.sequence_id))
            elif type(command) is SearchRequest:
                reply = self.server.search_reply(command)
                if reply is not None:
                    replies.append(reply)
        if any(type(reply) is not VersionResponse for reply in replies):
            assert self.transport is not None
            with contextlib.suppress(OSError):
                self.transport.sendto(b"".join(bytes(r) for r in replies), addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class Server:
    """A CA server for the channels in ``pvdb`` (name -> ChannelData).

    Names with field modifiers and channel filters open views of the PVs,
    as an IOC's do (``PV.VAL``, ``PV.$``, ``PV.[1:3]``,
    ``PV.{"dbnd":{"d":0.5}}`` ...: see :mod:`caioc.server._filters`);
    ``states`` holds the named states of the ``sync`` filter.
    """

    #: Also take modifiers after a name without the dot (``PV$``, ``PV[1:3]``).
    #: Off by default, as in epics-base, which reads such names as record
    #: names: turned on, this server would answer searches another IOC's
    #: record literally named ``X[1:3]`` also answers.
    dotless_modifiers = False

    def __init__(
        self,
        pvdb: Mapping[str, ChannelData],
        config: ServerConfig | None = None,
        access_security: AccessSecurity | None = None,
    ) -> None:
        self.pvdb = pvdb
        self.config = config or ServerConfig.from_environment()
        #: Access security rules (.acf) narrowing every channel's rights; a
        #: change (new file, an INP value moving a CALC) is pushed to clients.
        self.access_security = access_security
        if access_security is not None:
            access_security.on_change(lambda groups: self._rights_changed())
        self.circuits: set[_Circuit] = set()
        self.tcp_port = 0
        self._servers: list[asyncio.AbstractServer] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._sid = 0
        self.started = asyncio.Event()
        #: Named states for the ``sync`` channel filter (epics-base's dbState).
        self.states = States()

    def _rights_changed(self) -> None:
        for circuit in list(self.circuits):
            circuit.recheck_rights()

    def _follow_access_inputs(self) -> None:
        """Feed the .acf's INP PVs that this server serves into its CALCs."""
        assert self.access_security is not None
        names = {
            name for inputs in self.access_security.inputs().values() for name in inputs.values()
        }
        for name in names:
            data = self.lookup(name)
            if data is None:
                log.warning("access security input %s is not served here: it stays invalid", name)
                continue
            data.subscribe(_AccessInput(self.access_security, name))

    def next_sid(self) -> int:
        """A server channel id unique across this server's circuits."""
        self._sid = (self._sid + 1) & 0xFFFFFFFF
        return self._sid

    def lookup(self, name: str) -> ServedChannel | None:
        """The channel data serving ``name``, or None.

        The full name first; then, for a name with a field, ``$`` or
        filters, the PV it decorates (``pvdb["PV"]`` for ``PV.VAL``) or a
        filtered view of it. An invalid filter specification is not found.
        """
        data = self.pvdb.get(name)
        if data is not None:
            return data
        return channel_for(name, self.pvdb, self.states, dotless=self.dotless_modifiers)

    def search_reply(self, request: SearchRequest) -> Command | None:
        """What to answer a search with (None: stay silent)."""
        if self.lookup(request.name) is not None:
            return SearchResponse(self.tcp_port, ADDRESS_FROM_SENDER, request.cid)
        if request.reply == SearchReply.DO_REPLY:
            return NotFoundResponse(request.cid, reply=SearchReply.DO_REPLY)
        return None

    async def start(self) -> None:
        """Bind the TCP and UDP endpoints and start beaconing."""
        loop = asyncio.get_running_loop()
        config = self.config
        port = config.port
        for attempt in (port, 0):
            try:
                for interface in config.interfaces:
                    server = await loop.create_server(
                        lambda: _Circuit(self), interface, attempt, reuse_address=True
                    )
                    self._servers.append(server)
                    attempt = server.sockets[0].getsockname()[1]
                self.tcp_port = attempt
                break
            except OSError as error:
                # Another IOC on this host has the standard port: take a free
                # one, as rsrv does; searches tell clients which.
                for listener in self._servers:
                    listener.close()
                self._servers.clear()
                if attempt == 0:
                    raise
                log.info("TCP port %d is in use (%s); taking a free one", port, error)
        if port == 0:
            port = self.tcp_port  # "any port": searches go where circuits do
        for address in self._udp_addresses():
            # SO_REUSEADDR lets every IOC on the host bind the CA port; each
            # gets the broadcasts, which is how clients find them all.
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _SearchProtocol(self), sock=sock
            )
            self._udp.append(transport)
        self._tasks.append(loop.create_task(self._beacons()))
        if self.access_security is not None:
            self._follow_access_inputs()
            if self.access_security.path is not None:
                self._tasks.append(loop.create_task(self.access_security.watch()))
        log.info("serving %d PVs on TCP port %d, UDP port %d", len(self.pvdb), self.tcp_port, port)
        self.started.set()

    def _udp_addresses(self) -> list[str]:
        """Where to listen for searches: each interface and its broadcast."""
        addresses: list[str] = []
        for interface in self.config.interfaces:
            addresses.append(interface)
            if interface != "0.0.0.0":
                # A socket bound to an address does not see the broadcasts
                # of its network; rsrv binds a second one for them.
                broadcast = broadcast_address_of(interface)
                if broadcast is not None and broadcast != interface:
                    addresses.append(broadcast)
        return list(dict.fromkeys(addresses))

    def beacon_addresses(self) -> list[tuple[str, int]]:
        """Where beacons go: the configured list plus, if automatic, every
        broadcast-capable interface's broadcast address (not loopback)."""
        config = self.config
        addresses = list(config.beacon_addresses)
        if config.auto_beacon_addresses:
            addresses += [
                (interface.broadcast, config.repeater_port)
                for interface in interfaces()
                if not interface.loopback
            ]
        return list(dict.fromkeys(addresses))

    async def _beacons(self) -> None:
        config = self.config
        addresses = self.beacon_addresses()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setblocking(False)
        interval = FIRST_BEACON_INTERVAL
        beacon_id = 0
        try:
            while True:
                beacon = bytes(RsrvIsUpResponse(self.tcp_port, beacon_id, 0))
                for address in addresses:
                    with contextlib.suppress(OSError):  # no route: try next time
                        sock.sendto(beacon, address)
                beacon_id = (beacon_id + 1) & 0xFFFFFFFF
                await asyncio.sleep(interval)
                interval = min(interval * 2, config.beacon_period)
        finally:
            sock.close()

    async def stop(self) -> None:
        """Tell clients the channels are gone and close everything."""
        for task in self._tasks:
            task.cancel()
        for circuit in list(self.circuits):
            for channel in list(circuit.core.channels.values()):
                if channel.sid is not None:
                    circuit.send(channel.disconnect())
            circuit.flush()
            circuit.close()
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

"""What a server's circuit does with each command, without any I/O library.

:class:`CircuitLogic` is one client's TCP connection as the protocol sees
it: bytes in (``data_received``), commands handled in order by one task
(``process``), replies collected and written a batch at a time (``flush``),
monitor updates queued per subscription and sent when the client can take
them. The asyncio, trio and curio back-ends subclass it and supply only the
I/O: how bytes leave (``flush``), how the command task sleeps and wakes
(``wakeup``), how a flush of updates is scheduled, how reading pauses, and
how a circuit closes. The method names follow ``asyncio.Protocol``
(``pause_writing``, ``resume_writing`` ...) so the asyncio back-end adds no
call in between.

Monitors never lose the newest value: each subscription keeps at most a few
pending updates and, when more arrive before the client takes them,
overwrites the newest, so a slow or paused (EVENTS_OFF) client costs memory
in proportion to its subscriptions, never to the update rate.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..ca import (
    ECA,
    NEED_DATA,
    AccessRights,
    AccessRightsResponse,
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
    ReadNotifyRequest,
    ReadNotifyResponse,
    ReadRequest,
    ReadSyncRequest,
    RemoteProtocolError,
    Role,
    SearchRequest,
    ServerChannel,
    VersionResponse,
    VirtualCircuit,
    WriteNotifyRequest,
    WriteNotifyResponse,
    WriteRequest,
    error_for,
    max_payload_for,
    payload_size,
)
from ..ca import ProtocolError as _ProtocolError
from ._data import ChannelError
from ._filters import ServedChannel

if TYPE_CHECKING:
    from ._server_logic import ServerLogic

__all__ = [
    "FAIRNESS_BATCH",
    "MAX_QUEUED_COMMANDS",
    "PENDING_BYTES_PER_SUBSCRIPTION",
    "PENDING_PER_SUBSCRIPTION",
    "CircuitLogic",
    "Wakeup",
]

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
#: Replies collected before they are written even mid-batch.
FLUSH_EVERY = 64


class Wakeup(Protocol):
    """How the command task sleeps until commands arrive (``asyncio.Event``'s shape).

    ``set`` is called from plain (non-async) code: the protocol callbacks
    and the channel data's publish.
    """

    def set(self) -> None:
        """Wake the waiter (or let its next ``wait`` return at once)."""

    def clear(self) -> None:
        """Make the next ``wait`` sleep again."""

    def wait(self) -> Awaitable[Any]:
        """Sleep until ``set``."""


class Subscription:
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
        circuit: CircuitLogic,
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


class CircuitLogic:
    """One client's circuit: the protocol, with the I/O left to a back-end.

    A back-end calls :meth:`connection_made` once connected,
    :meth:`data_received` with each chunk read, :meth:`pause_writing` /
    :meth:`resume_writing` as its send buffer fills and drains, and
    :meth:`connection_lost` at the end; it runs :meth:`process` as the
    circuit's command task. It supplies :meth:`flush`, :meth:`close`,
    :meth:`is_closing`, :meth:`pause_reading`, :meth:`resume_reading`,
    :meth:`_schedule_flush`, :meth:`checkpoint` and a :class:`Wakeup`.
    """

    def __init__(self, server: ServerLogic, wakeup: Wakeup) -> None:
        self.server = server
        self.core_limit = max_payload_for(server.config.max_array_bytes)
        self.core = VirtualCircuit(Role.SERVER, max_payload=self.core_limit)
        self.queue: collections.deque[Command] = collections.deque()
        #: Set when commands arrive; the command task waits on it.
        self.wakeup = wakeup
        #: Replies waiting for the next flush.
        self.out: list[bytes] = []
        self.subscriptions: dict[int, Subscription] = {}
        #: cid -> the data behind each channel this client opened.
        self.data: dict[int, ServedChannel] = {}
        #: Subscriptions with pending updates, by subscriptionid.
        self.ready: dict[int, Subscription] = {}
        self.flush_scheduled = False
        self.can_write = True
        self.reading = True
        #: time.monotonic() of the last complete message (for idle_timeout).
        self.last_heard = time.monotonic()

    # -- what a back-end supplies ---------------------------------------------------

    def flush(self) -> None:
        """Hand ``self.out`` to the network as one write and empty it."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection once what was flushed has left."""
        raise NotImplementedError

    def is_closing(self) -> bool:
        """Whether the connection is closed or closing (nothing more to answer)."""
        raise NotImplementedError

    def pause_reading(self) -> None:
        """Stop reading the socket (too many commands wait); sets ``reading``."""
        raise NotImplementedError

    def resume_reading(self) -> None:
        """Read the socket again; sets ``reading``."""
        raise NotImplementedError

    def _schedule_flush(self) -> None:
        """Run :meth:`_flush_updates` soon, once, after the current callback or task step."""
        raise NotImplementedError

    #: Let other tasks run (``asyncio.sleep(0)``, ``trio.lowlevel.checkpoint()`` ...).
    checkpoint: Callable[[], Awaitable[Any]]

    # -- events from the back-end ---------------------------------------------------

    def connection_made(self, peer: tuple[str, int] | None) -> None:
        """The circuit opened: register it and say our version.

        Over ``config.max_circuits`` the connection is closed at once,
        before any reply: the client retries later, as after a refusal.
        """
        self.core.address = peer
        cap = self.server.config.max_circuits
        if cap and len(self.server.circuits) >= cap:
            log.warning("refusing a circuit from %s: %d circuits is the cap", peer, cap)
            self.close()
            return
        self.server.circuits.add(self)
        # CA 4.11+: the server says its version as soon as the circuit opens.
        self.send(VersionResponse(0))
        self.flush()

    def data_received(self, data: bytes) -> None:
        """Frame ``data`` into commands for the command task."""
        core = self.core
        framed = False
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
                framed = True
        except RemoteProtocolError as error:
            log.warning("closing circuit from %s: %s", core.address, error)
            self.close()
            return
        if framed:  # a byte-a-second sender never completes one: it stays idle
            self.last_heard = time.monotonic()
        self.wakeup.set()
        if len(self.queue) > MAX_QUEUED_COMMANDS and self.reading:
            self.pause_reading()  # back-pressure on a flooding client

    @property
    def flowing(self) -> bool:
        """Whether updates can go out now (socket writable, events on)."""
        return self.can_write and self.core.events_on

    def pause_writing(self) -> None:
        """The send buffer is full: updates collapse to the newest."""
        self.can_write = False
        for subscription in self.subscriptions.values():
            subscription.collapse()

    def resume_writing(self) -> None:
        """The send buffer drained: send what waited."""
        self.can_write = True
        self._schedule_flush()

    def connection_lost(self, exc: Exception | None = None) -> None:
        """The circuit closed: stop every subscription, forget the circuit."""
        self.server.circuits.discard(self)
        for subscription in self.subscriptions.values():
            subscription.data.unsubscribe(subscription)
        self.subscriptions.clear()
        self.ready.clear()
        self.core.disconnect()

    # -- output ---------------------------------------------------------------------

    def send(self, *commands: Command) -> None:
        """Queue commands for the next flush, checked by the core."""
        try:
            self.out.append(self.core.send(*commands))
        except _ProtocolError as error:  # a bug of ours: say so, keep serving
            log.error("refusing to send %r: %s", commands, error)

    def updates_ready(self, subscription: Subscription) -> None:
        """A subscription has pending updates: send them soon."""
        self.ready[subscription.subscriptionid] = subscription
        self._schedule_flush()

    def _flush_updates(self, in_order: bool = False) -> None:
        """Send pending updates (``in_order``: even to a backed-up socket, so
        the updates a put caused go out ahead of its completion)."""
        self.flush_scheduled = False
        writable = self.can_write or in_order
        if not (writable and self.core.events_on) or self.is_closing():
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

    def say_goodbye(self) -> None:
        """Tell the client every channel is gone (SERVER_DISCONN) and close."""
        for channel in list(self.core.channels.values()):
            if channel.sid is not None:
                self.send(channel.disconnect())
        self.flush()
        self.close()

    # -- requests -------------------------------------------------------------------

    async def process(self) -> None:
        """The command task: handle queued commands in order, forever."""
        queue = self.queue
        wakeup = self.wakeup
        while True:
            await wakeup.wait()
            wakeup.clear()
            handled = 0
            while queue:
                if self.is_closing():
                    queue.clear()  # the client is gone: nothing to answer
                    return
                command = queue.popleft()
                try:
                    if type(command) is CreateChanRequest:
                        # A client connects thousands at once, and creating
                        # never waits: no coroutine per channel for _handle.
                        self._create(command)
                    else:
                        await self._handle(command)
                except Exception:  # never let one request take the circuit down
                    log.exception("error handling %r", command)
                    self.send(error_for(command, ECA.INTERNAL, cid=self._cid_of(command)))
                if len(self.out) > FLUSH_EVERY:
                    self.flush()
                handled += 1
                if handled % FAIRNESS_BATCH == 0:
                    # A client flooding requests must not starve the others:
                    # let their circuits (and monitor flushes) run.
                    self.flush()
                    await self.checkpoint()
            self.flush()
            if not self.reading and not self.is_closing():
                self.resume_reading()
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
        cid = request.cid
        channel: ServerChannel = self.core.channels[cid]
        name = channel.name  # decoded once, by the core, from the request
        data = self.server.lookup(name)
        if data is None:
            self.send(channel.create_failed())
            return
        self.data[cid] = data
        rights = self.rights_for(name, data)
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
        subscription = Subscription(self, channel, data, request)
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

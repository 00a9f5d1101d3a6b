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

A request the client had no right to send (an id this circuit never gave
out, a DBR type past 38) gets its ERROR and then the circuit closes, as
rsrv forces a disconnect: better than a circuit that goes on but can no
longer answer what its client expects. Everything sent before it is
answered first.

The busy moments have shortcuts that give the same bytes as the command
by command path (tests compare them): a run of READ_NOTIFY requests
(``VirtualCircuit.read_notify_run``, libca's batched gets) is answered
from the channels' reply caches in one numpy array; a new channel's two
replies are packed by ``VirtualCircuit.accept``; monitor updates are
packed here after one ``VirtualCircuit.updatable`` check per flush.
"""

from __future__ import annotations

import collections
import functools
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..ca import (
    ECA,
    NEED_DATA,
    AccessRights,
    AccessRightsResponse,
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
    ReadNotifyRequest,
    ReadNotifyResponse,
    ReadRequest,
    ReadRun,
    ReadSyncRequest,
    RemoteProtocolError,
    Role,
    SearchRequest,
    ServerChannel,
    VersionRequest,
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
from ..ca._circuit import _UPDATABLE_STATES
from ._data import ChannelData, ChannelError
from ._data_support import reply_key

if TYPE_CHECKING:
    from ._access import AccessResult
    from ._served import ServedChannel
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
#: Puts the .acf rules trap (TRAPWRITE): one INFO record per completed put.
putlog = logging.getLogger("caioc.server.putlog")

#: Updates a subscription queues while its client keeps up (the socket is
#: writable and events are on); past either bound the newest pending one is
#: overwritten, so memory stays bounded even under a burst of puts.
PENDING_PER_SUBSCRIPTION = 4096
PENDING_BYTES_PER_SUBSCRIPTION = 4 * 1024 * 1024
#: The put of a ChannelData whose subclass does not override it: without a
#: put_hook it needs no awaiting (ChannelData.write_now).
_PLAIN_WRITE = ChannelData.write
#: Bytes of updates (headers and payloads) a circuit takes straight into its
#: next write between two flushes (small updates of subscriptions with
#: nothing pending); past it they queue per subscription, bounded as above.
DIRECT_BYTES = 256 * 1024
#: Commands handled in a row before other circuits get a turn.
FAIRNESS_BATCH = 64
#: Commands a circuit may have waiting before we stop reading its socket.
MAX_QUEUED_COMMANDS = 2048
#: Replies collected before they are written even mid-batch.
FLUSH_EVERY = 64

#: The header of a READ_NOTIFY reply (command, payload size, data type,
#: count, status, ioid) for the replies of a run of reads.
_HEADER_STRUCT = struct.Struct(">HHHHII")
_HEADER = _HEADER_STRUCT.pack
_UNPACK_HEADER = _HEADER_STRUCT.unpack_from
_READ_NOTIFY = int(ReadNotifyRequest.ID)
_EVENT_ADD = int(EventAddRequest.ID)
_ECA_NORMAL = int(ECA.NORMAL)
_ZEROS = bytes(8)
_READ_RUN_COMMAND = _READ_NOTIFY.to_bytes(2, "big")
_CREATE_RUN_COMMAND = int(CreateChanRequest.ID).to_bytes(2, "big")
_LAST_TYPE = int(max(ChannelType))
#: The read of a channel that serves its stored value (no getter, no filter).
_PLAIN_READ = ChannelData.read
_PLAIN_ENCODE = ChannelData.encode
# Plain ints: ``&`` between an int and an IntFlag member (or two members)
# runs enum's Python-level __and__ and builds a member, ~0.7 µs a time.
_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_READ = int(AccessRights.READ)
_WRITE = int(AccessRights.WRITE)


#: A reply's header as numpy record: a READ_NOTIFY request's header (the
#: same fields in the same places) but for the payload size and the status.
_REPLY_HEADER = np.dtype(
    [
        ("command", ">u2"),
        ("size", ">u2"),
        ("data_type", ">u2"),
        ("data_count", ">u2"),
        ("status", ">u4"),
        ("ioid", ">u4"),
    ]
)


@functools.cache
def _reply_rows(size: int) -> np.dtype[Any]:
    """READ_NOTIFY replies with ``size`` payload bytes (padded to 8) as numpy rows."""
    return np.dtype([("header", _REPLY_HEADER), ("payload", "u1", (size + (-size & 7),))])


def _append_message(
    out: list[Any], command: int, payload: Any, data_type: int, count: int, p1: int, p2: int
) -> None:
    """Append a message with a plain header to ``out``: header, payload, padding to 8."""
    size = len(payload)
    padding = -size & 7
    out.append(_HEADER(command, size + padding, data_type, count, p1, p2))
    out.append(payload)
    if padding:
        out.append(_ZEROS[:padding])


def _for_log(value: Any) -> str:
    """``value`` for a log line: an array summarised, anything else cut at 80 characters."""
    if isinstance(value, np.ndarray):
        return np.array2string(value, threshold=8, edgeitems=3)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_OPENING_COMMANDS = {
    int(cls.ID).to_bytes(2, "big") for cls in (VersionRequest, HostNameRequest, ClientNameRequest)
}


def _opening_end(data: bytes | memoryview) -> int:
    """Where the VERSION, HOST_NAME and CLIENT_NAME messages ``data`` starts with end (0: none)."""
    offset, total = 0, len(data)
    while total - offset >= 16 and data[offset : offset + 2] in _OPENING_COMMANDS:
        _, size, _, count, _, _ = _UNPACK_HEADER(data, offset)
        if size == 0xFFFF or count == 0xFFFF or offset + 16 + size > total:
            break  # an extended header or a message cut short: the usual path
        offset += 16 + size
    return offset


def _create_error(channel: ServerChannel) -> Command:
    """ECA_INTERNAL for a CREATE_CHAN of a run whose answer failed, as for a queued one."""
    raw = channel.name.encode("utf-8", "surrogateescape") + b"\0"
    payload = raw + bytes(-len(raw) % 8)
    request = CreateChanRequest.from_wire(
        len(payload), 0, 0, channel.cid, channel.client_version, payload
    )
    return error_for(request, ECA.INTERNAL, cid=channel.cid)


class HangUp:
    """A request refused for good (an unknown id): answered with ERROR, then the circuit closes.

    Queued in its turn, so what the client sent before it is still answered.
    """

    __slots__ = ("error", "request")

    def __init__(self, request: Command, error: Exception) -> None:
        self.request = request
        self.error = error


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

        A client that keeps up gets every update: packed straight into its
        circuit's next write while nothing of this subscription waits
        (within DIRECT_BYTES per flush), else queued here. One that does
        not keep up (its socket is full, or it sent EVENTS_OFF) holds only
        the newest, as rsrv collapses its event queue, so a slow or dead
        client costs one update per subscription, never one per change.
        """
        pending = self.pending
        circuit = self.circuit
        if not pending:  # the usual case: the last flush sent everything
            size = len(payload)
            budget = circuit.direct_budget - 16 - size
            if (
                budget >= 0
                and circuit.can_write
                and circuit.core.events_on
                and size <= 0xFFF8
                and count < 0xFFFF
                and self.channel.state in _UPDATABLE_STATES
            ):
                # Straight into the circuit's next write, as the flush would
                # pack it: nothing queued for this subscription means no
                # update of it can be overtaken. The budget (reset by each
                # flush) bounds what a burst puts there this way. This is
                # _append_message inlined: its call costs 7 % of a load round.
                circuit.direct_budget = budget
                padding = -size & 7
                out = circuit.out
                out.append(
                    _HEADER(
                        _EVENT_ADD,
                        size + padding,
                        self.data_type,
                        count,
                        status,
                        self.subscriptionid,
                    )
                )
                out.append(payload)
                if padding:
                    out.append(_ZEROS[:padding])
                if not circuit.flush_scheduled:
                    circuit._schedule_flush()
                return
            pending.append((payload, count, status))
            self.pending_bytes = size
        else:
            size = len(payload)
            if (
                not circuit.flowing
                or len(pending) >= PENDING_PER_SUBSCRIPTION
                or self.pending_bytes + size > PENDING_BYTES_PER_SUBSCRIPTION
            ):
                if not circuit.flowing and len(pending) > 1:
                    self.collapse()
                self.pending_bytes += size - len(pending[-1][0])
                pending[-1] = (payload, count, status)  # latest value wins
            else:
                pending.append((payload, count, status))
                self.pending_bytes += size
        circuit.ready[self.subscriptionid] = self  # send it soon
        if not circuit.flush_scheduled:
            circuit._schedule_flush()

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
        self.queue: collections.deque[Command | ReadRun | HangUp] = collections.deque()
        #: Reads queued inside ReadRun items (each counts as one in ``queue``),
        #: runs of READ_NOTIFY requests answered together (``_read_run``).
        self.queued_reads = 0
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
        #: What updates may still add to ``out`` before the next flush (DIRECT_BYTES).
        self.direct_budget = DIRECT_BYTES
        self.can_write = True
        self.reading = True
        #: time.monotonic() of the last complete message (for idle_timeout).
        self.last_heard = time.monotonic()
        #: A HangUp is queued: what the client sends after it is not read.
        self.hanging_up = False
        #: The command task is handling commands (not parked on ``wakeup``).
        self.busy = False
        #: sid -> the reply cache of a channel that serves its stored value
        #: (a ChannelData with no getter, no filter), for runs of reads.
        #: Decided when the client connects the channel: a read hook is set
        #: on the channel data before it is served, never later.
        self.plain: dict[int, dict[int, tuple[Any, int]]] = {}
        #: sids of channels this client may not read.
        self.unreadable: set[int] = set()

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

    def data_received(self, data: bytes | memoryview) -> None:
        """Frame ``data`` into commands for the command task.

        A request the core refuses for good (an id this circuit never gave
        out, a second channel or subscription with an id in use) is
        queued as a :class:`HangUp`: as rsrv does, the client gets an ERROR
        and the circuit closes, rather than a circuit that goes on but no
        longer answers what the client expects. A retired READ or READ_SYNC
        only gets its ERROR.
        """
        if self.hanging_up:
            return
        core = self.core
        framed = False
        # Nothing waits before these commands: what needs no waiting is
        # answered here, in this callback, rather than one loop pass later
        # by the command task (a request's round trip, a connect storm).
        idle = not self.busy and not self.queue
        if data[:2] == _READ_RUN_COMMAND:
            rest = self._take_read_runs(data)
            framed = rest is not data
            data = rest
        elif idle and data[:2] == _CREATE_RUN_COMMAND:
            rest = self._take_create_runs(data)
            framed = rest is not data
            data = rest
        elif idle and data[:2] in _OPENING_COMMANDS:
            # A new circuit's VERSION, HOST_NAME and CLIENT_NAME, then the
            # creates of the first batch of search replies, in one segment:
            # taken as two segments, so that the creates can be a run.
            split = _opening_end(data)
            if split and data[split : split + 2] == _CREATE_RUN_COMMAND:
                self.data_received(data[:split])
                self.data_received(memoryview(data)[split:])
                return
        try:
            core.receive_data(data)
            while True:
                try:
                    command = core.next_command()
                except RemoteProtocolError as error:
                    offending = getattr(error, "command", None)
                    if offending is None:
                        raise  # the stream cannot be framed any more
                    if isinstance(offending, (ReadRequest, ReadSyncRequest)):
                        self._refuse(offending, error)
                        continue
                    self.queue.append(HangUp(offending, error))
                    self.hanging_up = True
                    if self.reading:
                        self.pause_reading()
                    break
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
        if idle and self.queue:
            self._handle_queued_now()
        if self.queue:
            self.wakeup.set()
        if len(self.queue) + self.queued_reads > MAX_QUEUED_COMMANDS and self.reading:
            self.pause_reading()  # back-pressure on a flooding client

    def _handle_queued_now(self) -> None:
        """Handle queued commands, from the first, while they need no waiting.

        Only called with nothing handled or queued before them, so the order
        is the command task's. Stops at the first command that must wait (a
        put, a read with a getter) and leaves it and the rest to the task;
        at most FAIRNESS_BATCH at a time, as the task does.
        """
        queue = self.queue
        for _ in range(FAIRNESS_BATCH):
            if not queue or self.is_closing():
                break
            command = queue[0]
            if isinstance(command, ReadRun):
                try:
                    if not self._answer_at_once(command):
                        break
                except Exception:  # as in process()
                    log.exception("error answering a run of reads; closing the circuit")
                    self.close()
                    break
                queue.popleft()
                self.queued_reads -= len(command.ioids)
                continue
            if isinstance(command, HangUp):
                break
            try:
                if not self._handle_now(command):
                    break
            except Exception:  # as in process(): never let one request take the circuit down
                log.exception("error handling %r", command)
                self.send(error_for(command, ECA.INTERNAL, cid=self._cid_of(command)))
            queue.popleft()
        self.flush()
        if self.ready and self.core.events_on:
            self._schedule_flush()

    def _take_create_runs(self, data: bytes | memoryview) -> bytes | memoryview:
        """Connect the channels of the CREATE_CHAN requests ``data`` starts with; the rest.

        Called with nothing queued or being handled, so answering them here,
        in order, is what :meth:`_handle_queued_now` would do with them, but
        without a command object and a dispatch per request (a client
        connecting a thousand channels sends a thousand).
        """
        view = memoryview(data)
        # One run (at most create_chan_run's 256) per segment, as the command
        # task takes FAIRNESS_BATCH commands per pass: a client sending
        # thousands at once leaves the rest to the queue, and the other
        # circuits get their turn.
        taken = self.core.create_chan_run(view)
        if taken is None:
            return data
        channels, used = taken
        for channel in channels:
            if self.is_closing():
                break
            try:
                self._create_channel(channel)
            except Exception:  # as in _handle_queued_now: report it, keep serving
                log.exception("error connecting channel %r", channel.name)
                self.send(_create_error(channel))
        self.flush()
        return view[used:]

    def _take_read_runs(self, data: bytes | memoryview) -> bytes | memoryview:
        """Queue the runs of READ_NOTIFY requests ``data`` starts with; the rest."""
        view = memoryview(data)
        while (run := self.core.read_notify_run(view)) is not None:
            self.queue.append(run)
            self.queued_reads += len(run.ioids)
            view = view[16 * len(run.ioids) :]
        return data if len(view) == len(data) else view

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

    def _flush_updates(self, in_order: bool = False) -> None:
        """Send pending updates (``in_order``: even to a backed-up socket, so
        the updates a put caused go out ahead of its completion)."""
        self.flush_scheduled = False
        writable = self.can_write or in_order
        if not (writable and self.core.events_on) or self.is_closing():
            return  # kept, coalesced, until the client can take them
        if self.ready:  # most updates went straight into out: often none queued
            self._pack_queued()
        self.flush()
        self.direct_budget = DIRECT_BYTES

    def _pack_queued(self) -> None:
        """Move the queued updates of the ready subscriptions into ``out``."""
        ready, self.ready = self.ready, {}
        subscriptions = self.subscriptions
        out = self.out
        # The core checks each update as send() would, but once per
        # subscription and all of them in one call: the headers are then
        # packed here, not per command.
        for (subscriptionid, subscription), plain in zip(
            ready.items(), self.core.updatable(ready), strict=True
        ):
            if subscriptions.get(subscriptionid) is not subscription:
                continue  # cancelled meanwhile
            pending = subscription.pending
            data_type = subscription.data_type
            for payload, count, status in pending:
                size = len(payload)
                if plain and size <= 0xFFF8 and count < 0xFFFF:
                    _append_message(
                        out, _EVENT_ADD, payload, data_type, count, status, subscriptionid
                    )
                else:
                    self.send(
                        EventAddResponse.from_payload(
                            payload, data_type, count, status, subscriptionid
                        )
                    )
            pending.clear()
            subscription.pending_bytes = 0

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
            self.busy = False
            await wakeup.wait()
            self.busy = True
            wakeup.clear()
            handled = 0
            while queue:
                if self.is_closing():
                    queue.clear()  # the client is gone: nothing to answer
                    return
                command = queue.popleft()
                if isinstance(command, HangUp):
                    self._hang_up(command.request, ECA.BADCHID, str(command.error), 0xFFFFFFFF)
                    queue.clear()
                    return
                if isinstance(command, ReadRun):
                    self.queued_reads -= len(command.ioids)
                    try:
                        await self._read_run(command)
                    except Exception:  # a bug of ours: the reads cannot all be answered
                        log.exception("error answering a run of reads; closing the circuit")
                        self.close()
                    handled += 1
                    continue
                try:
                    # Most commands need no waiting: no coroutine for those.
                    if not self._handle_now(command):
                        await self._handle_later(command)
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
        """Answer a retired READ or READ_SYNC with ERROR (ECA_ANACHRONISM)."""
        self.out.append(bytes(error_for(command, ECA.ANACHRONISM, str(error), cid=0xFFFFFFFF)))
        self.flush()

    def _hang_up(self, request: Command, status: ECA, message: str, cid: int) -> None:
        """Answer ``request`` with ERROR, then close the circuit (rsrv's "forcing disconnect")."""
        log.warning("closing circuit from %s: %s", self.core.address, message)
        self.out.append(bytes(error_for(request, status, message, cid=cid)))
        self.flush()
        self.close()

    def _bad_type(self, request: ReadNotifyRequest | EventAddRequest | WriteRequest) -> bool:
        """Hang up on a request for a DBR type that does not exist (rsrv does too)."""
        if request.data_type <= _LAST_TYPE:
            return False
        message = f"invalid DBR type {request.data_type} (valid: 0-{_LAST_TYPE})"
        self._hang_up(request, ECA.BADTYPE, message, self._cid_of(request))
        return True

    def _handle_now(self, command: Command) -> bool:
        """Handle ``command`` if that needs no waiting; False: :meth:`_handle_later` must."""
        kind = type(command)
        if kind is CreateChanRequest:
            self._create(command)  # type: ignore[arg-type]
        elif kind is ReadNotifyRequest:
            return self._read_now(command)  # type: ignore[arg-type]
        elif kind is EventAddRequest:
            self._subscribe(command)  # type: ignore[arg-type]
        elif kind is WriteNotifyRequest or kind is WriteRequest:
            return self._write_now(command)  # type: ignore[arg-type]
        elif kind is EventCancelRequest:
            self._unsubscribe(command)  # type: ignore[arg-type]
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
        return True

    async def _handle_later(self, command: Command) -> None:
        """The commands :meth:`_handle_now` leaves: reads with a getter or filter, puts."""
        if isinstance(command, ReadNotifyRequest):
            await self._read(command)
        else:
            await self._write(command)  # type: ignore[arg-type]

    def _create(self, request: CreateChanRequest) -> None:
        self._create_channel(self.core.channels[request.cid])

    def _create_channel(self, channel: ServerChannel) -> None:
        """Answer the creation of ``channel`` (its CREATE_CHAN arrived): connected, or failed."""
        cid = channel.cid
        name = channel.name  # decoded once, by the core, from the request
        data = self.server.lookup(name)
        if data is None:
            self.send(channel.create_failed())
            return
        self.data[cid] = data
        rights = self.rights_for(name, data)
        sid = self.server.next_sid()
        try:
            self.out.append(
                self.core.accept(channel, data.native_type, data.max_length, sid, rights)
            )
        except _ProtocolError as error:  # a bug of ours (as in send): say so, keep serving
            log.error("refusing to answer the creation of %r: %s", channel, error)
            return
        if not rights & _READ:
            self.unreadable.add(sid)
        if (
            isinstance(data, ChannelData)
            and getattr(data.read, "__func__", None) is _PLAIN_READ
            and type(data).encode is _PLAIN_ENCODE
        ):
            self.plain[sid] = data._cache

    def rights_for(self, name: str, data: ServedChannel) -> int:
        """This client's rights on ``data``: the channel's, narrowed by the .acf."""
        host, user = self.core.host_name or "", self.core.client_name or ""
        rights = int(data.access_rights(host, user))
        access = self._acf_access(data)
        if access is not None:
            rights &= int(access.rights)
        return rights

    def _acf_access(self, data: ServedChannel) -> AccessResult | None:
        """What the .acf rules grant this client on ``data`` (None: no rules)."""
        security = self.server.access_security
        if security is None:
            return None
        host, user = self.core.host_name or "", self.core.client_name or ""
        if security.check_client_ip and self.core.address is not None:
            host = self.core.address[0]
        group = getattr(data, "access_group", "DEFAULT")
        level = getattr(data, "access_level", 0)
        return security.access(group, level, user, host)

    def recheck_rights(self) -> None:
        """Push ACCESS_RIGHTS for every channel whose rights changed."""
        for channel in list(self.core.channels.values()):
            data = self.data.get(channel.cid)
            if data is None or channel.sid is None:
                continue
            rights = self.rights_for(channel.name, data)
            if rights != int(channel.access_rights):
                self.send(AccessRightsResponse(channel.cid, rights))
                if rights & _READ:
                    self.unreadable.discard(channel.sid)
                else:
                    self.unreadable.add(channel.sid)
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

    def _read_now(self, request: ReadNotifyRequest) -> bool:
        """Answer a read of a channel that serves its stored value; False otherwise.

        The reply :meth:`_read` would send, packed here: from the channel's
        reply cache, or its encoder. Anything unusual (a getter or filter,
        no read access, an error to report, a reply too large for a plain
        header) is left to :meth:`_read`.
        """
        sid, data_type, data_count = request[4], request[2], request[3]
        cache = self.plain.get(sid)
        if cache is None or sid in self.unreadable:
            return False
        # encode() honours a non-zero count as it is: same key, same reply
        # (count 0, the current length, is resolved by encode() itself)
        reply = cache.get(data_count << 16 | data_type) if data_count else None  # reply_key
        if reply is None:
            if data_type > _LAST_TYPE:
                return False
            channel = self.core.channels_by_sid.get(sid)
            if channel is None:
                return False
            try:
                reply = self.data[channel.cid].encode(  # type: ignore[attr-defined]
                    data_type, data_count, self.core.their_version
                )
            except ChannelError:
                return False  # _read answers with the error
        payload, count = reply
        size = len(payload)
        if size > min(self.core_limit, 0xFFF8) or count >= 0xFFFF:
            return False
        ioid = request[5]
        _append_message(self.out, _READ_NOTIFY, payload, data_type, count, _ECA_NORMAL, ioid)
        self.core.replied([ioid])
        return True

    async def _read(self, request: ReadNotifyRequest) -> None:
        if self._bad_type(request):
            return
        channel, data = self._channel(request.sid)
        if not channel.access_rights._value_ & _READ:
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

    async def _read_run(self, run: ReadRun) -> None:
        """Answer a run of reads: all at once when they allow it, else one by one."""
        if not self._answer_at_once(run):
            await self._answer_one_by_one(run)
        self.flush()

    def _answer_at_once(self, run: ReadRun) -> bool:
        """Answer ``run`` with one array of replies, or do nothing and say False.

        The common batch (libca reading many scalars with ``ca_array_get``):
        every channel readable, serving its stored value (no getter, no
        filter: ``plain``), every reply of one size. Each test and step is
        one call into C over a whole column and touches only the channels'
        reply caches, so a read costs a fraction of a microsecond; the bytes
        are those :meth:`_read` would send.
        """
        sids = run.sids
        unreadable = self.unreadable
        if run.uniform:
            if run.data_counts[0] == 0:
                return False
        elif 0 in run.data_counts:
            return False
        if unreadable and not unreadable.isdisjoint(sids):
            return False
        # __getitem__ rather than get: a KeyError says what a scan for None
        # would, without comparing a thousand replies with None.
        try:
            caches: list[Any] = list(map(self.plain.__getitem__, sids))
        except KeyError:
            return False  # a getter or filter to run
        # encode() honours a non-zero count as it is: same key, same reply
        if run.uniform:  # one key for all
            count = run.data_counts[0]
            try:
                replies = list(map(itemgetter(reply_key(run.data_types[0], count)), caches))
            except KeyError:
                pass  # some not read since they changed: the general way below
            else:
                # Each reply was cached under the (type, count) asked for: its
                # count is that one, and its payload's size is the same for all.
                payloads = list(map(_FIRST, replies))
                size = len(payloads[0])
                joined = b"".join(payloads)
                if len(joined) != size * len(payloads) or count >= 0xFFFF:
                    return False
                return self._queue_replies(run, size, joined, None)
        headers = run.headers  # reply_key of each read, a column at a time
        keys = (headers["data_count"].astype(np.int64) << 16 | headers["data_type"]).tolist()
        try:
            replies = list(map(dict.__getitem__, caches, keys))
        except KeyError:  # some not read since they changed
            replies = list(map(dict.get, caches, keys))
            version = self.core.their_version
            for i, reply in enumerate(replies):
                if reply is None:
                    data: Any = self.data[run.channels[i].cid]
                    try:
                        replies[i] = data.encode(run.data_types[i], run.data_counts[i], version)
                    except ChannelError:
                        return False  # answered one by one, with its error
        # two columns (zip(*replies) would walk a thousand iterators per row)
        payloads = list(map(_FIRST, replies))
        counts = list(map(_SECOND, replies))
        sizes = set(map(len, payloads))
        if len(sizes) != 1 or max(counts) >= 0xFFFF:
            return False
        size = sizes.pop()
        return self._queue_replies(
            run, size, b"".join(payloads), counts if counts != run.data_counts else None
        )

    def _queue_replies(
        self, run: ReadRun, size: int, joined: bytes, counts: list[int] | None
    ) -> bool:
        """Queue the replies to ``run``: its headers, ``joined`` payloads of ``size`` each.

        ``counts``: the replies' element counts where they differ from the
        requests'. False (nothing queued): too large for plain headers.
        """
        if size > min(self.core_limit, 0xFFF8):
            return False  # too large for a plain header: _read sends or refuses it
        reads = len(run.ioids)
        rows = np.empty(reads, _reply_rows(size))
        # the requests' headers as bytes (command, type, count and ioid stay)
        rows.view(np.uint8).reshape(reads, -1)[:, :16] = run.headers.view(np.uint8).reshape(
            reads, 16
        )
        header = rows["header"]
        header["size"] = rows.dtype["payload"].shape[0]
        header["status"] = _ECA_NORMAL
        if counts is not None:
            header["data_count"] = counts
        payload = rows["payload"]
        payload[:, :size] = np.frombuffer(joined, np.uint8).reshape(-1, size)
        payload[:, size:] = 0
        self.out.append(rows.tobytes())
        self.core.replied(run.ioids)
        return True

    async def _answer_one_by_one(self, run: ReadRun) -> None:
        """Answer ``run`` read by read, each as it would be answered alone.

        :meth:`_read_now` where the read allows it, :meth:`_read` (a getter
        or filter to run, no read access, an error, a large reply) in its
        turn otherwise, so the replies keep their order.
        """
        for channel, data_type, data_count, sid, ioid in run.reads():
            # as the parser builds it: the fields as received, checked by _read
            request = ReadNotifyRequest.from_wire(0, data_type, data_count, sid, ioid, b"")
            try:
                if not self._read_now(request):
                    await self._read(request)
            except Exception:  # as in process(): one bad request is answered, not fatal
                log.exception("error handling %r", request)
                self.send(error_for(request, ECA.INTERNAL, cid=channel.cid))
            if self.is_closing():
                return  # hung up on a bad request, or the client left

    async def _write(self, request: WriteRequest) -> None:
        if self._bad_type(request):
            return
        channel, data = self._channel(request.sid)
        status, message, trapped, before = self._write_opens(channel, data)
        if status is ECA.NORMAL:
            try:
                await data.write(request.data_type, request.data_count, request.payload)
            except ChannelError as error:
                status, message = error.eca, str(error)
        self._write_closes(request, channel, data, status, message, trapped, before)

    def _write_now(self, request: WriteRequest) -> bool:
        """A put to a channel without ``put_hook``, done here; False: :meth:`_write` must."""
        if request.data_type > _LAST_TYPE:
            return False  # _write hangs up
        channel, data = self._channel(request.sid)
        if (
            not isinstance(data, ChannelData)
            or data.put_hook is not None
            or type(data).write is not _PLAIN_WRITE
        ):
            return False
        status, message, trapped, before = self._write_opens(channel, data)
        if status is ECA.NORMAL:
            try:
                data.write_now(request.data_type, request.data_count, request.payload)
            except ChannelError as error:
                status, message = error.eca, str(error)
        self._write_closes(request, channel, data, status, message, trapped, before)
        return True

    def _write_opens(
        self, channel: ServerChannel, data: ServedChannel
    ) -> tuple[ECA, str, bool, Any]:
        """(status, message, trapped, value before) of a put about to be made."""
        if not channel.access_rights._value_ & _WRITE:
            return ECA.NOWTACCESS, ECA.NOWTACCESS.message, False, None
        access = self._acf_access(data)
        if access is not None and access.trap_write:
            return ECA.NORMAL, "", True, getattr(data, "value", None)
        return ECA.NORMAL, "", False, None

    def _write_closes(
        self,
        request: WriteRequest,
        channel: ServerChannel,
        data: ServedChannel,
        status: ECA,
        message: str,
        trapped: bool,
        before: Any,
    ) -> None:
        """Log, post and answer a put that has been made (or refused: ``status``)."""
        if trapped and status is ECA.NORMAL:  # a TRAPWRITE rule: log who put what (caPutLog)
            putlog.info(
                "%s@%s put %s = %s (was %s)",
                self.core.client_name or "",
                self.core.host_name or "",
                channel.name,
                _for_log(getattr(data, "value", None)),
                _for_log(before),
            )
        if self.ready:
            # As rsrv posts monitors while processing the put, updates the
            # put caused reach the client before its completion does.
            self._flush_updates(in_order=True)
        if type(request) is WriteNotifyRequest:
            self.send(
                WriteNotifyResponse(request.data_type, request.data_count, status, request.ioid)
            )
        elif status is not ECA.NORMAL:
            # A plain WRITE has no reply of its own; rsrv reports failure by ERROR.
            self.send(error_for(request, status, message or channel.name, cid=channel.cid))

    def _subscribe(self, request: EventAddRequest) -> None:
        if self._bad_type(request):
            return
        channel, data = self._channel(request.sid)
        if not channel.access_rights._value_ & _READ:
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
        if channel.sid is not None:
            self.plain.pop(channel.sid, None)
            self.unreadable.discard(channel.sid)
        self.send(channel.clear())

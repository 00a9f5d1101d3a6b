"""A virtual circuit (one TCP connection) and its channels, in either role.

The circuit is the whole API of the core for TCP: ``receive_data(bytes)``,
``next_command()`` and ``send(*commands) -> bytes``. Every command in or
out is checked against the tables in :mod:`._state` and updates the
bookkeeping both ends need (channel ids, pending reads and writes, live
subscriptions); the I/O layer around it moves bytes and nothing else.

Errors: framing errors (a stream that can no longer be split into
messages) poison the circuit. Errors of meaning (a read of an unknown sid,
a reply to a request nobody made) raise :class:`RemoteProtocolError` with
the offending ``command`` attached and leave the circuit usable, so a
server can answer with an ERROR message the way rsrv does and go on.
"""

from __future__ import annotations

import collections
import itertools
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._commands import (
    AccessRightsResponse,
    ClearChannelRequest,
    ClearChannelResponse,
    Command,
    CreateChanRequest,
    CreateChanResponse,
    CreateChFailResponse,
    ErrorResponse,
    EventAddRequest,
    EventAddResponse,
    EventCancelRequest,
    EventCancelResponse,
    ReadNotifyRequest,
    ReadNotifyResponse,
    ReadRequest,
    ServerDisconnResponse,
    VersionRequest,
    VersionResponse,
    WriteNotifyRequest,
    WriteNotifyResponse,
    WriteRequest,
)
from ._constants import (
    CA_MINOR_PROTOCOL_REVISION,
    DEFAULT_MAX_ARRAY_BYTES,
    ECA,
    AccessRights,
    CommandId,
    Role,
    SubscriptionMask,
)
from ._dbr import METADATA_SIZES, VALUE_SIZES, ChannelType
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._framing import NEED_DATA, StreamParser, _NeedData
from ._state import CHANNEL_TRANSITIONS, CIRCUIT_TRANSITIONS, ChannelState, CircuitState
from ._wire import HEADER

__all__ = ["ClientChannel", "ReadRun", "ServerChannel", "VirtualCircuit"]

_OTHER = {Role.CLIENT: Role.SERVER, Role.SERVER: Role.CLIENT}
_TERMINAL = (ChannelState.CLOSED, ChannelState.FAILED)
# Commands whose parameter 1 is the server's channel id.
_BY_SID = (
    ReadNotifyRequest,
    ReadRequest,
    WriteRequest,
    WriteNotifyRequest,
    EventAddRequest,
    EventCancelRequest,
)
_BY_CID = (AccessRightsResponse, CreateChFailResponse, ServerDisconnResponse, CreateChanResponse)
_NEEDS_REPLY = (ReadNotifyRequest, ReadRequest, WriteNotifyRequest)
#: Native DBR types by wire value: a tuple index instead of an enum call.
_NATIVE_TYPES = tuple(ChannelType(value) for value in range(ChannelType.DOUBLE + 1))
#: ACCESS_RIGHTS' two bits as AccessRights, by value.
_RIGHTS = tuple(AccessRights(value) for value in range(4))
_CONNECTED = CircuitState.CONNECTED
_AWAIT_CREATE = ChannelState.AWAIT_CREATE_CHAN_RESPONSE

# A run of CREATE_CHAN requests (see VirtualCircuit.create_chan_run).
_CREATE_CHAN = int(CommandId.CREATE_CHAN)
_unpack_header = HEADER.unpack_from
# A run of READ_NOTIFY requests (see VirtualCircuit.read_notify_run): 16-byte
# headers with no payload, back to back.
_READ_RUN_START = CommandId.READ_NOTIFY.to_bytes(2, "big") + bytes(2)  # payload size 0
_REQUEST_HEADERS = np.dtype(
    [
        ("command", ">u2"),
        ("size", ">u2"),
        ("data_type", ">u2"),
        ("data_count", ">u2"),
        ("sid", ">u4"),
        ("ioid", ">u4"),
    ]
)
#: Channel states in which a READ_NOTIFY is legal and changes nothing.
_READABLE_STATES = frozenset(
    state for state, moves in CHANNEL_TRANSITIONS.items() if moves.get(ReadNotifyRequest) is state
)
assert CIRCUIT_TRANSITIONS[Role.CLIENT][_CONNECTED][ReadNotifyRequest] is _CONNECTED
#: Channel states in which the server may send an EVENT_ADD update, changing nothing.
_UPDATABLE_STATES = frozenset(
    state for state, moves in CHANNEL_TRANSITIONS.items() if moves.get(EventAddResponse) is state
)
assert CIRCUIT_TRANSITIONS[Role.SERVER][_CONNECTED][EventAddResponse] is _CONNECTED
#: ACCESS_RIGHTS and CREATE_CHAN replies, two headers with no payload.
_CREATED = struct.Struct(">" + "HHHHII" * 2).pack


class ReadRun:
    """A run of READ_NOTIFY requests (:meth:`VirtualCircuit.read_notify_run`), by column."""

    __slots__ = (
        "_by_sid",
        "_channels",
        "data_counts",
        "data_types",
        "headers",
        "ioids",
        "sids",
        "uniform",
    )

    def __init__(
        self,
        by_sid: dict[int, Any],
        data_types: list[int],
        data_counts: list[int],
        sids: list[int],
        ioids: list[int],
        headers: Any,
        uniform: bool = False,
    ) -> None:
        self._by_sid: dict[int, Any] | None = by_sid
        self._channels: list[Any] = []
        self.data_types = data_types
        self.data_counts = data_counts
        self.sids = sids
        self.ioids = ioids
        #: The requests' headers as received, one numpy record each (fields
        #: command, size, data_type, data_count, sid, ioid; big-endian): a
        #: reply's header is the same but for size and status.
        self.headers = headers
        #: Every read asks for the same DBR type and count (the usual batch).
        self.uniform = uniform

    @property
    def channels(self) -> list[Any]:
        """The channel each read names.

        Looked up once, when first asked for: a run answered at once never
        needs them, and the circuit asks before anything can change them
        (``VirtualCircuit._recorded``).
        """
        if self._by_sid is not None:
            self._channels = list(map(self._by_sid.__getitem__, self.sids))
            self._by_sid = None
        return self._channels

    def reads(self) -> Iterator[tuple[Any, int, int, int, int]]:
        """(channel, data_type, data_count, sid, ioid) of each read, in order."""
        columns = self.channels, self.data_types, self.data_counts, self.sids, self.ioids
        return zip(*columns, strict=True)


def _error(sender: Role, our_role: Role, text: str, command: Command) -> ProtocolError:
    if sender is our_role:
        error: ProtocolError = LocalProtocolError(text)
    else:
        error = RemoteProtocolError(text)
    error.command = command  # type: ignore[attr-defined]
    return error


@dataclass(eq=False)
class _Channel:
    circuit: VirtualCircuit
    name: str
    cid: int
    sid: int | None = None
    native_data_type: ChannelType | None = None
    native_data_count: int | None = None
    access_rights: AccessRights = AccessRights.NO_ACCESS
    state: ChannelState = ChannelState.SEND_CREATE_CHAN_REQUEST
    #: subscriptionid -> the EVENT_ADD that opened it.
    subscriptions: dict[int, EventAddRequest] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} cid={self.cid} sid={self.sid} {self.state.name}>"
        )


class ClientChannel(_Channel):
    """A channel as the client sees it; its methods build requests to send.

    They only build commands: pass them to :meth:`VirtualCircuit.send`.
    """

    def create(self) -> CreateChanRequest:
        """The CREATE_CHAN request for this channel."""
        return CreateChanRequest(self.name, self.cid, CA_MINOR_PROTOCOL_REVISION)

    def _resolve(self, data_type: int | None, data_count: int | None) -> tuple[int, int]:
        if self.sid is None or self.native_data_type is None:
            raise LocalProtocolError(f"channel {self.name!r} is not connected ({self.state.name})")
        if data_type is None:
            data_type = self.native_data_type
        if data_count is None:
            data_count = 0 if self.circuit.their_version >= 13 else self.native_data_count or 1
        return data_type, data_count

    def read(
        self, data_type: int | None = None, data_count: int | None = None, ioid: int | None = None
    ) -> ReadNotifyRequest:
        """A READ_NOTIFY; count None asks for the current length (count 0)."""
        data_type, data_count = self._resolve(data_type, data_count)
        ioid = self.circuit.new_ioid() if ioid is None else ioid
        return ReadNotifyRequest(data_type, data_count, self.sid, ioid)  # type: ignore[arg-type]

    def write(
        self,
        data: object,
        data_type: int | None = None,
        *,
        notify: bool = True,
        metadata: object = None,
        ioid: int | None = None,
    ) -> WriteRequest:
        """A WRITE_NOTIFY (or with ``notify=False`` a plain WRITE)."""
        data_type, _ = self._resolve(data_type, 1)
        ioid = self.circuit.new_ioid() if ioid is None else ioid
        cls = WriteNotifyRequest if notify else WriteRequest
        return cls(data, data_type, self.sid, ioid, metadata=metadata)  # type: ignore[arg-type]

    def subscribe(
        self,
        data_type: int | None = None,
        data_count: int | None = None,
        mask: int = SubscriptionMask.VALUE | SubscriptionMask.ALARM,
        subscriptionid: int | None = None,
    ) -> EventAddRequest:
        """An EVENT_ADD opening a subscription."""
        data_type, data_count = self._resolve(data_type, data_count)
        if subscriptionid is None:
            subscriptionid = self.circuit.new_subscriptionid()
        return EventAddRequest(data_type, data_count, self.sid, subscriptionid, mask)  # type: ignore[arg-type]

    def unsubscribe(self, subscriptionid: int) -> EventCancelRequest:
        """The EVENT_CANCEL that ends subscription ``subscriptionid``."""
        request = self.subscriptions.get(subscriptionid)
        if request is None:
            raise LocalProtocolError(
                f"channel {self.name!r} has no subscription {subscriptionid} to cancel"
            )
        return EventCancelRequest(
            request.data_type, request.data_count, request.sid, subscriptionid
        )

    def clear(self) -> ClearChannelRequest:
        """The CLEAR_CHANNEL closing this channel."""
        if self.sid is None:
            raise LocalProtocolError(f"channel {self.name!r} was never connected; nothing to clear")
        return ClearChannelRequest(self.sid, self.cid)


class ServerChannel(_Channel):
    """A channel as the server sees it; its methods build responses."""

    #: The client's protocol minor version, from its CREATE_CHAN.
    client_version: int = CA_MINOR_PROTOCOL_REVISION

    def create(
        self,
        native_data_type: int,
        native_data_count: int,
        sid: int,
        access_rights: int = AccessRights.READ_WRITE,
    ) -> list[Command]:
        """ACCESS_RIGHTS then CREATE_CHAN, as rsrv answers a good CREATE_CHAN."""
        return [
            AccessRightsResponse(self.cid, access_rights),
            CreateChanResponse(native_data_type, native_data_count, self.cid, sid),
        ]

    def create_failed(self) -> CreateChFailResponse:
        """CREATE_CH_FAIL: this server cannot give the client that channel."""
        return CreateChFailResponse(self.cid)

    def disconnect(self) -> ServerDisconnResponse:
        """SERVER_DISCONN: the PV behind the channel went away."""
        return ServerDisconnResponse(self.cid)

    def clear(self) -> ClearChannelResponse:
        """The reply to the client's CLEAR_CHANNEL."""
        assert self.sid is not None
        return ClearChannelResponse(self.sid, self.cid)


class VirtualCircuit:
    """One CA virtual circuit seen from ``our_role`` (client or server).

    ``address`` and ``priority`` identify the circuit for the I/O layer; the
    core never uses them to do I/O. ``max_payload`` bounds what the peer may
    send (EPICS_CA_MAX_ARRAY_BYTES semantics).
    """

    def __init__(
        self,
        our_role: Role,
        address: tuple[str, int] | None = None,
        priority: int = 0,
        max_payload: int = DEFAULT_MAX_ARRAY_BYTES,
    ) -> None:
        if our_role not in _OTHER:
            raise ValueError(f"a circuit has a client and a server end, not a {our_role}")
        self.our_role = our_role
        self.their_role = _OTHER[our_role]
        self.address = address
        self.priority = priority
        self.states: dict[Role, CircuitState] = {
            Role.CLIENT: CircuitState.SEND_VERSION,
            Role.SERVER: CircuitState.SEND_VERSION,
        }
        #: The peer's protocol minor version once its VERSION has arrived.
        self.their_version = 0
        self.host_name: str | None = None
        self.client_name: str | None = None
        self.channels: dict[int, Any] = {}  # cid -> channel
        self.channels_by_sid: dict[int, Any] = {}
        self._pending: dict[int, tuple[Any, Command | None]] = {}  # ioid -> (channel, request)
        #: The last read_notify_run, checked but not yet in ``_pending``: its
        #: reads are recorded there by the next call that looks at the table
        #: (``_recorded``), unless replied() answers the whole run first.
        self._unrecorded: ReadRun | None = None
        #: The sids of the channels a READ_NOTIFY may name now: those in
        #: ``channels_by_sid`` that are CONNECTED (kept with their state, so
        #: that a run of reads is checked by one set operation).
        self._readable_sids: set[int] = set()
        self._subscriptions: dict[int, Any] = {}  # subscriptionid -> channel
        self._cancelling: set[int] = set()
        self._parser = StreamParser(self.their_role, max_payload)
        self._ids = itertools.count(1)
        self.events_on = True

    # -- ids (client role) ----------------------------------------------------

    def new_ioid(self) -> int:
        """A fresh id for a read or write on this circuit."""
        return next(self._ids) & 0xFFFFFFFF

    def new_subscriptionid(self) -> int:
        """A fresh subscription id on this circuit."""
        return next(self._ids) & 0xFFFFFFFF

    def new_cid(self) -> int:
        """A fresh client channel id on this circuit."""
        return next(self._ids) & 0xFFFFFFFF

    def create_channel(self, name: str, cid: int | None = None) -> ClientChannel:
        """A client channel on this circuit, ready for ``send(channel.create())``."""
        if self.our_role is not Role.CLIENT:
            raise LocalProtocolError("only the client end creates channels")
        cid = self.new_cid() if cid is None else cid
        if cid in self.channels:
            raise LocalProtocolError(f"cid {cid} is already in use on this circuit")
        channel = ClientChannel(self, name, cid)
        self.channels[cid] = channel
        return channel

    @property
    def our_state(self) -> CircuitState:
        """Our side's circuit state."""
        return self.states[self.our_role]

    @property
    def their_state(self) -> CircuitState:
        """The peer's circuit state."""
        return self.states[self.their_role]

    @property
    def pending_ioids(self) -> frozenset[int]:
        """Reads and writes that still await their reply."""
        return frozenset(self._recorded())

    def _recorded(self) -> dict[int, tuple[Any, Command | None]]:
        """``_pending``, with the reads of an unrecorded run in it."""
        run = self._unrecorded
        if run is not None:
            self._unrecorded = None
            self._pending.update(
                zip(run.ioids, zip(run.channels, itertools.repeat(None)), strict=False)
            )
        return self._pending

    # -- the core API -----------------------------------------------------------

    def send(self, *commands: Command) -> bytes:
        """Check and record ``commands``, and return the bytes to transmit."""
        for command in commands:
            self._process(command, self.our_role)
        if len(commands) == 1:
            return bytes(commands[0])
        return b"".join([bytes(command) for command in commands])

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes received from the peer."""
        if self.their_state is CircuitState.DISCONNECTED:
            raise RemoteProtocolError("data arrived on a circuit that was disconnected")
        self._parser.receive_data(data)

    def next_command(self) -> Command | _NeedData:
        """The next command from the peer, checked, or :data:`NEED_DATA`."""
        command = self._parser.next_command()
        if command is NEED_DATA:
            return command
        return self._process(command, self.their_role)  # type: ignore[arg-type]

    def read_notify_run(
        self, data: bytes | memoryview, least: int = 8, most: int = 1024
    ) -> ReadRun | None:
        """The READ_NOTIFY requests ``data`` starts with, as one checked run (server role).

        A client reading many channels at once (``ca_array_get`` for each,
        then one flush) sends headers of 16 bytes with no payload, back to
        back; checking and answering them as a run is several times cheaper
        than command by command. The run is checked exactly as
        :meth:`next_command` checks each request (a connected circuit,
        nothing buffered ahead of it, a known sid on a channel that may be
        read, an ioid that does not await a reply already) and recorded the
        same way: each ioid awaits its reply. (The recording waits for the
        next call that looks at the replies awaited: a run that
        :meth:`replied` answers whole before any other command passes
        never needs it.) The run covers the first
        ``16 * len(run.ioids)`` bytes of ``data``, which the caller then
        must not pass to :meth:`receive_data`; it answers each read either
        with :meth:`send` (``ReadNotifyResponse`` or ``ErrorResponse``, as
        usual) or with bytes of its own followed by :meth:`replied`. None
        when ``data`` does not start with at least ``least`` such requests
        or any check fails: then the usual path takes the bytes and raises
        what it must.
        """
        if (
            len(data) < 16 * least
            or data[:4] != _READ_RUN_START
            or self.our_role is not Role.SERVER
            or self.states[Role.CLIENT] is not _CONNECTED
            or self._parser.buffered
        ):
            return None
        headers = np.frombuffer(data, _REQUEST_HEADERS, min(len(data) // 16, most))
        others = np.flatnonzero(
            (headers["command"] != CommandId.READ_NOTIFY) | (headers["size"] != 0)
        )
        if others.size:
            if others[0] < least:
                return None
            headers = headers[: others[0]]
        # Checked a column at a time, each check one call into C.
        sids = headers["sid"].tolist()
        if not self._readable_sids.issuperset(sids):
            return None  # an unknown sid, or a channel being cleared
        ioids = headers["ioid"].tolist()
        pending = self._recorded()
        column = headers["ioid"]
        # Distinct ioids: libca numbers its reads upwards, and a rising column
        # needs no set of a thousand ints to show it.
        if not (column[1:] > column[:-1]).all() and len(set(ioids)) != len(ioids):
            return None
        # (isdisjoint would look each ioid up even in an empty table)
        if pending and not pending.keys().isdisjoint(ioids):
            return None
        types, counts = headers["data_type"], headers["data_count"]
        first_type, first_count = int(types[0]), int(counts[0])
        uniform = bool((types == first_type).all() and (counts == first_count).all())
        if uniform:  # a column of one value: no conversion element by element
            data_types, data_counts = [first_type] * len(ioids), [first_count] * len(ioids)
        else:
            data_types, data_counts = types.tolist(), counts.tolist()
        self._unrecorded = run = ReadRun(
            self.channels_by_sid,
            data_types,
            data_counts,
            sids,
            ioids,
            # a copy: the caller may reuse the buffer the run was read from
            # (of the bytes: a structured array's own copy goes field by field)
            np.frombuffer(bytes(data[: 16 * len(ioids)]), _REQUEST_HEADERS),
            uniform,
        )
        return run

    def create_chan_run(
        self, data: bytes | memoryview, least: int = 4, most: int = 256
    ) -> tuple[list[ServerChannel], int] | None:
        """The CREATE_CHAN requests ``data`` starts with, as new channels (server role).

        A client connecting many channels at once sends their CREATE_CHAN
        requests back to back; taking them as a run skips the command
        objects and the per-command dispatch. Each request is checked and
        recorded exactly as :meth:`next_command` checks and records it (a
        connected circuit, nothing buffered ahead, a cid not in use): its
        channel awaits the reply to its creation. The run stops before the
        first message that is anything else, incomplete, unusually framed
        (an extended header), over 1 kB, or a cid already in use (the usual
        path then takes it and raises what it must); a cid used twice within
        the segment means no run at all. Returns the channels, in order, and
        the number of bytes they took, which the caller must not pass to
        :meth:`receive_data`; None for fewer than ``least``.
        """
        if (
            self.our_role is not Role.SERVER
            or self.states[Role.CLIENT] is not _CONNECTED
            or self._parser.buffered
            or len(data) < 16 * least
        ):
            return None
        total = len(data)
        channels = self.channels
        found: list[tuple[int, int, int, int]] = []  # (cid, version, start, end)
        taken: set[int] = set()
        offset = 0
        while len(found) < most and total - offset >= 16:
            command, size, _, count, cid, version = _unpack_header(data, offset)
            end = offset + 16 + size
            if cid in taken and command == _CREATE_CHAN:
                # The same cid twice in one segment: parsed one by one, the
                # second finds the first still awaiting its reply and is an
                # error; after a run it might not be (a failed create frees
                # its cid). No run, so the usual path judges it as always.
                return None
            if (
                command != _CREATE_CHAN
                or size == 0xFFFF
                or count == 0xFFFF
                or size > 1024
                or end > total
                or cid in channels
            ):
                break
            taken.add(cid)
            found.append((cid, version, offset + 16, end))
            offset = end
        if len(found) < least:
            return None
        # The same holds for a cid of the run used again further on in the
        # segment: one by one, it is parsed before the run's replies are
        # sent. Any such reuse, or a header this walk cannot follow, and
        # there is no run.
        scan = offset
        while total - scan >= 16:
            command, size, _, count, cid, _ = _unpack_header(data, scan)
            if size == 0xFFFF or count == 0xFFFF or (command == _CREATE_CHAN and cid in taken):
                return None
            scan += 16 + size
        made = []
        for cid, version, start, end in found:
            name = str(data[start:end], "utf-8", "surrogateescape").partition("\0")[0]
            channel = ServerChannel(self, name, cid)
            channel.client_version = version
            channel.state = _AWAIT_CREATE
            channels[cid] = channel
            made.append(channel)
        return made, offset

    def accept(
        self,
        channel: ServerChannel,
        native_data_type: int,
        native_data_count: int,
        sid: int,
        access_rights: int = AccessRights.READ_WRITE,
    ) -> bytes:
        """``send(*channel.create(...))``: ACCESS_RIGHTS then CREATE_CHAN, as bytes.

        A client connects thousands of channels at once: in the common case
        (a channel awaiting its reply on a connected circuit, a native type,
        a count and rights that fit a plain header) the same records are
        made as :meth:`send` makes and both replies packed by one call;
        anything else goes through :meth:`send` and its checks.
        """
        cid = channel.cid
        if not (
            self.our_role is Role.SERVER
            and self.states[Role.SERVER] is _CONNECTED
            and channel.state is _AWAIT_CREATE
            and self.channels.get(cid) is channel
            and isinstance(native_data_type, int)
            and 0 <= native_data_type < len(_NATIVE_TYPES)
            and isinstance(native_data_count, int)
            and 0 <= native_data_count < 0xFFFF
            and isinstance(sid, int)
            and 0 <= sid <= 0xFFFFFFFF
            and isinstance(access_rights, int)
            and 0 <= access_rights <= 3
        ):
            replies = channel.create(native_data_type, native_data_count, sid, access_rights)
            return self.send(*replies)
        native_data_type, native_data_count = int(native_data_type), int(native_data_count)
        sid, access_rights = int(sid), int(access_rights)
        channel.access_rights = _RIGHTS[access_rights]
        channel.sid = sid
        channel.native_data_type = _NATIVE_TYPES[native_data_type]
        channel.native_data_count = native_data_count
        self.channels_by_sid[sid] = channel
        channel.state = ChannelState.CONNECTED
        self._readable_sids.add(sid)
        return _CREATED(
            *(CommandId.ACCESS_RIGHTS, 0, 0, 0, cid, access_rights),
            *(CommandId.CREATE_CHAN, 0, native_data_type, native_data_count, cid, sid),
        )

    def updatable(self, subscriptionids: Iterable[int]) -> list[bool]:
        """Whether an EVENT_ADD update for each of ``subscriptionids`` may go out (server role).

        What :meth:`send` checks for each update, asked once for a burst of
        them: the server then packs those updates itself, skipping nothing
        (an update changes no state). False: send each one with send().
        """
        if self.our_role is not Role.SERVER or self.states[Role.SERVER] is not _CONNECTED:
            return [False for _ in subscriptionids]
        get = self._subscriptions.get
        return [
            channel is not None and channel.state in _UPDATABLE_STATES
            for channel in map(get, subscriptionids)
        ]

    def replied(self, ioids: list[int]) -> None:
        """Replies to these reads of a :meth:`read_notify_run` went out, not through send()."""
        if self._unrecorded is not None and self._unrecorded.ioids is ioids:
            # The whole run, answered before anything else looked at the
            # table (the usual batch): its reads never need recording.
            self._unrecorded = None
            return
        pending = self._recorded()
        if len(pending) == len(ioids) and ioids[0] in pending and ioids[-1] in pending:
            # Only this run awaits replies (the usual case): the ioids were
            # all added at once, distinct, and leave only here, by their
            # replies (no read of the run has been answered yet: ioids[0] and
            # ioids[-1] are still there) or all at once by disconnect().
            pending.clear()
            return
        # popped with a default: all gone already if the circuit was disconnected
        collections.deque(map(pending.pop, ioids, itertools.repeat(None)), maxlen=0)

    def disconnect(self) -> None:
        """The connection is gone: every channel closes, nothing more passes."""
        self._recorded()  # a run's channels, as they were, before they all close
        for role in self.states:
            self.states[role] = CircuitState.DISCONNECTED
        for channel in list(self.channels.values()):
            channel.state = ChannelState.CLOSED
        self.channels.clear()
        self.channels_by_sid.clear()
        self._readable_sids.clear()
        self._pending.clear()
        self._unrecorded = None
        self._subscriptions.clear()

    # -- bookkeeping -------------------------------------------------------------

    def _process(self, command: Command, sender: Role) -> Command:
        if self._unrecorded is not None:
            self._recorded()
        cls = type(command)
        if (
            cls is CreateChanRequest or cls is AccessRightsResponse or cls is CreateChanResponse
        ) and (self.states[sender] is _CONNECTED and self._connecting(command, cls, sender)):
            # Connecting a channel, three commands per channel and thousands
            # at once: the same checks and changes as the tables below when
            # they pass, without the general dispatch (which reports errors).
            return command
        state = self.states[sender]
        next_state = CIRCUIT_TRANSITIONS[sender][state].get(cls)
        if next_state is None:
            if state is CircuitState.SEND_VERSION:
                why = "its first command must be VERSION"
            elif state is CircuitState.DISCONNECTED:
                why = "the circuit is disconnected"
            else:
                why = f"a {sender.value} does not send it over TCP"
            raise _error(
                sender, self.our_role, f"{sender.value} sent {cls.__name__}: {why}", command
            )
        if cls is EventAddResponse and command[1] == 0 and command[5] in self._cancelling:
            # The server confirms EVENT_CANCEL with an empty EVENT_ADD.
            command = EventCancelResponse.from_wire(*command[1:7])
            cls = EventCancelResponse
        elif cls is EventAddResponse and command[1] < (
            METADATA_SIZES[command[2]] + command[3] * VALUE_SIZES[command[2]]
        ):
            # Too short for its type and count, and not a confirmation either
            # (the parser lets such messages through for the circuit to judge).
            raise _error(
                sender,
                self.our_role,
                f"{sender.value} sent an EVENT_ADD update with {command[1]} payload bytes "
                f"for subscription {command[5]}, which is not being cancelled",
                command,
            )
        channel = self._channel_for(command, cls, sender)
        if channel is not None:
            self._move_channel(channel, command, cls, sender)
        self.states[sender] = next_state  # type: ignore[assignment]
        if cls is VersionRequest or cls is VersionResponse:
            if sender is self.their_role:
                self.their_version = command[3]
            if sender is Role.CLIENT:
                self.priority = command[2]
        elif command[0] == CommandId.HOST_NAME:
            self.host_name = command.name  # type: ignore[attr-defined]
        elif command[0] == CommandId.CLIENT_NAME:
            self.client_name = command.name  # type: ignore[attr-defined]
        elif command[0] == CommandId.EVENTS_OFF:
            self.events_on = False
        elif command[0] == CommandId.EVENTS_ON:
            self.events_on = True
        return command

    def _connecting(self, command: Command, cls: type, sender: Role) -> bool:
        """A CREATE_CHAN request, ACCESS_RIGHTS or CREATE_CHAN reply on a
        connected circuit, in the common case only; False leaves it to the
        general path, which then raises the right error or does the rest.

        The outcome is exactly what ``CIRCUIT_TRANSITIONS`` (each is legal
        from its sender on a connected circuit, which stays connected) and
        ``CHANNEL_TRANSITIONS`` give; tests/test_state.py checks both paths
        against each other.
        """
        if cls is CreateChanRequest:
            if sender is not Role.CLIENT or self.our_role is not Role.SERVER:
                return False
            cid = command[4]
            if cid in self.channels:
                return False  # a second channel with this cid: an error
            created = ServerChannel(self, command.name, cid)  # type: ignore[attr-defined]
            created.client_version = command[5]
            created.state = _AWAIT_CREATE
            self.channels[cid] = created
            return True
        if sender is not Role.SERVER:
            return False
        channel = self.channels.get(command[4])
        if channel is None or channel.state is not _AWAIT_CREATE:
            return False  # unknown cid, or a channel in another state
        if cls is AccessRightsResponse:
            channel.access_rights = _RIGHTS[command[5] & 3]
            return True
        data_type = command[2]
        if not 0 <= data_type < len(_NATIVE_TYPES):
            return False  # the general path's ChannelType() judges it
        channel.sid = command[5]
        channel.native_data_type = _NATIVE_TYPES[data_type]
        channel.native_data_count = command[3]
        self.channels_by_sid[command[5]] = channel
        channel.state = ChannelState.CONNECTED
        self._readable_sids.add(command[5])
        return True

    def _unknown(self, what: str, command: Command, sender: Role) -> ProtocolError:
        return _error(
            sender,
            self.our_role,
            f"{sender.value} sent {type(command).__name__} for {what}, which this circuit does "
            "not know",
            command,
        )

    def _channel_for(self, command: Command, cls: type, sender: Role) -> Any:
        if cls in _BY_SID:
            channel = self.channels_by_sid.get(command[4])
            if channel is None:
                raise self._unknown(f"sid {command[4]}", command, sender)
            return channel
        if cls in _BY_CID:
            channel = self.channels.get(command[4])
            if channel is None:
                raise self._unknown(f"cid {command[4]}", command, sender)
            return channel
        if cls is ReadNotifyResponse or cls is WriteNotifyResponse:
            entry = self._pending.get(command[5])
            if entry is None:
                raise self._unknown(f"ioid {command[5]}", command, sender)
            return entry[0]
        if cls is EventAddResponse or cls is EventCancelResponse:
            channel = self._subscriptions.get(command[5])
            if channel is None:
                raise self._unknown(f"subscriptionid {command[5]}", command, sender)
            return channel
        if cls is CreateChanRequest:
            return self._channel_created(command, sender)
        if cls is ClearChannelRequest or cls is ClearChannelResponse:
            channel = self.channels.get(command[5])
            if channel is None or channel.sid != command[4]:
                raise self._unknown(f"cid {command[5]} / sid {command[4]}", command, sender)
            return channel
        if cls is ErrorResponse:
            return self._error_channel(command)
        return None

    def _channel_created(self, command: Command, sender: Role) -> Any:
        cid = command[4]
        channel = self.channels.get(cid)
        if self.our_role is Role.SERVER:
            if channel is not None:
                raise self._unknown(f"a second channel with cid {cid}", command, sender)
            channel = ServerChannel(self, command.name, cid)  # type: ignore[attr-defined]
            channel.client_version = command[5]
            self.channels[cid] = channel
        elif channel is None:
            raise _error(
                sender,
                self.our_role,
                f"cid {cid} was not made by create_channel(); use it to create channels",
                command,
            )
        return channel

    def _error_channel(self, command: Command) -> Any:
        original = command.original_header  # type: ignore[attr-defined]
        op, p2 = original[0], original[5]
        if op in (CommandId.READ_NOTIFY, CommandId.WRITE_NOTIFY, CommandId.READ):
            entry = self._pending.pop(p2, None)
            if entry is not None:
                return entry[0]
        elif op == CommandId.EVENT_ADD:
            channel = self._subscriptions.pop(p2, None)
            if channel is not None:
                channel.subscriptions.pop(p2, None)
                return channel
        elif op == CommandId.CREATE_CHAN:
            return self.channels.get(original[4])
        return self.channels.get(command[4])

    def _move_channel(self, channel: Any, command: Command, cls: type, sender: Role) -> None:
        target = CHANNEL_TRANSITIONS[channel.state].get(cls)
        if target is None:
            raise _error(
                sender,
                self.our_role,
                f"{sender.value} sent {cls.__name__} for channel {channel.name!r}, which is "
                f"{channel.state.name}: not allowed in that state",
                command,
            )
        if cls is CreateChanResponse:
            channel.sid = command[5]
            channel.native_data_type = ChannelType(command[2])
            channel.native_data_count = command[3]
            self.channels_by_sid[command[5]] = channel
        elif cls is AccessRightsResponse:
            channel.access_rights = command.access_rights  # type: ignore[attr-defined]
        elif cls in _NEEDS_REPLY:
            ioid = command[5]
            if ioid in self._pending and sender is Role.CLIENT:
                raise _error(sender, self.our_role, f"ioid {ioid} is already in use", command)
            self._pending[ioid] = (channel, command)
        elif cls is ReadNotifyResponse or cls is WriteNotifyResponse:
            del self._pending[command[5]]
        elif cls is EventAddRequest:
            subscriptionid = command[5]
            if subscriptionid in self._subscriptions:
                raise _error(
                    sender,
                    self.our_role,
                    f"subscriptionid {subscriptionid} is already in use",
                    command,
                )
            self._subscriptions[subscriptionid] = channel
            channel.subscriptions[subscriptionid] = command
        elif cls is EventCancelRequest:
            if command[5] not in channel.subscriptions:
                raise self._unknown(f"subscriptionid {command[5]}", command, sender)
            self._cancelling.add(command[5])
        elif cls is EventCancelResponse:
            self._cancelling.discard(command[5])
            self._subscriptions.pop(command[5], None)
            channel.subscriptions.pop(command[5], None)
        channel.state = target
        sid = channel.sid
        if sid is not None and self.channels_by_sid.get(sid) is channel:
            if target in _READABLE_STATES:
                self._readable_sids.add(sid)
            else:
                self._readable_sids.discard(sid)
        if target in _TERMINAL:
            self._forget(channel)

    def _forget(self, channel: Any) -> None:
        self.channels.pop(channel.cid, None)
        if channel.sid is not None:
            self.channels_by_sid.pop(channel.sid, None)
        for subscriptionid in channel.subscriptions:
            self._subscriptions.pop(subscriptionid, None)
            self._cancelling.discard(subscriptionid)
        channel.subscriptions.clear()
        for ioid in [i for i, (ch, _) in self._pending.items() if ch is channel]:
            del self._pending[ioid]


def error_for(
    request: Command, status: ECA, message: str | None = None, cid: int = 0
) -> ErrorResponse:
    """The ERROR a server sends to refuse ``request`` (text defaults to ECA's)."""
    return ErrorResponse(request, cid, status, status.message if message is None else message)

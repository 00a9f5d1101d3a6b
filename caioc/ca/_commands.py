"""One small immutable class per CA wire message (spec "Commands").

The header-only commands live here: version, search, beacons, repeater,
names, and the channel lifecycle. Reads, writes, subscriptions and errors
are in :mod:`._operations`; the header and base class in :mod:`._wire`.
This module also holds the registries the parsers use to pick a class by
command number and direction.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from operator import itemgetter
from typing import Any

from ._constants import (
    CA_MINOR_PROTOCOL_REVISION,
    AccessRights,
    CommandId,
    SearchReply,
)
from ._dbr import ChannelType
from ._errors import LocalProtocolError
from ._operations import (
    ErrorResponse,
    EventAddRequest,
    EventAddResponse,
    EventCancelRequest,
    EventCancelResponse,
    ReadNotifyRequest,
    ReadNotifyResponse,
    ReadRequest,
    WriteNotifyRequest,
    WriteNotifyResponse,
    WriteRequest,
)
from ._wire import (
    _NUL_PAD,
    ADDRESS_FROM_SENDER,
    HEADER,
    Command,
    Payload,
    _check_data_type,
    _check_uint,
    _dotted_to_int,
    decode_string,
    encode_string,
    ipv4_from_int,
    ipv4_to_int,
)

__all__ = [
    "ADDRESS_FROM_SENDER",
    "AccessRightsResponse",
    "ClearChannelRequest",
    "ClearChannelResponse",
    "ClientNameRequest",
    "Command",
    "CreateChFailResponse",
    "CreateChanRequest",
    "CreateChanResponse",
    "EchoRequest",
    "EchoResponse",
    "ErrorResponse",
    "EventAddRequest",
    "EventAddResponse",
    "EventCancelRequest",
    "EventCancelResponse",
    "EventsOffRequest",
    "EventsOnRequest",
    "HostNameRequest",
    "NotFoundResponse",
    "ReadNotifyRequest",
    "ReadNotifyResponse",
    "ReadRequest",
    "ReadSyncRequest",
    "RepeaterConfirmResponse",
    "RepeaterRegisterRequest",
    "RsrvIsUpResponse",
    "SearchRequest",
    "SearchResponse",
    "ServerDisconnResponse",
    "VersionRequest",
    "VersionResponse",
    "WriteNotifyRequest",
    "WriteNotifyResponse",
    "WriteRequest",
    "ipv4_from_int",
    "ipv4_to_int",
]

_SEARCH_RESPONSE_PAYLOAD = struct.Struct(">H6x")
_UINT32 = 0xFFFFFFFF
_new = tuple.__new__
_pack_header = HEADER.pack
_SEARCH_PAYLOADS = {
    CA_MINOR_PROTOCOL_REVISION: _SEARCH_RESPONSE_PAYLOAD.pack(CA_MINOR_PROTOCOL_REVISION)
}
#: A whole SEARCH response: the header, then the version and its padding.
_pack_search_response = struct.Struct(">HHHHIIH6x").pack
#: PV names by SEARCH payload, for payloads up to _NAME_CACHE_PAYLOAD
#: bytes. A server hears the same names over and over: every client
#: repeats each search until it is answered, and a display's searches
#: reach every server. A name read again costs a dict lookup instead of a
#: decode. Emptied when it holds _NAME_CACHE_SIZE names (< 1 MB at most).
_SEARCH_NAMES: dict[bytes, str] = {}
_NAME_CACHE_SIZE = 2048
_NAME_CACHE_PAYLOAD = 128
#: The other way, for a client: SEARCH payloads (the name, NUL-padded) by
#: name, as a client repeats the searches of channels not found yet; bounded
#: as _SEARCH_NAMES.
_SEARCH_PAYLOADS_BY_NAME: dict[str, bytes] = {}


def _search_name(payload: Payload) -> str:
    """The name a SEARCH payload carries, remembered in _SEARCH_NAMES."""
    if type(payload) is not bytes:
        payload = bytes(payload)  # a key must not change with someone's buffer
    # decode_string inlined, with bytes' own decode (cheaper than str()).
    name = payload.decode("utf-8", "surrogateescape").partition("\0")[0]
    if len(payload) <= _NAME_CACHE_PAYLOAD:
        if len(_SEARCH_NAMES) >= _NAME_CACHE_SIZE:
            _SEARCH_NAMES.clear()
        _SEARCH_NAMES[payload] = name
    return name


# --- commands without payload or with a plain header -----------------------


class _NoFields(Command):
    __slots__ = ()

    def __new__(cls) -> Any:
        return cls._build()


class VersionRequest(Command):
    """VERSION (0) from a client: protocol minor version and circuit priority.

    Over UDP, libca puts a search sequence number in ``parameter1`` and
    sets ``data_type`` to 1 to say it is valid (CA_V411).
    """

    __slots__ = ()
    ID = CommandId.VERSION
    REQUEST = True
    FIELDS = ("priority", "version", "sequence_id")
    priority = property(itemgetter(2), doc="Circuit priority 0-99 (TCP).")
    version = property(itemgetter(3), doc="Protocol minor version, 13 here.")
    sequence_id = property(itemgetter(4), doc="UDP search sequence number.")

    def __new__(
        cls, priority: int = 0, version: int = CA_MINOR_PROTOCOL_REVISION, sequence_id: int = 0
    ) -> Any:
        # Over TCP this is a priority 0-99; over UDP libca puts a flag here.
        if (
            type(priority) is int
            and type(version) is int
            and type(sequence_id) is int
            and 0 <= priority <= 0xFFFF
            and 0 <= version < 0xFFFF
            and 0 <= sequence_id <= _UINT32
        ):
            # What _build does, without its call: one of these starts every
            # search datagram and every answer to one.
            return _new(
                cls,
                (
                    0,
                    0,
                    priority,
                    version,
                    sequence_id,
                    0,
                    b"",
                    _pack_header(0, 0, priority, version, sequence_id, 0),
                ),
            )
        priority = _check_uint(priority, 16, "priority", "VERSION")
        version = _check_uint(version, 16, "version", "VERSION")
        sequence_id = _check_uint(sequence_id, 32, "sequence_id", "VERSION")
        return cls._build(priority, version, sequence_id)


class VersionResponse(VersionRequest):
    """VERSION (0) from a server: its protocol minor version."""

    __slots__ = ()
    REQUEST = False


class EchoRequest(_NoFields):
    """ECHO (23) from a client: "are you there?" (CA_V43)."""

    __slots__ = ()
    ID = CommandId.ECHO
    REQUEST = True


class EchoResponse(_NoFields):
    """ECHO (23) from a server, answering an :class:`EchoRequest`."""

    __slots__ = ()
    ID = CommandId.ECHO
    REQUEST = False


class EventsOffRequest(_NoFields):
    """EVENTS_OFF (8): the client asks the server to hold monitor updates."""

    __slots__ = ()
    ID = CommandId.EVENTS_OFF
    REQUEST = True


class EventsOnRequest(_NoFields):
    """EVENTS_ON (9): the client resumes monitor updates."""

    __slots__ = ()
    ID = CommandId.EVENTS_ON
    REQUEST = True


class ReadSyncRequest(_NoFields):
    """READ_SYNC (10): deprecated; recognised so servers can refuse it."""

    __slots__ = ()
    ID = CommandId.READ_SYNC
    REQUEST = True
    DEPRECATED = True


class SearchRequest(Command):
    """SEARCH (6) from a client: "who serves this PV name?" (UDP or TCP)."""

    __slots__ = ()
    ID = CommandId.SEARCH
    REQUEST = True
    FIELDS = ("name", "cid", "version", "reply")
    reply = property(itemgetter(2), doc="SearchReply.DO_REPLY asks for NOT_FOUND.")
    version = property(itemgetter(3), doc="The client's protocol minor version.")
    cid = property(itemgetter(4), doc="Client's channel id the reply will carry.")

    def __new__(
        cls,
        name: str | bytes,
        cid: int,
        version: int = CA_MINOR_PROTOCOL_REVISION,
        reply: int = SearchReply.DONT_REPLY,
    ) -> Any:
        if (
            type(name) is str
            and type(cid) is int
            and type(version) is int
            and 0 <= cid <= _UINT32
            and 0 <= version <= 0xFFFF
            and (reply == 5 or reply == 10)
        ):
            # The search storm path: a client may send thousands at once,
            # and searches again, with back-off, for names not found yet.
            # Built in place: no _build call, no header tuple to unpack.
            payload = _SEARCH_PAYLOADS_BY_NAME.get(name)
            if payload is None and "\0" not in name:  # str's `in`: bytes' costs a TypeError
                raw = name.encode("utf-8", "surrogateescape")
                if raw and len(raw) < 1000:
                    payload = raw + _NUL_PAD[len(raw) & 7]
                    if len(payload) <= _NAME_CACHE_PAYLOAD:
                        if len(_SEARCH_PAYLOADS_BY_NAME) >= _NAME_CACHE_SIZE:
                            _SEARCH_PAYLOADS_BY_NAME.clear()
                        _SEARCH_PAYLOADS_BY_NAME[name] = payload
            if payload is not None:
                size = len(payload)
                reply = 5 if reply == 5 else 10  # a plain int, not a SearchReply
                wire = _pack_header(6, size, reply, version, cid, cid) + payload
                return _new(cls, (6, size, reply, version, cid, cid, payload, wire))
        if reply != 5 and reply != 10:  # SearchReply.DONT_REPLY, DO_REPLY
            raise LocalProtocolError(f"SEARCH: reply flag must be 5 or 10, not {reply}")
        if not (type(cid) is int and type(version) is int and 0 <= cid <= _UINT32):
            cid = _check_uint(cid, 32, "cid", "SEARCH")
        if not 0 <= version <= 0xFFFF:
            _check_uint(version, 16, "version", "SEARCH")
        if not name:
            raise LocalProtocolError("SEARCH: the PV name is empty")
        return cls._build(reply, version, cid, cid, encode_string(name, "SEARCH: PV name"))

    @property
    def name(self) -> str:
        """The PV name searched for."""
        payload = self[6]
        try:
            return _SEARCH_NAMES[payload]  # a subscript: cheaper than a get() call
        except KeyError:
            return _search_name(payload)
        except (TypeError, ValueError):  # a view that cannot be hashed
            return decode_string(payload)


class SearchResponse(Command):
    """SEARCH (6) from a server: "I serve it, connect to me at this port"."""

    __slots__ = ()
    ID = CommandId.SEARCH
    REQUEST = False
    FIELDS = ("port", "ip", "cid", "version")
    port = property(itemgetter(2), doc="The server's TCP port.")
    cid = property(itemgetter(5), doc="The cid of the search being answered.")

    def __new__(
        cls,
        port: int,
        ip: str | int,
        cid: int,
        version: int = CA_MINOR_PROTOCOL_REVISION,
    ) -> Any:
        payload = _SEARCH_PAYLOADS.get(version)
        if (
            payload is not None
            and type(version) is int
            and type(port) is int
            and type(cid) is int
            and 0 <= port <= 0xFFFF
            and 0 <= cid <= _UINT32
        ):
            # A server answers every search it serves with one of these:
            # the address without ipv4_to_int's call (ADDRESS_FROM_SENDER or
            # a cached dotted one) and the whole message in one pack.
            if type(ip) is str:
                address = _dotted_to_int(ip)
            elif type(ip) is int and 0 <= ip <= _UINT32:
                address = ip
            else:
                address = ipv4_to_int(ip)
            wire = _pack_search_response(6, 8, port, 0, address, cid, version)
            return _new(cls, (6, 8, port, 0, address, cid, payload, wire))
        _check_uint(port, 16, "port", "SEARCH response")
        _check_uint(cid, 32, "cid", "SEARCH response")
        _check_uint(version, 16, "version", "SEARCH response")
        payload = _SEARCH_RESPONSE_PAYLOAD.pack(version)
        return cls._build(port, 0, ipv4_to_int(ip), cid, payload)

    @property
    def ip(self) -> str:
        """The server address; 255.255.255.255 means "where this came from"."""
        return ipv4_from_int(self[4])

    @property
    def version(self) -> int:
        """The server's protocol minor version (0 if the payload is absent)."""
        payload = self[6]
        return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0


class NotFoundResponse(Command):
    """NOT_FOUND (14): the server does not have the PV (only if asked)."""

    __slots__ = ()
    ID = CommandId.NOT_FOUND
    REQUEST = False
    FIELDS = ("cid", "version", "reply")
    reply = property(itemgetter(2), doc="Echo of the search's reply flag.")
    version = property(itemgetter(3), doc="The server's protocol minor version.")
    cid = property(itemgetter(4), doc="The cid of the unanswerable search.")

    def __new__(
        cls,
        cid: int,
        version: int = CA_MINOR_PROTOCOL_REVISION,
        reply: int = SearchReply.DO_REPLY,
    ) -> Any:
        _check_uint(cid, 32, "cid", "NOT_FOUND")
        _check_uint(version, 16, "version", "NOT_FOUND")
        _check_uint(reply, 16, "reply", "NOT_FOUND")
        return cls._build(reply, version, cid, cid)


class RsrvIsUpResponse(Command):
    """RSRV_IS_UP (13): the beacon a server broadcasts periodically."""

    __slots__ = ()
    ID = CommandId.RSRV_IS_UP
    REQUEST = False
    FIELDS = ("version", "server_port", "beacon_id", "address")
    version = property(itemgetter(2), doc="The server's protocol minor version.")
    server_port = property(itemgetter(3), doc="The server's TCP port.")
    beacon_id = property(itemgetter(4), doc="Counter incremented per beacon (CA_V410).")

    def __new__(
        cls,
        server_port: int,
        beacon_id: int,
        address: str | int,
        version: int = CA_MINOR_PROTOCOL_REVISION,
    ) -> Any:
        _check_uint(server_port, 16, "server_port", "RSRV_IS_UP")
        _check_uint(beacon_id, 32, "beacon_id", "RSRV_IS_UP")
        _check_uint(version, 16, "version", "RSRV_IS_UP")
        return cls._build(version, server_port, beacon_id, ipv4_to_int(address))

    @property
    def address(self) -> str:
        """The server's address; 0.0.0.0 means "where this came from"."""
        return ipv4_from_int(self[5])


class RepeaterRegisterRequest(Command):
    """REPEATER_REGISTER (24): a client asks the repeater to forward beacons."""

    __slots__ = ()
    ID = CommandId.REPEATER_REGISTER
    REQUEST = True
    FIELDS = ("client_address",)

    def __new__(cls, client_address: str | int = 0) -> Any:
        return cls._build(0, 0, 0, ipv4_to_int(client_address))

    @property
    def client_address(self) -> str:
        """The registering client's address."""
        return ipv4_from_int(self[5])


class RepeaterConfirmResponse(Command):
    """REPEATER_CONFIRM (17): the repeater accepted a registration."""

    __slots__ = ()
    ID = CommandId.REPEATER_CONFIRM
    REQUEST = False
    FIELDS = ("repeater_address",)

    def __new__(cls, repeater_address: str | int) -> Any:
        return cls._build(0, 0, 0, ipv4_to_int(repeater_address))

    @property
    def repeater_address(self) -> str:
        """The address the repeater saw the registration come from."""
        return ipv4_from_int(self[5])


class _NameRequest(Command):
    __slots__ = ()
    REQUEST = True
    FIELDS = ("name",)

    def __new__(cls, name: str | bytes) -> Any:
        return cls._build(payload=encode_string(name, f"{cls.ID.name}: name"))

    @property
    def name(self) -> str:
        """The name carried by the payload."""
        return decode_string(self[6])


class ClientNameRequest(_NameRequest):
    """CLIENT_NAME (20): the user name, used by access security."""

    __slots__ = ()
    ID = CommandId.CLIENT_NAME


class HostNameRequest(_NameRequest):
    """HOST_NAME (21): the client's host name, used by access security."""

    __slots__ = ()
    ID = CommandId.HOST_NAME


# --- channels ---------------------------------------------------------------


class CreateChanRequest(Command):
    """CREATE_CHAN (18) from a client: open a channel to a PV."""

    __slots__ = ()
    ID = CommandId.CREATE_CHAN
    REQUEST = True
    FIELDS = ("name", "cid", "version")
    cid = property(itemgetter(4), doc="Client's channel id.")
    version = property(itemgetter(5), doc="The client's protocol minor version.")

    def __new__(cls, name: str | bytes, cid: int, version: int = CA_MINOR_PROTOCOL_REVISION) -> Any:
        _check_uint(cid, 32, "cid", "CREATE_CHAN")
        _check_uint(version, 32, "version", "CREATE_CHAN")
        if not name:
            raise LocalProtocolError("CREATE_CHAN: the PV name is empty")
        return cls._build(0, 0, cid, version, encode_string(name, "CREATE_CHAN: PV name"))

    @property
    def name(self) -> str:
        """The PV name."""
        # decode_string inlined: a server reads one per channel it connects.
        return str(self[6], "utf-8", "surrogateescape").partition("\0")[0]


class CreateChanResponse(Command):
    """CREATE_CHAN (18) from a server: the channel's native type and count."""

    __slots__ = ()
    ID = CommandId.CREATE_CHAN
    REQUEST = False
    FIELDS = ("data_type", "data_count", "cid", "sid")
    data_type = property(itemgetter(2), doc="The PV's native DBR type (0-6).")
    data_count = property(itemgetter(3), doc="The PV's native element count.")
    cid = property(itemgetter(4), doc="Client's channel id.")
    sid = property(itemgetter(5), doc="Server's channel id.")

    def __new__(cls, data_type: int, data_count: int, cid: int, sid: int) -> Any:
        if (
            (type(data_type) is ChannelType or type(data_type) is int)
            and type(data_count) is int
            and type(cid) is int
            and type(sid) is int
            and 0 <= data_type <= 6  # a native type
            and 0 <= data_count < 0xFFFF
            and 0 <= cid <= _UINT32
            and 0 <= sid <= _UINT32
        ):
            # A server sends one per channel it connects: built in place.
            data_type = int(data_type)
            wire = _pack_header(18, 0, data_type, data_count, cid, sid)
            return _new(cls, (18, 0, data_type, data_count, cid, sid, b"", wire))
        data_type = _check_data_type(data_type, "CREATE_CHAN response")
        if data_type > ChannelType.DOUBLE:
            raise LocalProtocolError(f"CREATE_CHAN: {data_type!r} is not a native type")
        _check_uint(data_count, 32, "data_count", "CREATE_CHAN response")
        _check_uint(cid, 32, "cid", "CREATE_CHAN response")
        _check_uint(sid, 32, "sid", "CREATE_CHAN response")
        return cls._build(int(data_type), data_count, cid, sid)


class CreateChFailResponse(Command):
    """CREATE_CH_FAIL (26): the server cannot create the channel."""

    __slots__ = ()
    ID = CommandId.CREATE_CH_FAIL
    REQUEST = False
    FIELDS = ("cid",)
    cid = property(itemgetter(4), doc="Client's channel id.")

    def __new__(cls, cid: int) -> Any:
        return cls._build(0, 0, _check_uint(cid, 32, "cid", "CREATE_CH_FAIL"))


class ServerDisconnResponse(Command):
    """SERVER_DISCONN (27): the server dropped the channel (PV went away)."""

    __slots__ = ()
    ID = CommandId.SERVER_DISCONN
    REQUEST = False
    FIELDS = ("cid",)
    cid = property(itemgetter(4), doc="Client's channel id.")

    def __new__(cls, cid: int) -> Any:
        return cls._build(0, 0, _check_uint(cid, 32, "cid", "SERVER_DISCONN"))


class AccessRightsResponse(Command):
    """ACCESS_RIGHTS (22): the client's current rights on a channel."""

    __slots__ = ()
    ID = CommandId.ACCESS_RIGHTS
    REQUEST = False
    FIELDS = ("cid", "access_rights")
    cid = property(itemgetter(4), doc="Client's channel id.")

    def __new__(cls, cid: int, access_rights: int) -> Any:
        if (
            (type(access_rights) is AccessRights or type(access_rights) is int)
            and type(cid) is int
            and 0 <= cid <= _UINT32
            and 0 <= access_rights <= 3
        ):
            # One per channel a server connects (rights are 0-3): built in place.
            access_rights = int(access_rights)
            wire = _pack_header(22, 0, 0, 0, cid, access_rights)
            return _new(cls, (22, 0, 0, 0, cid, access_rights, b"", wire))
        _check_uint(cid, 32, "cid", "ACCESS_RIGHTS")
        _check_uint(int(access_rights), 32, "access_rights", "ACCESS_RIGHTS")
        return cls._build(0, 0, cid, int(access_rights))

    @property
    def access_rights(self) -> AccessRights:
        """Read and write bits (other bits are reserved and dropped)."""
        return AccessRights(self[5] & AccessRights.READ_WRITE)


class ClearChannelRequest(Command):
    """CLEAR_CHANNEL (12) from a client: close a channel."""

    __slots__ = ()
    ID = CommandId.CLEAR_CHANNEL
    REQUEST = True
    FIELDS = ("sid", "cid")
    sid = property(itemgetter(4), doc="Server's channel id.")
    cid = property(itemgetter(5), doc="Client's channel id.")

    def __new__(cls, sid: int, cid: int) -> Any:
        _check_uint(sid, 32, "sid", cls.ID.name)
        _check_uint(cid, 32, "cid", cls.ID.name)
        return cls._build(0, 0, sid, cid)


class ClearChannelResponse(ClearChannelRequest):
    """CLEAR_CHANNEL (12) from a server: the channel is closed."""

    __slots__ = ()
    REQUEST = False


#: Wire classes by direction, indexed by command number (None: not legal).
def _table(classes: Iterable[type[Command]]) -> tuple[type[Command] | None, ...]:
    table: list[type[Command] | None] = [None] * (max(CommandId) + 1)
    for cls in classes:
        assert table[cls.ID] is None, cls
        table[cls.ID] = cls
    return tuple(table)


REQUEST_CLASSES = _table(
    [
        VersionRequest,
        EventAddRequest,
        EventCancelRequest,
        ReadRequest,
        WriteRequest,
        SearchRequest,
        EventsOffRequest,
        EventsOnRequest,
        ReadSyncRequest,
        ClearChannelRequest,
        ReadNotifyRequest,
        CreateChanRequest,
        WriteNotifyRequest,
        ClientNameRequest,
        HostNameRequest,
        EchoRequest,
        RepeaterRegisterRequest,
    ]
)
RESPONSE_CLASSES = _table(
    [
        VersionResponse,
        EventAddResponse,
        SearchResponse,
        ErrorResponse,
        ClearChannelResponse,
        RsrvIsUpResponse,
        NotFoundResponse,
        ReadNotifyResponse,
        RepeaterConfirmResponse,
        CreateChanResponse,
        WriteNotifyResponse,
        AccessRightsResponse,
        EchoResponse,
        CreateChFailResponse,
        ServerDisconnResponse,
    ]
)
#: Commands that carry DBR data whose size the parser checks.
DATA_CLASSES: frozenset[type[Command]] = frozenset(
    {ReadNotifyResponse, EventAddResponse, WriteRequest, WriteNotifyRequest}
)
#: Commands the specification retired; never legal in either direction.
OBSOLETE_COMMANDS = frozenset(
    {CommandId.SNAPSHOT, CommandId.BUILD, CommandId.READ_BUILD, CommandId.SIGNAL}
)

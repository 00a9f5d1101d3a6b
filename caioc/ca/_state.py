"""The CA state machines, as data.

Everything that decides whether a command is legal at a given moment lives
in the tables of this module; the circuit and broadcaster classes only look
them up. Each table maps a state to the commands allowed in it and the state
each leads to. A (state, command) pair missing from a table is a protocol
error: a :class:`LocalProtocolError` when we were about to send it, a
:class:`RemoteProtocolError` when the peer sent it. ``describe()`` writes the
tables out as Graphviz ``dot`` for the docs.

Three machines:

* **circuit** (TCP, one per client-server pair and priority): each side's
  first command must be VERSION; after it, that side may send any command
  of its direction that CA defines over TCP. Both sides send VERSION at
  once on connect, without waiting for each other (CA_V411).
* **channel** (one per channel on a circuit, the same table in both roles:
  a command moves the channel the same way whoever sends it).
* **broadcaster** (UDP: searches, beacons and the repeater), per role.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from ._commands import (
    AccessRightsResponse,
    ClearChannelRequest,
    ClearChannelResponse,
    ClientNameRequest,
    Command,
    CreateChanRequest,
    CreateChanResponse,
    CreateChFailResponse,
    EchoRequest,
    EchoResponse,
    ErrorResponse,
    EventAddRequest,
    EventAddResponse,
    EventCancelRequest,
    EventCancelResponse,
    EventsOffRequest,
    EventsOnRequest,
    HostNameRequest,
    NotFoundResponse,
    ReadNotifyRequest,
    ReadNotifyResponse,
    ReadRequest,
    ReadSyncRequest,
    RepeaterConfirmResponse,
    RepeaterRegisterRequest,
    RsrvIsUpResponse,
    SearchRequest,
    SearchResponse,
    ServerDisconnResponse,
    VersionRequest,
    VersionResponse,
    WriteNotifyRequest,
    WriteNotifyResponse,
    WriteRequest,
)
from ._constants import Role

__all__ = [
    "BROADCASTER_TRANSITIONS",
    "CHANNEL_TRANSITIONS",
    "CIRCUIT_TRANSITIONS",
    "BroadcasterState",
    "ChannelState",
    "CircuitState",
    "describe",
]

Table = Mapping[enum.Enum, Mapping[type[Command], enum.Enum]]


class CircuitState(enum.Enum):
    """One side of a virtual circuit."""

    # Members are singletons: identity hashing is exact, and far cheaper than
    # Enum's hash of the name on the per-message path of the state machines.
    __hash__ = object.__hash__

    #: Nothing sent yet: the first command must be VERSION.
    SEND_VERSION = "send_version"
    CONNECTED = "connected"
    #: The TCP connection is gone; nothing more may pass.
    DISCONNECTED = "disconnected"


class ChannelState(enum.Enum):
    """A channel, as both ends see it."""

    # Members are singletons: identity hashing is exact, and far cheaper than
    # Enum's hash of the name on the per-message path of the state machines.
    __hash__ = object.__hash__

    #: The client made the channel object but has not asked the server.
    SEND_CREATE_CHAN_REQUEST = "send_create_chan_request"
    AWAIT_CREATE_CHAN_RESPONSE = "await_create_chan_response"
    CONNECTED = "connected"
    #: CLEAR_CHANNEL requested; replies already in flight may still come.
    MUST_CLOSE = "must_close"
    CLOSED = "closed"
    #: The server refused the channel (CREATE_CH_FAIL or ERROR).
    FAILED = "failed"


class BroadcasterState(enum.Enum):
    """The UDP side of a client, server or repeater."""

    # Members are singletons: identity hashing is exact, and far cheaper than
    # Enum's hash of the name on the per-message path of the state machines.
    __hash__ = object.__hash__

    #: A client that has not registered with the repeater (it may search).
    UNREGISTERED = "unregistered"
    #: REPEATER_REGISTER sent; waiting for REPEATER_CONFIRM.
    AWAIT_REPEATER_CONFIRM = "await_repeater_confirm"
    REGISTERED = "registered"
    #: Servers and repeaters have a single state.
    SERVING = "serving"


_CLIENT_TCP = (
    EventAddRequest,
    EventCancelRequest,
    ReadRequest,  # deprecated: legal to receive, so the server can refuse it
    WriteRequest,
    SearchRequest,  # TCP search (CA_V412), used with name servers
    EventsOffRequest,
    EventsOnRequest,
    ReadSyncRequest,  # deprecated, as READ
    ClearChannelRequest,
    ReadNotifyRequest,
    CreateChanRequest,
    WriteNotifyRequest,
    ClientNameRequest,
    HostNameRequest,
    EchoRequest,
)
_SERVER_TCP = (
    EventAddResponse,
    EventCancelResponse,
    SearchResponse,
    NotFoundResponse,
    ErrorResponse,
    ClearChannelResponse,
    ReadNotifyResponse,
    CreateChanResponse,
    WriteNotifyResponse,
    AccessRightsResponse,
    EchoResponse,
    CreateChFailResponse,
    ServerDisconnResponse,
)

#: sender role -> that side's state -> command -> that side's next state.
CIRCUIT_TRANSITIONS: Mapping[Role, Table] = {
    Role.CLIENT: {
        CircuitState.SEND_VERSION: {VersionRequest: CircuitState.CONNECTED},
        CircuitState.CONNECTED: dict.fromkeys(_CLIENT_TCP, CircuitState.CONNECTED),
        CircuitState.DISCONNECTED: {},
    },
    Role.SERVER: {
        CircuitState.SEND_VERSION: {VersionResponse: CircuitState.CONNECTED},
        CircuitState.CONNECTED: dict.fromkeys(_SERVER_TCP, CircuitState.CONNECTED),
        CircuitState.DISCONNECTED: {},
    },
}

_IN_FLIGHT_REPLIES = (
    ReadNotifyResponse,
    WriteNotifyResponse,
    EventAddResponse,
    EventCancelResponse,
    AccessRightsResponse,
    ErrorResponse,
)

#: channel state -> command (either direction) -> next channel state.
CHANNEL_TRANSITIONS: Table = {
    ChannelState.SEND_CREATE_CHAN_REQUEST: {
        CreateChanRequest: ChannelState.AWAIT_CREATE_CHAN_RESPONSE,
    },
    ChannelState.AWAIT_CREATE_CHAN_RESPONSE: {
        # rsrv sends the access rights just before the CREATE_CHAN reply.
        AccessRightsResponse: ChannelState.AWAIT_CREATE_CHAN_RESPONSE,
        CreateChanResponse: ChannelState.CONNECTED,
        CreateChFailResponse: ChannelState.FAILED,
        ErrorResponse: ChannelState.FAILED,
        ServerDisconnResponse: ChannelState.CLOSED,
    },
    ChannelState.CONNECTED: {
        **dict.fromkeys(
            (
                AccessRightsResponse,
                ReadNotifyRequest,
                ReadNotifyResponse,
                ReadRequest,
                WriteRequest,
                WriteNotifyRequest,
                WriteNotifyResponse,
                EventAddRequest,
                EventAddResponse,
                EventCancelRequest,
                EventCancelResponse,
                ErrorResponse,
            ),
            ChannelState.CONNECTED,
        ),
        ClearChannelRequest: ChannelState.MUST_CLOSE,
        ServerDisconnResponse: ChannelState.CLOSED,
    },
    ChannelState.MUST_CLOSE: {
        **dict.fromkeys(_IN_FLIGHT_REPLIES, ChannelState.MUST_CLOSE),
        ClearChannelResponse: ChannelState.CLOSED,
        ServerDisconnResponse: ChannelState.CLOSED,
    },
    ChannelState.CLOSED: {},
    ChannelState.FAILED: {},
}

_CLIENT_UDP = (
    VersionRequest,
    SearchRequest,
    VersionResponse,
    SearchResponse,
    NotFoundResponse,
    RsrvIsUpResponse,  # beacons, forwarded by the repeater
)


def _client_state(
    state: BroadcasterState,
    register: BroadcasterState,
    confirm: BroadcasterState | None,
) -> dict[type[Command], enum.Enum]:
    table: dict[type[Command], enum.Enum] = dict.fromkeys(_CLIENT_UDP, state)
    table[RepeaterRegisterRequest] = register
    if confirm is not None:
        table[RepeaterConfirmResponse] = confirm
    return table


#: our role -> our state -> command (sent or received) -> next state.
BROADCASTER_TRANSITIONS: Mapping[Role, Table] = {
    Role.CLIENT: {
        BroadcasterState.UNREGISTERED: _client_state(
            BroadcasterState.UNREGISTERED,
            register=BroadcasterState.AWAIT_REPEATER_CONFIRM,
            confirm=None,
        ),
        BroadcasterState.AWAIT_REPEATER_CONFIRM: _client_state(
            BroadcasterState.AWAIT_REPEATER_CONFIRM,
            register=BroadcasterState.AWAIT_REPEATER_CONFIRM,
            confirm=BroadcasterState.REGISTERED,
        ),
        # libca registers again from time to time; the repeater confirms
        # each time.
        BroadcasterState.REGISTERED: _client_state(
            BroadcasterState.REGISTERED,
            register=BroadcasterState.REGISTERED,
            confirm=BroadcasterState.REGISTERED,
        ),
    },
    Role.SERVER: {
        BroadcasterState.SERVING: dict.fromkeys(
            (
                VersionRequest,
                SearchRequest,
                VersionResponse,
                SearchResponse,
                NotFoundResponse,
                RsrvIsUpResponse,
            ),
            BroadcasterState.SERVING,
        ),
    },
    Role.REPEATER: {
        BroadcasterState.SERVING: dict.fromkeys(
            (RepeaterRegisterRequest, RepeaterConfirmResponse, RsrvIsUpResponse),
            BroadcasterState.SERVING,
        ),
    },
}

INITIAL_BROADCASTER_STATE = {
    Role.CLIENT: BroadcasterState.UNREGISTERED,
    Role.SERVER: BroadcasterState.SERVING,
    Role.REPEATER: BroadcasterState.SERVING,
}


def describe(table: Table, name: str) -> str:
    """The table as a Graphviz digraph (for the docs)."""
    lines = [f"digraph {name} {{", "  rankdir=LR;"]
    for state, moves in table.items():
        lines.append(f'  "{state.name}";')
        for cls, target in moves.items():
            lines.append(f'  "{state.name}" -> "{target.name}" [label="{cls.__name__}"];')
    lines.append("}")
    return "\n".join(lines)

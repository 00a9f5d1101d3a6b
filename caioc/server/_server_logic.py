"""What a CA server does, whatever library runs it: the shared server logic.

:class:`ServerLogic` holds the served PVs and the configuration, answers
searches (:meth:`ServerLogic.answer_datagram`), names channels, pushes
access-rights changes to circuits, binds the sockets (the CA port or, when
another IOC holds it, a free one) and keeps the beacons' schedule
(:class:`Beacons`). The asyncio, trio and curio servers subclass it and add
only their tasks and sockets' async wrappers.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._netif import broadcast_address_of, interfaces
from ..ca import (
    ADDRESS_FROM_SENDER,
    AlarmSeverity,
    Broadcaster,
    ChannelType,
    Command,
    NotFoundResponse,
    Role,
    RsrvIsUpResponse,
    SearchReply,
    SearchRequest,
    SearchResponse,
    SubscriptionMask,
    VersionRequest,
    VersionResponse,
    decode_scalar,
    search_response_datagram,
)
from ..ca import ProtocolError as _ProtocolError
from ._config import ServerConfig
from ._data import ChannelData
from ._served import MODIFIER_START, States

if TYPE_CHECKING:
    from ._access import AccessSecurity
    from ._circuit import CircuitLogic
    from ._served import ServedChannel

__all__ = ["FIRST_BEACON_INTERVAL", "Beacons", "ServerLogic"]

#: A VERSION message: 16 bytes of header, no payload.
_VERSION_SIZE = 16

log = logging.getLogger("caioc.server")

#: First beacon interval; it doubles up to the configured period.
FIRST_BEACON_INTERVAL = 0.02
#: Pending connections each TCP listener accepts before the kernel refuses.
LISTEN_BACKLOG = 100


class Beacons:
    """The beacons' schedule: a fast burst at start-up, then every period.

    ``next()`` returns the datagram to send now and how long to wait before
    the following one; the back-end sends it to :attr:`addresses`.
    """

    def __init__(self, server: ServerLogic) -> None:
        self.server = server
        self.addresses = server.beacon_addresses()
        self.interval = FIRST_BEACON_INTERVAL
        self.beacon_id = 0

    def next(self) -> tuple[bytes, float]:
        """(beacon datagram, seconds until the next beacon)."""
        beacon = bytes(RsrvIsUpResponse(self.server.tcp_port, self.beacon_id, 0))
        self.beacon_id = (self.beacon_id + 1) & 0xFFFFFFFF
        interval = self.interval
        self.interval = min(interval * 2, self.server.config.beacon_period)
        return beacon, interval

    @staticmethod
    def open_socket() -> socket.socket:
        """A non-blocking UDP socket that may send to broadcast addresses."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setblocking(False)
        return sock

    def send(self, sock: socket.socket, beacon: bytes) -> None:
        """Send ``beacon`` to every address (a full buffer or no route: next time)."""
        for address in self.addresses:
            with contextlib.suppress(OSError):
                sock.sendto(beacon, address)


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


class ServerLogic:
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
        #: (channel data, follower) of each .acf input PV served here.
        self._access_inputs: list[tuple[ServedChannel, _AccessInput]] = []
        #: Whether the inputs are followed (from serving() on).
        self._following_inputs = False
        if access_security is not None:
            access_security.on_change(self._rights_changed)
        self.circuits: set[CircuitLogic] = set()
        self.tcp_port = 0
        self._sid = 0
        #: Named states for the ``sync`` channel filter (epics-base's dbState).
        self.states = States()
        # The server's UDP side has one state: one broadcaster serves all.
        self._broadcaster = Broadcaster(Role.SERVER, self.config.max_array_bytes)

    def recheck_rights(self) -> None:
        """Work out every client's rights on every channel again; push those that changed.

        The server does this by itself when its access security rules or
        their inputs change; call it after changing what a PV's own
        ``access_rights`` answers (``read_only`` of a ChannelData, say).
        """
        for circuit in list(self.circuits):
            circuit.recheck_rights()

    def _rights_changed(self, groups: frozenset[str] | None) -> None:
        if groups is None and self._following_inputs:
            # The rules were re-read: their inputs may be new PVs, or old ones
            # feeding new inputs (which start invalid): follow them afresh.
            self._follow_access_inputs()
        self.recheck_rights()

    def _follow_access_inputs(self) -> None:
        """Feed the .acf's INP PVs that this server serves into its CALCs.

        Each is subscribed to anew, so it delivers its current value at once.
        """
        assert self.access_security is not None
        for followed, follower in self._access_inputs:
            followed.unsubscribe(follower)
        self._access_inputs = []
        self._following_inputs = True
        names = {
            name for inputs in self.access_security.inputs().values() for name in inputs.values()
        }
        for name in sorted(names):
            data = self.lookup(name)
            if data is None:
                log.warning("access security input %s is not served here: it stays invalid", name)
                continue
            follower = _AccessInput(self.access_security, name)
            self._access_inputs.append((data, follower))
            data.subscribe(follower)

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
        if data is not None or MODIFIER_START.search(name) is None:
            return data  # found, or a name with neither field, ``$`` nor filter
        # Loaded with the first decorated name, not at start-up.
        from ._filters import channel_for

        return channel_for(name, self.pvdb, self.states, dotless=self.dotless_modifiers)

    def search_reply(self, request: SearchRequest) -> Command | None:
        """What to answer a search with (None: stay silent)."""
        if self.lookup(request.name) is not None:
            return SearchResponse(self.tcp_port, ADDRESS_FROM_SENDER, request[4])
        if request.reply == SearchReply.DO_REPLY:
            return NotFoundResponse(request.cid, reply=SearchReply.DO_REPLY)
        return None

    def answer_datagram(self, data: bytes, address: tuple[str, int]) -> bytes | None:
        """The reply to a UDP datagram (searches), or None to stay silent."""
        if address[0] in self.config.ignore_addresses:
            return None
        if type(self).search_reply is ServerLogic.search_reply:
            try:
                searches, others = self._broadcaster.recv_searches(data)
            except _ProtocolError as error:
                log.debug("ignoring datagram from %s: %s", address, error)
                return None
            if not others or (
                len(others) == 1 and type(others[0]) is VersionRequest and data[:2] == b"\0\0"
            ):
                return self._reply_to_searches(searches, others)
        try:
            commands = self._broadcaster.recv(data)
        except _ProtocolError as error:
            log.debug("ignoring datagram from %s: %s", address, error)
            return None
        replies: list[bytes] = []
        answered = False  # only VERSIONs to send: stay silent
        search_reply = self.search_reply
        for command in commands:
            kind = type(command)
            if kind is SearchRequest:
                reply = search_reply(command)  # type: ignore[arg-type]
                if reply is not None:
                    replies.append(bytes(reply))
                    answered = True
            elif kind is VersionRequest:
                # data_type (priority) 1 says sequence_id is valid (CA_V411).
                replies.append(bytes(VersionResponse(command[2], 13, command[4])))
        return b"".join(replies) if answered else None

    def _reply_to_searches(
        self, searches: list[tuple[str, int, int, int]], others: list[Command]
    ) -> bytes | None:
        """answer_datagram for the usual datagram (at most one VERSION, first,
        then searches, from read_searches): the replies search_reply gives."""
        lookup = self.lookup
        # A plain PV name is one dict look-up (what lookup() tries first),
        # unless a subclass decides names its own way.
        plain = self.pvdb.get if type(self).lookup is ServerLogic.lookup else None
        port = self.tcp_port
        found: list[int] = []
        for name, cid, reply, _ in searches:
            if (plain is not None and plain(name) is not None) or lookup(name) is not None:
                found.append(cid)
            elif reply == SearchReply.DO_REPLY:
                break  # a NOT_FOUND among the replies: made one by one below
        else:
            # The usual datagram: the found ones' replies, packed together.
            if not found:
                return None
            if others:
                version = others[0]
                return search_response_datagram(
                    port, found, priority=version[2], sequence_id=version[4]
                )
            return search_response_datagram(port, found)[_VERSION_SIZE:]
        parts: list[bytes] = []
        if others:
            version = others[0]
            parts.append(bytes(VersionResponse(version[2], 13, version[4])))
        answered = False  # only a VERSION to send: stay silent
        for name, cid, reply, _ in searches:
            if (plain is not None and plain(name) is not None) or lookup(name) is not None:
                parts.append(bytes(SearchResponse(port, ADDRESS_FROM_SENDER, cid)))
                answered = True
            elif reply == SearchReply.DO_REPLY:
                parts.append(bytes(NotFoundResponse(cid, reply=SearchReply.DO_REPLY)))
                answered = True
        return b"".join(parts) if answered else None

    # -- sockets ----------------------------------------------------------------------

    def bind_tcp(self) -> list[socket.socket]:
        """Listening sockets on every interface; sets :attr:`tcp_port`.

        The configured port if free, else (another IOC on this host has it)
        one free port for all interfaces, as rsrv does: searches tell
        clients which.
        """
        port = self.config.port
        for attempt in (port, 0):
            listeners: list[socket.socket] = []
            try:
                for interface in self.config.interfaces:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    listeners.append(sock)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((interface, attempt))
                    sock.listen(LISTEN_BACKLOG)
                    sock.setblocking(False)
                    attempt = sock.getsockname()[1]
            except OSError as error:
                for sock in listeners:
                    sock.close()
                if attempt == 0:
                    raise
                log.info("TCP port %d is in use (%s); taking a free one", port, error)
                continue
            self.tcp_port = attempt
            return listeners
        raise AssertionError("unreachable: port 0 either binds or raises")

    def bind_udp(self) -> list[socket.socket]:
        """Search sockets on every interface and its broadcast address."""
        port = self.config.port or self.tcp_port  # "any port": searches go where circuits do
        sockets: list[socket.socket] = []
        try:
            for address in self._udp_addresses():
                # SO_REUSEADDR lets every IOC on the host bind the CA port; each
                # gets the broadcasts, which is how clients find them all.
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, port))
                sock.setblocking(False)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        return sockets

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

    def serving(self) -> None:
        """Once bound: follow access security's inputs and log where we serve."""
        if self.access_security is not None:
            self._follow_access_inputs()
        log.info(
            "serving %d PVs on TCP port %d, UDP port %d",
            len(self.pvdb),
            self.tcp_port,
            self.config.port or self.tcp_port,
        )

    def close_idle_circuits(self, now: float | None = None) -> int:
        """Close the circuits silent for more than ``config.idle_timeout`` s.

        Silent means no complete message: a peer that trickles bytes
        without ever finishing a command is as idle as one that sends
        nothing. Returns how many were closed.
        """
        timeout = self.config.idle_timeout
        if timeout <= 0:
            return 0
        now = time.monotonic() if now is None else now
        closed = 0
        for circuit in list(self.circuits):
            if now - circuit.last_heard > timeout:
                log.info("closing circuit from %s: idle for %.0f s", circuit.core.address, timeout)
                circuit.close()
                closed += 1
        return closed

    async def reap_idle_circuits(self, sleep: Callable[[float], Awaitable[object]]) -> None:
        """Run :meth:`close_idle_circuits` a few times per timeout, forever."""
        while True:
            await sleep(min(1.0, self.config.idle_timeout / 4))
            self.close_idle_circuits()

    def say_goodbye(self) -> None:
        """Tell every client its channels are gone (SERVER_DISCONN) and close."""
        for circuit in list(self.circuits):
            circuit.say_goodbye()

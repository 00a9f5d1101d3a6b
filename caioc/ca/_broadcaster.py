"""The UDP side of CA: name searches, beacons and the repeater.

A :class:`Broadcaster` is the sans-I/O end of one UDP socket. It parses
datagrams into checked commands (``recv``) and turns commands into one
datagram's bytes (``send``), following ``BROADCASTER_TRANSITIONS``. Which
address a datagram came from or goes to is the I/O layer's business.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from ._commands import (
    Command,
    RepeaterRegisterRequest,
    SearchRequest,
    SearchResponse,
    VersionRequest,
)
from ._constants import (
    CA_MINOR_PROTOCOL_REVISION,
    DEFAULT_MAX_ARRAY_BYTES,
    CommandId,
    Role,
    SearchReply,
)
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._framing import parse_datagram
from ._search import read_searches
from ._state import BROADCASTER_TRANSITIONS, INITIAL_BROADCASTER_STATE, BroadcasterState
from ._wire import HEADER

__all__ = ["Broadcaster"]

#: libca keeps one search datagram within an Ethernet frame (MAX_UDP_SEND).
MAX_SEARCH_DATAGRAM = 1024


class Broadcaster:
    """One UDP endpoint of a CA client, server or repeater."""

    def __init__(self, our_role: Role, max_payload: int = DEFAULT_MAX_ARRAY_BYTES) -> None:
        self.our_role = our_role
        self.state: BroadcasterState = INITIAL_BROADCASTER_STATE[our_role]
        self.max_payload = max_payload
        #: Client role: cid -> PV name of searches not yet answered.
        self.unanswered_searches: dict[int, str] = {}
        self._ids = itertools.count(1)
        self._sequence = itertools.count(1)

    def _apply(self, command: Command, sent: bool) -> None:
        table = BROADCASTER_TRANSITIONS[self.our_role][self.state]
        target = table.get(type(command))
        if target is None:
            verb = "send" if sent else "receive"
            text = (
                f"a {self.our_role.value} in state {self.state.name} may not {verb} "
                f"{type(command).__name__} over UDP"
            )
            error: ProtocolError = LocalProtocolError(text) if sent else RemoteProtocolError(text)
            error.command = command  # type: ignore[attr-defined]
            raise error
        self.state = target  # type: ignore[assignment]

    def send(self, *commands: Command) -> bytes:
        """Check ``commands`` and return them as one datagram."""
        for command in commands:
            self._apply(command, sent=True)
            if type(command) is SearchRequest:
                self.unanswered_searches[command[4]] = command.name
        return b"".join([bytes(command) for command in commands])

    def recv(self, data: bytes | bytearray | memoryview) -> list[Command]:
        """The checked commands of one received datagram.

        A repeater receives registrations from clients and beacons from
        servers on one socket; it tells them apart by the first command, as
        caRepeater does. An empty datagram is a registration from a client
        older than CA 4.x's REPEATER_REGISTER.
        """
        if self.our_role is Role.REPEATER:
            if len(data) == 0:
                return [RepeaterRegisterRequest(0)]
            first = int.from_bytes(bytes(data[:2]), "big") if len(data) >= HEADER.size else -1
            sender = Role.CLIENT if first == CommandId.REPEATER_REGISTER else Role.SERVER
        else:
            sender = Role.SERVER if self.our_role is Role.CLIENT else Role.CLIENT
        commands = parse_datagram(data, sender, self.max_payload)
        # _apply's checks with the table looked up once per state, not per
        # command: a search datagram holds dozens.
        tables = BROADCASTER_TRANSITIONS[self.our_role]
        table = tables[self.state]
        for command in commands:
            kind = type(command)
            target = table.get(kind)
            if target is None:
                self._apply(command, sent=False)  # raises, saying why
            elif target is not self.state:
                self.state = target  # type: ignore[assignment]
                table = tables[target]
            if kind is SearchResponse:
                self.unanswered_searches.pop(command[5], None)
        return commands

    def recv_searches(
        self, data: bytes | bytearray | memoryview
    ) -> tuple[list[tuple[str, int, int, int]], list[Command]]:
        """A server's :meth:`recv` in the batch form of :func:`read_searches`.

        The same checks as :meth:`recv` (and the same errors); the searches
        come as ``(name, cid, reply, version)``, the other commands (a
        datagram's VERSION) as objects.
        """
        if self.our_role is not Role.SERVER:
            raise LocalProtocolError("only a server receives search datagrams in batch form")
        searches, others = read_searches(data, self.max_payload)
        for command in others:
            self._apply(command, sent=False)
        if searches and SearchRequest not in BROADCASTER_TRANSITIONS[self.our_role][self.state]:
            name, cid, reply, version = searches[0]
            payload = name.encode("utf-8", "surrogateescape")
            first = SearchRequest.from_wire(len(payload), reply, version, cid, cid, payload)
            self._apply(first, sent=False)  # raises, saying why
        return searches, others

    # -- client helpers -------------------------------------------------------

    def new_search_id(self) -> int:
        """A fresh cid for a search."""
        return next(self._ids) & 0xFFFFFFFF

    def search(
        self,
        names: Iterable[str],
        reply: int = SearchReply.DONT_REPLY,
        cids: Iterable[int] | None = None,
    ) -> list[list[Command]]:
        """Searches for ``names``, packed into datagrams of at most 1 kB.

        Each datagram starts with a VERSION carrying a sequence number, as
        libca's do. Returns the commands per datagram; pass each list to
        :meth:`send`.
        """
        datagrams: list[list[Command]] = []
        current: list[Command] = []
        size = 0
        cid_source = iter(cids) if cids is not None else None
        for name in names:
            # A client retrying a search keeps the channel's cid: pass ``cids``.
            cid = next(cid_source) if cid_source is not None else self.new_search_id()
            search = SearchRequest(name, cid, CA_MINOR_PROTOCOL_REVISION, reply)
            if not current or size + len(search) > MAX_SEARCH_DATAGRAM:
                # data_type 1 says the sequence number is valid, as libca sets it
                version = VersionRequest(1, CA_MINOR_PROTOCOL_REVISION, next(self._sequence))
                current = [version]
                datagrams.append(current)
                size = len(version)
            current.append(search)
            size += len(search)
        return datagrams

    def register(self, client_address: str | int = "127.0.0.1") -> RepeaterRegisterRequest:
        """The REPEATER_REGISTER a client sends to its repeater."""
        return RepeaterRegisterRequest(client_address)

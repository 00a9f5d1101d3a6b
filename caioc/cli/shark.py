"""``caioc-shark``: Channel Access traffic in a packet capture, as commands.

Reads a pcap or pcapng capture from a file or stdin (``tcpdump -w - |
caioc-shark``) and prints one line per CA command: time, source ->
destination, and the command's repr; ``--format json`` prints one JSON
object per line instead.

TCP streams are reassembled per direction by sequence number (segments out
of order are held, bounded; retransmitted bytes are dropped) and split into
commands with the core's :class:`~caioc.ca.StreamParser`; datagrams go to
:func:`~caioc.ca.parse_datagram`. Which end is the server:

* TCP: the end that answered the SYN; else an end on a server port
  (``--server-port``, ``EPICS_CA_SERVER_PORT``, 5064) or one a search reply
  or beacon in the capture named; else what the first messages say
  (CLIENT_NAME comes from a client, ACCESS_RIGHTS from a server ...); else
  the lower port. A connection on no known port counts as CA only if its
  first bytes are a CA VERSION header.
* UDP: searches go to a server port and replies come from it; datagrams to
  the repeater port (``--repeater-port``, ``EPICS_CA_REPEATER_PORT``, 5065)
  are registrations (an empty one too) or beacons; datagrams to a client
  that searched or registered are the server's.

Lost bytes, garbage and captures that end early print an error line
(``!!``) for that stream; the stream picks up again at the next segment
that holds whole messages. Exit status: 0, or 1 if the input is not a
capture or the capture is cut short or corrupt.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import BinaryIO

from .. import ca
from ..ca import (
    REPEATER_PORT,
    SERVER_PORT,
    Broadcaster,
    Command,
    CommandId,
    RemoteProtocolError,
    Role,
    RsrvIsUpResponse,
    SearchRequest,
    SearchResponse,
    StreamParser,
    parse_datagram,
)
from ._pcap import (
    ACK,
    DEFAULT_MAX_PENDING,
    FIN,
    RST,
    SYN,
    CaptureError,
    PacketError,
    Reassembler,
    Segment,
    decode_packet,
    read_packets,
)
from ._shark_format import Endpoint, Event, Printer

__all__ = ["Event", "Shark", "main"]

#: Default largest payload accepted: CA peers allow what they are configured for.
DEFAULT_MAX_ARRAY_BYTES = 100_000_000
#: Bytes held per connection while it is unknown which end is the server.
_MAX_HELD = 64 << 10
#: Connections and learned endpoints remembered at once (oldest go first).
_MAX_CONNECTIONS = 4096
_MAX_ENDPOINTS = 4096

_COMMAND_CLASSES = [
    cls
    for cls in (getattr(ca, name) for name in ca.__all__)
    if isinstance(cls, type) and issubclass(cls, Command) and "ID" in vars(cls)
]
_REQUEST_IDS = {int(c.ID) for c in _COMMAND_CLASSES if c.REQUEST}
_RESPONSE_IDS = {int(c.ID) for c in _COMMAND_CLASSES if not c.REQUEST}
#: Commands only a client sends, and only a server sends.
_CLIENT_ONLY = frozenset(_REQUEST_IDS - _RESPONSE_IDS)
_SERVER_ONLY = frozenset(_RESPONSE_IDS - _REQUEST_IDS)
_HEADER = 16
_COMMAND_AND_SIZE = struct.Struct(">HH")
_FOUR_UINT16 = struct.Struct(">HHHH")
_UINT32 = struct.Struct(">I")


def guess_sender(data: bytes) -> Role | None:
    """Who sent these bytes (whole messages from the start), if their commands say."""
    offset = 0
    for _ in range(64):
        if offset + _HEADER > len(data):
            return None
        command, size = _COMMAND_AND_SIZE.unpack_from(data, offset)
        header = _HEADER
        if size == 0xFFFF and offset + 24 <= len(data):
            (size,) = _UINT32.unpack_from(data, offset + 16)
            header = 24
        if command in _CLIENT_ONLY:
            return Role.CLIENT
        if command in _SERVER_ONLY:
            return Role.SERVER
        if command in (CommandId.CREATE_CHAN, CommandId.WRITE_NOTIFY):
            return Role.CLIENT if size else Role.SERVER
        if command == CommandId.READ_NOTIFY:
            return Role.SERVER if size else Role.CLIENT
        offset += header + size
    return None


def looks_like_ca(data: bytes) -> bool:
    """Whether a TCP stream starting with ``data`` starts as CA does: a VERSION header."""
    if len(data) < _HEADER:
        return False
    command, size, priority, version = _FOUR_UINT16.unpack_from(data)
    return command == CommandId.VERSION and size == 0 and priority <= 99 and 0 < version < 64


# -- TCP ------------------------------------------------------------------------


class StreamDecoder:
    """Commands out of one direction's chunks, recovering after holes and garbage.

    Out of sync (after a hole, an error, or when the capture started inside
    the stream), a chunk is taken as the new start only if it holds whole
    messages and nothing else.
    """

    def __init__(self, sender: Role, max_payload: int, in_sync: bool) -> None:
        self.sender = sender
        self.max_payload = max_payload
        self.in_sync = in_sync
        self.parser = StreamParser(sender, max_payload)
        self._skipped = 0

    def feed(self, item: bytes | int) -> tuple[list[Command], list[str]]:
        """The commands completed by ``item`` and any errors to report."""
        if isinstance(item, int):
            errors = [f"{item} bytes of the stream are missing from the capture"]
            if self.parser.buffered:
                errors[0] += f" (dropping {self.parser.buffered} bytes of a partial message)"
            self._lose_sync(0)
            return [], errors
        if not self.in_sync:
            trial = StreamParser(self.sender, self.max_payload)
            trial.receive_data(item)
            commands, error = _parse(trial)
            if error is None and trial.buffered == 0 and _plausible(commands):
                notes = [f"skipped {self._skipped} bytes to reach a message boundary"]
                self.parser, self.in_sync = trial, True
                return commands, notes if self._skipped else []
            self._skipped += len(item)
            return [], []
        self.parser.receive_data(item)
        commands, error = _parse(self.parser)
        if error is None:
            return commands, []
        self._lose_sync(0)
        return commands, [f"{error}; looking for the next message boundary"]

    def finish(self) -> list[str]:
        """Errors to report when the stream ends."""
        if self.in_sync and self.parser.buffered:
            return [f"the stream ends inside a message ({self.parser.buffered} bytes)"]
        return []

    def _lose_sync(self, skipped: int) -> None:
        self.in_sync = False
        self._skipped = skipped
        self.parser = StreamParser(self.sender, self.max_payload)


def _plausible(commands: list[Command]) -> bool:
    """Whether commands found after losing sync are likely real, not bytes of a payload.

    Zeros parse as VERSION headers, and arrays hold plenty of them; a real
    VERSION always names a protocol version.
    """
    return bool(commands) and all(
        c.command != CommandId.VERSION or c.header_data_count for c in commands
    )


def _parse(parser: StreamParser) -> tuple[list[Command], RemoteProtocolError | None]:
    """Every complete command, and the error that stopped the parser if one did."""
    commands: list[Command] = []
    try:
        commands = parser.commands()
        if commands:
            # The parser hands on what came before an error; the next call raises it.
            commands += parser.commands()
    except RemoteProtocolError as error:
        return commands, error
    return commands, None


class _Connection:
    """Both directions of one TCP connection."""

    def __init__(self, max_pending: int) -> None:
        self.server: Endpoint | None = None
        self.is_ca: bool | None = None
        self.streams: dict[Endpoint, Reassembler] = {}
        self.decoders: dict[Endpoint, StreamDecoder] = {}
        self.held: list[tuple[float, Segment, bytes | int]] = []
        self.held_bytes = 0
        self.closing: set[Endpoint] = set()
        #: Closed (FIN both ways, RST): later segments are stragglers, ignored.
        self.closed = False
        self.max_pending = max_pending


class Shark:
    """Decode segments into :class:`Event` objects, handed to ``emit``."""

    def __init__(
        self,
        emit: Callable[[Event], None],
        server_ports: Iterable[int] = (SERVER_PORT,),
        repeater_ports: Iterable[int] = (REPEATER_PORT,),
        max_payload: int = DEFAULT_MAX_ARRAY_BYTES,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.emit = emit
        self.server_ports = frozenset(server_ports)
        self.repeater_ports = frozenset(repeater_ports)
        self.max_payload = max_payload
        self.max_pending = max_pending
        self.connections: dict[tuple[Endpoint, Endpoint], _Connection] = {}
        #: TCP servers named by search replies and beacons; UDP clients seen searching.
        self.tcp_servers: dict[Endpoint, None] = {}
        self.udp_clients: dict[Endpoint, None] = {}
        self.last_time: float | None = None
        #: Streams holding bytes behind a hole: (connection key, sender).
        self._waiting: dict[tuple[tuple[Endpoint, Endpoint], Endpoint], None] = {}

    # -- entry points ---------------------------------------------------------

    def feed(self, segment: Segment) -> None:
        """Take one decoded packet."""
        self.last_time = segment.time
        if self._waiting:
            self._expire(segment.time)
        if segment.transport == "udp":
            self._datagram(segment)
        else:
            self._segment(segment)

    def _expire(self, time: float) -> None:
        """Give up the holes that streams have waited behind for too long."""
        for key, source in list(self._waiting):
            connection = self.connections.get(key)
            stream = connection.streams.get(source) if connection is not None else None
            if connection is None or stream is None:
                del self._waiting[key, source]
                continue
            destination = key[1] if source == key[0] else key[0]
            probe = Segment(time, "tcp", *source, *destination, b"")
            for item in stream.expire(time):
                self._deliver(connection, probe, item)
            if not stream.waiting:
                del self._waiting[key, source]

    def finish(self) -> None:
        """The capture ended: report what the streams still hold."""
        for key in list(self.connections):
            self._close(key, None)
        self.connections.clear()

    # -- UDP ------------------------------------------------------------------

    def _udp_sender(self, segment: Segment, data: bytes) -> Role | None:
        sport, dport = segment.sport, segment.dport
        if dport in self.repeater_ports:
            first = int.from_bytes(data[:2], "big") if len(data) >= _HEADER else None
            registration = not data or first == CommandId.REPEATER_REGISTER
            return Role.CLIENT if registration else Role.SERVER
        if sport in self.repeater_ports:
            return Role.SERVER
        to_server, from_server = dport in self.server_ports, sport in self.server_ports
        if to_server != from_server:
            return Role.CLIENT if to_server else Role.SERVER
        if segment.destination in self.udp_clients:
            return Role.SERVER
        if segment.source in self.udp_clients:
            return Role.CLIENT
        if to_server:  # server to server: let the commands say
            return guess_sender(data) or Role.CLIENT
        return None

    def _datagram(self, segment: Segment) -> None:
        data = segment.payload
        sender = self._udp_sender(segment, data)
        if sender is None:
            return
        event = Event(segment.time, "udp", segment.source, segment.destination, sender)
        if segment.missing:
            self._error(event, f"datagram cut short by the capture ({segment.missing} bytes lost)")
            return
        try:
            if not data:
                if segment.dport not in self.repeater_ports:
                    return  # nothing to show
                commands = Broadcaster(Role.REPEATER).recv(data)
                event.note = "empty datagram"
            else:
                commands = parse_datagram(data, sender, self.max_payload)
        except RemoteProtocolError as error:
            self._error(event, str(error))
            return
        for command in commands:
            self._learn(command, segment)
            self.emit(replace(event, command=command))

    def _learn(self, command: Command, segment: Segment) -> None:
        kind = type(command)
        if kind is SearchRequest or command.command == CommandId.REPEATER_REGISTER:
            _remember(self.udp_clients, segment.source)
        elif kind is SearchResponse:
            assert isinstance(command, SearchResponse)
            host = command.ip if command.ip not in ("255.255.255.255", "0.0.0.0") else segment.src
            _remember(self.tcp_servers, (host, command.port))
        elif kind is RsrvIsUpResponse:
            assert isinstance(command, RsrvIsUpResponse)
            host = command.address if command.address != "0.0.0.0" else segment.src
            _remember(self.tcp_servers, (host, command.server_port))

    # -- TCP ------------------------------------------------------------------

    def _segment(self, segment: Segment) -> None:
        key = (segment.source, segment.destination)
        if key[0] > key[1]:
            key = (key[1], key[0])
        connection = self.connections.get(key)
        syn, ack = bool(segment.flags & SYN), bool(segment.flags & ACK)
        if connection is not None and syn and not ack:
            stream = connection.streams.get(segment.source)
            if connection.closed or (stream is not None and stream.isn != segment.seq):
                self._close(key, segment.time)  # the 4-tuple is used again
                del self.connections[key]
                connection = None
        if connection is None:
            if len(self.connections) >= _MAX_CONNECTIONS:
                # Forget the oldest closed connection, else the oldest one.
                closed = (k for k, c in self.connections.items() if c.closed)
                oldest = next(closed, next(iter(self.connections)))
                self._close(oldest, segment.time)
                del self.connections[oldest]
            connection = self.connections[key] = _Connection(self.max_pending)
        elif connection.closed:
            return
        if syn:
            connection.server = segment.destination if not ack else segment.source
        stream = connection.streams.get(segment.source)
        if stream is None:
            stream = connection.streams[segment.source] = Reassembler(connection.max_pending)
        items = stream.add(segment.seq, segment.payload, syn, segment.missing, segment.time)
        if connection.is_ca is None and items:
            connection.is_ca = self._is_ca(connection, segment, items[0])
        if connection.is_ca:
            for item in items:
                self._deliver(connection, segment, item)
            if stream.waiting:
                self._waiting[key, segment.source] = None
        if segment.flags & RST:
            self._close(key, segment.time)
        elif segment.flags & FIN:
            connection.closing.add(segment.source)
            if len(connection.closing) == 2:
                self._close(key, segment.time)

    def _is_ca(self, connection: _Connection, segment: Segment, first: bytes | int) -> bool:
        ends = (segment.source, segment.destination)
        if connection.server is None:
            known = [end for end in ends if end[1] in self.server_ports or end in self.tcp_servers]
            if len(known) == 1:
                connection.server = known[0]
        if connection.server is not None and (
            connection.server[1] in self.server_ports or connection.server in self.tcp_servers
        ):
            return True
        return isinstance(first, bytes) and looks_like_ca(first)

    def _deliver(self, connection: _Connection, segment: Segment, item: bytes | int) -> None:
        if connection.server is None:
            if isinstance(item, bytes):
                guess = guess_sender(item)
                if guess is not None:
                    client = guess is Role.CLIENT
                    connection.server = segment.destination if client else segment.source
            if connection.server is None:
                size = len(item) if isinstance(item, bytes) else 0
                if connection.held_bytes + size <= _MAX_HELD:
                    connection.held.append((segment.time, segment, item))
                    connection.held_bytes += size
                    return
                connection.server = _lower_port(segment.source, segment.destination)
            self._replay(connection)
        self._decode(connection, segment.time, segment, item)

    def _replay(self, connection: _Connection) -> None:
        held, connection.held, connection.held_bytes = connection.held, [], 0
        for time, segment, item in held:
            self._decode(connection, time, segment, item)

    def _decode(
        self, connection: _Connection, time: float, segment: Segment, item: bytes | int
    ) -> None:
        source = segment.source
        decoder = connection.decoders.get(source)
        if decoder is None:
            sender = Role.SERVER if source == connection.server else Role.CLIENT
            in_sync = connection.streams[source].from_start
            decoder = StreamDecoder(sender, self.max_payload, in_sync)
            connection.decoders[source] = decoder
        commands, errors = decoder.feed(item)
        event = Event(time, "tcp", source, segment.destination, decoder.sender)
        for command in commands:
            self.emit(replace(event, command=command))
        for error in errors:
            self._error(event, error)

    def _close(self, key: tuple[Endpoint, Endpoint], time: float | None) -> None:
        connection = self.connections[key]
        if connection.closed:
            return
        connection.closed = True
        if time is None:
            time = self.last_time
        if not connection.is_ca:
            return
        for source, stream in connection.streams.items():
            destination = key[1] if source == key[0] else key[0]
            probe = Segment(time or 0.0, "tcp", *source, *destination, b"")
            for item in stream.flush():
                self._deliver(connection, probe, item)
        if connection.held:
            first = connection.held[0][1]
            connection.server = _lower_port(first.source, first.destination)
            self._replay(connection)
        for source, decoder in connection.decoders.items():
            destination = key[1] if source == key[0] else key[0]
            for error in decoder.finish():
                self._error(Event(time, "tcp", source, destination, decoder.sender), error)
        # A tombstone: later stragglers of this connection are recognised and ignored.
        connection.streams, connection.decoders = {}, {}

    def _error(self, event: Event, message: str) -> None:
        self.emit(replace(event, error=message))


def _remember(table: dict[Endpoint, None], endpoint: Endpoint) -> None:
    table.pop(endpoint, None)
    table[endpoint] = None
    if len(table) > _MAX_ENDPOINTS:
        del table[next(iter(table))]


def _lower_port(a: Endpoint, b: Endpoint) -> Endpoint:
    """The likelier server of two ends: clients use high, ephemeral ports."""
    return a if a[1] < b[1] else b


# -- command line -------------------------------------------------------------------


def _ports_from_environment(names: Sequence[str], default: int) -> list[int]:
    ports = [default]
    for name in names:
        text = os.environ.get(name, "").strip()
        if text.isdigit() and 0 < int(text) < 65536:
            ports.append(int(text))
    return ports


def decode_capture(stream: BinaryIO, shark: Shark, printer: Printer, live: bool = False) -> int:
    """Run a capture through ``shark``; 0, or 1 if the capture was unreadable."""
    status = 0
    try:
        for frame in read_packets(stream):
            try:
                segment = decode_packet(frame)
            except PacketError as error:
                printer(Event(frame.time, "ip", None, None, error=f"malformed packet: {error}"))
                continue
            if segment is not None:
                try:
                    shark.feed(segment)
                except Exception as error:  # a bug must not end a long capture
                    message = f"internal error: {type(error).__name__}: {error}"
                    printer(
                        Event(
                            frame.time,
                            segment.transport,
                            segment.source,
                            segment.destination,
                            error=message,
                        )
                    )
            if live:
                printer.out.flush()
    except CaptureError as error:
        printer(Event(None, "capture", None, None, error=str(error)))
        status = 1
    shark.finish()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``caioc-shark``."""
    parser = argparse.ArgumentParser(
        prog="caioc-shark",
        description="Print the Channel Access commands in a pcap/pcapng capture.",
        epilog="Live, on this host: tcpdump -i lo -U -w - | caioc-shark",
    )
    parser.add_argument("capture", nargs="?", default="-", help="capture file (default: stdin)")
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="one line per command, or one JSON object per line (default text)",
    )
    parser.add_argument(
        "--time",
        choices=("absolute", "relative", "epoch"),
        default="absolute",
        dest="clock",
        help="local date and time, seconds since the first packet, or POSIX seconds",
    )
    parser.add_argument(
        "--server-port",
        type=int,
        action="append",
        default=[],
        help="a CA server port besides EPICS_CA_SERVER_PORT and 5064 (repeatable)",
    )
    parser.add_argument(
        "--repeater-port",
        type=int,
        action="append",
        default=[],
        help="a repeater port besides EPICS_CA_REPEATER_PORT and 5065 (repeatable)",
    )
    parser.add_argument("--values", action="store_true", help="decode the data of reads/writes")
    parser.add_argument(
        "--max-array-bytes",
        type=int,
        default=DEFAULT_MAX_ARRAY_BYTES,
        help="largest payload accepted (default %(default)s)",
    )
    args = parser.parse_args(argv)
    server_ports = _ports_from_environment(
        ("EPICS_CA_SERVER_PORT", "EPICS_CAS_SERVER_PORT"), SERVER_PORT
    )
    repeater_ports = _ports_from_environment(("EPICS_CA_REPEATER_PORT",), REPEATER_PORT)
    printer = Printer(sys.stdout, args.format, args.clock, args.values)
    shark = Shark(
        printer,
        server_ports + args.server_port,
        repeater_ports + args.repeater_port,
        max_payload=args.max_array_bytes,
    )
    live = args.capture == "-"
    try:
        if live:
            if sys.stdin.isatty():
                parser.error("no capture on stdin: give a file, or pipe tcpdump -w - into me")
            return decode_capture(sys.stdin.buffer, shark, printer, live=True)
        try:
            stream = open(args.capture, "rb")  # noqa: SIM115
        except OSError as error:
            print(f"caioc-shark: {error}", file=sys.stderr)
            return 1
        with stream:
            return decode_capture(stream, shark, printer)
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())

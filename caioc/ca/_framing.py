"""Splitting received bytes into commands: TCP streams and UDP datagrams.

Both parsers read headers with ``struct.unpack_from`` straight out of the
received buffer and hand payloads on as ``memoryview`` slices of it, so no
payload is copied. A stream keeps the incomplete tail of one chunk until
the next arrives; when a header announces a large payload that has not
fully arrived, the parser allocates one buffer of exactly that size and
fills it as chunks come, instead of joining chunks over and over.

Sizes are checked against a limit *before* anything is allocated, so a
hostile header costs nothing but a :class:`RemoteProtocolError`.
"""

from __future__ import annotations

from typing import Final

from ._commands import DATA_CLASSES, OBSOLETE_COMMANDS, REQUEST_CLASSES, RESPONSE_CLASSES
from ._constants import DEFAULT_MAX_ARRAY_BYTES, CommandId, Role
from ._dbr import ChannelType, payload_size
from ._errors import RemoteProtocolError
from ._wire import EXTENDED_SIZES, HEADER, Command

__all__ = ["NEED_DATA", "StreamParser", "max_payload_for", "parse_datagram"]


class _NeedData:
    """Sentinel: no complete command yet; feed more bytes."""

    _instance: _NeedData | None = None

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()

_HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from
_unpack_sizes = EXTENDED_SIZES.unpack_from
#: libca and rsrv never accept less than this, whatever the configuration
#: says (caProto.h MAX_TCP).
_MIN_LIMIT = 16384
#: Payloads at least this large that arrive in pieces are gathered into one
#: preallocated buffer rather than by concatenation.
_LARGE_PAYLOAD = 1 << 16
_NUM_TYPES = len(ChannelType)


def max_payload_for(max_array_bytes: int = DEFAULT_MAX_ARRAY_BYTES) -> int:
    """The payload limit that EPICS_CA_MAX_ARRAY_BYTES implies.

    The limit covers the DBR metadata as well as the array, as epics-base's
    does; it is never below the 16 kB every CA peer must accept.
    """
    return max(int(max_array_bytes), _MIN_LIMIT)


def _classes_from(sender: Role) -> tuple[type[Command] | None, ...]:
    if sender is Role.CLIENT:
        return REQUEST_CLASSES
    if sender is Role.SERVER:
        return RESPONSE_CLASSES
    raise ValueError(f"no CA stream is sent by a {sender}")


def _describe(command: int) -> str:
    try:
        return f"{CommandId(command).name} ({command})"
    except ValueError:
        return f"unknown command {command}"


def _illegal(command: int, sender: Role) -> RemoteProtocolError:
    if command in OBSOLETE_COMMANDS:
        why = "it is obsolete and no CA 4.x peer sends it"
    elif command > max(CommandId):
        why = "CA 4.13 defines commands 0-27 only"
    else:
        why = f"a {sender.value} never sends it"
    return RemoteProtocolError(f"received {_describe(command)} from the {sender.value}: {why}")


def _check_data(cls: type[Command], size: int, data_type: int, data_count: int) -> None:
    if data_type >= _NUM_TYPES:
        raise RemoteProtocolError(
            f"received {_describe(cls.ID)} with data type {data_type}: DBR types are 0-38"
        )
    needed = payload_size(data_type, data_count)
    if size < needed:
        if size == 0 and cls.ID == CommandId.EVENT_ADD:
            # An EVENT_ADD response with no payload is the server's
            # confirmation of EVENT_CANCEL, echoing the subscription's header.
            return
        if data_type == ChannelType.STRING and data_count == 1 and size:
            # libca writes one DBR_STRING as its characters and a NUL only.
            return
        raise RemoteProtocolError(
            f"received {_describe(cls.ID)} with {size} payload bytes, but "
            f"{data_count} x {ChannelType(data_type).name} needs {needed}"
        )


class StreamParser:
    """Commands out of a TCP byte stream sent by ``sender``.

    ``receive_data(chunk)`` as bytes arrive, then ``next_command()`` until it
    returns :data:`NEED_DATA` (or ``commands()`` for all complete ones at
    once). A payload larger than ``max_payload`` bytes is a
    :class:`RemoteProtocolError`; after one, the parser refuses further use,
    because the stream can no longer be framed.
    """

    __slots__ = (
        "_buffer",
        "_classes",
        "_error",
        "_large",
        "_large_fill",
        "_large_header",
        "_offset",
        "_view",
        "max_payload",
        "sender",
    )

    def __init__(self, sender: Role, max_payload: int = DEFAULT_MAX_ARRAY_BYTES) -> None:
        self.sender = sender
        self.max_payload = max_payload_for(max_payload)
        self._classes = _classes_from(sender)
        self._buffer = b""
        self._view = memoryview(self._buffer)
        self._offset = 0
        self._large: bytearray | None = None
        self._large_fill = 0
        self._large_header: tuple[type[Command], int, int, int, int, int] | None = None
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as commands."""
        pending = len(self._buffer) - self._offset
        return pending + (self._large_fill if self._large is not None else 0)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take the next chunk of the stream (an empty chunk is ignored)."""
        if self._error is not None:
            raise self._error
        if not data:
            return
        large = self._large
        if large is not None:
            room = len(large) - self._large_fill
            take = data[:room]
            large[self._large_fill : self._large_fill + len(take)] = take
            self._large_fill += len(take)
            if len(data) <= room:
                return
            data = data[room:]
        if not isinstance(data, bytes):
            data = bytes(data)  # the caller may reuse its buffer
        if self._offset < len(self._buffer):
            data = self._buffer[self._offset :] + data
        self._buffer = data
        self._view = memoryview(data)
        self._offset = 0

    def next_command(self) -> Command | _NeedData:
        """The next complete command, or :data:`NEED_DATA`."""
        if self._error is not None:
            raise self._error
        if self._large is not None:
            return self._finish_large()
        buffer = self._buffer
        offset = self._offset
        available = len(buffer) - offset
        if available < _HEADER_SIZE:
            return NEED_DATA
        command, size, data_type, data_count, p1, p2 = _unpack_header(buffer, offset)
        start = offset + _HEADER_SIZE
        if size == 0xFFFF:
            if available < _HEADER_SIZE + 8:
                return NEED_DATA
            size, data_count = _unpack_sizes(buffer, start)
            start += 8
        classes = self._classes
        cls = classes[command] if command < len(classes) else None
        if cls is None:
            raise self._fail(_illegal(command, self.sender))
        if size > self.max_payload:
            raise self._fail(
                RemoteProtocolError(
                    f"received {_describe(command)} announcing {size} payload bytes, more than "
                    f"the {self.max_payload} allowed (EPICS_CA_MAX_ARRAY_BYTES)"
                )
            )
        if cls in DATA_CLASSES:
            try:
                _check_data(cls, size, data_type, data_count)
            except RemoteProtocolError as exc:
                raise self._fail(exc) from None
        end = start + size
        if end > len(buffer):
            if size >= _LARGE_PAYLOAD:
                self._start_large(cls, size, data_type, data_count, p1, p2, start)
            return NEED_DATA
        self._offset = end
        payload = self._view[start:end] if size else b""
        return cls.from_wire(size, data_type, data_count, p1, p2, payload)

    def commands(self) -> list[Command]:
        """Every complete command received so far, in order."""
        out: list[Command] = []
        append = out.append
        next_command = self.next_command
        while True:
            command = next_command()
            if command is NEED_DATA:
                return out
            append(command)  # type: ignore[arg-type]

    def _fail(self, error: RemoteProtocolError) -> RemoteProtocolError:
        self._error = error
        return error

    def _start_large(
        self,
        cls: type[Command],
        size: int,
        data_type: int,
        data_count: int,
        p1: int,
        p2: int,
        start: int,
    ) -> None:
        large = bytearray(size)
        have = self._view[start:]
        large[: len(have)] = have
        self._large = large
        self._large_fill = len(have)
        self._large_header = (cls, size, data_type, data_count, p1, p2)
        self._buffer = b""
        self._view = memoryview(b"")
        self._offset = 0

    def _finish_large(self) -> Command | _NeedData:
        large = self._large
        assert large is not None and self._large_header is not None
        if self._large_fill < len(large):
            return NEED_DATA
        cls, size, data_type, data_count, p1, p2 = self._large_header
        self._large = None
        self._large_header = None
        self._large_fill = 0
        # The buffer now belongs to the command alone; the view is read-only
        # so nobody mutates a payload another holder still sees.
        payload = memoryview(large).toreadonly()
        return cls.from_wire(size, data_type, data_count, p1, p2, payload)


def parse_datagram(
    data: bytes | bytearray | memoryview,
    sender: Role,
    max_payload: int = DEFAULT_MAX_ARRAY_BYTES,
) -> list[Command]:
    """Every command in one UDP datagram sent by ``sender``.

    A datagram must hold whole commands only; anything else (a truncated
    header or payload, a command illegal over UDP from that sender) is a
    :class:`RemoteProtocolError` naming the offset. Datagrams a repeater
    forwards are parsed as their original sender's.
    """
    if sender is Role.REPEATER:
        raise ValueError("a repeater forwards datagrams; parse them as their sender's")
    if not isinstance(data, bytes):
        data = bytes(data)
    classes = _classes_from(sender)
    limit = max_payload_for(max_payload)
    view = memoryview(data)
    total = len(data)
    offset = 0
    out: list[Command] = []
    while offset < total:
        if total - offset < _HEADER_SIZE:
            raise RemoteProtocolError(
                f"datagram from the {sender.value} ends {total - offset} bytes into a header "
                f"at offset {offset}"
            )
        command, size, data_type, data_count, p1, p2 = _unpack_header(data, offset)
        start = offset + _HEADER_SIZE
        if size == 0xFFFF:
            if total - start < 8:
                raise RemoteProtocolError(
                    f"datagram from the {sender.value} ends inside an extended header at "
                    f"offset {offset}"
                )
            size, data_count = _unpack_sizes(data, start)
            start += 8
        cls = classes[command] if command < len(classes) else None
        if cls is None:
            raise _illegal(command, sender)
        if size > limit or start + size > total:
            raise RemoteProtocolError(
                f"datagram from the {sender.value}: {_describe(command)} at offset {offset} "
                f"announces {size} payload bytes but {total - start} remain"
            )
        if cls in DATA_CLASSES:
            _check_data(cls, size, data_type, data_count)
        end = start + size
        payload = view[start:end] if size else b""
        out.append(cls.from_wire(size, data_type, data_count, p1, p2, payload))
        offset = end
    return out

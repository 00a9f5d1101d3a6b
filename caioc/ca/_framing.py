"""Splitting received bytes into commands: TCP streams and UDP datagrams.

Both parsers read headers with ``struct.unpack_from`` straight out of the
received buffer. The stream parser hands payloads on as ``memoryview``
slices of it, so no payload is copied; a datagram's payloads are a few
dozen bytes, which ``parse_datagram`` copies out as ``bytes`` (cheaper
than a view at that size). A stream keeps the incomplete tail of one
chunk until the next arrives; when a header announces a large payload
that has not fully arrived, the parser allocates one buffer of exactly
that size and fills it as chunks come, instead of joining chunks over
and over.

Sizes are checked against a limit *before* anything is allocated, so a
hostile header costs nothing but a :class:`RemoteProtocolError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

import numpy as np

from ._commands import (
    DATA_CLASSES,
    OBSOLETE_COMMANDS,
    REQUEST_CLASSES,
    RESPONSE_CLASSES,
    ErrorResponse,
    EventAddRequest,
)
from ._constants import DEFAULT_MAX_ARRAY_BYTES, CommandId, Role
from ._dbr import METADATA_SIZES, VALUE_SIZES, ChannelType
from ._errors import RemoteProtocolError
from ._wire import EXTENDED_SIZES, HEADER, Command

__all__ = ["NEED_DATA", "StreamParser", "max_payload_for", "parse_datagram"]


class _NeedData:
    """Sentinel: no complete command yet; feed more bytes."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()

_HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from
_unpack_sizes = EXTENDED_SIZES.unpack_from
_new = tuple.__new__
#: libca and rsrv never accept less than this, whatever the configuration
#: says (caProto.h MAX_TCP).
_MIN_LIMIT = 16384
#: Payloads at least this large that arrive in pieces are gathered into one
#: preallocated buffer rather than by concatenation.
_LARGE_PAYLOAD = 1 << 13
_NUM_TYPES = len(ChannelType)
#: Entries of each direction's class table: one per command number.
_NUM_COMMANDS = len(REQUEST_CLASSES)


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
    needed = METADATA_SIZES[data_type] + data_count * VALUE_SIZES[data_type]
    if size < needed:
        if size == 0 and cls.ID == CommandId.EVENT_ADD:
            # Maybe the server's confirmation of EVENT_CANCEL, which echoes
            # the subscription's header; the circuit knows which it is.
            return
        if data_type == ChannelType.STRING and data_count == 1 and size:
            # libca writes one DBR_STRING as its characters and a NUL only.
            return
        raise RemoteProtocolError(
            f"received {_describe(cls.ID)} with {size} payload bytes, but "
            f"{data_count} x {ChannelType(data_type).name} needs {needed}"
        )


def _check_minimum(cls: type[Command], size: int, data_type: int, data_count: int) -> None:
    needed = _MINIMUM_PAYLOADS[cls]
    if size < needed:
        raise RemoteProtocolError(
            f"received {_describe(cls.ID)} with {size} payload bytes; it carries at least "
            f"{needed} ({_MINIMUM_WHY[cls]})"
        )


_MINIMUM_PAYLOADS: dict[type[Command], int] = {EventAddRequest: 16, ErrorResponse: HEADER.size}
_MINIMUM_WHY = {
    EventAddRequest: "the mon_info block: deadbands and the event mask",
    ErrorResponse: "the header of the request that failed",
}
#: Classes whose payload the parsers check, and how.
_CHECKS: dict[type[Command], Callable[[type[Command], int, int, int], None]] = {
    **dict.fromkeys(DATA_CLASSES, _check_data),
    **dict.fromkeys(_MINIMUM_PAYLOADS, _check_minimum),
}


#: Per datagram sender: the class of each command number, and the same
#: table with None for the classes whose payload the parsers check;
#: parse_datagram builds the others on its fast path.
_DATAGRAM_TABLES = {
    sender: (classes, tuple(None if cls in _CHECKS else cls for cls in classes))
    for sender, classes in ((Role.CLIENT, REQUEST_CLASSES), (Role.SERVER, RESPONSE_CLASSES))
}


def _canonical(size: int, data_count: int, extended: bool, count_field: int) -> bool:
    """Whether re-encoding these sizes gives back the header form received."""
    needs_extended = size >= 0xFFFF or data_count >= 0xFFFF
    return extended == needs_extended and (not extended or count_field == 0)


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
        self._large: memoryview | None = None
        self._large_fill = 0
        # (class, header values, header bytes, canonical?) of a large message
        self._large_header: tuple[type[Command], tuple[int, ...], bytes, bool] | None = None
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as commands."""
        pending = len(self._buffer) - self._offset
        if self._large_header is not None:
            pending += len(self._large_header[2]) + self._large_fill
        return pending

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take the next chunk of the stream (an empty chunk is ignored)."""
        if self._error is not None:
            raise self._error
        if not data:
            return
        large = self._large
        if large is not None:
            room = len(large) - self._large_fill
            take = memoryview(data)[:room]
            large[self._large_fill : self._large_fill + len(take)] = take
            self._large_fill += len(take)
            if len(data) <= room:
                return
            data = memoryview(data)[room:]
        if not isinstance(data, bytes):
            data = bytes(data)  # the caller may reuse its buffer
        if self._offset < len(self._buffer):
            data = self._buffer[self._offset :] + data
        self._buffer = data
        self._view = memoryview(data)
        self._offset = 0

    def next_command(self) -> Command | _NeedData:
        """The next complete command, or :data:`NEED_DATA`."""
        parsed = self._parse(1)
        return parsed[0] if parsed else NEED_DATA

    def commands(self) -> list[Command]:
        """Every complete command received so far, in order."""
        return self._parse(-1)

    def _parse(self, limit: int) -> list[Command]:
        """Up to ``limit`` commands (all if negative); the per-message hot loop."""
        if self._error is not None:
            raise self._error
        out: list[Command] = []
        try:
            self._parse_into(out, limit)
        except RemoteProtocolError as error:
            self._error = error
            if not out:
                raise
            # Hand on what arrived intact first; the next call raises.
        return out

    def _parse_into(self, out: list[Command], limit: int) -> None:
        if self._large is not None:
            done = self._finish_large()
            if done is None:
                return
            out.append(done)
            limit -= 1
        buffer = self._buffer
        view = self._view
        offset = self._offset
        total = len(buffer)
        classes = self._classes
        known = len(classes)
        max_payload = self.max_payload
        checks = _CHECKS
        check_data = _check_data
        num_types = _NUM_TYPES
        meta_sizes = METADATA_SIZES
        value_sizes = VALUE_SIZES
        append = out.append
        while limit and total - offset >= _HEADER_SIZE:
            command, size, data_type, data_count, p1, p2 = _unpack_header(buffer, offset)
            start = offset + _HEADER_SIZE
            canonical = data_count != 0xFFFF
            if size == 0xFFFF:
                if total - offset < _HEADER_SIZE + 8:
                    break
                count_field = data_count
                size, data_count = _unpack_sizes(buffer, start)
                start += 8
                canonical = _canonical(size, data_count, True, count_field)
            cls = classes[command] if command < known else None
            if cls is None:
                raise _illegal(command, self.sender)
            if size > max_payload:
                raise RemoteProtocolError(
                    f"received {_describe(command)} announcing {size} payload bytes, more "
                    f"than the {max_payload} allowed (EPICS_CA_MAX_ARRAY_BYTES)"
                )
            check = checks.get(cls)
            if check is not None and not (
                # _check_data's passing case, inlined: a data message whose
                # payload holds its count (the check call cost ~5 % per message)
                check is check_data
                and data_type < num_types
                and size >= meta_sizes[data_type] + data_count * value_sizes[data_type]
            ):
                check(cls, size, data_type, data_count)
            end = start + size
            if end > total:
                if size >= _LARGE_PAYLOAD:
                    header = (command, size, data_type, data_count, p1, p2)
                    self._start_large(cls, header, offset, start, canonical)
                    return
                break
            payload = view[start:end] if size else b""
            # A peer's odd but legal header form (an extended header for a
            # small message ...) is kept verbatim so it re-encodes exactly.
            wire = None if canonical else bytes(buffer[offset:end])
            append(_new(cls, (command, size, data_type, data_count, p1, p2, payload, wire)))
            offset = end
            limit -= 1
        self._offset = offset

    def _start_large(
        self,
        cls: type[Command],
        header: tuple[int, ...],
        offset: int,
        start: int,
        canonical: bool,
    ) -> None:
        # Uninitialised memory: every byte is about to be overwritten, so
        # zero-filling it first would be a wasted pass over the payload.
        large = memoryview(np.empty(header[1], dtype=np.uint8))  # type: ignore[arg-type]
        have = self._view[start:]
        large[: len(have)] = have
        self._large = large
        self._large_fill = len(have)
        self._large_header = (cls, header, bytes(self._buffer[offset:start]), canonical)
        self._buffer = b""
        self._view = memoryview(b"")
        self._offset = 0

    def _finish_large(self) -> Command | None:
        large = self._large
        assert large is not None and self._large_header is not None
        if self._large_fill < len(large):
            return None
        cls, header, raw_header, canonical = self._large_header
        self._large = None
        self._large_header = None
        self._large_fill = 0
        # The buffer now belongs to the command alone; the view is read-only
        # so nobody mutates a payload another holder still sees.
        payload = large.toreadonly()
        wire = None if canonical else raw_header + large.tobytes()
        return _new(cls, (*header, payload, wire))


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

    Payloads are ``bytes`` slices of the datagram, not views: at a few
    dozen bytes (a PV name) a copy is cheaper than a memoryview.
    """
    try:
        classes, unchecked = _DATAGRAM_TABLES[sender]
    except (KeyError, TypeError):
        if sender is Role.REPEATER:
            why = "a repeater forwards datagrams; parse them as their sender's"
        else:
            why = f"no CA datagram is sent by a {sender}"
        raise ValueError(why) from None
    if type(data) is not bytes:
        data = bytes(data)
    total = len(data)
    # A message ending within a datagram of at most 16 kB + a header has a
    # payload within any limit, and its size is not the extended-header
    # marker 0xFFFF: the fast path checks both with one comparison. Larger
    # datagrams (CA peers keep theirs within an Ethernet frame) take the
    # general path throughout.
    fast_end = total if total <= _MIN_LIMIT + _HEADER_SIZE else -1
    offset = 0
    out: list[Command] = []
    # Locals for the per-message loop: a search storm is thousands of these.
    append = out.append
    unpack = _unpack_header
    new = _new
    header_size = _HEADER_SIZE
    num_commands = _NUM_COMMANDS
    try:
        while offset < total:
            command, size, data_type, data_count, p1, p2 = unpack(data, offset)
            start = offset + header_size
            end = start + size
            cls = unchecked[command] if command < num_commands else None
            if cls is not None and end <= fast_end and data_count != 0xFFFF:
                # A class with no payload to check and a plain header: every
                # message of a search datagram, or of its answer.
                payload = data[start:end]
                append(new(cls, (command, size, data_type, data_count, p1, p2, payload, None)))
            else:
                command, end = _datagram_message(data, offset, sender, classes, max_payload)
                append(command)
            offset = end
    except struct.error:  # unpack_from: less than a header left
        raise RemoteProtocolError(
            f"datagram from the {sender.value} ends {total - offset} bytes into a header "
            f"at offset {offset}"
        ) from None
    return out


def _datagram_message(
    data: bytes,
    offset: int,
    sender: Role,
    classes: tuple[type[Command] | None, ...],
    max_payload: int,
) -> tuple[Command, int]:
    """parse_datagram's general case: the command at ``offset``, and its end.

    Extended headers, odd header forms, payloads to check, sizes beyond
    16 kB, illegal commands and truncated payloads.
    """
    total = len(data)
    command, size, data_type, data_count, p1, p2 = _unpack_header(data, offset)
    start = offset + _HEADER_SIZE
    if size == 0xFFFF:
        if total - start < 8:
            raise RemoteProtocolError(
                f"datagram from the {sender.value} ends inside an extended header at "
                f"offset {offset}"
            )
        count_field = data_count
        size, data_count = _unpack_sizes(data, start)
        start += 8
        verbatim = not _canonical(size, data_count, True, count_field)
    else:
        verbatim = data_count == 0xFFFF
    cls = classes[command] if command < _NUM_COMMANDS else None
    if cls is None:
        raise _illegal(command, sender)
    end = start + size
    if size > max_payload_for(max_payload) or end > total:
        raise RemoteProtocolError(
            f"datagram from the {sender.value}: {_describe(command)} at offset {offset} "
            f"announces {size} payload bytes but {total - start} remain"
        )
    check = _CHECKS.get(cls)
    if check is not None:
        check(cls, size, data_type, data_count)
    # An odd but legal header form is kept verbatim to re-encode exactly.
    wire = data[offset:end] if verbatim else None
    payload = data[start:end]
    return _new(cls, (command, size, data_type, data_count, p1, p2, payload, wire)), end

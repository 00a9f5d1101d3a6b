"""The CA message header and the base class every command shares.

Every message is a 16-byte header (command, payload size, data type, data
count, parameter 1, parameter 2; big-endian) optionally extended by two
32-bit sizes, followed by a payload padded to a multiple of 8 bytes
(spec "Message header" and "Large messages").

A command object *is* a tuple of the six header values, the payload and
an optional cache of the encoded message ``(command, payload_size,
data_type, data_count, parameter1, parameter2, payload, wire)``. A tuple
is the cheapest immutable object CPython offers, which keeps the
per-message path lean; each class then names the
header fields the way the specification does for that command (``sid``,
``ioid``, ``cid`` ...).

Classes are built two ways:

* ``SomeRequest(field=..., ...)`` validates its arguments and raises
  :class:`LocalProtocolError` on anything the protocol cannot carry;
* the parsers build them from received bytes without re-validating, but
  check what later code would trip over (the payload of a data message is
  long enough for its DBR type and count) and raise
  :class:`RemoteProtocolError` otherwise.

A command received from the wire re-encodes to exactly the bytes it came
from (``bytes(command)``), padding included.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from operator import itemgetter
from typing import Any, ClassVar

from ._constants import ECA, CommandId
from ._dbr import ChannelType
from ._errors import LocalProtocolError

__all__ = ["ADDRESS_FROM_SENDER", "Command", "ipv4_from_int", "ipv4_to_int"]

HEADER = struct.Struct(">HHHHII")
EXTENDED_HEADER = struct.Struct(">HHHHIIII")
_pack_header = HEADER.pack
EXTENDED_SIZES = struct.Struct(">II")
#: Header fields at or above this value need the extended header.
EXTENDED_THRESHOLD = 0xFFFF
_EVENT_ADD_PAYLOAD = struct.Struct(">fffHxx")
_SEARCH_RESPONSE_PAYLOAD = struct.Struct(">H6x")
_UINT16 = 0xFFFF
_UINT32 = 0xFFFFFFFF
_ZERO_PAD = (b"", b"\0" * 7, b"\0" * 6, b"\0" * 5, b"\0" * 4, b"\0" * 3, b"\0" * 2, b"\0")

#: SearchResponse / beacon address meaning "the address this came from".
ADDRESS_FROM_SENDER = _UINT32

Payload = bytes | memoryview


_BOUNDS = {1: 2, 16: 1 << 16, 32: 1 << 32}
#: Commands with smaller payloads are encoded as they are built.
_ENCODE_AT_ONCE = 1024


def ipv4_to_int(address: str | int) -> int:
    """A dotted IPv4 address (or an int already) as the 32-bit wire value."""
    if type(address) is str:
        return _dotted_to_int(address)
    if isinstance(address, int):
        if not 0 <= address <= _UINT32:
            raise LocalProtocolError(f"IPv4 address {address} is outside 0..2**32-1")
        return int(address)
    return _dotted_to_int(address)


@functools.lru_cache(maxsize=256)
def _dotted_to_int(address: str) -> int:
    # A server answers every search with the same few addresses: cache them.
    try:
        return int(ipaddress.IPv4Address(address))
    except ValueError as exc:
        raise LocalProtocolError(f"{address!r} is not an IPv4 address") from exc


@functools.lru_cache(maxsize=256)
def ipv4_from_int(value: int) -> str:
    """The dotted form of a 32-bit wire address."""
    return socket.inet_ntoa(value.to_bytes(4, "big"))


def pad_payload(payload: bytes | memoryview) -> bytes:
    """``payload`` zero-padded to a multiple of 8 bytes, as CA requires."""
    return b"".join((payload, _ZERO_PAD[len(payload) & 7]))


#: The terminating NUL and the zero padding after a string of n bytes.
_NUL_PAD = tuple(b"\0" * (1 + (-(n + 1) & 7)) for n in range(8))


def encode_string(text: str | bytes, what: str) -> bytes:
    """A NUL-terminated string payload, padded to 8 bytes."""
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
    if b"\0" in raw:
        raise LocalProtocolError(f"{what} {text!r} contains a NUL byte")
    return raw + _NUL_PAD[len(raw) & 7]


def decode_string(payload: Payload) -> str:
    """The text of a NUL-terminated (and padded) string payload."""
    # Decoding the whole payload straight from the view and cutting at the
    # first NUL costs one object less than copying it to bytes, cutting and
    # decoding (a name read per search). It gives the same text: no UTF-8
    # sequence contains a zero byte, so the NUL decodes to "\0" wherever it
    # is, and surrogateescape maps each byte of a sequence the NUL cuts
    # short to the same escape either way (tests/test_commands.py checks).
    return str(payload, "utf-8", "surrogateescape").partition("\0")[0]


def _plain_int(value: Any) -> Any:
    """An IntEnum member (ECA, ChannelType ...) as its int; anything else as is."""
    if type(value) is not int and isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return value


def _check_uint(value: int, bits: int, name: str, command: str) -> int:
    if type(value) is int and 0 <= value < _BOUNDS[bits]:
        return value  # the common case, before any isinstance work
    if not isinstance(value, int) or (isinstance(value, bool) and bits != 1):
        raise LocalProtocolError(f"{command}: {name} must be an int, not {value!r}")
    if not 0 <= value < (1 << bits):
        raise LocalProtocolError(f"{command}: {name}={value} does not fit in {bits} unsigned bits")
    return int(value)


def _check_data_type(data_type: int, command: str) -> ChannelType:
    if type(data_type) is ChannelType:
        return data_type
    try:
        return ChannelType(data_type)
    except ValueError:
        raise LocalProtocolError(f"{command}: {data_type!r} is not a DBR type (0-38)") from None


class Command(tuple):  # type: ignore[type-arg,unused-ignore]
    """Base of every CA message: ``(command, payload_size, data_type,
    data_count, parameter1, parameter2, payload, wire)``.

    ``wire`` is the whole encoded message when it was built in one go (the
    scalar fast path), else None; it never takes part in comparisons.

    Subclasses set :attr:`ID` (the command number) and :attr:`FIELDS` (the
    names shown by ``repr``). The raw header values stay reachable by their
    generic names for tools that decode any message.
    """

    __slots__ = ()

    ID: ClassVar[CommandId]
    #: ``ID`` as a plain int, which is what the tuple holds.
    ID_INT: ClassVar[int]
    #: True for messages a client sends, False for those a server sends.
    REQUEST: ClassVar[bool]
    #: Deprecated requests the core recognises so servers can refuse them.
    DEPRECATED: ClassVar[bool] = False
    FIELDS: ClassVar[tuple[str, ...]] = ()

    command = property(itemgetter(0), doc="The command number (header field 1).")
    payload_size = property(itemgetter(1), doc="Padded payload size in bytes.")
    header_data_type = property(itemgetter(2), doc="Raw header field 3.")
    header_data_count = property(itemgetter(3), doc="Raw header field 4.")
    parameter1 = property(itemgetter(4), doc="Raw header field 5.")
    parameter2 = property(itemgetter(5), doc="Raw header field 6.")
    payload = property(itemgetter(6), doc="The payload bytes, padding included.")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "ID" in cls.__dict__:
            cls.ID_INT = int(cls.ID)

    def __new__(cls, *args: Any, **kwargs: Any) -> Command:
        raise TypeError(f"{cls.__name__} cannot be built directly")  # pragma: no cover

    @classmethod
    def _build(
        cls,
        data_type: int = 0,
        data_count: int = 0,
        parameter1: int = 0,
        parameter2: int = 0,
        payload: Payload = b"",
    ) -> Any:
        # Constructors validate their own fields; this only assembles. A
        # command is built to be sent, so small ones are encoded right away
        # (item 7); large payloads are not duplicated and encode on demand.
        size = len(payload)
        wire = None
        if size < _ENCODE_AT_ONCE and data_count < EXTENDED_THRESHOLD:
            header = _pack_header(cls.ID_INT, size, data_type, data_count, parameter1, parameter2)
            wire = header + payload if size else header
        header_values = (cls.ID_INT, size, data_type, data_count, parameter1, parameter2)
        return tuple.__new__(cls, (*header_values, payload, wire))

    @classmethod
    def from_wire(
        cls,
        payload_size: int,
        data_type: int,
        data_count: int,
        parameter1: int,
        parameter2: int,
        payload: Payload,
        wire: bytes | None = None,
    ) -> Any:
        """Build from header values and payload as received (no validation).

        ``wire``, when given, must be the whole message already encoded;
        ``bytes()`` then returns it as it is.
        """
        return tuple.__new__(
            cls,
            (
                cls.ID_INT,
                payload_size,
                data_type,
                data_count,
                parameter1,
                parameter2,
                payload,
                wire,
            ),
        )

    @property
    def header(self) -> bytes:
        """The 16- or 24-byte header as sent on the wire."""
        command, size, data_type, data_count, p1, p2 = self[:6]
        if size >= EXTENDED_THRESHOLD or data_count >= EXTENDED_THRESHOLD:
            return EXTENDED_HEADER.pack(command, 0xFFFF, data_type, 0, p1, p2, size, data_count)
        return HEADER.pack(command, size, data_type, data_count, p1, p2)

    def buffers(self) -> tuple[bytes, Payload]:
        """Header and payload, for a vectored write without joining them."""
        return self.header, self[6]

    def __bytes__(self) -> bytes:
        wire = self[7]
        if wire is not None:
            return wire  # encoded in one go when it was built
        command, size, data_type, data_count, p1, p2, payload, _ = self
        if size >= EXTENDED_THRESHOLD or data_count >= EXTENDED_THRESHOLD:
            header = EXTENDED_HEADER.pack(command, 0xFFFF, data_type, 0, p1, p2, size, data_count)
        else:
            header = HEADER.pack(command, size, data_type, data_count, p1, p2)
        return header + payload if size else header

    def __len__(self) -> int:  # the wire length, not the tuple's
        size, data_count = self[1], self[3]
        extended = size >= EXTENDED_THRESHOLD or data_count >= EXTENDED_THRESHOLD
        return (24 if extended else 16) + size

    def __eq__(self, other: object) -> bool:
        # The cached wire bytes (item 7) are derived; compare the rest.
        return type(self) is type(other) and self[:7] == other[:7]

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((type(self), *self[:6], bytes(self[6])))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), tuple(self[1:6]), bytes(self[6]), self[7]))


def _rebuild(
    cls: type[Command],
    header: tuple[int, int, int, int, int],
    payload: bytes,
    wire: bytes | None = None,
) -> Command:
    size, data_type, data_count, p1, p2 = header
    return cls.from_wire(size, data_type, data_count, p1, p2, payload, wire)  # type: ignore[no-any-return,unused-ignore]


def _eca(code: int) -> int:
    """``code`` as an :class:`ECA` member when it is one, else unchanged."""
    try:
        return ECA(code)  # type: ignore[call-arg]  # lookup by value, not a new member
    except ValueError:
        return code

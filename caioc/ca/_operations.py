"""Reads, writes, subscriptions and errors: commands tied to a channel operation.

The data-carrying ones (READ_NOTIFY and EVENT_ADD responses, WRITE and
WRITE_NOTIFY requests) hold a DBR payload; its values and metadata are
decoded lazily as numpy views of the received bytes.
"""

from __future__ import annotations

import struct
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

from ._constants import ECA, CommandId, SubscriptionMask
from ._dbr import (
    METADATA_SIZES,
    VALUE_SIZES,
    ChannelType,
    decode_dbr,
    decode_scalar,
    decode_strings,
    encode_dbr,
    metadata_dict,
    payload_size,
    scalar_layout,
)
from ._errors import LocalProtocolError
from ._wire import (
    _ENCODE_AT_ONCE,
    EXTENDED_HEADER,
    EXTENDED_SIZES,
    HEADER,
    Command,
    Payload,
    _check_data_type,
    _check_uint,
    _eca,
    _plain_int,
    decode_string,
    encode_string,
    pad_payload,
)

__all__ = [
    "ErrorResponse",
    "EventAddRequest",
    "EventAddResponse",
    "EventCancelRequest",
    "EventCancelResponse",
    "ReadNotifyRequest",
    "ReadNotifyResponse",
    "ReadRequest",
    "WriteNotifyRequest",
    "WriteNotifyResponse",
    "WriteRequest",
]

_EVENT_ADD_PAYLOAD = struct.Struct(">fffHxx")
_LAST_TYPE = max(ChannelType)
_new = tuple.__new__
_pack_header = HEADER.pack
_UINT32 = 0xFFFFFFFF


class _ScalarWire(NamedTuple):
    """Header, metadata, one value and padding packed by one struct."""

    struct: struct.Struct
    size: int  # the padded payload size
    names: tuple[str, ...]
    zeros: tuple[int, ...]


def _scalar_wire(data_type: int) -> _ScalarWire | None:
    layout = scalar_layout(data_type)
    if layout is None:
        return None
    codes, names = layout
    size = payload_size(data_type, 1)
    padded = (size + 7) & ~7
    packer = struct.Struct(f"{HEADER.format}{codes}{padded - size}x")
    return _ScalarWire(packer, padded, names, (0,) * len(names))


#: Per DBR type, the one-struct encoder of a single element (or None).
_SCALAR_WIRE = tuple(_scalar_wire(data_type) for data_type in range(_LAST_TYPE + 1))
_STRING_SIZE = payload_size(ChannelType.STRING, 1)

# --- reads, writes and subscriptions -----------------------------------------


class _Operation(Command):
    """A header with a DBR type and count, a channel id and an operation id."""

    __slots__ = ()
    data_type = property(itemgetter(2), doc="Requested DBR type (0-38).")
    data_count = property(itemgetter(3), doc="Requested element count.")

    @classmethod
    def _checked(cls, data_type: int, data_count: int, p1: int, p2: int, payload: Payload) -> Any:
        if (
            type(data_type) is int
            and type(data_count) is int
            and type(p1) is int
            and type(p2) is int
            and 0 <= data_type <= _LAST_TYPE
            and 0 <= data_count <= _UINT32
            and 0 <= p1 <= _UINT32
            and 0 <= p2 <= _UINT32
        ):
            return _new(
                cls, (cls.ID_INT, len(payload), data_type, data_count, p1, p2, payload, None)
            )
        # The slow path: accept IntEnums, or say precisely what is wrong.
        name = cls.ID.name
        data_type = int(_check_data_type(data_type, name))
        data_count = _check_uint(data_count, 32, "data_count", name)
        p1 = _check_uint(p1, 32, cls.FIELDS[2], name)
        p2 = _check_uint(p2, 32, cls.FIELDS[3], name)
        return cls._build(data_type, data_count, p1, p2, payload)


class ReadNotifyRequest(_Operation):
    """READ_NOTIFY (15) from a client: read a channel once."""

    __slots__ = ()
    ID = CommandId.READ_NOTIFY
    REQUEST = True
    FIELDS = ("data_type", "data_count", "sid", "ioid")
    sid = property(itemgetter(4), doc="Server's channel id.")
    ioid = property(itemgetter(5), doc="Client's id for this read.")

    def __new__(cls, data_type: int, data_count: int, sid: int, ioid: int) -> Any:
        return cls._checked(data_type, data_count, sid, ioid, b"")


class ReadRequest(ReadNotifyRequest):
    """READ (3): deprecated since CA 4.4; recognised so servers can refuse it."""

    __slots__ = ()
    ID = CommandId.READ
    DEPRECATED = True


class EventCancelRequest(_Operation):
    """EVENT_CANCEL (2) from a client: end a subscription."""

    __slots__ = ()
    ID = CommandId.EVENT_CANCEL
    REQUEST = True
    FIELDS = ("data_type", "data_count", "sid", "subscriptionid")
    sid = property(itemgetter(4), doc="Server's channel id.")
    subscriptionid = property(itemgetter(5), doc="Client's subscription id.")

    def __new__(cls, data_type: int, data_count: int, sid: int, subscriptionid: int) -> Any:
        return cls._checked(data_type, data_count, sid, subscriptionid, b"")


class EventCancelResponse(EventCancelRequest):
    """The server's confirmation of EVENT_CANCEL.

    On the wire it is an EVENT_ADD (1) with no payload that echoes the
    subscription's header (sid in parameter 1), so a parser sees an
    :class:`EventAddResponse`; a client circuit that knows the
    subscription is being cancelled turns it into this class.
    """

    __slots__ = ()
    ID = CommandId.EVENT_ADD
    REQUEST = False


class WriteNotifyResponse(_Operation):
    """WRITE_NOTIFY (19) from a server: the put has completed (or failed)."""

    __slots__ = ()
    ID = CommandId.WRITE_NOTIFY
    REQUEST = False
    FIELDS = ("data_type", "data_count", "status", "ioid")
    ioid = property(itemgetter(5), doc="Client's id for this write.")

    def __new__(cls, data_type: int, data_count: int, status: int, ioid: int) -> Any:
        return cls._checked(data_type, data_count, int(status), ioid, b"")

    @property
    def status(self) -> int:
        """ECA status code (an :class:`ECA` member when it is a known code)."""
        return _eca(self[4])


class EventAddRequest(_Operation):
    """EVENT_ADD (1) from a client: subscribe to a channel."""

    __slots__ = ()
    ID = CommandId.EVENT_ADD
    REQUEST = True
    FIELDS = ("data_type", "data_count", "sid", "subscriptionid", "mask")
    sid = property(itemgetter(4), doc="Server's channel id.")
    subscriptionid = property(itemgetter(5), doc="Client's subscription id.")

    def __new__(
        cls,
        data_type: int,
        data_count: int,
        sid: int,
        subscriptionid: int,
        mask: int = SubscriptionMask.VALUE | SubscriptionMask.ALARM,
        low: float = 0.0,
        high: float = 0.0,
        to: float = 0.0,
    ) -> Any:
        _check_uint(int(mask), 16, "mask", "EVENT_ADD")
        if not int(mask) & 0xF:
            raise LocalProtocolError(f"EVENT_ADD: mask {mask!r} selects no events")
        try:
            payload = _EVENT_ADD_PAYLOAD.pack(low, high, to, int(mask))
        except (struct.error, OverflowError, TypeError) as exc:
            raise LocalProtocolError(
                f"EVENT_ADD: low/high/to must be float32 values: {exc}"
            ) from exc
        return cls._checked(data_type, data_count, sid, subscriptionid, payload)

    def _fields(self) -> tuple[float, float, float, int]:
        return _EVENT_ADD_PAYLOAD.unpack_from(self[6])

    @property
    def mask(self) -> SubscriptionMask:
        """Which changes trigger an update (DBE_VALUE, _LOG, _ALARM, _PROPERTY)."""
        return SubscriptionMask(self._fields()[3] & 0xF)

    @property
    def low(self) -> float:
        """Obsolete deadband field, kept for re-encoding."""
        return self._fields()[0]

    @property
    def high(self) -> float:
        """Obsolete deadband field, kept for re-encoding."""
        return self._fields()[1]

    @property
    def to(self) -> float:
        """Obsolete timeout field, kept for re-encoding."""
        return self._fields()[2]


class _DataCommand(_Operation):
    """A header followed by DBR data: reads answered, writes, monitor updates."""

    __slots__ = ()

    def __new__(
        cls,
        data: object,
        data_type: int,
        p1: int,
        p2: int,
        metadata: object = None,
        data_count: int | None = None,
    ) -> Any:
        if type(data_type) is not int:
            data_type = int(
                data_type
                if type(data_type) is ChannelType
                else _check_data_type(data_type, cls.ID.name)
            )
        if (
            (type(data) is float or type(data) is int)
            and 0 <= data_type <= _LAST_TYPE
            and type(p1) is int
            and type(p2) is int
            and (data_count is None or data_count == 1)
            and (metadata is None or (type(metadata) is dict and "timestamp" not in metadata))
        ):
            # The hot path of a server: one number, plain-dict metadata. The
            # whole message is packed at once and kept for bytes().
            fast = _SCALAR_WIRE[data_type]
            if fast is not None:
                packer, size, names, zeros = fast  # one unpacking, not four lookups
                # the metadata in the struct's order, missing fields 0 (map: no frame)
                args: Any = zeros if metadata is None else map(metadata.get, names, zeros)
                try:
                    wire = packer.pack(cls.ID_INT, size, data_type, 1, p1, p2, *args, data)
                except (struct.error, OverflowError):
                    pass  # out of range somewhere: the general path explains
                else:
                    return _new(cls, (cls.ID_INT, size, data_type, 1, p1, p2, wire[16:], wire))
        if type(data_type) is not int or not 0 <= data_type <= _LAST_TYPE:
            data_type = int(_check_data_type(data_type, cls.ID.name))
        try:
            raw, count = encode_dbr(data_type, data, metadata)
        except (ValueError, TypeError, OverflowError) as exc:
            name = ChannelType(data_type).name
            raise LocalProtocolError(f"{cls.ID.name}: cannot encode {name}: {exc}") from exc
        if data_count is not None and data_count != count:
            raise LocalProtocolError(
                f"{cls.ID.name}: data_count={data_count} but the data has {count} elements"
            )
        if len(raw) & 7:
            raw = pad_payload(raw)
        return cls._checked(data_type, count, p1, p2, raw)

    @classmethod
    def from_payload(
        cls, payload: bytes | memoryview, data_type: int, data_count: int, p1: int, p2: int
    ) -> Any:
        """Reuse an already encoded (unpadded or padded) DBR payload.

        This is how one monitor update is encoded once and sent to many
        subscribers: only the header differs.
        """
        size = len(payload)
        # The enums a caller names these by, as ints (cheaper than _plain_int)
        if type(data_type) is ChannelType:
            data_type = int(data_type)
        if type(p1) is ECA:
            p1 = int(p1)
        if (
            # The fan-out case, checked at once: plain ints in range, a small
            # padded payload that holds its count. Anything else is checked,
            # converted or refused below.
            type(data_type) is int
            and type(data_count) is int
            and type(p1) is int
            and type(p2) is int
            and not size & 7
            and size < _ENCODE_AT_ONCE
            and 0 <= data_type <= _LAST_TYPE
            and 0 <= data_count < 0xFFFF
            and 0 <= p1 <= _UINT32
            and 0 <= p2 <= _UINT32
            and size >= METADATA_SIZES[data_type] + data_count * VALUE_SIZES[data_type]
        ):
            command = cls.ID_INT
            wire = _pack_header(command, size, data_type, data_count, p1, p2) + payload
            return _new(cls, (command, size, data_type, data_count, p1, p2, payload, wire))
        if type(data_type) is not int or type(p1) is not int or type(p2) is not int:
            data_type, p1, p2 = _plain_int(data_type), _plain_int(p1), _plain_int(p2)
        if type(data_type) is not int or not 0 <= data_type <= _LAST_TYPE:
            data_type = int(_check_data_type(data_type, cls.ID.name))
        if type(data_count) is not int or not 0 <= data_count <= _UINT32:
            data_count = _check_uint(data_count, 32, "data_count", cls.ID.name)
        if size < METADATA_SIZES[data_type] + data_count * VALUE_SIZES[data_type]:
            raise LocalProtocolError(
                f"{cls.ID.name}: {size} bytes cannot hold {data_count} x DBR {data_type}"
            )
        if size & 7:
            payload = pad_payload(payload)
        return cls._checked(data_type, data_count, p1, p2, payload)

    def decode(self) -> tuple[np.ndarray | None, np.ndarray]:
        """(metadata, values) as numpy views of the payload."""
        payload = self[6]
        if self[1] < _STRING_SIZE and self[2] == ChannelType.STRING:
            # libca sends a single DBR_STRING as its characters and a NUL,
            # padded to 8, not the whole 40-byte field; rsrv accepts that.
            payload = bytes(payload).ljust(_STRING_SIZE, b"\0")
        return decode_dbr(self[2], self[3], payload)

    def to_python(self) -> tuple[Any, dict[str, Any]]:
        """(value, metadata) as the plain Python objects a client hands on.

        One element comes back as an ``int``, ``float`` or ``str`` (numbers
        with STS/TIME metadata are decoded without numpy, the fast path);
        more as a numpy view of the payload, or a list of ``str`` for string
        types. The metadata dict is :func:`metadata_dict`'s: units and enum
        states as ``str``, TIME stamps also as POSIX ``timestamp``.
        """
        if self[3] == 1:
            fast = decode_scalar(self[2], self[6])
            if fast is not None:
                return fast
        metadata, values = self.decode()
        meta = {} if metadata is None else metadata_dict(metadata)
        if values.dtype.kind == "S":
            strings = decode_strings(values)
            return (strings[0] if len(strings) == 1 else strings), meta
        if len(values) == 1:
            return values[0].item(), meta
        return values, meta

    @property
    def data(self) -> np.ndarray:
        """The values, a numpy view of the payload (no copy)."""
        return self.decode()[1]

    @property
    def metadata(self) -> np.ndarray | None:
        """The DBR metadata record (status, severity, stamp ...) or None."""
        return self.decode()[0]


class ReadNotifyResponse(_DataCommand):
    """READ_NOTIFY (15) from a server: the value read."""

    __slots__ = ()
    ID = CommandId.READ_NOTIFY
    REQUEST = False
    FIELDS = ("data_type", "data_count", "status", "ioid")
    ioid = property(itemgetter(5), doc="Client's id for this read.")

    def __new__(
        cls,
        data: object,
        data_type: int,
        status: int = ECA.NORMAL,
        ioid: int = 0,
        metadata: object = None,
        data_count: int | None = None,
    ) -> Any:
        return _DataCommand.__new__(cls, data, data_type, int(status), ioid, metadata, data_count)

    @property
    def status(self) -> int:
        """ECA status code of the read."""
        return _eca(self[4])


class EventAddResponse(_DataCommand):
    """EVENT_ADD (1) from a server: a monitor update."""

    __slots__ = ()
    ID = CommandId.EVENT_ADD
    REQUEST = False
    FIELDS = ("data_type", "data_count", "status", "subscriptionid")
    subscriptionid = property(itemgetter(5), doc="Client's subscription id.")

    def __new__(
        cls,
        data: object,
        data_type: int,
        status: int = ECA.NORMAL,
        subscriptionid: int = 0,
        metadata: object = None,
        data_count: int | None = None,
    ) -> Any:
        return _DataCommand.__new__(
            cls, data, data_type, int(status), subscriptionid, metadata, data_count
        )

    @property
    def status(self) -> int:
        """ECA status code of the update."""
        return _eca(self[4])


class WriteRequest(_DataCommand):
    """WRITE (4) from a client: a put without completion."""

    __slots__ = ()
    ID = CommandId.WRITE
    REQUEST = True
    FIELDS = ("data_type", "data_count", "sid", "ioid")
    sid = property(itemgetter(4), doc="Server's channel id.")
    ioid = property(itemgetter(5), doc="Client's id for this write.")

    def __new__(
        cls,
        data: object,
        data_type: int,
        sid: int,
        ioid: int,
        metadata: object = None,
        data_count: int | None = None,
    ) -> Any:
        return _DataCommand.__new__(cls, data, data_type, sid, ioid, metadata, data_count)


class WriteNotifyRequest(WriteRequest):
    """WRITE_NOTIFY (19) from a client: a put answered on completion."""

    __slots__ = ()
    ID = CommandId.WRITE_NOTIFY


class ErrorResponse(Command):
    """ERROR (11) from a server: a request failed.

    The payload holds the failed request's header as it was sent (24 bytes
    when it was an extended header, as rsrv copies it), then a message.
    """

    __slots__ = ()
    ID = CommandId.ERROR
    REQUEST = False
    FIELDS = ("cid", "status", "error_message")
    cid = property(itemgetter(4), doc="Channel id the failed request concerned.")

    def __new__(
        cls, original_request: Command | bytes, cid: int, status: int, error_message: str
    ) -> Any:
        _check_uint(cid, 32, "cid", "ERROR")
        _check_uint(int(status), 32, "status", "ERROR")
        if isinstance(original_request, Command):
            header = original_request.header
        else:
            header = bytes(original_request)
            extended = len(header) >= 4 and header[2:4] == b"\xff\xff"
            if len(header) != (EXTENDED_HEADER.size if extended else HEADER.size):
                raise LocalProtocolError(
                    "ERROR: the original request header must be 16 bytes (24 if extended)"
                )
        message = encode_string(error_message, "ERROR: message")
        return cls._build(0, 0, cid, int(status), pad_payload(header + message))

    @property
    def status(self) -> int:
        """ECA status code of the failure."""
        return _eca(self[5])

    @property
    def original_header(self) -> tuple[int, int, int, int, int, int]:
        """The failed request's header fields (command, size, type, count, p1, p2)."""
        payload = self[6]
        command, size, data_type, count, p1, p2 = HEADER.unpack_from(payload)
        if size == 0xFFFF and len(payload) >= EXTENDED_HEADER.size:
            size, count = EXTENDED_SIZES.unpack_from(payload, HEADER.size)
        return command, size, data_type, count, p1, p2

    @property
    def error_message(self) -> str:
        """The server's explanation."""
        payload = self[6]
        extended = payload[2:4] == b"\xff\xff" and len(payload) >= EXTENDED_HEADER.size
        return decode_string(payload[EXTENDED_HEADER.size if extended else HEADER.size :])

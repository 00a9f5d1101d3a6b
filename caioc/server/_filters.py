"""Filtered channels: a PV seen through ``$`` and channel filters.

:func:`channel_for` turns a decorated name (see :mod:`caioc.server._names`)
into a :class:`FilteredChannel`, a view with the interface the network layer
uses (``native_type``, ``max_length``, ``length``, ``access_rights``,
``read``, ``write``, ``subscribe``, ``unsubscribe``) over the channel data
of the PV. As in epics-base (``dbChannel`` and the filters of
``filters.dbd``):

* ``arr`` slices the values of reads and monitors; the channel's native
  count is the slice of ``max_length``, each reply the slice of the current
  length. Scalars pass unchanged.
* ``$`` serves a STRING as a CHAR array of 40 elements (the string's bytes
  and a NUL; a count-0 read or monitor gets up to the NUL, and the last
  element of every DBR_*CHAR reply is a NUL, even of a slice, as epics-base
  answers for a stringout); a put of a CHAR array stores the text
  (truncated to 39 bytes). On a CHAR array (a caioc extension: epics-base
  refuses ``$`` there; it behaves as an lso's ``VAL$``) the view sends up to
  the NUL.
* ``ts`` puts the server's time in the timestamp of reads and updates.
* ``dbnd``, ``dec`` and ``sync`` decide which monitor updates pass (reads
  are not filtered), each subscription keeping its own state.
* Puts go to the PV unchanged (epics-base's ``dbChannelPut`` ignores filters).

Deliberate differences: ``dbnd`` compares the values as the client asked
for them (a DOUBLE monitored as DBR_LONG compares the integers), where
epics-base compares the field's values; dbnd, dec and sync keep their state
per subscription where epics-base keeps it per channel.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping

import numpy as np

from ..ca import (
    ECA,
    MAX_STRING_SIZE,
    VALUE_DTYPES,
    AccessRights,
    ChannelType,
    DbrClass,
    DbrError,
    dbr_class,
    decode_dbr,
    encode_dbr,
    epics_now,
    metadata_dict,
    native_type,
    payload_size,
    promote,
)
from ..ca._convert import (
    ConversionError,
    convert_values,
    fit_count,
    parse_double,
    resolve_count,
    string_to_char_array,
)
from ._data_support import ChannelError, ChannelValueError, Subscription
from ._names import (
    ArrayFilter,
    ChannelName,
    ChannelNameError,
    DeadbandFilter,
    DecimateFilter,
    FilterSpec,
    SyncFilter,
    TimestampFilter,
    parse_channel_name,
)
from ._served import ServedChannel, States

__all__ = ["FilteredChannel", "ServedChannel", "States", "channel_for"]

_STRING, _CHAR = int(ChannelType.STRING), int(ChannelType.CHAR)
#: The last DBR type that carries values (DBR_CTRL_DOUBLE); later ones pass through.
_LAST_VALUE_TYPE = int(ChannelType.CTRL_DOUBLE)
#: Protocol version the view asks its PV with: count 0 means the current length.
_AUTOSIZE_VERSION = 13
_STAMP = struct.Struct(">II")
_STAMP_OFFSET = 4  # after status and severity in every dbr_time_*


def channel_for(
    name: str,
    pvdb: Mapping[str, ServedChannel],
    states: States,
    *,
    dotless: bool = True,
) -> ServedChannel | None:
    """The channel a decorated ``name`` opens, or None (unknown PV, bad spec).

    ``REC.VAL`` and ``REC.`` are ``pvdb["REC"]`` (or ``pvdb["REC.VAL"]``);
    other fields are looked up as ``REC.FIELD``; with ``$`` or filters the result is a
    :class:`FilteredChannel` over that entry.
    """
    try:
        parsed = parse_channel_name(name, dotless=dotless)
    except ChannelNameError:
        return None
    if parsed is None:
        return None
    data = pvdb.get(parsed.pv_name)
    if data is None and parsed.field in ("", "VAL"):
        data = pvdb.get(parsed.record + ".VAL")  # a pvdb that names the field
    if data is None or parsed.plain:
        return data
    try:
        return FilteredChannel(data, parsed, states)
    except ChannelNameError:
        return None


class _Update:
    """One read or update on its way through the filters.

    ``head`` holds the encoded metadata; ``values`` the values before any
    ``arr`` slicing (None for the DBR types without values, whose whole
    payload is ``head``).
    """

    __slots__ = ("count", "data_type", "head", "values")

    def __init__(
        self, data_type: int, head: bytes, values: np.ndarray | None, count: int = 0
    ) -> None:
        self.data_type = data_type
        self.head = head
        self.values = values
        self.count = count

    def stamped_now(self) -> _Update:
        """This update with the server's time as its timestamp (TIME types)."""
        if self.values is None or dbr_class(self.data_type) is not DbrClass.TIME:
            return self
        head = bytearray(self.head)
        _STAMP.pack_into(head, _STAMP_OFFSET, *epics_now())
        return _Update(self.data_type, bytes(head), self.values, self.count)


class FilteredChannel:
    """A PV's channel data seen through ``$`` and filters (see the module doc)."""

    def __init__(self, data: ServedChannel, name: ChannelName, states: States) -> None:
        source = int(data.native_type)
        if name.long_string and source not in (_STRING, _CHAR):
            raise ChannelNameError(
                f"'$' needs a STRING or CHAR channel, not DBR_{ChannelType(source).name}"
            )
        for spec in name.filters:
            if isinstance(spec, SyncFilter) and spec.state not in states:
                raise ChannelNameError(f"filter 'sync': no state named {spec.state!r}")
        self._data = data
        self._source = source
        self._long_string = name.long_string
        #: CHAR replies of a STRING's ``$`` end in a NUL, even a slice's.
        self._terminate = name.long_string and source == _STRING
        self._states = states
        self._filters = name.filters
        #: The filters that decide on monitor updates, in order (ts included).
        self._events = tuple(f for f in name.filters if not isinstance(f, ArrayFilter))
        self._timestamp = any(isinstance(f, TimestampFilter) for f in name.filters)
        source_max = self._source_max()
        self._arrays = tuple(f for f in name.filters if isinstance(f, ArrayFilter))
        if source_max <= 1:
            self._arrays = ()  # arr passes scalars unchanged, as in epics-base
        #: DBR type of the CREATE_CHAN reply.
        self.native_type = ChannelType.CHAR if name.long_string else ChannelType(source)
        #: Element count of the CREATE_CHAN reply: the slice of the PV's.
        self.max_length = self._sliced_count(source_max)
        #: True when dbnd can compare values (a scalar number, not a string).
        self.scalar_number = source_max == 1 and source != _STRING
        self._proxies: dict[int, _FilteredSubscription] = {}

    def __repr__(self) -> str:
        return f"FilteredChannel({self._data!r}, long_string={self._long_string}, {self._filters})"

    def _source_max(self) -> int:
        if self._long_string and self._source == _STRING:
            return MAX_STRING_SIZE
        return int(self._data.max_length)

    def _sliced_count(self, count: int) -> int:
        for spec in self._arrays:
            count = spec.indices(count)[1]
        return count

    @property
    def length(self) -> int:
        """The current element count (for ``$``, at most the field size)."""
        if not self._long_string:
            return self._sliced_count(int(self._data.length))
        value = getattr(self._data, "value", None)
        if self._source == _STRING and isinstance(value, (str, tuple)):
            text = value if isinstance(value, str) else (value[0] if value else "")
            encoding = getattr(self._data, "encoding", "utf-8")
            raw = text.encode(encoding, "surrogateescape")
            return self._sliced_count(min(len(raw) + 1, MAX_STRING_SIZE))
        return self._sliced_count(self._source_max())

    def access_rights(self, host: str, user: str) -> AccessRights:
        """The PV's access rights."""
        return self._data.access_rights(host, user)

    # -- reads ------------------------------------------------------------------

    def fetch_type(self, data_type: int) -> int:
        """The DBR type the view asks its PV for to answer ``data_type``."""
        if self._long_string and data_type <= _LAST_VALUE_TYPE:
            return int(promote(self._source, dbr_class(data_type)))
        return data_type

    async def read(
        self, data_type: int, data_count: int, client_version: int
    ) -> tuple[bytes | memoryview, int]:
        """(payload, count) of the filtered value as ``data_type``."""
        if not 0 <= data_type <= _LAST_VALUE_TYPE:
            return await self._data.read(data_type, data_count, client_version)
        if data_count < 0:
            raise ChannelError(ECA.BADCOUNT, f"negative element count {data_count}")
        fetch = self.fetch_type(data_type)
        payload, count = await self._data.read(fetch, 0, _AUTOSIZE_VERSION)
        update = self.update(data_type, fetch, payload, count)
        if self._timestamp:
            update = update.stamped_now()
        return self.encode(update, data_count, client_version)

    def update(
        self, data_type: int, fetched: int, payload: bytes | memoryview, count: int
    ) -> _Update:
        """An encoded reply of the PV (type ``fetched``) as an update of ``data_type``."""
        if not 0 <= data_type <= _LAST_VALUE_TYPE:
            return _Update(data_type, bytes(payload), None, count)
        try:
            meta, values = decode_dbr(fetched, count, payload)
        except DbrError as exc:
            raise ChannelValueError(ECA.GETFAIL, str(exc)) from exc
        if not self._long_string:
            head = bytes(payload[: payload_size(data_type, 0)])
            return _Update(data_type, head, values)
        chars = self._chars(values)
        target = int(native_type(data_type))
        if target != _CHAR:
            try:
                chars = convert_values(chars, _CHAR, target)
            except ConversionError as exc:
                raise ChannelValueError(exc.get_eca, str(exc)) from exc
        metadata = {} if meta is None else metadata_dict(meta)
        metadata.pop("timestamp", None)  # the exact seconds and nanoseconds are kept
        empty = np.zeros(0, VALUE_DTYPES[target])
        head = bytes(encode_dbr(data_type, empty, metadata)[0])
        return _Update(data_type, head, chars)

    def _chars(self, values: np.ndarray) -> np.ndarray:
        """The long string in ``values`` as a CHAR array up to its NUL."""
        if self._source == _STRING:
            raw = bytes(values[0]) if len(values) else b""
            return string_to_char_array(raw.split(b"\0", 1)[0], MAX_STRING_SIZE)
        chars = np.asarray(values, dtype=np.uint8)
        nul = np.flatnonzero(chars == 0)
        return chars[: nul[0] + 1] if len(nul) else chars

    def encode(
        self, update: _Update, data_count: int, client_version: int
    ) -> tuple[bytes | memoryview, int]:
        """The payload and count of ``update``, sliced, as the client asked."""
        values = update.values
        if values is None:
            return update.head, update.count
        for spec in self._arrays:
            start, count = spec.indices(len(values))
            values = values[start : start + count * spec.increment : spec.increment]
        count = resolve_count(data_count, len(values), client_version, self.max_length)
        values = fit_count(values, count)
        if self._terminate and count and native_type(update.data_type) == _CHAR:
            values = values.copy()
            values[-1] = 0  # as dbGet ends a CHAR read of a string field
        return update.head + values.tobytes(), count

    # -- writes ------------------------------------------------------------------

    async def write(self, data_type: int, data_count: int, payload: bytes | memoryview) -> None:
        """A put goes to the PV; through ``$`` a CHAR array sets the string."""
        if not (self._long_string and self._source == _STRING) or not (
            0 <= data_type <= _LAST_VALUE_TYPE
        ):
            await self._data.write(data_type, data_count, payload)
            return
        source = int(native_type(data_type))
        need = payload_size(data_type, data_count)
        have = payload.nbytes if isinstance(payload, memoryview) else len(payload)
        if source == _STRING and have < need:  # libca sends a lone string unpadded
            payload = bytes(payload) + bytes(need - have)
        try:
            _, values = decode_dbr(data_type, data_count, payload)
            chars = values if source == _CHAR else convert_values(values, source, _CHAR)
        except DbrError as exc:
            raise ChannelValueError(ECA.BADCOUNT, str(exc)) from exc
        except ConversionError as exc:
            raise ChannelValueError(exc.put_eca, f"cannot write a long string: {exc}") from exc
        raw = np.asarray(chars, dtype=np.uint8).tobytes().split(b"\0", 1)[0]
        text, _ = encode_dbr(ChannelType.STRING, [raw[: MAX_STRING_SIZE - 1]])
        await self._data.write(ChannelType.STRING, 1, text)

    # -- monitors ----------------------------------------------------------------

    def subscribe(self, subscription: Subscription) -> None:
        """Subscribe to the PV through this subscription's own filter state."""
        proxy = _FilteredSubscription(self, subscription)
        self._proxies[id(subscription)] = proxy
        self._data.subscribe(proxy)

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop the updates of ``subscription`` (unknown ones are ignored)."""
        proxy = self._proxies.pop(id(subscription), None)
        if proxy is not None:
            self._data.unsubscribe(proxy)

    def gates(self) -> list[Callable[[_Update], _Update | None]]:
        """Fresh monitor filters for one subscription, in order."""
        return [_gate(spec, self) for spec in self._events]

    def state(self, name: str) -> bool:
        """The current value of a ``sync`` state."""
        return self._states.get(name)


class _FilteredSubscription:
    """Stands between the PV and a client's subscription, running the filters."""

    __slots__ = ("client_version", "data_count", "data_type", "gates", "mask", "target", "view")

    def __init__(self, view: FilteredChannel, target: Subscription) -> None:
        self.view = view
        self.target = target
        self.mask = target.mask
        if 0 <= target.data_type <= _LAST_VALUE_TYPE:
            self.data_type = view.fetch_type(target.data_type)
            self.data_count = 0  # the whole current value: the view slices it
            self.client_version = _AUTOSIZE_VERSION
        else:
            self.data_type = target.data_type
            self.data_count = target.data_count
            self.client_version = target.client_version
        self.gates = view.gates()

    def deliver(self, payload: bytes | memoryview, count: int) -> None:
        """An update of the PV: filter it, then pass it on (or not)."""
        target = self.target
        try:
            update: _Update | None = self.view.update(
                target.data_type, self.data_type, payload, count
            )
        except ChannelError as error:
            self.deliver_error(error.eca, b"", 0)
            return
        for gate in self.gates:
            assert update is not None
            update = gate(update)
            if update is None:
                return
        assert update is not None
        payload, count = self.view.encode(update, target.data_count, target.client_version)
        target.deliver(payload, count)

    def deliver_error(self, eca: int, payload: bytes | memoryview, count: int) -> None:
        """An update the PV could not convert: zeroed, with ``eca``, as rsrv sends it."""
        forward = getattr(self.target, "deliver_error", None)
        if forward is None:
            return
        data_type, data_count = self.target.data_type, self.target.data_count
        size = payload_size(data_type, data_count) if 0 <= data_type <= 38 else 0
        forward(eca, bytes(size), data_count)


# -- the monitor filters ------------------------------------------------------------


def _gate(spec: FilterSpec, view: FilteredChannel) -> Callable[[_Update], _Update | None]:
    if isinstance(spec, TimestampFilter):
        return _Update.stamped_now
    if isinstance(spec, DeadbandFilter):
        return _Deadband(spec, view.scalar_number)
    if isinstance(spec, DecimateFilter):
        return _Decimate(spec.n)
    if isinstance(spec, SyncFilter):
        return _Sync(spec, view)
    raise TypeError(f"not a monitor filter: {spec!r}")  # pragma: no cover


def deadband_exceeded(last: float, new: float, deadband: float) -> bool:
    """Whether ``new`` differs from ``last`` by more than ``deadband``.

    epics-base's ``recGblCheckDeadband``: a change between a finite and a
    NaN or infinite value, or between the two infinities, counts as an
    infinite change (which still does not exceed an infinite deadband).
    """
    delta = 0.0
    if math.isfinite(new) and math.isfinite(last):
        delta = abs(last - new)
    elif (
        math.isnan(new) != math.isnan(last)
        or math.isinf(new) != math.isinf(last)
        or (math.isinf(new) and new != last)
    ):
        delta = math.inf
    return delta > deadband


class _Deadband:
    """``dbnd`` (dbnd.c): the first update passes, then only moves past the deadband.

    In relative mode the deadband is ``d`` percent of the last value sent,
    computed as epics-base does (``value * d / 100``, which is negative for
    a negative value, so every update then passes, and infinite after an
    infinity, so none does); a NaN leaves it as it was (softioc sends the
    next value after a NaN).
    """

    def __init__(self, spec: DeadbandFilter, scalar_number: bool) -> None:
        self.relative = spec.relative
        self.percent = spec.deadband
        self.hysteresis = 0.0 if spec.relative else spec.deadband
        self.last = math.nan
        self.scalar_number = scalar_number

    def __call__(self, update: _Update) -> _Update | None:
        value = self._value(update)
        if value is None:
            return update  # arrays and strings pass, as in epics-base
        if not deadband_exceeded(self.last, value, self.hysteresis):
            return None
        self.last = value
        if self.relative and not math.isnan(value):
            self.hysteresis = value * self.percent / 100.0
        return update

    def _value(self, update: _Update) -> float | None:
        values = update.values
        if not self.scalar_number or values is None or not len(values):
            return None
        if values.dtype.kind in "iuf":
            return float(values[0])
        try:  # the client asked for text: compare the numbers it shows
            return parse_double(bytes(values[0]).split(b"\0", 1)[0])
        except ValueError:
            return None


class _Decimate:
    """``dec`` (dec.c): pass the first update, then every n-th."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0

    def __call__(self, update: _Update) -> _Update | None:
        passes = self.seen == 0
        self.seen = (self.seen + 1) % self.n
        return update if passes else None


class _Sync:
    """``sync`` (sync.c): updates by a named state, looked at as each arrives.

    while/unless pass updates while the state is set/clear; first/after
    pass the first update after the state was set/cleared; before/last
    pass, at that moment, the update that came just before it.
    """

    def __init__(self, spec: SyncFilter, view: FilteredChannel) -> None:
        self.mode = spec.mode
        self.name = spec.state
        self.view = view
        self.was_set = False
        self.previous: _Update | None = None

    def __call__(self, update: _Update) -> _Update | None:
        now_set = self.view.state(self.name)
        mode, rising = self.mode, now_set and not self.was_set
        falling = self.was_set and not now_set
        self.was_set = now_set
        if mode == "while":
            return update if now_set else None
        if mode == "unless":
            return None if now_set else update
        passed: _Update | None = None
        if (mode == "before" and rising) or (mode == "last" and falling):
            passed = self.previous
        elif (mode == "first" and rising) or (mode == "after" and falling):
            passed = update
        # first/after keep nothing of an update they passed (sync.c hands it on)
        self.previous = None if passed is update else update
        return passed

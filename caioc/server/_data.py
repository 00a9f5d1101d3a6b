"""What a server serves: the data behind each PV, independent of the network.

CONTRACT (the network layer in ``_server.py`` relies on exactly this):

``ChannelData`` (abstract base) and concrete ``ChannelDouble``,
``ChannelFloat``, ``ChannelInteger`` (DBR_LONG), ``ChannelShort``,
``ChannelChar``, ``ChannelEnum``, ``ChannelString`` hold a value (scalar or
array up to ``max_length``), alarm status/severity, a timestamp and the
metadata a client can ask for (units, precision, display/alarm/control
limits, enum strings). Attributes and methods:

* ``native_type: ChannelType`` (0-6) and ``max_length: int`` (CREATE_CHAN
  reply: type and count); ``length`` is the current element count.
* ``access_rights(host: str, user: str) -> AccessRights``.
* ``async read(data_type, data_count, client_version) -> tuple[payload, count]``:
  the value converted to ``data_type`` (any DBR type 0-38) with its
  metadata, encoded (unpadded ``bytes``/``memoryview``) and the element
  count put in the reply header; count 0 from a client of version >= 13
  means the current length. Raises ``ChannelError`` (with an ``ECA`` code
  and message) when it cannot.
* ``async write(data_type, data_count, payload) -> None``: decode the
  payload (``caioc.ca.decode_dbr``; note libca sends one DBR_STRING as
  fewer than 40 bytes), convert to the native type, validate, store, update
  the timestamp and publish a monitor update. Raises ``ChannelError``
  (ECA_PUTFAIL, ECA_NOWTACCESS, ECA_BADTYPE ... with a message).
* ``subscribe(subscription)`` / ``unsubscribe(subscription)``: a
  subscription has ``data_type``, ``data_count``, ``mask`` (SubscriptionMask),
  ``client_version`` and ``deliver(payload, count)``. ``subscribe`` sends the
  current value once at once (as rsrv does). Updates are encoded once per
  (data_type, data_count) and handed to every matching subscriber.

BEYOND THE CONTRACT (what server-side code uses):

* ``await channel.set(value, *, status=None, severity=None, timestamp=None)``
  stores a value from server code (a driver, a scan loop) and publishes it;
  ``await channel.set_alarm(status, severity)`` changes only the alarm.
  Without an explicit status/severity (and after every client put) the
  alarm is computed from the value: alarm limits of a scalar number as an
  ``ai`` record checks HIHI/LOLO (MAJOR) and HIGH/LOW (MINOR), a NaN being
  UDF/INVALID; ``ChannelEnum``'s ``enum_severities`` give STATE alarms.
  Refused values raise ``ChannelValueError`` (a ``ChannelError`` and a
  ``ValueError``).
* The severity of each limit (HHSV HSV LSV LLSV: ``upper_alarm_severity``
  ...), the alarm hysteresis (HYST, ``alarm_hysteresis``) and the monitor
  and archive deadbands (MDEL, ADEL: ``monitor_deadband``,
  ``archive_deadband``) work as aiRecord.c's checkAlarms and monitor() do,
  for scalar numbers. The deadbands default to -1 (every update posts
  DBE_VALUE|DBE_LOG, an unchanged value too; an ai's default is 0). An
  alarm change posts DBE_ALARM whatever the deadbands.
* ``disabled`` (DISA = DISV) stops processing as dbProcess does: a put
  stores its value without ``put_hook`` or monitors, ``set``/``set_alarm``
  are ignored, and the channel raises the DISABLE alarm with
  ``disable_severity`` (DISS; INVALID here, NO_ALARM in epics-base's
  dbCommon). ``check_disabled()`` does that for code that processes.
* ``put_hook``: an ``async (channel, value) -> value | None`` called with
  each client put, converted to the native type, before it is stored. It
  may return a replacement value or raise ``ChannelError`` to refuse the
  put (the client gets its ECA code and message).
* ``encode(data_type, data_count, client_version)`` is ``read`` without the
  coroutine; ``publish(mask)`` sends the current value to the subscribers
  whose mask intersects ``mask``. Encoded replies are cached until the
  value, alarm or metadata changes, so payloads are shared: never modify
  one. Changing metadata (``units``, limits, ``enum_strings`` ...) posts
  DBE_PROPERTY.
* A subscription may have ``deliver_error(eca, payload, count)``: rsrv sends
  an update that fails to convert with status ECA_GETFAIL and a zeroed
  payload; without that method such an update is skipped.

Behaviour follows epics-base (``db_access.c``, ``dbAccess.c``, rsrv):
GR/CTRL limits reach each client type as ``db_access.c`` converts them (an
unset alarm limit is NaN: -2147483648 for DBR_GR_LONG, 0 for SHORT/CHAR);
DBR_PUT_ACKT/PUT_ACKS are write-only (reading them fails with ECA_GETFAIL)
and acknowledge alarms as dbCommon's ACKT/ACKS do; DBR_STSACK_STRING and
DBR_CLASS_NAME are read-only (writing them fails with ECA_PUTFAIL); STS,
TIME, GR and CTRL puts store their value and ignore the metadata; a put of
more elements than ``max_length`` is truncated; a scalar put outside the
control limits (when upper > lower) is clamped to them, as ao/longout clamp
to DRVH/DRVL. Deliberate differences: an enum index without a state string
is refused (ECA_PUTFAIL), as for a menu field; ``precision=None`` reports
PREC 0 but converts to DBR_STRING with 6 digits (dbConvert's default).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..ca import AlarmSeverity, AlarmStatus, ChannelType
from ._data_channel import ChannelData
from ._data_support import (
    ChannelError,
    ChannelValueError,
    PutHook,
    Subscription,
    check_enum_strings,
)

__all__ = [
    "ChannelChar",
    "ChannelData",
    "ChannelDouble",
    "ChannelEnum",
    "ChannelError",
    "ChannelFloat",
    "ChannelInteger",
    "ChannelShort",
    "ChannelString",
    "ChannelValueError",
    "PutHook",
    "Subscription",
]


class ChannelDouble(ChannelData):
    """A DBR_DOUBLE value or array (an ai/ao or a DOUBLE waveform)."""

    native_type = ChannelType.DOUBLE


class ChannelFloat(ChannelData):
    """A DBR_FLOAT value or array (float32)."""

    native_type = ChannelType.FLOAT


class ChannelInteger(ChannelData):
    """A DBR_LONG value or array (int32, a longin/longout)."""

    native_type = ChannelType.LONG


class ChannelShort(ChannelData):
    """A DBR_SHORT (DBR_INT) value or array (int16)."""

    native_type = ChannelType.INT


class ChannelChar(ChannelData):
    """A DBR_CHAR value or array (uint8); a ``bytes`` or ``str`` value is an array.

    A ``str`` is stored as its encoded bytes plus a NUL (the EPICS long
    string convention); DBR_STRING puts and reads convert element by
    element as numbers, as epics-base does.
    """

    native_type = ChannelType.CHAR


class ChannelString(ChannelData):
    """A DBR_STRING value (at most 39 bytes) or array of them."""

    native_type = ChannelType.STRING


class ChannelEnum(ChannelData):
    """A DBR_ENUM value: an index into ``enum_strings`` (a bi/bo/mbbi/mbbo).

    ``enum_strings``: up to 16 state strings of at most 25 bytes.
    ``enum_severities``: the alarm severity of each state (mbbo ZRSV ...);
    a state with a severity raises a STATE alarm. ``value`` may be an index
    or a state string. Puts take an index or a state string (or a number
    below the number of states, as text); an index without a state is refused.
    """

    native_type = ChannelType.ENUM

    def __init__(
        self,
        *,
        enum_strings: Iterable[str] = (),
        enum_severities: Iterable[AlarmSeverity | int] | None = None,
        states: int | None = None,
        **kwargs: Any,
    ) -> None:
        encoding = kwargs.get("encoding", "utf-8")
        self._enum_strings = check_enum_strings(enum_strings, encoding)
        #: How many indices are valid; more than the (at most 16) strings for
        #: a menu such as STAT, whose 22 conditions CA can only name 16 of.
        self.states = len(self._enum_strings) if states is None else int(states)
        self._enum_severities = tuple(AlarmSeverity(s) for s in enum_severities or ())
        super().__init__(**kwargs)

    @property
    def enum_strings(self) -> tuple[str, ...]:
        """The state strings (setting them posts DBE_PROPERTY)."""
        return self._enum_strings

    @enum_strings.setter
    def enum_strings(self, states: Iterable[str]) -> None:
        self._enum_strings = check_enum_strings(states, self.encoding)
        self._metadata_changed()

    @property
    def enum_severities(self) -> tuple[AlarmSeverity, ...]:
        """The alarm severity of each state (missing ones: NO_ALARM)."""
        return self._enum_severities

    def _enum_states(self) -> tuple[str, ...]:
        return self._enum_strings

    def _alarm_for(self, value: Any) -> tuple[AlarmStatus, AlarmSeverity]:
        severities = self._enum_severities
        if self._scalar and int(value) < len(severities) and severities[int(value)]:
            return AlarmStatus.STATE, severities[int(value)]
        return AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM

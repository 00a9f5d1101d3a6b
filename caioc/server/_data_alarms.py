"""Alarms of channel data: limits, hysteresis, deadbands, acknowledgement, disable.

:class:`ChannelAlarms` is the part of :class:`~caioc.server.ChannelData`
that decides which alarm a value raises and which monitors an update
posts, as an ``ai`` record's ``checkAlarms`` and ``monitor`` do, and how
the alarm is acknowledged (dbCommon's ACKT/ACKS) and disabled (DISA,
DISS). It is a mixin: the channel class supplies the value, the cache of
encoded replies and ``publish``; the pure rules (``limit_alarm``,
``deadband_exceeded``) live in :mod:`caioc.server._data_support`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..ca import (
    ECA,
    AlarmSeverity,
    AlarmStatus,
    ChannelType,
    DbrError,
    SubscriptionMask,
    decode_dbr,
)
from ._data_support import (
    ALARM_RANGES,
    ChannelValueError,
    alarm_pair,
    deadband_exceeded,
    epics_stamp,
    limit_alarm,
)

__all__ = ["ALARM_LIMITS", "SEVERITY_OF", "ChannelAlarms"]

# Plain ints: IntFlag operators are slow on the per-update path.
_UPDATE = int(SubscriptionMask.VALUE | SubscriptionMask.LOG)
_VALUE, _LOG = int(SubscriptionMask.VALUE), int(SubscriptionMask.LOG)
_ALARM = int(SubscriptionMask.ALARM)
_NO_ALARM = (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)
#: The alarm limits in checkAlarms order, each with the severity it raises.
ALARM_LIMITS = (
    ("upper_alarm_limit", "upper_alarm_severity"),
    ("lower_alarm_limit", "lower_alarm_severity"),
    ("upper_warning_limit", "upper_warning_severity"),
    ("lower_warning_limit", "lower_warning_severity"),
)
#: alarm limit attribute -> the attribute of the severity it raises.
SEVERITY_OF = dict(ALARM_LIMITS)

AlarmTable = tuple[tuple[AlarmStatus, int, float, AlarmSeverity], ...]


class ChannelAlarms:
    """The alarm state of a channel and the rules that move it (a mixin).

    The subclass calls :meth:`_init_alarms` from its constructor once the
    value is stored, and supplies ``_cache`` (encoded replies, cleared when
    the alarm changes), ``_deadbanded`` (a scalar number: limits and
    deadbands apply), ``_stamp`` and ``publish``.
    """

    #: HYST: an alarm from a limit clears once the value is this far back inside.
    alarm_hysteresis: float = 0.0
    #: MDEL: DBE_VALUE is posted when the value moved more than this since
    #: the last one posted (0: any change; negative: every update).
    monitor_deadband: float = -1.0
    #: ADEL: the same for DBE_LOG (archivers).
    archive_deadband: float = -1.0
    #: DISS: the severity of the DISABLE alarm a disabled channel raises.
    disable_severity: AlarmSeverity = AlarmSeverity.INVALID

    _status: AlarmStatus
    _severity: AlarmSeverity
    _ackt: int
    _acks: int
    _disabled: bool
    _last_alarm_level: float
    _alarm_table: AlarmTable | None
    _monitor_last: Any
    _archive_last: Any

    if TYPE_CHECKING:  # supplied by the channel class
        _cache: dict[int, tuple[bytes | memoryview, int]]
        _deadbanded: bool
        _stamp: tuple[int, int]

        def publish(self, mask: int) -> None: ...

    def _init_alarms(
        self,
        value: Any,
        status: AlarmStatus | int | None,
        severity: AlarmSeverity | int | None,
    ) -> None:
        """The alarm of a new channel: given, or computed from its first ``value``."""
        self._disabled = False
        self._last_alarm_level = math.nan  # LALM
        # MLST and ALST: the values last posted as DBE_VALUE and DBE_LOG
        self._monitor_last = self._archive_last = value
        if status is None and severity is None:
            self._status, self._severity = self._alarm_for(value)
        else:
            self._status, self._severity = alarm_pair(status, severity)
        self._ackt = 1  # dbCommon's ACKT default: transient alarms need acknowledging
        self._acks = int(self._severity)

    # ------------------------------------------------------------------ state

    @property
    def alarm_status(self) -> AlarmStatus:
        """The alarm condition (STAT)."""
        return self._status

    @property
    def alarm_severity(self) -> AlarmSeverity:
        """The alarm severity (SEVR)."""
        return self._severity

    @property
    def ackt(self) -> int:
        """ACKT: 1 (default) if an alarm needs acknowledging even once it cleared.

        A DBR_PUT_ACKT write sets it. While it is 0, ACKS follows the severity.
        """
        return self._ackt

    @property
    def acks(self) -> int:
        """ACKS: highest unacknowledged alarm severity (DBR_PUT_ACKS acknowledges)."""
        return self._acks

    @property
    def disabled(self) -> bool:
        """DISA = DISV: the channel does not process (dbProcess's disabled record).

        While disabled, a client put stores its value (as dbPut writes the
        field) but neither runs ``put_hook`` nor posts it, server-side
        :meth:`set` and :meth:`set_alarm` are ignored, and each of these
        attempts raises the DISABLE alarm with ``disable_severity`` (posting
        DBE_VALUE|DBE_ALARM the first time). Enabling changes nothing by
        itself: the next update computes the alarm afresh.
        """
        return self._disabled

    @disabled.setter
    def disabled(self, disabled: bool) -> None:
        self._disabled = bool(disabled)

    def check_disabled(self) -> bool:
        """If :attr:`disabled`, raise the DISABLE alarm and return True.

        For code that processes the channel (scan loops, PROC): call it
        first and skip the work when it answers True.
        """
        if not self._disabled:
            return False
        if self._status != AlarmStatus.DISABLE:
            self._update_alarm(AlarmStatus.DISABLE, self.disable_severity)
            self._cache.clear()
            self.publish(_VALUE | _ALARM)
        return True

    async def set_alarm(
        self,
        status: AlarmStatus | int,
        severity: AlarmSeverity | int,
        *,
        timestamp: float | None = None,
    ) -> None:
        """Change only the alarm (and the timestamp, if given); posts DBE_ALARM.

        Ignored while :attr:`disabled` (which raises the DISABLE alarm).
        """
        if self.check_disabled():
            return
        pair = alarm_pair(status, severity)
        stamp = None if timestamp is None else epics_stamp(timestamp)
        if stamp is not None:
            self._stamp = stamp
        if self._update_alarm(*pair) or stamp is not None:
            self._cache.clear()
            self.publish(_ALARM)

    # ------------------------------------------------------------------ rules

    def _put_acknowledge(self, data_type: int, payload: bytes | memoryview) -> None:
        """A DBR_PUT_ACKT or DBR_PUT_ACKS write (dbAccess.c putAckt, putAcks)."""
        try:
            level = int(decode_dbr(data_type, 1, payload)[1][0])
        except DbrError as exc:
            raise ChannelValueError(ECA.BADCOUNT, str(exc)) from exc
        if data_type == ChannelType.PUT_ACKT:  # dbAccess.c putAckt
            if level == self._ackt:
                return
            self._ackt = level
            if not level and self._acks > self._severity:
                self._acks = int(self._severity)
        elif level >= self._acks:  # putAcks: acknowledge up to this severity
            self._acks = 0
        else:
            return
        self._cache.clear()
        self.publish(_ALARM)

    def _update_alarm(self, status: AlarmStatus, severity: AlarmSeverity) -> bool:
        """Store the alarm; True if it changed (recGblResetAlarms moves ACKS on)."""
        if status == self._status and severity == self._severity:
            return False
        self._status, self._severity = status, severity
        if not self._ackt or severity >= self._acks:  # recGblResetAlarms
            self._acks = int(severity)
        return True

    def _alarm_for(self, value: Any) -> tuple[AlarmStatus, AlarmSeverity]:
        """The alarm a record would raise for ``value`` (limits of scalar numbers).

        Moves LALM on, so hysteresis applies from one update to the next.
        """
        if not self._deadbanded:
            return _NO_ALARM
        table = self._alarm_table
        if table is None:
            table = self._alarm_table = self._active_limits()
        level = float(value)
        if not table and level == level:  # no limit set: limit_alarm's answer, cheaper
            self._last_alarm_level = level
            return _NO_ALARM
        status, severity, self._last_alarm_level = limit_alarm(
            level, table, self.alarm_hysteresis, self._last_alarm_level
        )
        return status, severity

    def _active_limits(self) -> AlarmTable:
        """The alarm limits that are set and raise a severity, in checkAlarms order."""
        table = []
        for (status, direction), (limit_name, severity_name) in zip(
            ALARM_RANGES, ALARM_LIMITS, strict=True
        ):
            limit, severity = getattr(self, limit_name), getattr(self, severity_name)
            if limit is not None and limit == limit and severity:
                table.append((status, direction, limit, severity))
        return tuple(table)

    def _deadband_mask(self, value: Any) -> int:
        """DBE_VALUE and DBE_LOG as aiRecord's monitor() posts them (MDEL, ADEL)."""
        if self.monitor_deadband < 0 and self.archive_deadband < 0:
            self._monitor_last = self._archive_last = value
            return _UPDATE
        mask = 0
        if deadband_exceeded(self._monitor_last, value, self.monitor_deadband):
            self._monitor_last = value
            mask = _VALUE
        if deadband_exceeded(self._archive_last, value, self.archive_deadband):
            self._archive_last = value
            mask |= _LOG
        return mask

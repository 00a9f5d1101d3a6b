"""Record-like field channels beside each PV: .VAL .DESC .EGU .SEVR ...

EPICS clients (displays, archivers, alarm handlers) read a record's fields
by name: ``PV.EGU`` for units, ``PV.SEVR`` for the alarm severity,
``PV.HOPR`` for the display range. Each PV of a :class:`PVGroup` gets
these as channels of their own, kept in step with the PV: writing
``PV.EGU`` changes the PV's units (and posts DBE_PROPERTY), an alarm on the
PV changes ``PV.SEVR`` and ``PV.STAT`` and posts their monitors.

The fields that steer processing behave as an ai record's do:

* ``.HHSV .HSV .LSV .LLSV`` (menuAlarmSevr) are the severities HIHI, HIGH,
  LOW and LOLO raise (MAJOR, MINOR, MINOR, MAJOR unless the pvproperty says
  otherwise; NO_ALARM turns a limit off and makes it read as NaN in GR/CTRL
  replies), ``.HYST`` the alarm hysteresis; they apply from the next value.
* ``.MDEL`` and ``.ADEL`` are the deadbands of DBE_VALUE and DBE_LOG
  monitors. caioc's default is -1, every update posts (an ai's is 0, only
  changes post): write 0 for ai behaviour.
* ``.SCAN`` (menuScan) shows the period of the PV's scan hook, "Passive"
  without one; writing a period changes it, "Passive" stops the scan
  ("Event" and "I/O Intr" are refused). A period that is not on the menu
  is offered as an extra choice such as "0.05 second", as a site's
  menuScan.dbd would.
* Writing ``.PROC`` processes the PV once: its scan hook, else its getter,
  else the value is stored again (a new timestamp, the alarm recomputed,
  monitors posted as the deadbands allow).
* ``.DISA`` disables the PV while it equals DISV (1, not served): the scan
  hook and getter are skipped, client puts store their value without
  running the putter or posting it, server-side sets are ignored, and each
  attempt raises the DISABLE alarm with severity DISS (INVALID). See
  :attr:`caioc.server.ChannelData.disabled`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..ca import ECA, AlarmSeverity, AlarmStatus, SubscriptionMask
from ..server import (
    ChannelChar,
    ChannelData,
    ChannelDouble,
    ChannelEnum,
    ChannelError,
    ChannelShort,
    ChannelString,
)

if TYPE_CHECKING:
    from ..server._circuit import Wakeup

__all__ = ["FIELDS", "MENU_SCAN", "ScanControl", "add_fields"]

#: The alarm conditions a CA enum can name (16 strings at most); STAT
#: values past them are still served, as their numbers.
_STATUS_STRINGS = [status.name for status in AlarmStatus][:16]
_SEVERITY_STRINGS = [severity.name for severity in AlarmSeverity]

#: field -> the ChannelData attribute it mirrors (limits and display).
_LIMIT_FIELDS = {
    "HOPR": "upper_disp_limit",
    "LOPR": "lower_disp_limit",
    "DRVH": "upper_ctrl_limit",
    "DRVL": "lower_ctrl_limit",
    "HIHI": "upper_alarm_limit",
    "HIGH": "upper_warning_limit",
    "LOW": "lower_warning_limit",
    "LOLO": "lower_alarm_limit",
}
#: field -> the ChannelData attribute: the severity of each alarm limit.
_SEVERITY_FIELDS = {
    "HHSV": "upper_alarm_severity",
    "HSV": "upper_warning_severity",
    "LSV": "lower_warning_severity",
    "LLSV": "lower_alarm_severity",
}
#: field -> the ChannelData attribute: hysteresis and deadbands.
_DEADBAND_FIELDS = {
    "HYST": "alarm_hysteresis",
    "MDEL": "monitor_deadband",
    "ADEL": "archive_deadband",
}
FIELDS = (
    "VAL",
    "NAME",
    "RTYP",
    "DESC",
    "EGU",
    "PREC",
    "SEVR",
    "STAT",
    *_LIMIT_FIELDS,
    *_SEVERITY_FIELDS,
    *_DEADBAND_FIELDS,
    "SCAN",
    "PROC",
    "DISA",
)
#: epics-base's menuScan choices, in order.
MENU_SCAN = (
    "Passive",
    "Event",
    "I/O Intr",
    "10 second",
    "5 second",
    "2 second",
    "1 second",
    ".5 second",
    ".2 second",
    ".1 second",
)
_MENU_PERIODS = {3: 10.0, 4: 5.0, 5: 2.0, 6: 1.0, 7: 0.5, 8: 0.2, 9: 0.1}
#: dbCommon's DISV default: DISA equal to it disables the record.
DISABLE_VALUE = 1


class ScanControl:
    """The period of a PV's scan hook: what ``.SCAN`` shows and changes.

    ``period`` is None while the scan is stopped ("Passive"); ``changed``
    is set whenever it changes, to wake the scan loop. The scan loop makes
    ``changed`` as it starts, an event of the library it runs on (asyncio,
    trio or curio), which the group does not know before then.
    """

    def __init__(self, period: float) -> None:
        self.period: float | None = period
        self.choices = list(MENU_SCAN)
        self._periods = dict(_MENU_PERIODS)
        if period not in self._periods.values():
            self.choices.append(f"{period:g} second")
            self._periods[len(self.choices) - 1] = period
        self.changed: Wakeup | None = None

    @property
    def index(self) -> int:
        """The menu index of the current period (0: Passive)."""
        for index, period in self._periods.items():
            if period == self.period:
                return index
        return 0

    def select(self, index: int) -> None:
        """Scan at the period of choice ``index``, or stop (Passive)."""
        if index == 0:
            self.period = None
        elif index in self._periods:
            self.period = self._periods[index]
        else:
            raise ChannelError(
                ECA.PUTFAIL, f"SCAN {self.choices[index]!r}: choose Passive or a period"
            )
        if self.changed is not None:  # no loop yet: it starts at the period set here
            self.changed.set()


def _limit(channel: ChannelData, attribute: str) -> float:
    value = getattr(channel, attribute)
    return math.nan if value is None else float(value)


def _set_attribute(
    channel: ChannelData,
    attribute: str,
    convert: Callable[[Any], Any],
    then: Callable[[], Awaitable[None]] | None = None,
) -> Any:
    async def hook(field: ChannelData, value: Any) -> Any:
        setattr(channel, attribute, convert(value))
        if then is not None:
            await then()
        return value

    return hook


def _optional(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _scan_field(scan: ScanControl | None) -> ChannelEnum:
    async def select(field: ChannelData, value: Any) -> Any:
        if scan is not None:
            scan.select(int(value))
        elif int(value):
            raise ChannelError(ECA.PUTFAIL, "no scan hook: SCAN can only be Passive")
        return value

    choices = MENU_SCAN if scan is None else scan.choices
    return ChannelEnum(
        value=0 if scan is None else scan.index, enum_strings=choices, put_hook=select
    )


def _processing_fields(
    channel: ChannelData, scan: ScanControl | None, process: Callable[[], Awaitable[None]]
) -> dict[str, ChannelData]:
    """SCAN, PROC and DISA."""

    async def run(field: ChannelData, value: Any) -> Any:
        await process()
        return value

    async def disable(field: ChannelData, value: Any) -> Any:
        channel.disabled = int(value) == DISABLE_VALUE
        return value

    return {
        "SCAN": _scan_field(scan),
        "PROC": ChannelChar(value=0, put_hook=run),
        "DISA": ChannelShort(value=0, put_hook=disable),
    }


async def _store_again(channel: ChannelData) -> None:
    if not channel.check_disabled():
        await channel.set(channel.value)


def add_fields(
    name: str,
    channel: ChannelData,
    doc: str,
    *,
    scan: ScanControl | None = None,
    process: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, ChannelData]:
    """The field channels of PV ``name`` served by ``channel``.

    ``scan`` is the period of its scan hook, if it has one; ``process`` what
    a ``.PROC`` write runs (default: store the value again). The alarm
    limits and their severities are pp(TRUE) fields: writing one processes
    the PV unless it scans periodically, so the alarm follows at once.
    """
    if process is None:

        async def process() -> None:
            await _store_again(channel)

    run = process

    async def process_passive() -> None:
        if scan is None or scan.period is None:
            await run()

    fields: dict[str, ChannelData] = {
        f"{name}.VAL": channel,
        f"{name}.NAME": ChannelString(value=name[:39], read_only=True),
        f"{name}.RTYP": ChannelString(value=str(channel.record_type)[:39], read_only=True),
        f"{name}.DESC": ChannelString(value=doc.strip().split("\n")[0][:39]),
        f"{name}.SEVR": ChannelEnum(
            value=int(channel.alarm_severity), enum_strings=_SEVERITY_STRINGS, read_only=True
        ),
        f"{name}.STAT": ChannelEnum(
            value=int(channel.alarm_status),
            enum_strings=_STATUS_STRINGS,
            states=len(AlarmStatus),
            read_only=True,
        ),
        f"{name}.EGU": ChannelString(
            value=channel.units, put_hook=_set_attribute(channel, "units", str)
        ),
        f"{name}.PREC": ChannelShort(
            value=int(channel.precision or 0),
            put_hook=_set_attribute(channel, "precision", int),
        ),
    }
    for field, attribute in _LIMIT_FIELDS.items():
        alarm_limit = field in ("HIHI", "HIGH", "LOW", "LOLO")
        fields[f"{name}.{field}"] = _with_precision(
            ChannelDouble(
                value=_limit(channel, attribute),
                put_hook=_set_attribute(
                    channel,
                    attribute,
                    _optional if alarm_limit else float,
                    process_passive if alarm_limit else None,
                ),
            ),
            channel,
        )
    for field, attribute in _SEVERITY_FIELDS.items():
        fields[f"{name}.{field}"] = _reading_through(
            ChannelEnum(
                value=int(getattr(channel, attribute)),
                enum_strings=_SEVERITY_STRINGS,
                put_hook=_set_attribute(channel, attribute, AlarmSeverity, process_passive),
            ),
            channel,
            attribute,
        )
    for field, attribute in _DEADBAND_FIELDS.items():
        fields[f"{name}.{field}"] = _with_precision(
            _reading_through(
                ChannelDouble(
                    value=float(getattr(channel, attribute)),
                    put_hook=_set_attribute(channel, attribute, float),
                ),
                channel,
                attribute,
            ),
            channel,
        )
    for field, field_channel in _processing_fields(channel, scan, process).items():
        fields[f"{name}.{field}"] = field_channel
    # A record's fields are in its access security group, as in an EPICS IOC:
    # the .acf rules that guard a PV guard its limits, .PROC and .DISA too.
    group, level = channel.access_group, channel.access_level
    for field_channel in fields.values():
        if field_channel is not channel:
            field_channel.access_group, field_channel.access_level = group, level
    _follow(channel, name, fields)
    return fields


def _with_precision(field: ChannelData, channel: ChannelData) -> ChannelData:
    """A DOUBLE field shown with its PV's PREC, as a record's get_precision does."""
    read = field.read
    field.precision = channel.precision

    async def read_with_precision(data_type: int, data_count: int, client_version: int) -> Any:
        if field.precision != channel.precision:
            field.precision = channel.precision
        return await read(data_type, data_count, client_version)

    field.read = read_with_precision  # type: ignore[method-assign]
    return field


def _reading_through(field: ChannelData, channel: ChannelData, attribute: str) -> ChannelData:
    """``field`` answering reads with ``channel``'s ``attribute`` even if server code set it.

    Cheaper than following every update of the PV, for settings that
    rarely change other than through their field.
    """
    read = field.read

    async def read_current(data_type: int, data_count: int, client_version: int) -> Any:
        current = getattr(channel, attribute)
        if field.value != current:
            field.set_nowait(current)
        return await read(data_type, data_count, client_version)

    field.read = read_current  # type: ignore[method-assign]
    return field


_ALARM_MASK = int(SubscriptionMask.ALARM)
_PROPERTY_MASK = int(SubscriptionMask.PROPERTY)


def _follow(channel: ChannelData, name: str, fields: dict[str, ChannelData]) -> None:
    """Keep the derived fields in step with ``channel`` after each change.

    Only what a change can touch is compared: SEVR and STAT when an alarm
    is posted, EGU, PREC and the limits when the metadata changes (which
    happens with or without subscribers). A plain value update, by far the
    most frequent, costs nothing here.
    """
    publish = channel.publish
    metadata_changed = channel._metadata_changed
    severity_field, status_field = fields[f"{name}.SEVR"], fields[f"{name}.STAT"]
    units_field, precision_field = fields[f"{name}.EGU"], fields[f"{name}.PREC"]
    limit_fields = [(fields[f"{name}.{field}"], attr) for field, attr in _LIMIT_FIELDS.items()]

    def mirror(target: ChannelData, value: Any) -> None:
        current = target.value
        same = current == value or (
            isinstance(value, float) and math.isnan(value) and math.isnan(float(current))
        )
        if not same:
            target.set_nowait(value)

    def follow_properties() -> None:
        mirror(units_field, channel.units)
        mirror(precision_field, int(channel.precision or 0))
        for target, attribute in limit_fields:
            mirror(target, _limit(channel, attribute))

    def publish_and_follow(mask: int) -> None:
        publish(mask)
        if mask & _ALARM_MASK:
            mirror(severity_field, int(channel.alarm_severity))
            mirror(status_field, int(channel.alarm_status))
        if mask & _PROPERTY_MASK:
            follow_properties()

    def metadata_changed_and_follow() -> None:
        metadata_changed()
        follow_properties()

    channel.publish = publish_and_follow  # type: ignore[method-assign]
    channel._metadata_changed = metadata_changed_and_follow  # type: ignore[method-assign]

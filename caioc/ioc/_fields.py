"""Record-like field channels beside each PV: .VAL .DESC .EGU .SEVR ...

EPICS clients (displays, archivers, alarm handlers) read a record's fields
by name: ``PV.EGU`` for units, ``PV.SEVR`` for the alarm severity,
``PV.HOPR`` for the display range. Each PV of a :class:`PVGroup` gets
these as channels of their own, kept in step with the PV: writing
``PV.EGU`` changes the PV's units (and posts DBE_PROPERTY), an alarm on the
PV changes ``PV.SEVR`` and ``PV.STAT`` and posts their monitors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..ca import AlarmSeverity, AlarmStatus
from ..server import ChannelData, ChannelDouble, ChannelEnum, ChannelShort, ChannelString

__all__ = ["FIELDS", "add_fields"]

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
FIELDS = ("VAL", "NAME", "RTYP", "DESC", "EGU", "PREC", "SEVR", "STAT", *_LIMIT_FIELDS)


def _limit(channel: ChannelData, attribute: str) -> float:
    value = getattr(channel, attribute)
    return math.nan if value is None else float(value)


def _set_attribute(channel: ChannelData, attribute: str, convert: Callable[[Any], Any]) -> Any:
    async def hook(field: ChannelData, value: Any) -> Any:
        setattr(channel, attribute, convert(value))
        return value

    return hook


def _optional(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def add_fields(name: str, channel: ChannelData, doc: str) -> dict[str, ChannelData]:
    """The field channels of PV ``name`` served by ``channel``."""
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
        convert: Callable[[Any], Any] = (
            _optional if field in ("HIHI", "HIGH", "LOW", "LOLO") else float
        )
        fields[f"{name}.{field}"] = ChannelDouble(
            value=_limit(channel, attribute),
            put_hook=_set_attribute(channel, attribute, convert),
        )
    _follow(channel, name, fields)
    return fields


def _follow(channel: ChannelData, name: str, fields: dict[str, ChannelData]) -> None:
    """Keep the derived fields in step with ``channel`` after each change."""
    publish = channel.publish

    def mirror(field: str, value: Any) -> None:
        target = fields[f"{name}.{field}"]
        current = target.value
        same = current == value or (
            isinstance(value, float) and math.isnan(value) and math.isnan(float(current))
        )
        if not same:
            target.set_nowait(value)

    def publish_and_follow(mask: int) -> None:
        publish(mask)
        mirror("SEVR", int(channel.alarm_severity))
        mirror("STAT", int(channel.alarm_status))
        mirror("EGU", channel.units)
        mirror("PREC", int(channel.precision or 0))
        for field, attribute in _LIMIT_FIELDS.items():
            mirror(field, _limit(channel, attribute))

    channel.publish = publish_and_follow  # type: ignore[method-assign]

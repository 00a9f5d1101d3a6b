"""A scalar number channel made from a Python number skips numpy: same channel.

A server makes thousands of ``ChannelDouble(value=0.0)`` at start-up, so
``ChannelData.__init__`` stores a plain ``int``/``float`` as ``set`` does
(``_quick_number``), knows that a channel without alarm limits has an
empty alarm table, and skips the metadata loop when every metadata
argument is its default. Whatever it makes, or refuses, must be what the
generic path makes: the same class with a coercion method overridden
(``_generic`` is then false) takes that path.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from test_data_quick_set import EDGES, same

from caioc.ca import AlarmSeverity, AlarmStatus
from caioc.server._data import (
    ChannelChar,
    ChannelData,
    ChannelDouble,
    ChannelFloat,
    ChannelInteger,
    ChannelShort,
    ChannelValueError,
)

CLASSES = [ChannelDouble, ChannelFloat, ChannelInteger, ChannelShort, ChannelChar]


def generic_twin(cls: type[ChannelData]) -> type[ChannelData]:
    """``cls`` with an override that changes nothing but sends it down the generic path."""

    class Twin(cls):  # type: ignore[valid-type, misc]
        def _native(self, value: Any) -> Any:
            return super()._native(value)

    return Twin


def made(cls: type[ChannelData], value: Any, **options: Any) -> tuple[str, Any]:
    try:
        channel = cls(value=value, **options)
    except (ChannelValueError, ValueError, TypeError) as error:
        return "error", type(error)
    return "ok", (channel.value, channel.alarm_status, channel.alarm_severity)


def same_channel(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] != b[0] or a[0] == "error":
        return a == b
    return same(("ok", a[1][0]), ("ok", b[1][0])) and a[1][1:] == b[1][1:]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("value", [*EDGES, True, None], ids=repr)
def test_new_channel_holds_what_generic_path_makes(cls: type[ChannelData], value: Any) -> None:
    assert same_channel(made(cls, value), made(generic_twin(cls), value))


LIMITS = {
    "upper_alarm_limit": (20.0, 25.0, AlarmStatus.HIHI, AlarmSeverity.MAJOR),
    "upper_warning_limit": (10.0, 15.0, AlarmStatus.HIGH, AlarmSeverity.MINOR),
    "lower_warning_limit": (-10.0, -15.0, AlarmStatus.LOW, AlarmSeverity.MINOR),
    "lower_alarm_limit": (-20.0, -25.0, AlarmStatus.LOLO, AlarmSeverity.MAJOR),
}


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_each_alarm_limit_given_at_construction_alarms(name: str) -> None:
    limit, beyond, status, severity = LIMITS[name]
    for value in (0.0, beyond, math.nan):
        quick = made(ChannelDouble, value, **{name: limit})
        assert same_channel(quick, made(generic_twin(ChannelDouble), value, **{name: limit}))
        if value == beyond:
            assert quick[1][1:] == (status, severity)


def test_all_limits_together() -> None:
    limits = {name: limit for name, (limit, *_) in LIMITS.items()}
    for value in (0.0, 12.0, 30.0, -12.0, -30.0):
        assert same_channel(
            made(ChannelDouble, value, **limits),
            made(generic_twin(ChannelDouble), value, **limits),
        )


def test_no_limits_no_alarm_then_limits_set_later_apply() -> None:
    channel = ChannelDouble(value=50.0)
    assert channel.alarm_severity == AlarmSeverity.NO_ALARM
    channel.upper_alarm_limit = 10.0
    channel.set_nowait(50.0)
    assert (channel.alarm_status, channel.alarm_severity) == (
        AlarmStatus.HIHI,
        AlarmSeverity.MAJOR,
    )


def test_metadata_other_than_the_defaults_is_kept() -> None:
    channel = ChannelDouble(
        value=1.0,
        units="mm",
        precision=3,
        upper_disp_limit=5,
        record_type="ai",
        upper_alarm_severity="MINOR",
        disable_severity="MAJOR",
    )
    assert channel.units == "mm"
    assert channel.precision == 3
    assert channel.upper_disp_limit == 5.0 and type(channel.upper_disp_limit) is float
    assert channel.record_type == "ai"
    assert channel.upper_alarm_severity == AlarmSeverity.MINOR
    assert channel.disable_severity == AlarmSeverity.MAJOR
    plain = ChannelDouble(value=1.0)
    assert (plain.units, plain.precision, plain.record_type) == ("", None, "caioc")
    assert plain.disable_severity == AlarmSeverity.INVALID


@pytest.mark.parametrize("dtype", ["<f8", ">f8", "<i4", "<f4"])
def test_an_array_value_never_shares_the_callers_memory(dtype: str) -> None:
    given = np.arange(10).astype(dtype)
    channel = ChannelDouble(value=given)
    assert not np.shares_memory(given, channel.value)
    assert channel.value.dtype == np.dtype(">f8") and not channel.value.flags.writeable
    given[0] = 99
    assert channel.value[0] == 0
    update = np.arange(10, 20).astype(dtype)
    channel.set_nowait(update)
    assert not np.shares_memory(update, channel.value)
    update[0] = -1
    assert channel.value.tolist() == list(range(10, 20))
    assert not channel.value.flags.writeable

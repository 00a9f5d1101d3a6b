"""``set`` of a Python number into a scalar number channel skips numpy: same result.

A polled PV stores a fresh ``int`` or ``float`` many times a second, so
``ChannelData.set`` takes a path without numpy for them. Whatever it
stores, and whatever it refuses, must be exactly what the generic path
(``python_to_native`` then ``_from_native``) stores or refuses.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

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

NUMBER_CLASSES = [ChannelDouble, ChannelFloat, ChannelInteger, ChannelShort]

EDGES = [
    0,
    -0.0,
    1,
    -1,
    255,
    256,
    -(2**15) - 1,
    -(2**15),
    2**15 - 1,
    2**15,
    -(2**31) - 1,
    -(2**31),
    2**31 - 1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**70,
    0.5,
    -0.5,
    1.9999,
    -1.9999,
    255.9,
    2147483647.5,
    -2147483648.9,
    3.4028235e38,
    3.5e38,
    -3.5e38,
    1e-40,
    -1e-46,
    1e300,
    math.inf,
    -math.inf,
    math.nan,
]


def generic(channel: ChannelData, value: Any) -> tuple[str, Any]:
    """What the generic (numpy) path makes of ``value``: ("ok", stored) or ("error", type)."""
    try:
        return "ok", channel._from_native(channel._native(value), strict=True)
    except ChannelValueError as error:
        return "error", type(error)


def quick(channel: ChannelData, value: Any) -> tuple[str, Any]:
    """What ``set_nowait`` stores (or raises)."""
    try:
        channel.set_nowait(value)
    except ChannelValueError as error:
        return "error", type(error)
    return "ok", channel.value


def same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "error":
        return a[1] is b[1]
    x, y = a[1], b[1]
    if type(x) is not type(y):
        return False
    if isinstance(x, float) and math.isnan(x):
        return math.isnan(y)
    return bool(x == y) and math.copysign(1, x) == math.copysign(1, y)


@pytest.mark.parametrize("cls", [*NUMBER_CLASSES, ChannelChar])
@pytest.mark.parametrize("value", EDGES, ids=repr)
def test_edges_store_what_the_generic_path_stores(cls: type[ChannelData], value: Any) -> None:
    channel = cls(value=0)
    assert channel._quick_type is not None
    assert same(quick(channel, value), generic(channel, value))


@given(
    st.sampled_from([*NUMBER_CLASSES, ChannelChar]),
    st.one_of(
        st.integers(min_value=-(2**66), max_value=2**66),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
)
def test_any_number_stores_what_the_generic_path_stores(cls: type[ChannelData], value: Any) -> None:
    channel = cls(value=0)
    assert same(quick(channel, value), generic(channel, value))


def test_other_values_take_the_generic_path() -> None:
    channel = ChannelInteger(value=0)
    channel.set_nowait(True)  # a bool is an int subclass: numpy's rules
    assert channel.value == 1 and type(channel.value) is int
    channel.set_nowait(np.int16(7))
    assert channel.value == 7 and type(channel.value) is int
    channel.set_nowait("12")  # text converts as a DBR_STRING put would
    assert channel.value == 12
    with pytest.raises(ChannelValueError):
        channel.set_nowait(math.nan)
    double = ChannelDouble(value=0.0)
    double.set_nowait(np.float32(0.1))
    assert double.value == float(np.float32(0.1)) and type(double.value) is float


def test_arrays_and_overrides_keep_the_generic_path() -> None:
    assert ChannelDouble(value=[1.0, 2.0])._quick_type is None

    class Rounded(ChannelDouble):
        def _coerce(self, value: Any) -> Any:
            return round(float(value))

    channel = Rounded(value=0.0)
    assert channel._quick_type is None
    channel.set_nowait(2.7)
    assert channel.value == 3


def test_quick_set_still_computes_alarms_and_stamps() -> None:
    channel = ChannelDouble(value=0.0, upper_alarm_limit=10.0, timestamp=1e9)
    channel.set_nowait(11)
    assert channel.value == 11.0
    assert (channel.alarm_status, channel.alarm_severity) == (
        AlarmStatus.HIHI,
        AlarmSeverity.MAJOR,
    )
    assert channel.timestamp > 1e9
    channel.set_nowait(math.nan)
    assert channel.alarm_status == AlarmStatus.UDF
    channel.set_nowait(1, status=AlarmStatus.READ, severity=AlarmSeverity.MINOR)
    assert (channel.alarm_status, channel.alarm_severity) == (
        AlarmStatus.READ,
        AlarmSeverity.MINOR,
    )

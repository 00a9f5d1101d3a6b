"""Record fields that steer processing: HHSV.. HYST, MDEL/ADEL, SCAN, PROC, DISA.

First the data layer (``ChannelData``) case by case, as aiRecord.c,
recGbl.c and dbAccess.c behave; then the fields of a :class:`PVGroup`;
then libca (pyepics) against caioc and against softioc's ao record for
the same puts: the monitor updates and severities must agree.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Iterator
from typing import Any

import pytest
from peers import ca_environment, free_port, process_until_ready, run_pyepics_each
from waiting import run

from caioc.ca import (
    AlarmSeverity,
    AlarmStatus,
    ChannelType,
    SubscriptionMask,
    decode_dbr,
    encode_dbr,
    metadata_dict,
)
from caioc.ioc import FIELDS, PVGroup, pvproperty
from caioc.server import (
    ChannelData,
    ChannelDouble,
    ChannelEnum,
    ChannelError,
    ChannelInteger,
    ChannelString,
)
from caioc.server._data_support import deadband_exceeded

T = ChannelType
VALUE, LOG, ALARM = SubscriptionMask.VALUE, SubscriptionMask.LOG, SubscriptionMask.ALARM
MODERN = 13


class Sub:
    """A subscription that keeps each update's value and alarm."""

    def __init__(self, mask: int, data_type: int = T.TIME_DOUBLE) -> None:
        self.data_type = data_type
        self.data_count = 1
        self.mask = int(mask)
        self.client_version = MODERN
        self.updates: list[tuple[Any, int, int]] = []

    def deliver(self, payload: Any, count: int) -> None:
        metadata, values = decode_dbr(self.data_type, count, payload)
        md = metadata_dict(metadata) if metadata is not None else {}
        value = values.tolist()[0]
        self.updates.append((value, md.get("status", 0), md.get("severity", 0)))

    def values(self) -> list[Any]:
        return [value for value, _, _ in self.updates]


def now(coroutine: Awaitable[Any]) -> Any:
    async def body() -> Any:
        return await coroutine

    return asyncio.run(body())


def put(channel: ChannelData, data_type: int, value: Any) -> None:
    payload, count = encode_dbr(data_type, [value])
    now(channel.write(data_type, count, payload))


def alarm(channel: ChannelData) -> tuple[str, str]:
    return channel.alarm_status.name, channel.alarm_severity.name


# --------------------------------------------------------------------------
# Alarm severities and hysteresis


def test_each_limit_raises_its_own_severity() -> None:
    pv = ChannelDouble(
        upper_alarm_limit=9, upper_warning_limit=8, lower_warning_limit=-8, lower_alarm_limit=-9
    )
    # the defaults are what every caioc PV raised before the fields existed
    assert [
        int(pv.upper_alarm_severity),
        int(pv.upper_warning_severity),
        int(pv.lower_warning_severity),
        int(pv.lower_alarm_severity),
    ] == [2, 1, 1, 2]
    pv.upper_warning_severity = AlarmSeverity.MAJOR
    pv.lower_alarm_severity = "INVALID"
    now(pv.set(8.5))
    assert alarm(pv) == ("HIGH", "MAJOR")
    now(pv.set(-9.5))
    assert alarm(pv) == ("LOLO", "INVALID")
    # NO_ALARM turns a limit off: the next one down is checked instead
    pv.upper_alarm_severity = 0
    now(pv.set(9.5))
    assert alarm(pv) == ("HIGH", "MAJOR")
    pv.upper_warning_severity = 0
    now(pv.set(9.5))
    assert alarm(pv) == ("NO_ALARM", "NO_ALARM")
    # ... and reads as NaN in GR/CTRL replies, as aiRecord's get_alarm_double
    payload, _ = now(pv.read(T.CTRL_DOUBLE, 1, MODERN))
    limits = metadata_dict(decode_dbr(T.CTRL_DOUBLE, 1, payload)[0])
    assert math.isnan(limits["upper_alarm_limit"]) and math.isnan(limits["upper_warning_limit"])
    assert (limits["lower_warning_limit"], limits["lower_alarm_limit"]) == (-8.0, -9.0)
    with pytest.raises(ValueError):
        pv.upper_alarm_severity = "LOUD"


def test_a_severity_change_posts_a_property_update() -> None:
    pv = ChannelDouble(upper_warning_limit=1.0)
    prop = Sub(SubscriptionMask.PROPERTY, T.CTRL_DOUBLE)
    pv.subscribe(prop)
    pv.upper_warning_severity = AlarmSeverity.MAJOR
    pv.alarm_hysteresis = 0.5  # not a property: no update
    assert len(prop.updates) == 2


def test_hysteresis_keeps_an_alarm_until_the_value_is_back_by_hyst() -> None:
    pv = ChannelDouble(upper_alarm_limit=20.0, upper_warning_limit=10.0, alarm_hysteresis=2.0)
    steps = [
        (5.0, "NO_ALARM"),
        (10.0, "HIGH"),
        (8.5, "HIGH"),  # within HYST of HIGH
        (8.0, "HIGH"),  # exactly HYST back: still in (>=, as checkAlarms)
        (7.9, "NO_ALARM"),
        (9.0, "NO_ALARM"),  # hysteresis only holds an alarm, never raises one
        (20.0, "HIHI"),
        (18.5, "HIHI"),
        (17.0, "HIGH"),  # out of HIHI's band, still above HIGH
        (9.0, "HIGH"),  # and now within HIGH's
    ]
    for value, status in steps:
        now(pv.set(value))
        assert pv.alarm_status.name == status, value
    zero = ChannelDouble(upper_warning_limit=10.0)
    now(zero.set(10.0))
    now(zero.set(9.999))
    assert zero.alarm_status is AlarmStatus.NO_ALARM  # HYST 0: as before
    low = ChannelInteger(lower_alarm_limit=0, alarm_hysteresis=3)
    for value, status in [(0, "LOLO"), (3, "LOLO"), (4, "NO_ALARM")]:
        now(low.set(value))
        assert low.alarm_status.name == status


# --------------------------------------------------------------------------
# Deadbands


def test_deadband_check_is_recgbl_check_deadband() -> None:
    inf, nan = math.inf, math.nan
    assert not deadband_exceeded(1.0, 1.0, 0.0)
    assert deadband_exceeded(1.0, 1.0, -1.0)  # negative: every update
    assert deadband_exceeded(1.0, 1.5, 0.4) and not deadband_exceeded(1.0, 1.5, 0.5)
    assert deadband_exceeded(1.0, nan, 1e300) and deadband_exceeded(nan, 1.0, 1e300)
    assert not deadband_exceeded(nan, nan, 0.0) and deadband_exceeded(nan, nan, -1.0)
    assert deadband_exceeded(inf, -inf, 1e300) and not deadband_exceeded(inf, inf, 0.0)
    assert deadband_exceeded(1.0, inf, 1e300) and deadband_exceeded(nan, inf, 1e300)


def test_default_deadbands_post_every_update() -> None:
    pv = ChannelDouble()
    assert (pv.monitor_deadband, pv.archive_deadband) == (-1.0, -1.0)
    value, log = Sub(VALUE), Sub(LOG)
    pv.subscribe(value)
    pv.subscribe(log)
    for x in (1.0, 1.0, 1.0):
        now(pv.set(x))
    assert value.values() == log.values() == [0.0, 1.0, 1.0, 1.0]


def test_monitor_and_archive_deadbands_as_an_ai_record() -> None:
    pv = ChannelDouble(monitor_deadband=0.5, archive_deadband=2.0, upper_alarm_limit=10.0)
    value, log, alarms = Sub(VALUE), Sub(LOG), Sub(ALARM)
    for sub in (value, log, alarms):
        pv.subscribe(sub)
    for x in (0.3, 0.6, 1.0, 1.2, 2.1, 2.1, 11.0, 10.8, 9.9, math.nan, math.nan, 1.0):
        now(pv.set(x))
    # MLST moves only when an update is posted: 0 -> 0.6 -> 1.2 -> 2.1 ...
    assert value.values()[:5] == [0.0, 0.6, 1.2, 2.1, 11.0]
    assert value.values()[5:] == [9.9, pytest.approx(math.nan, nan_ok=True), 1.0]
    assert log.values()[:3] == [0.0, 2.1, 11.0]
    assert log.values()[3] != log.values()[3] and log.values()[4:] == [1.0]
    # an alarm change posts DBE_ALARM whatever the deadbands: 10.8 is within
    # MDEL of 11 but not 9.9's clearing of HIHI
    assert [v for v, _, _ in alarms.updates][1:] == [
        11.0,
        9.9,
        pytest.approx(math.nan, nan_ok=True),
        1.0,
    ]
    # MDEL 0: any change, and no update for an unchanged value
    pv.monitor_deadband = 0.0
    before = len(value.updates)
    now(pv.set(1.0))
    now(pv.set(1.25))
    assert value.values()[before:] == [1.25]


def test_deadbands_leave_other_channels_as_they_were() -> None:
    channels: list[tuple[ChannelData, Any]] = [
        (ChannelDouble(value=[1.0, 2.0], monitor_deadband=5.0), [1.0, 2.0]),
        (ChannelString(value="a", monitor_deadband=5.0), "a"),
        (ChannelEnum(enum_strings=["a", "b"], monitor_deadband=5.0), 0),
    ]
    for channel, same in channels:
        sub = Sub(VALUE, T.STRING)
        channel.subscribe(sub)
        now(channel.set(same))
        now(channel.set(same))
        assert len(sub.updates) == 3, channel


# --------------------------------------------------------------------------
# Disabled channels


def test_a_disabled_channel_does_not_process() -> None:
    hooked: list[float] = []

    async def hook(channel: ChannelData, value: float) -> None:
        hooked.append(value)

    pv = ChannelDouble(value=1.0, put_hook=hook, upper_alarm_limit=100.0)
    everything = Sub(VALUE | LOG | ALARM)
    pv.subscribe(everything)
    stamp = pv.timestamp
    pv.disabled = True
    assert alarm(pv) == ("NO_ALARM", "NO_ALARM")  # DISA is not processed by itself
    put(pv, T.DOUBLE, 200.0)
    # dbPut wrote the field; dbProcess refused: no hook, no limit alarm, no
    # new timestamp; the DISABLE alarm posts the value with VALUE|ALARM once
    assert hooked == [] and pv.value == 200.0 and pv.timestamp == stamp
    assert alarm(pv) == ("DISABLE", "INVALID")
    assert everything.updates[1:] == [(200.0, AlarmStatus.DISABLE, AlarmSeverity.INVALID)]
    put(pv, T.DOUBLE, 3.0)
    now(pv.set(4.0))
    now(pv.set_alarm(AlarmStatus.COMM, AlarmSeverity.MAJOR))
    assert pv.value == 3.0 and alarm(pv) == ("DISABLE", "INVALID") and hooked == []
    assert len(everything.updates) == 2
    assert pv.check_disabled()
    pv.disabled = False
    assert not pv.check_disabled() and alarm(pv) == ("DISABLE", "INVALID")
    put(pv, T.DOUBLE, 5.0)
    assert hooked == [5.0] and alarm(pv) == ("NO_ALARM", "NO_ALARM")
    quiet = ChannelDouble(disable_severity="MINOR")
    quiet.disabled = True
    now(quiet.set(1.0))
    assert alarm(quiet) == ("DISABLE", "MINOR") and quiet.value == 0.0


# --------------------------------------------------------------------------
# The fields of a PVGroup


class Plant(PVGroup):
    """PVs with and without hooks."""

    level = pvproperty(
        0.0,
        upper_warning_limit=5.0,
        upper_alarm_limit=8.0,
        upper_warning_severity="MAJOR",
        alarm_hysteresis=0.5,
        monitor_deadband=0.0,
        doc="A tank level",
    )
    ticks = pvproperty(0)
    slow = pvproperty(0)
    reading = pvproperty(0.0)
    setpoint = pvproperty(0.0)
    reads = 0
    puts: list[float] = []

    @ticks.scan(period=1.0)
    async def ticks(self, instance: ChannelInteger) -> None:
        await instance.set(instance.value + 1)

    @slow.scan(period=0.05)
    async def slow(self, instance: ChannelInteger) -> None:
        await instance.set(instance.value + 1)

    @reading.getter
    async def reading(self, instance: ChannelDouble) -> float:
        type(self).reads += 1
        return float(type(self).reads)

    @setpoint.putter
    async def setpoint(self, instance: ChannelDouble, value: float) -> float:
        self.puts.append(value)
        return value


def field_put(group: PVGroup, name: str, value: Any) -> None:
    field = group.pvdb[name]
    data_type = T.STRING if isinstance(value, str) else field.native_type
    payload, count = encode_dbr(data_type, [value])
    now(field.write(data_type, count, payload))


def field_read(group: PVGroup, name: str, data_type: int = T.STRING) -> Any:
    payload, count = now(group.pvdb[name].read(data_type, 1, MODERN))
    values = decode_dbr(data_type, count, payload)[1]
    return values[0].decode() if data_type == T.STRING else values.tolist()[0]


def test_the_fields_exist_with_their_native_types() -> None:
    plant = Plant("p:")
    types = {
        "HHSV": T.ENUM,
        "HSV": T.ENUM,
        "LSV": T.ENUM,
        "LLSV": T.ENUM,
        "HYST": T.DOUBLE,
        "MDEL": T.DOUBLE,
        "ADEL": T.DOUBLE,
        "SCAN": T.ENUM,
        "PROC": T.CHAR,
        "DISA": T.INT,
    }
    for field, native in types.items():
        assert field in FIELDS
        assert plant.pvdb[f"p:level.{field}"].native_type == native, field
        assert plant.pvdb[f"p:level.{field}"].access_rights("h", "u") & 2, field
    sevr = plant.pvdb["p:level.HHSV"]
    assert isinstance(sevr, ChannelEnum)
    assert sevr.enum_strings == ("NO_ALARM", "MINOR", "MAJOR", "INVALID")
    assert [field_read(plant, f"p:level.{f}") for f in ("HHSV", "HSV", "LSV", "LLSV")] == [
        "MAJOR",
        "MAJOR",  # the pvproperty's option
        "MINOR",
        "MAJOR",
    ]
    assert field_read(plant, "p:level.HYST", T.DOUBLE) == 0.5
    assert field_read(plant, "p:level.MDEL", T.DOUBLE) == 0.0
    assert field_read(plant, "p:level.ADEL", T.DOUBLE) == -1.0
    # set by server code, read through the field
    plant.level.archive_deadband = 3.0
    assert field_read(plant, "p:level.ADEL", T.DOUBLE) == 3.0


def test_field_writes_steer_alarms_and_monitors() -> None:
    plant = Plant("p:")
    level = plant.level
    field_put(plant, "p:level.HSV", "MINOR")
    field_put(plant, "p:level.HHSV", "INVALID")
    field_put(plant, "p:level.HYST", 1.0)
    field_put(plant, "p:level.MDEL", 0.5)
    field_put(plant, "p:level.ADEL", 2.0)
    assert level.upper_warning_severity is AlarmSeverity.MINOR
    assert (level.alarm_hysteresis, level.monitor_deadband, level.archive_deadband) == (
        1.0,
        0.5,
        2.0,
    )
    value, log = Sub(VALUE), Sub(LOG)
    level.subscribe(value)
    level.subscribe(log)
    for x in (5.0, 4.7, 8.0, 3.0):  # 4.7: within MDEL, and HIGH held by HYST
        now(level.set(x))
    assert value.updates == [
        (0.0, 0, 0),
        (5.0, AlarmStatus.HIGH, AlarmSeverity.MINOR),
        (8.0, AlarmStatus.HIHI, AlarmSeverity.INVALID),
        (3.0, 0, 0),
    ]
    assert [v for v, _, _ in log.updates] == [0.0, 5.0, 8.0, 3.0]
    assert field_read(plant, "p:level.SEVR") == "NO_ALARM"
    field_put(plant, "p:level.LSV", "NO_ALARM")
    assert field_read(plant, "p:level.LSV") == "NO_ALARM"


def test_alarm_fields_process_a_passive_pv_at_once() -> None:
    plant = Plant("p:")
    now(plant.level.set(6.0))
    assert alarm(plant.level) == ("HIGH", "MAJOR")
    field_put(plant, "p:level.HSV", "MINOR")  # pp(TRUE): the alarm follows now
    assert alarm(plant.level) == ("HIGH", "MINOR")
    field_put(plant, "p:level.HIGH", 7.0)
    assert alarm(plant.level) == ("NO_ALARM", "NO_ALARM")
    assert field_read(plant, "p:level.SEVR") == "NO_ALARM"
    # a PV that scans periodically is not processed by a field write
    now(plant.ticks.set(5))
    field_put(plant, "p:ticks.HIGH", 1.0)
    assert plant.ticks.value == 5 and alarm(plant.ticks) == ("NO_ALARM", "NO_ALARM")
    # HYST, MDEL and ADEL are not pp fields
    stamp = plant.level.timestamp
    field_put(plant, "p:level.HYST", 2.0)
    assert plant.level.timestamp == stamp


def test_scan_shows_and_changes_the_period() -> None:
    plant = Plant("p:")
    scan = plant.pvdb["p:ticks.SCAN"]
    assert isinstance(scan, ChannelEnum)
    assert scan.enum_strings[:10] == (
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
    assert field_read(plant, "p:ticks.SCAN") == "1 second"
    assert field_read(plant, "p:slow.SCAN") == "0.05 second"  # an extra choice
    assert field_read(plant, "p:level.SCAN") == "Passive"
    with pytest.raises(ChannelError, match="scan hook"):
        field_put(plant, "p:level.SCAN", ".1 second")
    field_put(plant, "p:level.SCAN", "Passive")
    with pytest.raises(ChannelError, match="Passive or a period"):
        field_put(plant, "p:ticks.SCAN", "I/O Intr")
    assert field_read(plant, "p:ticks.SCAN") == "1 second"


class VirtualTime:
    """The running loop's clock, moved on by hand: scan periods without waiting.

    The loop never sleeps for real while this yields to it, so a scenario
    on virtual time is bounded by its own steps.
    """

    def __init__(self) -> None:
        self.now = 0.0
        asyncio.get_running_loop().time = self.time  # type: ignore[method-assign]

    def time(self) -> float:
        return self.now

    async def advance(self, seconds: float, step: float = 0.01) -> None:
        end = self.now + seconds
        while self.now < end:
            await self.settle()  # let woken tasks run before time moves on
            self.now = min(end, self.now + step)
        await self.settle()

    @staticmethod
    async def settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0)


def test_scan_periods_passive_proc_and_disa_on_a_scan_loop() -> None:
    async def scenario() -> None:
        clock = VirtualTime()
        plant = Plant("p:")
        ticks = plant.ticks
        await plant.startup()
        try:
            await clock.advance(10.5)
            assert ticks.value == 11  # at once, then once a second
            await plant.pvdb["p:ticks.SCAN"].write(T.STRING, 1, b".1 second")
            await clock.advance(1.05)
            assert ticks.value == 21
            await plant.pvdb["p:ticks.SCAN"].write(T.STRING, 1, b"Passive")
            await clock.advance(100.0, step=0.5)
            assert ticks.value == 21
            # PROC runs the scan hook once, whatever the scan
            await plant.pvdb["p:ticks.PROC"].write(T.CHAR, 1, b"\x01")
            assert ticks.value == 22
            await plant.pvdb["p:ticks.SCAN"].write(T.STRING, 1, b"10 second")
            await clock.advance(9.8, step=0.5)
            assert ticks.value == 22
            await clock.advance(0.4, step=0.5)
            assert ticks.value == 23  # one new period after the change
            # DISA 1: the hook is skipped and the DISABLE alarm raised
            await plant.pvdb["p:ticks.DISA"].write(T.INT, 1, b"\x00\x01")
            await clock.advance(30.0, step=0.5)
            assert ticks.value == 23
            assert ticks.alarm_status is AlarmStatus.DISABLE
            assert plant.pvdb["p:ticks.SEVR"].value == AlarmSeverity.INVALID
            await plant.pvdb["p:ticks.PROC"].write(T.CHAR, 1, b"\x01")
            assert ticks.value == 23
            await plant.pvdb["p:ticks.DISA"].write(T.INT, 1, b"\x00\x00")
            await clock.advance(10.5, step=0.5)
            assert ticks.value == 24 and ticks.alarm_status is AlarmStatus.NO_ALARM
        finally:
            await plant.shutdown()

    asyncio.run(scenario())  # virtual time: waiting.run's real-time bound would not tick


def test_proc_runs_the_getter_or_stores_the_value_again() -> None:
    async def scenario() -> None:
        plant = Plant("p:")
        reads = type(plant).reads
        await plant.pvdb["p:reading.PROC"].write(T.CHAR, 1, b"\x01")
        assert plant.reading.value == reads + 1
        # no hook: the value is stored again (a new update when MDEL allows)
        level = plant.level
        value = Sub(VALUE)
        level.subscribe(value)
        stamp = level.timestamp
        level.monitor_deadband = -1.0
        await plant.pvdb["p:level.PROC"].write(T.CHAR, 1, b"\x01")
        assert level.timestamp >= stamp and value.values() == [0.0, 0.0]
        level.monitor_deadband = 0.0  # ai's default: an unchanged value posts nothing
        await plant.pvdb["p:level.PROC"].write(T.CHAR, 1, b"\x01")
        assert value.values() == [0.0, 0.0]

    run(scenario)


def test_disa_skips_getter_and_putter() -> None:
    async def scenario() -> None:
        plant = Plant("p:")
        plant.puts = []
        await plant.pvdb["p:setpoint.DISA"].write(T.INT, 1, b"\x00\x01")
        await plant.pvdb["p:setpoint"].write(T.DOUBLE, 1, encode_dbr(T.DOUBLE, [7.0])[0])
        assert plant.puts == [] and plant.setpoint.value == 7.0
        assert plant.setpoint.alarm_status is AlarmStatus.DISABLE
        await plant.pvdb["p:setpoint.DISA"].write(T.INT, 1, b"\x00\x02")  # not DISV
        await plant.pvdb["p:setpoint"].write(T.DOUBLE, 1, encode_dbr(T.DOUBLE, [8.0])[0])
        assert plant.puts == [8.0] and plant.setpoint.alarm_status is AlarmStatus.NO_ALARM
        await plant.pvdb["p:reading.DISA"].write(T.INT, 1, b"\x00\x01")
        reads = type(plant).reads
        await plant.reading.read(T.DOUBLE, 1, MODERN)
        assert type(plant).reads == reads

    run(scenario)


# --------------------------------------------------------------------------
# libca against caioc and against softioc's ao record

SOFTIOC = """
from softioc import asyncio_dispatcher, builder, softioc

builder.SetDeviceName("TEST")
limits = dict(HIGH=5.0, HIHI=8.0, LOW=-5.0, LOLO=-8.0, HSV="MINOR", HHSV="MAJOR",
              LSV="MINOR", LLSV="MAJOR", PREC=3)
builder.aOut("AO", initial_value=0.0, MDEL=-1, ADEL=-1, **limits)
builder.aOut("AO0", initial_value=0.0, DISS="INVALID", **limits)  # MDEL 0, ADEL 0
builder.LoadDatabase()
softioc.iocInit(asyncio_dispatcher.AsyncioDispatcher(), enable_pva=False)
print("READY", flush=True)
softioc.non_interactive_ioc()
"""

CAIOC = """
import asyncio
from caioc.ioc import PVGroup, pvproperty, serve

limits = dict(upper_warning_limit=5.0, upper_alarm_limit=8.0, lower_warning_limit=-5.0,
              lower_alarm_limit=-8.0, precision=3)

class Test(PVGroup):
    AO = pvproperty(0.0, **limits)
    AO0 = pvproperty(0.0, monitor_deadband=0.0, archive_deadband=0.0, **limits)

# "PVs:" once it listens and the group has started: the test's ready line
asyncio.run(serve(Test("TEST:"), list_pvs=True))
"""

#: Puts and field writes; each PV ends with 100.0, which every mask posts,
#: so its arrival means every update before it arrived.
MONITORS = """
from epics import dbr

SEQUENCE = [
    ("AO.MDEL", 0.5), ("AO.ADEL", 2.0), ("AO.HYST", 1.0),
    ("AO", 0.3), ("AO", 0.6), ("AO", 0.6), ("AO", 1.0), ("AO", 2.1), ("AO", 5.0),
    ("AO", 4.7), ("AO", 4.2), ("AO", 3.9), ("AO", 8.0), ("AO", 7.5), ("AO", 6.9),
    ("AO.HSV", "MAJOR"), ("AO", 6.0), ("AO.HHSV", "NO_ALARM"), ("AO", 9.0),
    ("AO", -5.0), ("AO", -4.2), ("AO", -3.9), ("AO", 100.0),
    ("AO0", 1.0), ("AO0", 1.0), ("AO0", 1.5), ("AO0", 1.5), ("AO0", 6.0),
    ("AO0.DISA", 1), ("AO0", 3.0), ("AO0", 4.0), ("get", "AO0"), ("get", "AO0.STAT"),
    ("AO0.DISA", 0), ("AO0", 100.0),
]
gets = []
events = {}
pvs = []
for name in ("AO", "AO0"):
    for kind, mask in (("value", dbr.DBE_VALUE | dbr.DBE_ALARM), ("log", dbr.DBE_LOG),
                       ("alarm", dbr.DBE_ALARM)):
        seen = events[name + " " + kind] = []
        def record(value=None, severity=None, status=None, seen=seen, **kw):
            seen.append([round(value, 6), severity, status])
        pv = epics.PV("TEST:" + name, form="time", auto_monitor=mask, callback=record)
        assert pv.wait_for_connection(timeout=5)
        pvs.append(pv)
until(lambda: all(events.values()), "every monitor's first update")
for field, value in SEQUENCE:
    if field == "get":
        gets.append(epics.caget("TEST:" + value, as_string=True, use_monitor=False, timeout=5))
    else:
        assert epics.caput("TEST:" + field, value, wait=True, timeout=5) == 1, field
until(lambda: all(seen and seen[-1][0] == 100.0 for seen in events.values()),
      "every monitor's update to 100.0")
fields = {f: epics.caget("TEST:AO." + f, as_string=True, timeout=5)
          for f in ("HSV", "HHSV", "LSV", "LLSV", "MDEL", "ADEL", "HYST", "SEVR", "SCAN")}
native = {}
for f in ("HHSV", "MDEL", "ADEL", "HYST", "SCAN", "PROC", "DISA"):
    chid = epics.ca.create_channel("TEST:AO." + f)
    assert epics.ca.connect_channel(chid, timeout=5)
    native[f] = epics.ca.field_type(chid)
result = {"events": events, "fields": fields, "native": native, "gets": gets}
"""


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, dict[str, str]]]:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    pytest.importorskip("softioc", reason="softioc (the C IOC) not installed")
    envs = {
        "caioc": ca_environment(free_port(), free_port()),
        "softioc": ca_environment(free_port(), free_port()),
    }
    with (
        process_until_ready(CAIOC, envs["caioc"], ready="PVs:"),
        process_until_ready(SOFTIOC, envs["softioc"]),
    ):
        yield envs


@pytest.mark.peers
def test_libca_sees_the_monitors_and_severities_an_ao_record_sends(
    servers: dict[str, dict[str, str]],
) -> None:
    results = run_pyepics_each(MONITORS, servers)
    ours, theirs = results["caioc"], results["softioc"]
    assert ours["events"] == theirs["events"]
    assert ours["fields"] == theirs["fields"]
    assert (
        ours["native"]
        == theirs["native"]
        == {
            "HHSV": T.ENUM,
            "MDEL": T.DOUBLE,
            "ADEL": T.DOUBLE,
            "HYST": T.DOUBLE,
            "SCAN": T.ENUM,
            "PROC": T.CHAR,
            "DISA": T.INT,
        }
    )
    events = ours["events"]
    # MDEL 0.5 and ADEL 2 thin the updates out; 0.3 and the repeated 0.6 post nothing
    assert [value for value, _, _ in events["AO value"][:3]] == [0.0, 0.6, 2.1]
    assert [value for value, _, _ in events["AO log"][:3]] == [0.0, 2.1, 5.0]
    # HYST 1 holds HIGH down to 4.0; writing HSV MAJOR re-raises HIGH as MAJOR at once
    assert [4.2, 1, 4] in events["AO value"] and [3.9, 0, 0] in events["AO value"]
    assert [6.9, 2, 4] in events["AO alarm"]
    # MDEL 0: an unchanged value posts nothing
    assert [value for value, _, _ in events["AO0 value"]][:4] == [0.0, 1.0, 1.5, 6.0]
    # DISA 1: the put is stored, not processed; DISABLE/INVALID posted once
    assert ours["gets"] == theirs["gets"] == ["4.000", "18"]
    assert events["AO0 value"][4:] == [[3.0, 3, 18], [100.0, 2, 3]]
    assert [value for value, _, _ in events["AO0 log"]] == [0.0, 1.0, 1.5, 6.0, 100.0]
    assert ours["fields"]["HSV"] == "MAJOR" and ours["fields"]["SEVR"] == "MAJOR"

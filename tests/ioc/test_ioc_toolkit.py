"""The IOC toolkit: declarative groups, hooks, record fields, the runner."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest
from peers import ca_environment, free_port, process_until_ready, run_pyepics, server_config
from waiting import read_until, run

from caioc.ca import AlarmSeverity, AlarmStatus, ChannelType
from caioc.client import ClientConfig, Context, ServerError
from caioc.ioc import PVGroup, SubGroup, pvproperty
from caioc.server import ChannelDouble, ChannelEnum, ChannelInteger, ChannelString


class Heater(PVGroup):
    """A heater with a guarded setpoint."""

    setpoint = pvproperty(20.0, units="degC", precision=1, doc="Where to heat to")
    power = pvproperty(0, doc="Power in W")
    mode = pvproperty(0, enum_strings=["Off", "Auto"], doc="Operating mode")
    label = pvproperty("kiln", doc="A name")
    reading = pvproperty(
        0.0, read_only=True, upper_alarm_limit=90.0, upper_warning_limit=70.0, doc="Sensor"
    )
    reads = 0

    @setpoint.putter
    async def setpoint(self, instance: ChannelDouble, value: float) -> float:
        if value > 80:
            raise ValueError("above 80 degC needs the high-temperature mode")
        return round(value, 1)

    @power.getter
    async def power(self, instance: ChannelInteger) -> int:
        type(self).reads += 1
        return 100 * type(self).reads


class Oven(PVGroup):
    """Two heaters under one prefix, with macros."""

    top = SubGroup(Heater, prefix="top:")
    bottom = SubGroup(Heater, prefix="{side}:")
    ticks = pvproperty(0)
    started = pvproperty(0)

    @ticks.scan(period=0.02)
    async def ticks(self, instance: ChannelInteger) -> None:
        await instance.set(instance.value + 1)

    @started.startup
    async def started(self, instance: ChannelInteger) -> None:
        await instance.set(1)


def test_declaration_builds_channels_names_and_fields() -> None:
    oven = Oven("oven:", macros={"side": "low"})
    assert set(oven.pv_names) >= {
        "oven:ticks",
        "oven:started",
        "oven:top:setpoint",
        "oven:low:setpoint",
    }
    heater = oven.top
    assert isinstance(heater.setpoint, ChannelDouble) and heater.setpoint.units == "degC"
    assert isinstance(heater.power, ChannelInteger)
    assert isinstance(heater.mode, ChannelEnum) and heater.mode.enum_strings == ("Off", "Auto")
    assert isinstance(heater.label, ChannelString)
    assert oven.pvdb["oven:top:setpoint.VAL"] is heater.setpoint
    assert oven.pvdb["oven:top:setpoint.DESC"].value == "Where to heat to"
    assert oven.pvdb["oven:low:power.NAME"].value == "oven:low:power"
    with pytest.raises(ValueError, match="named"):

        class Twice(PVGroup):
            a = pvproperty(1, name="x")
            b = pvproperty(2, name="x")

        Twice()
    with pytest.raises(TypeError, match="async"):

        class Sync(PVGroup):
            a = pvproperty(1)

            @a.putter  # type: ignore[arg-type]
            def a(self, instance: Any, value: Any) -> Any:
                return value


async def _served(group: PVGroup) -> Any:
    from caioc.server import Server

    config = server_config()
    server = Server(group.pvdb, config)
    await server.start()
    await group.startup()
    return server


def test_hooks_fields_and_alarms_through_a_client() -> None:
    async def scenario() -> None:
        oven = Oven("o:", macros={"side": "low"})
        server = await _served(oven)
        try:
            config = ClientConfig(search_addresses=[("127.0.0.1", server.tcp_port)])
            async with Context(config) as ctx:
                setpoint, power, egu, sevr, stat, reading, ticks, started = await ctx.connect(
                    "o:top:setpoint",
                    "o:top:power",
                    "o:top:setpoint.EGU",
                    "o:top:reading.SEVR",
                    "o:top:reading.STAT",
                    "o:top:reading",
                    "o:ticks",
                    "o:started",
                )
                # putter: rounds, or refuses with the reason
                await setpoint.write(21.26)
                assert (await setpoint.read()).value == 21.3
                with pytest.raises(ServerError) as refused:
                    await setpoint.write(95.0)
                assert refused.value.eca == 160  # ECA_PUTFAIL
                assert (await setpoint.read()).value == 21.3
                # getter: runs before every read
                first = (await power.read()).value
                assert (await power.read()).value == first + 100
                # a field write changes the PV's metadata
                await egu.write("K")
                assert (await setpoint.read(ChannelType.CTRL_DOUBLE)).metadata["units"] == "K"
                # the alarm of the PV shows in its SEVR and STAT fields
                assert (await sevr.read(ChannelType.STRING)).value == "NO_ALARM"
                await oven.top.reading.set(75.0)
                assert (await sevr.read(ChannelType.STRING)).value == "MINOR"
                assert (await stat.read(ChannelType.STRING)).value == "HIGH"
                await oven.top.reading.set(math.nan)
                assert (await sevr.read()).value == AlarmSeverity.INVALID
                assert (await stat.read()).value == AlarmStatus.UDF
                # read-only PVs refuse puts
                assert not reading.access_rights & 2
                # startup and scan hooks ran
                assert (await started.read()).value == 1
                first_tick = (await ticks.read()).value
                await read_until(
                    ticks.read, lambda reading: reading.value >= first_tick + 3, "3 scans", 4.0
                )
        finally:
            await oven.shutdown()
            await server.stop()

    run(scenario)


def test_simple_example_with_the_c_client() -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    env = ca_environment(free_port(), free_port())
    argv = [sys.executable, "-m", "caioc.ioc_examples.simple", "--list-pvs"]
    with process_until_ready("", env, ready="    simple:C", argv=argv):
        result = run_pyepics(
            """
            put = epics.caput("simple:A", 42, wait=True, timeout=5)
            result = {
                "put": put,
                "A": epics.caget("simple:A", timeout=5),
                "B": epics.caget("simple:B", timeout=5),
                "C": list(epics.caget("simple:C", timeout=5)),
                "desc": epics.caget("simple:A.DESC", timeout=5),
                "name": epics.caget("simple:C.NAME", timeout=5),
            }
            """,
            env,
        )
    assert result == {
        "put": 1,
        "A": 42,
        "B": 2,
        "C": [1.0, 2.0, 3.0],
        "desc": "An integer",
        "name": "simple:C",
    }


def test_statistics_count_clients_and_channels() -> None:
    from caioc.ioc import StatsGroup
    from caioc.ioc._stats import attach_server, detach_server

    class WithStats(PVGroup):
        value = pvproperty(1.0)
        stats = SubGroup(StatsGroup, prefix="stats:")

    async def scenario() -> None:
        ioc = WithStats("s:")
        server = await _served(ioc)
        attach_server(server)
        try:
            config = ClientConfig(search_addresses=[("127.0.0.1", server.tcp_port)])
            async with Context(config) as ctx:
                _, clients, channels, memory, pid = await ctx.connect(
                    "s:value",
                    "s:stats:clients",
                    "s:stats:channels",
                    "s:stats:memory",
                    "s:stats:pid",
                )
                await ioc.stats.refresh()
                assert (await clients.read()).value == 1
                assert (await channels.read()).value == 5
                assert 1.0 < (await memory.read()).value < 10_000.0
                import os

                assert (await pid.read()).value == os.getpid()
        finally:
            detach_server(server)
            await ioc.shutdown()
            await server.stop()

    run(scenario)


def test_a_subclass_redefining_a_pv_replaces_it() -> None:
    class Base(PVGroup):
        first = pvproperty(1.0)
        second = pvproperty(2)

    class Derived(Base):
        first = pvproperty(5.0, units="V")

    derived = Derived("d:")
    assert derived.pv_names == ["d:first", "d:second"]
    assert derived.first.value == 5.0 and derived.first.units == "V"
    assert Base("b:").first.value == 1.0

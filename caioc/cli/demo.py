"""The demo IOC: a simulated thermostat served over Channel Access.

``caioc`` with no arguments runs it. It needs no hardware: a small
physical model (a room heated towards a setpoint, losing heat to the
outside, with sensor noise) stands in for the sensor and the heater, so
every PV moves the way a real one would and alarms when it should:

* ``PREFIX:temperature`` (read-only, degC, alarm limits) the sensor reading;
* ``PREFIX:setpoint`` (degC, writable, limits 5-30) where the heater aims;
* ``PREFIX:heater`` (enum Off/On) the heater relay, driven by the model;
* ``PREFIX:history`` (read-only array) the last 60 readings.

Until board files and drivers land, this is the IOC the README starts.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping

import numpy as np

from ..server import Server, ServerConfig
from ..server._data import ChannelData, ChannelDouble, ChannelEnum

__all__ = ["Thermostat", "make_pvdb", "serve"]

HISTORY = 60


class Thermostat:
    """A room, its heater and a noisy sensor, stepped in simulated time."""

    def __init__(self, seed: int | None = None) -> None:
        self.random = random.Random(seed)
        self.room = 18.0
        self.outside = 8.0
        self.heater_on = False

    def step(self, setpoint: float, seconds: float) -> float:
        """Advance the model; return the sensor reading."""
        # Bang-bang control with 0.5 degC of hysteresis, like a wall thermostat.
        if self.room < setpoint - 0.5:
            self.heater_on = True
        elif self.room > setpoint + 0.5:
            self.heater_on = False
        heating = 0.08 if self.heater_on else 0.0
        self.room += seconds * (heating - 0.004 * (self.room - self.outside))
        return round(self.room + self.random.gauss(0.0, 0.02), 3)


def make_pvdb(prefix: str) -> dict[str, ChannelData]:
    """The demo's channels, named under ``prefix``."""
    return {
        f"{prefix}temperature": ChannelDouble(
            value=18.0,
            units="degC",
            precision=2,
            read_only=True,
            lower_disp_limit=0.0,
            upper_disp_limit=40.0,
            upper_alarm_limit=35.0,
            upper_warning_limit=28.0,
            lower_warning_limit=10.0,
            lower_alarm_limit=5.0,
        ),
        f"{prefix}setpoint": ChannelDouble(
            value=21.0,
            units="degC",
            precision=1,
            lower_ctrl_limit=5.0,
            upper_ctrl_limit=30.0,
            lower_disp_limit=5.0,
            upper_disp_limit=30.0,
        ),
        f"{prefix}heater": ChannelEnum(value=0, enum_strings=["Off", "On"], read_only=True),
        f"{prefix}history": ChannelDouble(
            value=np.full(HISTORY, 18.0), max_length=HISTORY, units="degC", read_only=True
        ),
    }


async def simulate(pvdb: Mapping[str, ChannelData], prefix: str, period: float) -> None:
    """Step the model every ``period`` seconds and publish the readings."""
    model = Thermostat()
    history = np.full(HISTORY, model.room)
    temperature = pvdb[f"{prefix}temperature"]
    setpoint = pvdb[f"{prefix}setpoint"]
    heater = pvdb[f"{prefix}heater"]
    trend = pvdb[f"{prefix}history"]
    while True:
        # Simulated time runs 30x faster than the wall clock, so changes show.
        reading = model.step(float(setpoint.value), 30 * period)
        history = np.roll(history, -1)
        history[-1] = reading
        await temperature.set(reading)
        if int(heater.value) != int(model.heater_on):
            await heater.set(int(model.heater_on))
        await trend.set(history.copy())
        await asyncio.sleep(period)


async def serve(prefix: str, period: float = 1.0, config: ServerConfig | None = None) -> None:
    """Run the demo IOC until cancelled."""
    pvdb = make_pvdb(prefix)
    server = Server(pvdb, config or ServerConfig.from_environment())
    await server.start()
    print(f"caioc demo IOC serving on TCP port {server.tcp_port}:", flush=True)
    for name in pvdb:
        print(f"  {name}", flush=True)
    task = asyncio.get_running_loop().create_task(simulate(pvdb, prefix, period))
    try:
        await asyncio.Future()
    finally:
        task.cancel()
        await server.stop()

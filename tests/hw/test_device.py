"""Devices bound to PVs: values, faults as alarms, recovery, all on simulated I2C."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from peers import server_config
from waiting import run, until

from caioc.ca import AlarmSeverity, AlarmStatus, ChannelType
from caioc.client import ClientConfig, Context, ServerError
from caioc.hw import BadReply, Device, I2CBus, reading, register_reading, setting
from caioc.hw.sim import SimulatedI2CBus, SimulatedI2CDevice
from caioc.server import Server

CHIP_ID = 0x60


def make_chip() -> SimulatedI2CDevice:
    chip = SimulatedI2CDevice(0x48, name="thermometer")
    chip.poke(0xD0, CHIP_ID)
    set_temperature(chip, 21.5)
    return chip


def set_temperature(chip: SimulatedI2CDevice, celsius: float) -> None:
    chip.poke(0x00, struct.pack(">h", round(celsius * 256)))


class OnSimulatedI2C:
    """A Device's open/probe/close for a part at ``address`` on a SimulatedI2CBus.

    The part answers ``chip_id`` at register 0xD0; ``sim_bus`` is the bus.
    """

    address = 0x48
    chip_id = CHIP_ID
    sim_bus: SimulatedI2CBus
    bus: I2CBus | None

    async def open(self) -> None:
        if self.sim_bus.fd is None:
            self.sim_bus.open(1)  # as a driver would open /dev/i2c-1 again
        self.bus = I2CBus(self.sim_bus, timeout=0.5)
        self.chip = self.bus.device(self.address)

    async def probe(self) -> None:
        chip_id = await self.chip.read_register_async(0xD0)
        if chip_id != self.chip_id:
            raise BadReply(f"chip id 0x{chip_id:02x}, expected 0x{self.chip_id:02x}")

    async def close(self) -> None:
        if self.bus is not None:
            self.bus.close()
            self.bus = None


class Thermometer(OnSimulatedI2C, Device):
    """A 16-bit I2C thermometer with a heater setpoint register."""

    comm_failures = 3
    reconnect_delays = (0.02, 2.0, 0.1)

    temperature = reading(0.0, units="degC", precision=2, period=0.02, timeout=0.5)
    setpoint = setting(20.0, units="degC")

    def __init__(self, bus: SimulatedI2CBus, prefix: str = "thermo:") -> None:
        self.sim_bus = bus
        self.bus = None
        super().__init__(prefix)

    @temperature.reader
    async def temperature(self) -> float:  # type: ignore[no-redef]
        raw = await self.chip.read_registers_async(0x00, 2)
        return struct.unpack(">h", raw)[0] / 256

    @setpoint.writer
    async def setpoint(self, value: float) -> None:  # type: ignore[no-redef]
        await self.chip.write_registers_async(0x10, struct.pack(">h", round(value * 256)))


class RegisterThermometer(Thermometer):
    """The same thermometer, its temperature a register reading: no reader written."""

    temperature = register_reading(
        0x00, ">h", scale=1 / 256, units="degC", precision=2, period=0.02, timeout=0.5
    )


def alarm(device: Thermometer) -> tuple[AlarmStatus, AlarmSeverity]:
    channel: Any = device.temperature
    return channel.alarm_status, channel.alarm_severity


def test_value_fault_alarm_and_recovery() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus()
        chip = sim.attach(make_chip())
        device = Thermometer(sim)
        # before the first read: UDF/INVALID, never a made-up value
        assert alarm(device) == (AlarmStatus.UDF, AlarmSeverity.INVALID)
        await device.startup()
        try:
            await until(lambda: device.temperature.value == 21.5, "the first reading")
            assert alarm(device) == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)
            assert device.connected.value == 1
            stamp = device.temperature.timestamp
            # one NACK: READ/INVALID, the last good value and its time kept
            chip.faults.nack_next(1)
            await until(lambda: alarm(device)[0] == AlarmStatus.READ, "the READ alarm")
            assert device.temperature.value == 21.5
            assert device.temperature.timestamp == stamp
            assert device.error_count.value >= 1 and "NoAcknowledge" in device.last_error.value
            # and the next good read clears it
            set_temperature(chip, 22.25)
            await until(lambda: device.temperature.value == 22.25, "recovery")
            assert alarm(device) == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)
            # persistent NACKs: COMM, disconnected, then reconnect by itself
            chip.faults.nack_next(50)
            await until(lambda: device.connected.value == 0, "disconnection")
            assert alarm(device) == (AlarmStatus.COMM, AlarmSeverity.INVALID)
            chip.faults.clear()
            await until(lambda: device.connected.value == 1, "reconnection")
            await until(lambda: alarm(device)[0] == AlarmStatus.NO_ALARM, "a good read again")
            # unplugged: COMM at once; replugged: back
            chip.unplug()
            await until(lambda: alarm(device)[0] == AlarmStatus.COMM, "COMM on unplug")
            chip.replug(reset=False)
            await until(lambda: alarm(device)[0] == AlarmStatus.NO_ALARM, "replug recovery")
        finally:
            await device.shutdown()
            await device.shutdown()  # idempotent

    run(scenario)


def test_wrong_chip_id_is_calc_and_keeps_retrying() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus()
        chip = sim.attach(make_chip())
        chip.poke(0xD0, 0x58)  # a different part answers
        device = Thermometer(sim)
        await device.startup()
        try:
            await until(lambda: "BadReply" in device.last_error.value, "the probe failure")
            assert device.connected.value == 0
            assert alarm(device) == (AlarmStatus.CALC, AlarmSeverity.INVALID)
            chip.poke(0xD0, CHIP_ID)  # the right part is fitted
            await until(lambda: device.connected.value == 1, "the retry")
            await until(lambda: device.temperature.value == 21.5, "a reading")
        finally:
            await device.shutdown()

    run(scenario)


def test_through_ca_puts_reach_the_hardware_and_failures_refuse_them() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus()
        chip = sim.attach(make_chip())
        # Polled once a minute, so no poll takes the NACKs meant for the put.
        device = SlowThermometer(sim, prefix="t:")
        config = server_config()
        server = Server(device.pvdb, config)
        await server.start()
        await device.startup()
        try:
            client = ClientConfig(search_addresses=[("127.0.0.1", server.tcp_port)])
            async with Context(client) as ctx:
                temperature, setpoint = await ctx.connect("t:temperature", "t:setpoint")
                await until(lambda: device.temperature.value == 21.5, "a reading")
                reading_ = await temperature.read(ChannelType.TIME_DOUBLE)
                assert reading_.value == 21.5 and reading_.severity == 0
                await setpoint.write(30.5)
                assert struct.unpack(">h", chip.peek(0x10, 2))[0] == round(30.5 * 256)
                chip.faults.nack_next(1)
                with pytest.raises(ServerError, match="failed"):
                    await setpoint.write(31.0)
                assert device.setpoint.alarm_status == AlarmStatus.WRITE
                chip.faults.nack_next(50)
                for _ in range(device.comm_failures):  # the reads no poll makes
                    await device.read_now("temperature")
                assert device.connected.value == 0
                failed = await temperature.read(ChannelType.TIME_DOUBLE)
                assert failed.severity == AlarmSeverity.INVALID
                assert failed.metadata["status"] == AlarmStatus.COMM
                assert failed.value == 21.5  # the last good value, not a stale lie
        finally:
            await device.shutdown()
            await server.stop()

    run(scenario)


IOC = """
import asyncio, sys
sys.path.insert(0, "tests")  # the test modules' shared helpers
from caioc.hw.sim import SimulatedI2CBus
from caioc.ioc import pvproperty, serve
from tests.hw.test_device import {device} as Thermometer, make_chip

sim = SimulatedI2CBus()
chip = sim.attach(make_chip())


class Rig(Thermometer):
    # A PV of the test rig, not of the device: writing 1 makes the chip NACK.
    fault = pvproperty(0)

    @fault.putter
    async def fault(self, instance, value):
        if value:
            chip.faults.nack_next(10**6)
        else:
            chip.faults.clear()
        return value


async def main():
    rig = Rig(sim, prefix="rig:")
    await serve(rig, list_pvs=True)  # "PVs:" once it listens and the rig has started

asyncio.run(main())
"""


@pytest.mark.parametrize("device", ["Thermometer", "RegisterThermometer"])
def test_the_c_client_sees_value_then_alarm_then_recovery(device: str) -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    from peers import ca_environment, free_port, process_until_ready, run_pyepics

    env = ca_environment(free_port(), free_port())
    with process_until_ready(IOC.format(device=device), env, ready="PVs:"):
        result = run_pyepics(
            """
            pv = epics.PV("rig:temperature", form="time")
            assert pv.wait_for_connection(timeout=5)

            def wait_for(check):
                return read_until(
                    lambda: pv.get_with_metadata(use_monitor=False, timeout=5),
                    check,
                    "rig:temperature",
                )

            good = wait_for(lambda d: d["value"] == 21.5 and d["severity"] == 0)
            epics.caput("rig:fault", 1, wait=True, timeout=5)
            bad = wait_for(lambda d: d["status"] == 9)  # COMM once the NACKs persist
            epics.caput("rig:fault", 0, wait=True, timeout=5)
            back = wait_for(lambda d: d["severity"] == 0)
            result = [
                [good["value"], good["status"], good["severity"]],
                [bad["value"], bad["status"], bad["severity"]],
                [back["value"], back["status"], back["severity"]],
                epics.caget("rig:connected", as_string=True, timeout=5),
            ]
            """,
            env,
        )
    comm = int(AlarmStatus.COMM)
    assert result[0] == [21.5, 0, 0]
    assert result[1] == [21.5, comm, 3]  # the last good value, flagged COMM/INVALID
    assert result[2] == [21.5, 0, 0]
    assert result[3] == "Connected"


def test_a_hung_bus_does_not_delay_reads_of_other_pvs() -> None:
    """One bus holding a read for seconds; CA reads on another bus go on."""

    async def scenario() -> None:
        import time

        hung_sim, free_sim = SimulatedI2CBus(), SimulatedI2CBus()
        hung_chip = hung_sim.attach(make_chip())
        free_sim.attach(make_chip())
        hung = Thermometer(hung_sim, prefix="hung:")
        free = Thermometer(free_sim, prefix="free:")
        config = server_config()
        server = Server({**hung.pvdb, **free.pvdb}, config)
        await server.start()
        await hung.startup()
        await free.startup()
        try:
            client = ClientConfig(search_addresses=[("127.0.0.1", server.tcp_port)])
            async with Context(client) as ctx:
                (pv,) = await ctx.connect("free:temperature")
                await until(lambda: free.temperature.value == 21.5, "a reading")
                # Watch for the hung read's TIMEOUT: under load the loop below
                # may outlast the hang, and a good read then clears the alarm.
                statuses: set[AlarmStatus] = set()

                async def watch() -> None:
                    while True:
                        statuses.add(hung.temperature.alarm_status)
                        await asyncio.sleep(0.005)  # sampling; cancelled below

                watcher = asyncio.get_running_loop().create_task(watch())
                hung_chip.faults.hang_next(1, seconds=2.0)  # far longer than a read
                slowest = 0.0
                for _ in range(50):
                    start = time.perf_counter()
                    await pv.read(ChannelType.TIME_DOUBLE)
                    slowest = max(slowest, time.perf_counter() - start)
                    await asyncio.sleep(0.01)  # paced: the reads fall within the hang
                # meanwhile the other bus really was hung: its read timed out
                await until(
                    lambda: AlarmStatus.TIMEOUT in statuses, "the hung read's TIMEOUT alarm"
                )
                watcher.cancel()
                # a few ms on an idle machine; a generous bound for a loaded one,
                # far below the 2 s hang
                assert slowest < 0.25, slowest
                hung_chip.faults.clear()
        finally:
            await hung.shutdown()
            await free.shutdown()
            await server.stop()

    run(scenario)


class SlowThermometer(Thermometer):
    """Polled once a minute: recovery must not wait for the next poll."""

    temperature = reading(0.0, units="degC", precision=2, period=60.0, timeout=0.5)

    @temperature.reader
    async def temperature(self) -> float:  # type: ignore[no-redef]
        raw = await self.chip.read_registers_async(0x00, 2)
        return struct.unpack(">h", raw)[0] / 256


def test_a_reconnected_device_reads_at_once() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus()
        chip = sim.attach(make_chip())
        device = SlowThermometer(sim)
        await device.startup()
        try:
            await until(lambda: device.temperature.value == 21.5, "the first reading")
            chip.unplug()
            for _ in range(device.comm_failures):  # no poll comes: read by hand
                assert await device.read_now("temperature") is None
            assert device.connected.value == 0
            assert alarm(device) == (AlarmStatus.COMM, AlarmSeverity.INVALID)
            set_temperature(chip, 18.0)
            chip.replug(reset=False)
            await until(lambda: device.connected.value == 1, "reconnection")
            await until(lambda: alarm(device)[0] == AlarmStatus.NO_ALARM, "an immediate read")
            assert device.temperature.value == 18.0
        finally:
            await device.shutdown()

    run(scenario)


def test_proc_reads_the_hardware_now() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus()
        chip = sim.attach(make_chip())
        device = SlowThermometer(sim, prefix="slow:")
        await device.startup()
        try:
            await until(lambda: device.temperature.value == 21.5, "the first reading")
            set_temperature(chip, 30.0)
            proc = device.pvdb["slow:temperature.PROC"]
            await proc.write(ChannelType.CHAR, 1, b"\x01")
            await until(lambda: device.temperature.value == 30.0, "the value PROC read")
        finally:
            await device.shutdown()

    run(scenario)


class ImpatientThermometer(Thermometer):
    """A reading whose own timeout (50 ms) is far shorter than the bus's (0.5 s)."""

    temperature = reading(0.0, units="degC", precision=2, period=0.02, timeout=0.05)

    @temperature.reader
    async def temperature(self) -> float:  # type: ignore[no-redef]
        raw = await self.chip.read_registers_async(0x00, 2)
        return struct.unpack(">h", raw)[0] / 256


def test_a_polled_read_past_the_reading_timeout_is_timeout_and_polling_goes_on() -> None:
    async def scenario() -> None:
        sim = SimulatedI2CBus()
        chip = sim.attach(make_chip())
        device = ImpatientThermometer(sim, prefix="impatient:")
        await device.startup()
        try:
            await until(lambda: device.temperature.value == 21.5, "the first reading")
            chip.faults.hang_next(1, seconds=0.3)  # the read outlives its 50 ms
            await until(lambda: alarm(device)[0] == AlarmStatus.TIMEOUT, "the TIMEOUT alarm")
            assert alarm(device) == (AlarmStatus.TIMEOUT, AlarmSeverity.INVALID)
            assert device.temperature.value == 21.5  # the last good value kept
            assert device.last_error.value.startswith("TimeoutError")
            set_temperature(chip, 19.0)
            await until(lambda: device.temperature.value == 19.0, "the next polls")
            assert alarm(device) == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)
            # Shutting down in the middle of a read is not taken for a timeout.
            chip.faults.hang_next(1)  # until released
            await until(lambda: not chip.faults.pending, "a read to hang")
            await asyncio.wait_for(device.shutdown(), 5.0)
            chip.faults.release_hangs()
        finally:
            await device.shutdown()

    run(scenario)

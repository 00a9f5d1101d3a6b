"""Per-bus and per-port counters (PortStats) and the PVs that serve them (PortStatus)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

import pytest
from waiting import run, until

from caioc.hw import (
    BusTimeout,
    DeviceUnplugged,
    I2CBus,
    NoAcknowledge,
    PortStats,
    PortStatus,
    SerialPort,
    VirtualClock,
)
from caioc.hw.sim import SimulatedI2CBus, SimulatedI2CDevice, SimulatedInstrument

from .conftest import BOUND

Starter = Callable[..., concurrent.futures.Future[Any]]


def counts(stats: PortStats) -> tuple[int, int, int]:
    return stats.transactions, stats.errors, stats.timeouts


# -- the counters ------------------------------------------------------------------


def test_calls_errors_and_the_latest_error_are_counted(
    bus: I2CBus, sensor: SimulatedI2CDevice
) -> None:
    assert counts(bus.stats) == (0, 0, 0) and bus.stats.connected
    assert bus.read_byte_data(0x48, 0) == 0x12
    bus.write_byte_data(0x48, 0x10, 1)
    assert counts(bus.stats) == (2, 0, 0)
    assert bus.stats.last_error == "" and bus.stats.last_error_time is None
    sensor.faults.nack_next(1)
    with pytest.raises(NoAcknowledge):
        bus.read_byte_data(0x48, 0)
    assert counts(bus.stats) == (3, 1, 0)
    assert bus.stats.failing
    assert bus.stats.last_error.startswith("NoAcknowledge: i2c-1")
    assert bus.stats.last_error_time is not None
    # a NACK is one device's business: the bus itself is still connected
    assert bus.stats.connected
    assert bus.read_byte_data(0x48, 1) == 0x34
    assert not bus.stats.failing
    assert bus.stats.snapshot()[:4] == (True, 4, 1, 0)


def test_a_hung_call_counts_once_as_a_timeout(
    bus: I2CBus, sensor: SimulatedI2CDevice, clock: VirtualClock, background: Starter
) -> None:
    sensor.faults.hang_next()  # until released
    hung = background(bus.read_byte_data, 0x48, 0)
    clock.wait_for_waiters(2)
    clock.advance(0.5)
    with pytest.raises(BusTimeout):
        hung.result(timeout=BOUND)
    assert counts(bus.stats) == (1, 1, 1)
    assert "did not finish" in bus.stats.last_error
    # The worker comes back later with an error of its own, seen by nobody:
    # the call was counted when its caller gave up, not again now.
    sensor.faults.release_hangs()
    assert bus.read_byte_data(0x48, 1) == 0x34
    assert counts(bus.stats) == (2, 1, 1)


def test_an_adapter_timeout_is_a_timeout_too(
    bus: I2CBus, sensor: SimulatedI2CDevice, clock: VirtualClock, background: Starter
) -> None:
    sensor.faults.hang_next(seconds=0.01)  # then ETIMEDOUT from the "kernel"
    call = background(bus.read_byte_data, 0x48, 0)
    clock.wait_for_waiters(2)
    clock.advance(0.01)
    with pytest.raises(BusTimeout):
        call.result(timeout=BOUND)
    assert counts(bus.stats) == (1, 1, 1)


def test_an_unplugged_adapter_disconnects_until_a_call_succeeds(
    bus: I2CBus, sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice
) -> None:
    sim_bus.unplug()
    with pytest.raises(DeviceUnplugged):
        bus.read_byte_data(0x48, 0)
    assert not bus.stats.connected
    assert bus.stats.last_error.startswith("DeviceUnplugged")
    sim_bus.replug()
    bus.read_byte_data(0x48, 0)
    assert bus.stats.connected and not bus.stats.failing


def test_closing_the_bus_disconnects_it(sim_bus: SimulatedI2CBus) -> None:
    bus = I2CBus(sim_bus)
    assert bus.stats.connected
    bus.close()
    assert not bus.stats.connected


def test_listeners_hear_changes_of_state_not_every_call(
    bus: I2CBus, sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice
) -> None:
    heard: list[tuple[bool, bool]] = []
    listener = lambda: heard.append((bus.stats.connected, bus.stats.failing))  # noqa: E731
    bus.stats.add_listener(listener)
    for _ in range(20):
        bus.read_byte_data(0x48, 0)
    assert heard == []  # healthy traffic tells nobody
    sensor.faults.nack_next(3)
    for _ in range(3):
        with pytest.raises(NoAcknowledge):
            bus.read_byte_data(0x48, 0)
    assert heard == [(True, True)]  # once, when it started failing
    bus.read_byte_data(0x48, 0)
    assert heard == [(True, True), (True, False)]  # and once when it recovered
    sim_bus.unplug()
    with pytest.raises(DeviceUnplugged):
        bus.read_byte_data(0x48, 0)
    assert heard[-1] == (False, True)
    sim_bus.replug()
    bus.read_byte_data(0x48, 0)
    assert heard[-1] == (True, False)
    bus.stats.remove_listener(listener)
    sensor.faults.nack_next(1)
    with pytest.raises(NoAcknowledge):
        bus.read_byte_data(0x48, 0)
    assert len(heard) == 4


def test_a_failing_listener_does_not_fail_the_call(
    bus: I2CBus, sensor: SimulatedI2CDevice, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("listener bug")

    bus.stats.add_listener(broken)
    sensor.faults.nack_next(1)
    with pytest.raises(NoAcknowledge):
        bus.read_byte_data(0x48, 0)
    assert bus.read_byte_data(0x48, 0) == 0x12
    assert "listener" in caplog.text


def test_a_cancelled_call_counts_nowhere(
    bus: I2CBus, sensor: SimulatedI2CDevice, clock: VirtualClock
) -> None:
    async def main() -> None:
        sensor.faults.hang_next()
        task = asyncio.create_task(bus.read_byte_data_async(0x48, 0))
        await clock.wait_for_waiters_async(2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert counts(bus.stats) == (0, 0, 0)
        sensor.faults.release_hangs()

    run(main)


def make_instrument() -> SimulatedInstrument:
    sim = SimulatedInstrument(read_terminator="\n", write_terminator="\r\n", unknown="ERR")
    sim.on(r"\*IDN\?", "ACME,PSU-1,0042,1.0")
    return sim


def test_serial_port_counts_queries_timeouts_bad_replies_and_unplugs() -> None:
    with (
        make_instrument() as instrument,
        SerialPort(instrument.path, read_terminator="\r\n", reply_timeout=0.1) as port,
    ):
        assert not port.stats.connected  # the port opens on first use
        assert port.query("*IDN?").startswith("ACME")
        assert port.stats.connected and counts(port.stats) == (1, 0, 0)
        instrument.faults.no_reply_next(1)
        with pytest.raises(BusTimeout):
            port.query("*IDN?")
        assert counts(port.stats) == (2, 1, 1)
        # A reply that came back but is wrong is one failed query, not two queries.
        with pytest.raises(ValueError, match="does not match"):
            port.query("*IDN?", expect=r"OTHER.*")
        assert counts(port.stats) == (3, 2, 1)
        assert port.stats.last_error.startswith("BadReply")
        instrument.unplug()
        with pytest.raises(DeviceUnplugged):
            port.query("*IDN?")
        assert not port.stats.connected
        instrument.replug()
        assert port.query("*IDN?").startswith("ACME")
        assert port.stats.connected and not port.stats.failing
    # closing is housekeeping, not traffic
    assert port.stats.transactions == 5 and not port.stats.connected


# -- the PVs -------------------------------------------------------------------------


class Counting:
    """A subscription that counts the monitor updates it is sent."""

    data_type, data_count, mask, client_version = 5, 1, 1 | 4, 13  # DBR_LONG, VALUE|ALARM

    def __init__(self) -> None:
        self.updates = 0

    def deliver(self, payload: Any, count: int) -> None:
        self.updates += 1


def test_errors_publish_at_once_counters_only_every_interval() -> None:
    async def main() -> None:
        # Real time for this one: the PVs follow on the event loop's clock.
        real = SimulatedI2CBus(1)
        chip = real.attach(SimulatedI2CDevice(0x48, registers={0: 7}))
        bus = I2CBus(real, timeout=0.5)
        status = PortStatus("i2c1:", bus=bus, interval=60.0, min_gap=0.0)
        await status.startup()
        monitor = Counting()
        status.transactions.subscribe(monitor)
        try:
            assert status.connected.value == 1 and status.transactions.value == 0
            assert status.pvdb.keys() >= {
                "i2c1:connected",
                "i2c1:transactions",
                "i2c1:error_count",
                "i2c1:timeout_count",
                "i2c1:last_error",
            }
            for _ in range(200):
                await bus.read_byte_data_async(0x48, 0)
            # Healthy traffic: nothing published before the interval is up.
            # The error below is the sentinel: it is published at once, so
            # "updates == 2" after it shows none came in between.
            assert status.transactions.value == 0
            assert monitor.updates == 1  # the first value, on subscribing
            # An error: published at once, with the counters as they are then.
            chip.faults.nack_next(1)
            with pytest.raises(NoAcknowledge):
                await bus.read_byte_data_async(0x48, 0)
            await until(lambda: status.error_count.value == 1, "the error count")
            assert status.transactions.value == 201
            assert status.last_error.value.startswith("NoAcknowledge")
            assert len(status.last_error.value.encode()) <= 39
            assert status.last_error.timestamp == pytest.approx(bus.stats.last_error_time)
            assert monitor.updates == 2
            # Unplugged adapter: connected goes to 0 at once; back on the next call.
            real.unplug()
            with pytest.raises(DeviceUnplugged):
                await bus.read_byte_data_async(0x48, 0)
            await until(lambda: status.connected.value == 0, "Disconnected")
            real.replug()
            await bus.read_byte_data_async(0x48, 0)
            await until(lambda: status.connected.value == 1, "Connected again")
            bus.close()
            await until(lambda: status.connected.value == 0, "Disconnected on close")
        finally:
            await status.shutdown()
            await status.shutdown()  # idempotent
            bus.close()

    run(main)


def test_counters_follow_every_interval_and_only_when_changed() -> None:
    async def main() -> None:
        real = SimulatedI2CBus(1)
        real.attach(SimulatedI2CDevice(0x48))
        with I2CBus(real) as bus:
            status = PortStatus(bus=bus, interval=0.02, min_gap=0.0)
            await status.startup()
            monitor = Counting()
            status.transactions.subscribe(monitor)
            try:
                for _ in range(5):
                    await bus.read_byte_data_async(0x48, 0)
                await until(lambda: status.transactions.value == 5, "the periodic update")
                updates = monitor.updates
                # Idle: several intervals pass, and the unchanged count is not re-sent.
                # A negative check with no event to wait for: time passing is the test.
                await asyncio.sleep(0.1)
                assert monitor.updates == updates
            finally:
                await status.shutdown()

    run(main)


def test_bad_intervals_are_refused(bus: I2CBus) -> None:
    with pytest.raises(ValueError):
        PortStatus(bus=bus, interval=0)
    with pytest.raises(ValueError):
        PortStatus(bus=bus, min_gap=-1)


IOC = """
import asyncio, sys
from caioc.hw import I2CBus, NoAcknowledge, PortStatus
from caioc.hw.sim import SimulatedI2CBus, SimulatedI2CDevice
from caioc.ioc import PVGroup, SubGroup, pvproperty, serve

sim = SimulatedI2CBus(1)
sim.attach(SimulatedI2CDevice(0x48, registers={0: 7}))
bus = I2CBus(sim, timeout=0.5)


class Rig(PVGroup):
    port = SubGroup(PortStatus, prefix="i2c1:", bus=bus, interval=0.1)
    # A PV of the test rig: writing 1 pulls the I2C adapter out.
    unplug = pvproperty(0)

    @unplug.putter
    async def unplug(self, instance, value):
        sim.unplug() if value else sim.replug()
        return value


async def traffic():
    while True:  # a driver polling its sensor
        try:
            await bus.read_byte_data_async(0x48, 0)
        except Exception:
            pass
        await asyncio.sleep(0.01)


async def main():
    rig = Rig("rig:")
    asyncio.get_running_loop().create_task(traffic())
    await serve(rig, list_pvs=True)  # "PVs:" once it listens and the rig has started

asyncio.run(main())
"""


@pytest.mark.peers
def test_the_c_client_sees_the_port_go_and_come_back() -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    from peers import ca_environment, free_port, process_until_ready, run_pyepics

    env = ca_environment(free_port(), free_port())
    with process_until_ready(IOC, env, ready="PVs:"):
        result = run_pyepics(
            """
            def wait_for(name, check, as_string=False):
                return read_until(
                    lambda: epics.caget(name, as_string=as_string, timeout=5),
                    lambda value: value is not None and check(value),
                    name,
                )

            first = wait_for("rig:i2c1:transactions", lambda v: v > 0)
            wait_for("rig:i2c1:connected", lambda v: v == "Connected", True)
            errors_before = epics.caget("rig:i2c1:error_count", timeout=5)
            epics.caput("rig:unplug", 1, wait=True, timeout=5)
            down = wait_for("rig:i2c1:connected", lambda v: v == "Disconnected", True)
            errors = wait_for("rig:i2c1:error_count", lambda v: v > 0)
            last = epics.caget("rig:i2c1:last_error", timeout=5)
            epics.caput("rig:unplug", 0, wait=True, timeout=5)
            up = wait_for("rig:i2c1:connected", lambda v: v == "Connected", True)
            later = wait_for("rig:i2c1:transactions", lambda v: v > first)
            result = [first, errors_before, down, errors, last, up, later]
            """,
            env,
        )
    first, errors_before, down, errors, last, up, later = result
    assert first > 0 and errors_before == 0
    assert down == "Disconnected" and errors > 0
    assert last.startswith("DeviceUnplugged")
    assert up == "Connected" and later > first

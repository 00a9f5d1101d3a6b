"""I2CBus and I2CDevice over the simulated bus: the real smbus2 code path."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import threading
from collections.abc import Callable
from typing import Any

import pytest
from waiting import until

from caioc.ca import AlarmStatus
from caioc.hw import (
    REAL_CLOCK,
    BusTimeout,
    DeviceClosed,
    DeviceUnplugged,
    HardwareError,
    I2CBus,
    I2CDevice,
    NoAcknowledge,
    VirtualClock,
)
from caioc.hw.sim import SimulatedI2CBus, SimulatedI2CDevice

from .conftest import BOUND

Starter = Callable[..., concurrent.futures.Future[Any]]


def test_register_access(bus: I2CBus, sensor: SimulatedI2CDevice) -> None:
    assert bus.read_byte_data(0x48, 0x01) == 0x34
    assert bus.read_word_data(0x48, 0x00) == 0x3412
    bus.write_byte_data(0x48, 0x10, 0x99)
    bus.write_word_data(0x48, 0x20, 0x1234)
    assert sensor.peek(0x10) == b"\x99"
    assert sensor.peek(0x20, 2) == b"\x34\x12"
    assert bus.probe(0x48) is True
    assert bus.probe(0x49) is False


def test_blocks_are_not_limited_to_32_bytes(bus: I2CBus, sensor: SimulatedI2CDevice) -> None:
    payload = bytes(range(200))
    bus.write_block(0x48, 0x20, payload)
    assert sensor.peek(0x20, 200) == payload
    assert bus.read_block(0x48, 0x20, 200) == payload
    assert bus.write_then_read(0x48, b"\x20", 64) == payload[:64]
    with pytest.raises(ValueError):
        bus.write_then_read(0x48, b"", 0)


def test_escape_hatch_runs_any_smbus_call_on_the_worker(
    bus: I2CBus, sensor: SimulatedI2CDevice
) -> None:
    data = bus.call(lambda smbus: smbus.read_i2c_block_data(0x48, 0, 4), description="block")
    assert data == [0x12, 0x34, 0x56, 0x78]


def test_device_reads_into_caller_buffers(bus: I2CBus, sensor: SimulatedI2CDevice) -> None:
    device = I2CDevice(bus, 0x48, probe=True)
    buffer = bytearray(6)
    device.write_then_readinto(b"\xff\x01", buffer, out_start=1, in_start=2, in_end=5)
    assert buffer == b"\x00\x00\x34\x56\x78\x00"
    device.write(b"\x00\x30\x31\x32", start=1)  # pointer 0x30, then two bytes
    assert sensor.peek(0x30, 2) == b"\x31\x32"
    device.write(b"\x02")  # pointer only
    buffer = bytearray(2)
    device.readinto(buffer)
    assert buffer == b"\x56\x78"
    assert device.read_register(0x00) == 0x12
    device.write_register(0x40, 0x07)
    device.write_registers(0x41, b"\x08\x09")
    assert device.read_registers(0x40, 3) == b"\x07\x08\x09"


def test_device_probe_and_address_checks(bus: I2CBus, sensor: SimulatedI2CDevice) -> None:
    with pytest.raises(NoAcknowledge):
        I2CDevice(bus, 0x49, probe=True)
    with pytest.raises(ValueError):
        I2CDevice(bus, 0x80)
    assert bus.device(0x48).address == 0x48


def test_nack_becomes_no_acknowledge_with_direction(
    bus: I2CBus, sensor: SimulatedI2CDevice
) -> None:
    sensor.faults.nack_next(2)
    with pytest.raises(NoAcknowledge) as read_error:
        bus.read_byte_data(0x48, 0)
    with pytest.raises(NoAcknowledge) as write_error:
        bus.write_byte_data(0x48, 0, 1)
    assert read_error.value.errno == errno.EREMOTEIO
    assert read_error.value.kind is AlarmStatus.READ
    assert write_error.value.kind is AlarmStatus.WRITE
    assert read_error.value.source == "i2c-1"
    assert isinstance(read_error.value.__cause__, OSError)
    assert bus.read_byte_data(0x48, 0) == 0x12  # recovered


def test_unplugged_device_nacks_until_replugged(bus: I2CBus, sensor: SimulatedI2CDevice) -> None:
    device = I2CDevice(bus, 0x48)
    sensor.unplug()
    with pytest.raises(NoAcknowledge):
        device.read_register(0)
    sensor.replug()
    assert device.read_register(0) == 0x12


def test_unplugged_adapter_is_device_unplugged(
    bus: I2CBus, sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice
) -> None:
    sim_bus.unplug()
    with pytest.raises(DeviceUnplugged) as caught:
        bus.read_byte_data(0x48, 0)
    assert caught.value.kind is AlarmStatus.COMM
    sim_bus.replug()
    assert bus.read_byte_data(0x48, 0) == 0x12


def test_adapter_timeout_is_bus_timeout(
    bus: I2CBus, sensor: SimulatedI2CDevice, clock: VirtualClock, background: Starter
) -> None:
    # The device holds the bus for 10 ms, then the kernel gives up (ETIMEDOUT);
    # the caller's own 0.5 s limit is never reached.
    sensor.faults.hang_next(seconds=0.01)
    call = background(bus.read_byte_data, 0x48, 0)
    clock.wait_for_waiters(2)  # the caller and the hung transfer
    clock.advance(0.01)
    with pytest.raises(BusTimeout) as caught:
        call.result(timeout=BOUND)
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.kind is AlarmStatus.TIMEOUT
    assert bus.read_byte_data(0x48, 0) == 0x12


def test_a_hung_call_times_out_and_later_calls_wait_their_turn(
    bus: I2CBus, sensor: SimulatedI2CDevice, clock: VirtualClock, background: Starter
) -> None:
    sensor.faults.hang_next()  # hangs until released
    hung = background(bus.read_byte_data, 0x48, 0)
    clock.wait_for_waiters(2)
    queued = background(bus.read_byte_data, 0x48, 1)
    clock.wait_for_waiters(3)
    clock.advance(0.5)
    with pytest.raises(BusTimeout, match="did not finish"):
        hung.result(timeout=BOUND)
    # Serialised: the second call never started while the first held the bus.
    with pytest.raises(BusTimeout, match="did not start"):
        queued.result(timeout=BOUND)
    assert sensor.peek(0) == b"\x12"
    sensor.faults.release_hangs()  # the device lets go; the worker is free again
    assert bus.read_byte_data(0x48, 1) == 0x34


def test_a_hung_bus_does_not_block_another_bus(clock: VirtualClock, background: Starter) -> None:
    stuck_sim, other_sim = SimulatedI2CBus(1, clock=clock), SimulatedI2CBus(2, clock=clock)
    stuck_sim.attach(SimulatedI2CDevice(0x10)).faults.hang_next()
    other_sim.attach(SimulatedI2CDevice(0x10, registers={0: 42}))
    with I2CBus(stuck_sim, timeout=1.0) as stuck, I2CBus(other_sim, timeout=1.0) as other:
        hung = background(stuck.read_byte_data, 0x10, 0)
        clock.wait_for_waiters(2)
        for _ in range(20):
            assert other.read_byte_data(0x10, 0) == 42
        assert not hung.done()
        clock.advance(1.0)
        with pytest.raises(BusTimeout):
            hung.result(timeout=BOUND)
    # Closing the stuck bus released the hang, so its worker ended.
    assert not stuck.worker.thread.is_alive()


def test_calls_from_many_threads_run_one_at_a_time_on_the_worker(
    bus: I2CBus, sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice, background: Starter
) -> None:
    threads: set[threading.Thread] = set()
    sensor.on_read(0x00, lambda device, register: threads.add(threading.current_thread()))
    calls = [background(bus.read_byte_data, 0x48, 0) for _ in range(200)]
    assert [call.result(timeout=BOUND) for call in calls] == [0x12] * 200
    assert threads == {bus.worker.thread}
    assert sim_bus.max_concurrency == 1
    assert sim_bus.accesses == 200


def test_async_calls_await_the_worker_without_blocking_the_loop(
    bus: I2CBus, sensor: SimulatedI2CDevice, clock: VirtualClock
) -> None:
    async def main() -> None:
        device = I2CDevice(bus, 0x48)
        assert await device.read_register_async(0x01) == 0x34
        await device.write_register_async(0x40, 5)
        await device.write_registers_async(0x41, b"\x06\x07")
        assert await device.read_registers_async(0x40, 3) == b"\x05\x06\x07"
        buffer = bytearray(2)
        await device.write_then_readinto_async(b"\x00", buffer)
        assert buffer == b"\x12\x34"
        await device.write_async(b"\x02")
        await device.readinto_async(buffer)
        assert buffer == b"\x56\x78"
        assert await bus.read_word_data_async(0x48, 0) == 0x3412
        await bus.write_word_data_async(0x48, 0x50, 0x0102)
        await bus.write_byte_data_async(0x48, 0x52, 3)
        assert await bus.read_byte_data_async(0x48, 0x52) == 3
        assert await bus.probe_async(0x48) is True
        assert await bus.probe_async(0x49) is False
        assert await bus.read_block_async(0x48, 0x50, 3) == b"\x02\x01\x03"
        await bus.write_block_async(0x48, 0x60, b"\x01")
        assert await bus.write_then_read_async(0x48, b"\x60", 1) == b"\x01"

        # A hung call: the loop keeps running other tasks, then the call
        # times out on the virtual clock.
        sensor.faults.hang_next()
        call = asyncio.create_task(device.read_register_async(0))
        await clock.wait_for_waiters_async(2)
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0)  # loop turns, not time: the loop is not blocked
            ticks += 1
        assert ticks == 10 and not call.done()
        clock.advance(0.5)
        with pytest.raises(BusTimeout):
            await asyncio.wait_for(call, BOUND)
        sensor.faults.release_hangs()
        assert await device.read_register_async(0) == 0x12

    asyncio.run(main())


def test_close_is_idempotent_and_use_after_close_raises(
    bus: I2CBus, sensor: SimulatedI2CDevice
) -> None:
    device = I2CDevice(bus, 0x48)
    with device as same:
        assert same is device
        assert device.read_register(0) == 0x12
    assert device.closed
    device.close()
    for use in (
        lambda: device.read_register(0),
        lambda: device.readinto(bytearray(1)),
        lambda: device.write(b"\x00"),
        lambda: device.write_then_readinto(b"\x00", bytearray(1)),
    ):
        with pytest.raises(DeviceClosed):
            use()
    with pytest.raises(DeviceClosed):
        asyncio.run(device.read_register_async(0))
    with pytest.raises(DeviceClosed):
        device.__enter__()
    # Closing a device leaves the bus to the others on it.
    assert bus.read_byte_data(0x48, 0) == 0x12
    bus.close()
    bus.close()
    assert bus.closed and not bus.worker.thread.is_alive()
    with pytest.raises(DeviceClosed):
        bus.read_byte_data(0x48, 0)
    with pytest.raises(DeviceClosed):
        I2CDevice(bus, 0x48).read_register(0)
    with pytest.raises(DeviceClosed):
        asyncio.run(bus.read_byte_data_async(0x48, 0))


def test_close_fails_queued_calls(
    sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice, clock: VirtualClock, background: Starter
) -> None:
    bus = I2CBus(sim_bus, timeout=10.0)
    sensor.faults.hang_next()
    hung = background(bus.read_byte_data, 0x48, 0)
    clock.wait_for_waiters(2)
    queued = background(bus.read_byte_data, 0x48, 1)
    clock.wait_for_waiters(3)
    bus.close()  # releases the hang (the adapter closes) and fails the queue
    with pytest.raises(BusTimeout):
        hung.result(timeout=BOUND)
    with pytest.raises(DeviceClosed):
        queued.result(timeout=BOUND)


def test_a_missing_adapter_is_device_unplugged() -> None:
    # smbus2 itself opens /dev/i2c-250, which does not exist here.
    with pytest.raises(DeviceUnplugged, match="no such I2C adapter"):
        I2CBus(250)
    with pytest.raises(HardwareError):
        I2CBus("/dev/i2c-does-not-exist")


def test_real_clock_timeouts_protect_the_caller(background: Starter) -> None:
    # The production path: no virtual clock, a real (short) timeout.
    sim = SimulatedI2CBus(1)
    device = sim.attach(SimulatedI2CDevice(0x48, registers={0: 7}))
    with I2CBus(sim, timeout=0.05) as bus:
        assert bus.clock is REAL_CLOCK and bus.read_byte_data(0x48, 0) == 7
        device.faults.hang_next()
        with pytest.raises(BusTimeout, match=r"did not finish within 0\.05 s"):
            bus.read_byte_data(0x48, 0)
        device.faults.release_hangs()
        assert bus.read_byte_data(0x48, 0) == 7


def test_a_cancelled_async_call_that_never_started_never_runs(
    bus: I2CBus, sensor: SimulatedI2CDevice, clock: VirtualClock
) -> None:
    async def main() -> None:
        sensor.faults.hang_next()
        hung = asyncio.create_task(bus.read_byte_data_async(0x48, 0))
        await clock.wait_for_waiters_async(2)
        queued = asyncio.create_task(bus.write_byte_data_async(0x48, 0x10, 0xAA))
        await clock.wait_for_waiters_async(3)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        sensor.faults.release_hangs()
        with pytest.raises(BusTimeout):
            await asyncio.wait_for(hung, BOUND)
        assert await bus.read_byte_data_async(0x48, 0x10) == 0  # the write never happened

    asyncio.run(main())


# The real clock's async path (what every device poll takes) hands results
# back to the loop in batches; these pin down its timeouts, cancellation
# and hand-over. The waits are bounded by the bus timeouts, not by sleeps.


def real_bus(timeout: float) -> tuple[SimulatedI2CBus, SimulatedI2CDevice, I2CBus]:
    sim = SimulatedI2CBus(1)
    chip = sim.attach(SimulatedI2CDevice(0x48, registers={0: 7, 1: 8}))
    return sim, chip, I2CBus(sim, timeout=timeout)


def test_real_clock_async_calls_time_out_running_and_queued() -> None:
    _, chip, bus = real_bus(timeout=0.1)

    async def main() -> None:
        assert bus.clock is REAL_CLOCK
        chip.faults.hang_next()  # until released
        hung = asyncio.create_task(bus.read_byte_data_async(0x48, 0))
        await asyncio.sleep(0)  # the hung call is submitted first
        queued = asyncio.create_task(bus.write_byte_data_async(0x48, 0x10, 0xAA))
        with pytest.raises(BusTimeout, match=r"did not finish within 0\.1 s"):
            await hung
        with pytest.raises(BusTimeout, match="did not start"):
            await queued
        await until(lambda: not chip.faults.pending, "the hung access")
        chip.faults.release_hangs()
        assert await bus.read_byte_data_async(0x48, 0) == 7
        assert chip.peek(0x10) == b"\x00"  # the timed-out queued write never ran

    with bus:
        asyncio.run(main())
    assert bus.stats.timeouts == 2


def test_real_clock_async_cancel_of_a_queued_call_means_it_never_runs() -> None:
    _, chip, bus = real_bus(timeout=5.0)

    async def main() -> None:
        chip.faults.hang_next()
        hung = asyncio.create_task(bus.read_byte_data_async(0x48, 0))
        # the worker has taken the hang: the device holds the bus now
        await until(lambda: not chip.faults.pending, "the hung access")
        queued = asyncio.create_task(bus.write_byte_data_async(0x48, 0x10, 0xAA))
        await asyncio.sleep(0)  # one loop step: the call is queued
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        chip.faults.release_hangs()  # the hung access now fails with ETIMEDOUT
        with pytest.raises(BusTimeout):
            await hung
        assert await bus.read_byte_data_async(0x48, 0x10) == 0

    with bus:
        asyncio.run(main())


def test_real_clock_async_results_reach_their_own_callers_in_a_burst() -> None:
    sim, chip, bus = real_bus(timeout=5.0)
    for register in range(64):
        chip.poke(register, register ^ 0x5A)

    async def main() -> list[int]:
        calls = [bus.read_byte_data_async(0x48, register) for register in range(64)]
        return list(await asyncio.gather(*calls))

    with bus:
        assert asyncio.run(main()) == [register ^ 0x5A for register in range(64)]
        # and again from a fresh event loop: each loop gets its own hand-over
        assert asyncio.run(main()) == [register ^ 0x5A for register in range(64)]
    assert sim.max_concurrency == 1
    assert bus.stats.transactions == 128


def test_real_clock_async_errors_reach_the_caller() -> None:
    _, chip, bus = real_bus(timeout=5.0)

    async def main() -> None:
        chip.faults.nack_next(1)
        with pytest.raises(NoAcknowledge):
            await bus.read_byte_data_async(0x48, 0)
        assert await bus.read_byte_data_async(0x48, 1) == 8

    with bus:
        asyncio.run(main())


def test_real_clock_async_calls_queued_at_close_fail_as_closed() -> None:
    _, chip, bus = real_bus(timeout=5.0)

    async def main() -> None:
        chip.faults.hang_next()
        hung = asyncio.create_task(bus.read_byte_data_async(0x48, 0))
        await until(lambda: not chip.faults.pending, "the hung access")
        queued = asyncio.create_task(bus.read_byte_data_async(0x48, 1))
        await asyncio.sleep(0)  # submitted
        bus.close()  # closing the adapter releases the hang; the queue fails
        with pytest.raises(DeviceClosed):
            await queued
        with pytest.raises(BusTimeout):
            await hung

    asyncio.run(main())


# -- several transfers in one worker job ------------------------------------------------


def test_transfers_run_in_order_and_a_failed_one_is_its_own_result(
    bus: I2CBus, sensor: SimulatedI2CDevice
) -> None:
    before = bus.stats.snapshot()
    sensor.transactions.clear()
    results = bus.transfers(0x48, [(b"\x00", 2), (b"\x10\xaa", 0), (b"\x02", 1)])
    assert results == [b"\x12\x34", b"", b"\x56"]
    assert sensor.peek(0x10) == b"\xaa"  # the plain write in the middle ran
    assert [kind for kind, _ in sensor.transactions] == ["write", "read", "write", "write", "read"]
    # A NACK (the next access) fails the first transfer; the ones after it still run.
    sensor.faults.nack_next(1)
    sensor.poke(0x00, [0x01, 0x02])
    first, second, third = bus.transfers(0x48, [(b"\x02", 1), (b"\x00", 2), (b"\x01", 1)])
    assert isinstance(first, NoAcknowledge) and first.kind is AlarmStatus.READ
    assert second == b"\x01\x02" and third == b"\x02"
    after = bus.stats.snapshot()
    assert after.transactions - before.transactions == 3 + 3  # each transfer counted
    assert after.errors - before.errors == 1
    with pytest.raises(ValueError, match="no transfers"):
        bus.transfers(0x48, [])


def test_transfers_share_one_deadline_and_fail_together_when_it_passes() -> None:
    _, chip, bus = real_bus(timeout=0.1)

    async def main() -> None:
        chip.faults.hang_next()  # the first access hangs until released
        with pytest.raises(BusTimeout, match=r"2 transfers at 0x48 did not finish within 0\.05"):
            await bus.transfers_async(0x48, [(b"\x00", 1), (b"\x01", 1)], timeout=0.05)
        await until(lambda: not chip.faults.pending, "the hung access")
        chip.faults.release_hangs()
        assert await bus.transfers_async(0x48, [(b"\x00", 1)]) == [b"\x07"]

    with bus:
        asyncio.run(main())
        assert bus.stats.transactions == 3 and bus.stats.timeouts == 2  # one per transfer
    with pytest.raises(DeviceClosed):
        bus.transfers(0x48, [(b"\x00", 1)])
    with pytest.raises(DeviceClosed):
        asyncio.run(bus.transfers_async(0x48, [(b"\x00", 1)]))


class WideRegisters(SimulatedI2CDevice):
    """A part with 16-bit register addresses (an EEPROM, a ToF sensor): 2 pointer bytes."""

    def handle_write(self, data: bytes) -> None:
        self.pointer = int.from_bytes(data[:2], "big") % len(self.registers)
        self.write_registers(data[2:])


def test_a_device_reads_registers_in_one_batch(bus: I2CBus, sim_bus: SimulatedI2CBus) -> None:
    wide = sim_bus.attach(WideRegisters(0x50, size=0x400))
    wide.poke(0x0123, [0xBE, 0xEF])
    device = bus.device(0x50)
    assert device.read_registers_batch([(b"\x01\x23", 2), (b"\x01\x24", 1)]) == [
        b"\xbe\xef",
        b"\xef",
    ]
    wide.poke(0x0002, [0x42])
    assert asyncio.run(device.read_registers_batch_async([(0x00, 1)], timeout=0.2)) == [b"\x00"]
    assert device.read_registers_batch([(b"\x00\x02", 1)]) == [b"\x42"]
    with pytest.raises(ValueError):
        device.read_registers_batch([(0x100, 1)])  # not a byte: give the bytes
    device.close()
    with pytest.raises(DeviceClosed):
        device.read_registers_batch([(0x00, 1)])


def test_transfers_to_several_addresses_in_one_job(
    bus: I2CBus, sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice
) -> None:
    other = sim_bus.attach(SimulatedI2CDevice(0x49, registers={0x00: 0xAB}))
    other.faults.nack_next(1)
    results = bus.transfers_to([(0x48, b"\x01", 1), (0x49, b"\x00", 1), (0x49, b"\x00", 1)])
    assert results[0] == b"\x34" and isinstance(results[1], NoAcknowledge)
    assert results[2] == b"\xab"
    assert bus.stats.transactions == 3 and bus.stats.errors == 1


def test_a_hung_job_to_several_addresses_names_them_in_its_timeout() -> None:
    sim, chip, bus = real_bus(timeout=0.5)
    sim.attach(SimulatedI2CDevice(0x49))

    async def main() -> None:
        chip.faults.hang_next()  # until released
        with pytest.raises(BusTimeout, match="2 transfers at 2 addresses did not finish"):
            await bus.transfers_to_async([(0x48, b"\x00", 1), (0x49, b"\x00", 1)], timeout=0.05)
        await until(lambda: not chip.faults.pending, "the hung access")
        chip.faults.release_hangs()

    with bus:
        asyncio.run(main())

"""SPIBus and SPIDevice over the simulated SPI bus (the spidev API)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from caioc.ca import AlarmStatus
from caioc.hw import (
    BackendUnavailable,
    BusTimeout,
    DeviceClosed,
    DeviceUnplugged,
    SPIBus,
    SPIDevice,
    VirtualClock,
)
from caioc.hw.sim import SimulatedSPIBus, SimulatedSPIDevice

from .conftest import BOUND

Starter = Callable[..., concurrent.futures.Future[Any]]


@pytest.fixture
def sim_spi(clock: VirtualClock) -> SimulatedSPIBus:
    return SimulatedSPIBus(0, clock=clock)


@pytest.fixture
def chip(sim_spi: SimulatedSPIBus) -> SimulatedSPIDevice:
    return sim_spi.attach(
        SimulatedSPIDevice(name="sensor", registers={0x00: 0x58, 0x01: 0x10, 0x02: 0x20}),
        chip_select=0,
    )


@pytest.fixture
def spi(sim_spi: SimulatedSPIBus) -> Iterator[SPIBus]:
    with SPIBus(0, spidev_factory=sim_spi, timeout=0.5) as bus:
        yield bus


def test_the_simulator_speaks_the_spidev_api(
    sim_spi: SimulatedSPIBus, chip: SimulatedSPIDevice
) -> None:
    handle = sim_spi()
    handle.open(0, 0)
    handle.mode, handle.max_speed_hz = 0, 1_000_000
    assert handle.xfer2([0x80, 0, 0]) == [0x00, 0x58, 0x10]  # read from register 0
    handle.writebytes([0x10, 0xAA, 0xBB])  # write from register 0x10
    assert chip.peek(0x10, 2) == b"\xaa\xbb"
    assert handle.xfer([0x90, 0]) == [0, 0xAA]
    # readbytes clocks out zeros, which this framing takes as a write of 0
    # to register 0: a real hazard with such chips, simulated faithfully.
    assert handle.readbytes(2) == [0, 0]
    assert chip.peek(0x00) == b"\x00"
    handle.close()
    with pytest.raises(OSError):
        handle.xfer2([0])
    with pytest.raises(FileNotFoundError):
        sim_spi().open(1, 0)  # no /dev/spidev1.0 on this bus


def test_device_transfers_into_caller_buffers(spi: SPIBus, chip: SimulatedSPIDevice) -> None:
    device = SPIDevice(spi, 0, mode=0, max_speed_hz=1_000_000)
    assert device.transfer(b"\x80\x00\x00\x00") == b"\x00\x58\x10\x20"
    buffer = bytearray(5)
    device.write_readinto(b"\x81\x00\x00", buffer, in_start=1, in_end=4)
    assert buffer == b"\x00\x00\x10\x20\x00"
    device.write(b"\xff\x05\x07\x09", start=1)  # write 0x07, 0x09 from register 5
    assert chip.peek(0x05, 2) == b"\x07\x09"
    buffer = bytearray(3)
    device.readinto(buffer, write_value=0x85)
    assert buffer == b"\x00\x07\x09"
    with pytest.raises(ValueError, match="full duplex"):
        device.write_readinto(b"\x80", bytearray(2))
    with pytest.raises(ValueError):
        SPIDevice(spi, 0, mode=4)
    assert spi.transfer(0, b"") == b""


def test_an_empty_chip_select_reads_idle_bytes(spi: SPIBus, chip: SimulatedSPIDevice) -> None:
    assert spi.transfer(1, b"\x80\x00") == b"\xff\xff"
    chip.unplug()
    assert spi.transfer(0, b"\x80\x00") == b"\xff\xff"
    chip.replug()
    assert spi.transfer(0, b"\x80\x00") == b"\x00\x58"


def test_a_mode_or_speed_the_chip_cannot_follow_shifts_the_reply(
    spi: SPIBus, chip: SimulatedSPIDevice
) -> None:
    assert spi.transfer(0, b"\x80\x00", mode=3) == bytes([0x80, 0x2C])
    chip.max_speed_hz = 1_000_000
    assert spi.transfer(0, b"\x80\x00", max_speed_hz=20_000_000) == bytes([0x80, 0x2C])
    assert spi.transfer(0, b"\x80\x00") == b"\x00\x58"


def test_garbled_transfer(spi: SPIBus, chip: SimulatedSPIDevice) -> None:
    chip.faults.garble_next()
    assert spi.transfer(0, b"\x80\x00") == b"\xff\xa7"
    assert spi.transfer(0, b"\x80\x00") == b"\x00\x58"


def test_hung_transfer_times_out_and_other_chip_selects_wait(
    spi: SPIBus, chip: SimulatedSPIDevice, clock: VirtualClock, background: Starter
) -> None:
    chip.faults.hang_next()
    hung = background(spi.transfer, 0, b"\x80\x00")
    clock.wait_for_waiters(2)
    queued = background(spi.transfer, 1, b"\x00")
    clock.wait_for_waiters(3)
    clock.advance(0.5)
    with pytest.raises(BusTimeout, match="did not finish") as caught:
        hung.result(timeout=BOUND)
    assert caught.value.kind is AlarmStatus.TIMEOUT
    with pytest.raises(BusTimeout, match="did not start"):
        queued.result(timeout=BOUND)
    chip.faults.release_hangs()
    assert spi.transfer(0, b"\x80\x00") == b"\x00\x58"  # reopened after the error


def test_unplugged_controller(
    spi: SPIBus, sim_spi: SimulatedSPIBus, chip: SimulatedSPIDevice
) -> None:
    assert spi.transfer(0, b"\x80\x00") == b"\x00\x58"
    sim_spi.unplug()
    with pytest.raises(DeviceUnplugged):
        spi.transfer(0, b"\x80\x00")
    with pytest.raises(DeviceUnplugged):  # reopening fails too while it is gone
        spi.transfer(0, b"\x80\x00")
    sim_spi.replug()
    assert spi.transfer(0, b"\x80\x00") == b"\x00\x58"


def test_transfers_from_many_threads_are_serialised(
    spi: SPIBus, sim_spi: SimulatedSPIBus, chip: SimulatedSPIDevice, background: Starter
) -> None:
    threads: set[threading.Thread] = set()
    chip.on_read(0x00, lambda device, register: threads.add(threading.current_thread()))
    calls = [background(spi.transfer, n % 2, b"\x80\x00") for n in range(100)]
    replies = [call.result(timeout=BOUND) for call in calls]
    assert replies == [b"\x00\x58", b"\xff\xff"] * 50
    assert threads == {spi.worker.thread}
    assert sim_spi.max_concurrency == 1


def test_async_transfers(spi: SPIBus, chip: SimulatedSPIDevice) -> None:
    async def main() -> None:
        device = spi.device(0)
        assert await device.transfer_async(b"\x80\x00") == b"\x00\x58"
        await device.write_async(b"\x20\x01\x02")
        buffer = bytearray(3)
        await device.write_readinto_async(b"\xa0\x00\x00", buffer)
        assert buffer == b"\x00\x01\x02"
        await device.readinto_async(buffer, write_value=0x80)
        assert buffer == b"\x00\x58\x10"

    asyncio.run(main())


def test_close_is_idempotent_and_use_after_close_raises(
    spi: SPIBus, chip: SimulatedSPIDevice
) -> None:
    with spi.device(0) as device:
        assert device.transfer(b"\x80\x00") == b"\x00\x58"
    device.close()
    with pytest.raises(DeviceClosed):
        device.transfer(b"\x80")
    with pytest.raises(DeviceClosed):
        asyncio.run(device.transfer_async(b"\x80"))
    spi.close()
    spi.close()
    assert spi.closed and not spi.worker.thread.is_alive()
    with pytest.raises(DeviceClosed):
        spi.transfer(0, b"\x80")


def test_a_missing_spidev_names_the_pip_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spidev", None)
    with pytest.raises(BackendUnavailable, match=r"pip install caioc\[spi\]"):
        SPIBus(0)


def test_a_conversion_on_the_virtual_clock(
    spi: SPIBus, chip: SimulatedSPIDevice, clock: VirtualClock
) -> None:
    def start(device: SimulatedSPIDevice, register: int, value: int) -> None:
        device.after(0.01, lambda device: device.poke(0x31, 0xAB))

    chip.on_write(0x30, start)
    spi.transfer(0, b"\x30\x01")
    assert spi.transfer(0, b"\xb1\x00") == b"\x00\x00"
    clock.advance(0.01)
    assert spi.transfer(0, b"\xb1\x00") == b"\x00\xab"

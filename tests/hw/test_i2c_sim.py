"""The simulated I2C bus through the smbus2 API, and its devices' behaviour."""

from __future__ import annotations

import errno
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smbus2 import i2c_msg

from caioc.hw import VirtualClock
from caioc.hw.sim import SimulatedI2CBus, SimulatedI2CDevice


def test_smbus_register_calls(sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice) -> None:
    assert sim_bus.read_byte_data(0x48, 0x01) == 0x34
    assert sim_bus.read_word_data(0x48, 0x00) == 0x3412  # SMBus words are little-endian
    sim_bus.write_byte_data(0x48, 0x10, 0xAB)
    sim_bus.write_word_data(0x48, 0x20, 0xBEEF)
    assert sensor.peek(0x10) == b"\xab"
    assert sensor.peek(0x20, 2) == b"\xef\xbe"
    sim_bus.write_i2c_block_data(0x48, 0x30, [1, 2, 3])
    assert sim_bus.read_i2c_block_data(0x48, 0x30, 3) == [1, 2, 3]
    sim_bus.write_byte(0x48, 0x02)  # sets the pointer
    assert sim_bus.read_byte(0x48) == 0x56
    assert sim_bus.read_byte(0x48) == 0x78  # the pointer moved on
    sim_bus.write_quick(0x48)
    # A process call writes register and word, then reads on from the pointer.
    sensor.poke(0x42, [0xCD, 0xAB])
    assert sim_bus.process_call(0x48, 0x40, 0x0102) == 0xABCD
    assert sensor.peek(0x40, 2) == b"\x02\x01"
    assert sim_bus.address == 0x48


def test_smbus_block_calls_count_first(
    sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice
) -> None:
    sim_bus.write_block_data(0x48, 0x50, [7, 8, 9])
    assert sensor.peek(0x50, 4) == bytes([3, 7, 8, 9])
    assert sim_bus.read_block_data(0x48, 0x50) == [7, 8, 9]
    # The written block lands at 0x60..0x62; the reply is read on from 0x63.
    sensor.poke(0x63, [1, 9])
    assert sim_bus.block_process_call(0x48, 0x60, [2, 5]) == [9]


def test_smbus_limits_are_kept(sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice) -> None:
    with pytest.raises(ValueError):
        sim_bus.read_i2c_block_data(0x48, 0, 33)
    with pytest.raises(ValueError):
        sim_bus.write_i2c_block_data(0x48, 0, list(range(33)))
    with pytest.raises(ValueError):
        sim_bus.write_block_data(0x48, 0, list(range(33)))


def test_i2c_rdwr_fills_real_smbus2_messages(
    sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice
) -> None:
    sensor.poke(0x80, range(100))
    write, read = i2c_msg.write(0x48, [0x80]), i2c_msg.read(0x48, 100)
    sim_bus.i2c_rdwr(write, read)
    # cast: smbus2's stub mistypes i2c_msg.__iter__; at run time it yields ints.
    assert list(cast(Any, read)) == list(range(100))  # no 32-byte SMBus limit
    assert list(sensor.transactions)[-2:] == [("write", b"\x80"), ("read", bytes(range(100)))]


def test_absent_address_is_not_acknowledged(sim_bus: SimulatedI2CBus) -> None:
    with pytest.raises(OSError) as caught:
        sim_bus.read_byte_data(0x20, 0)
    assert caught.value.errno == errno.EREMOTEIO


def test_closed_bus_and_unplugged_adapter_fail_like_the_kernel(
    sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice
) -> None:
    sim_bus.unplug()
    with pytest.raises(OSError) as caught:
        sim_bus.read_byte_data(0x48, 0)
    assert caught.value.errno == errno.ENODEV
    sim_bus.replug()
    assert sim_bus.read_byte_data(0x48, 0) == 0x12
    sim_bus.close()
    with pytest.raises(OSError) as caught:
        sim_bus.read_byte_data(0x48, 0)
    assert caught.value.errno == errno.EBADF
    sim_bus.open(1)
    assert sim_bus.read_byte_data(0x48, 0) == 0x12


def test_read_only_registers_ignore_writes(
    sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice
) -> None:
    sensor.define_register(0xD0, 0x60, read_only=True)  # a chip id
    sim_bus.write_byte_data(0x48, 0xD0, 0x00)
    assert sim_bus.read_byte_data(0x48, 0xD0) == 0x60
    # A block write across it stores the neighbours only.
    sim_bus.write_i2c_block_data(0x48, 0xCF, [1, 2, 3])
    assert sensor.peek(0xCF, 3) == bytes([1, 0x60, 3])


def test_write_one_to_clear_bits(sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice) -> None:
    sensor.define_register(0x05, 0b1111_0000, write_one_to_clear=0b1111_0000)
    sim_bus.write_byte_data(0x48, 0x05, 0b0101_0011)
    # Flags written 1 are cleared, flags written 0 kept, plain bits written.
    assert sensor.peek(0x05)[0] == 0b1010_0011


def test_auto_increment_can_be_off(sim_bus: SimulatedI2CBus) -> None:
    fifo = sim_bus.attach(SimulatedI2CDevice(0x50, registers={0: 9, 1: 8}, auto_increment=False))
    assert sim_bus.read_i2c_block_data(0x50, 0, 3) == [9, 9, 9]
    assert fifo.pointer == 0


def test_pointer_wraps_at_the_end_of_the_map(sim_bus: SimulatedI2CBus) -> None:
    small = sim_bus.attach(SimulatedI2CDevice(0x51, size=4, registers=b"\x01\x02\x03\x04"))
    assert sim_bus.read_i2c_block_data(0x51, 2, 4) == [3, 4, 1, 2]
    assert small.pointer == 2


class ToySensor(SimulatedI2CDevice):
    """Writing 1 to CTRL starts a 50 ms conversion; STATUS bit 0 flags the result."""

    CTRL, STATUS, DATA = 0x00, 0x01, 0x02

    def __init__(self, address: int = 0x76) -> None:
        super().__init__(address)
        self.define_register(self.STATUS, 0, read_only=False, write_one_to_clear=0x01)
        self.on_write(self.CTRL, self._start)
        self.reading = 0x1234

    def _start(self, device: SimulatedI2CDevice, register: int, value: int) -> None:
        if value & 1:
            self.after(0.05, self._finish)

    def _finish(self, device: SimulatedI2CDevice) -> None:
        self.poke(self.DATA, self.reading.to_bytes(2, "big"))
        self.poke(self.STATUS, self.peek(self.STATUS)[0] | 1)


def test_a_conversion_takes_time_on_the_virtual_clock(
    sim_bus: SimulatedI2CBus, clock: VirtualClock
) -> None:
    sim_bus.attach(ToySensor())
    sim_bus.write_byte_data(0x76, ToySensor.CTRL, 1)
    assert sim_bus.read_byte_data(0x76, ToySensor.STATUS) == 0
    clock.advance(0.049)
    assert sim_bus.read_byte_data(0x76, ToySensor.STATUS) == 0
    clock.advance(0.001)
    assert sim_bus.read_byte_data(0x76, ToySensor.STATUS) == 1
    assert sim_bus.read_i2c_block_data(0x76, ToySensor.DATA, 2) == [0x12, 0x34]
    sim_bus.write_byte_data(0x76, ToySensor.STATUS, 1)  # acknowledge the flag
    assert sim_bus.read_byte_data(0x76, ToySensor.STATUS) == 0


def test_read_hooks_see_each_register_read(sim_bus: SimulatedI2CBus) -> None:
    counter = sim_bus.attach(SimulatedI2CDevice(0x30))
    counter.on_read(0x00, lambda device, register: device.poke(0x00, device.peek(0x00)[0] + 1))
    assert [sim_bus.read_byte_data(0x30, 0) for _ in range(3)] == [1, 2, 3]


def test_nack_faults(sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice) -> None:
    sensor.faults.nack_next(2)
    for _ in range(2):
        with pytest.raises(OSError) as caught:
            sim_bus.read_byte_data(0x48, 0)
        assert caught.value.errno == errno.EREMOTEIO
    assert sim_bus.read_byte_data(0x48, 0) == 0x12
    sensor.faults.nack = True
    for _ in range(3):
        with pytest.raises(OSError):
            sim_bus.write_byte_data(0x48, 0, 1)
    assert sensor.peek(0) == b"\x12"  # nothing reached the device
    sensor.faults.clear()
    assert not sensor.faults.pending
    assert sim_bus.read_byte_data(0x48, 0) == 0x12


def test_garbled_reads(sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice) -> None:
    sensor.faults.garble_next()
    assert sim_bus.read_i2c_block_data(0x48, 0, 2) == [0x12 ^ 0xFF, 0x34 ^ 0xFF]
    assert sim_bus.read_i2c_block_data(0x48, 0, 2) == [0x12, 0x34]
    sensor.faults.garble_next(garbler=lambda data: data[::-1])
    assert sim_bus.read_i2c_block_data(0x48, 0, 2) == [0x34, 0x12]


def test_unplugged_device_nacks_and_comes_back_reset(
    sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice
) -> None:
    sim_bus.write_byte_data(0x48, 0x00, 0xEE)
    sensor.unplug()
    with pytest.raises(OSError) as caught:
        sim_bus.read_byte_data(0x48, 0)
    assert caught.value.errno == errno.EREMOTEIO
    sensor.replug()
    assert sim_bus.read_byte_data(0x48, 0) == 0x12  # powered up afresh
    sim_bus.write_byte_data(0x48, 0x00, 0xEE)
    sensor.unplug()
    sensor.replug(reset=False)
    assert sim_bus.read_byte_data(0x48, 0) == 0xEE


def test_attach_and_detach(sim_bus: SimulatedI2CBus, sensor: SimulatedI2CDevice) -> None:
    with pytest.raises(ValueError):
        sim_bus.attach(SimulatedI2CDevice(0x48))
    assert sim_bus.detach(0x48) is sensor
    with pytest.raises(OSError):
        sim_bus.read_byte_data(0x48, 0)
    with pytest.raises(ValueError):
        SimulatedI2CDevice(0x80)


@given(
    register=st.integers(0, 255),
    data=st.lists(st.integers(0, 255), min_size=1, max_size=32),
)
def test_what_is_written_reads_back_from_any_register(register: int, data: list[int]) -> None:
    bus = SimulatedI2CBus(1, clock=VirtualClock())
    device = bus.attach(SimulatedI2CDevice(0x10))
    bus.write_i2c_block_data(0x10, register, data)
    assert bus.read_i2c_block_data(0x10, register, len(data)) == data
    assert device.pointer == (register + len(data)) % 256

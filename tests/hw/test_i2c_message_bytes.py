"""The bytes of smbus2 messages, read through their ctypes pointers (no ctypes.string_at)."""

from __future__ import annotations

from smbus2 import i2c_msg

from caioc.hw import I2CBus
from caioc.hw.sim import SimulatedI2CBus, SimulatedI2CDevice


def test_simulated_rdwr_sees_the_written_bytes_of_every_message() -> None:
    sim = SimulatedI2CBus(1)
    chip = sim.attach(SimulatedI2CDevice(0x40))
    sim.i2c_rdwr(i2c_msg.write(0x40, b""))  # an empty write: the address alone
    sim.i2c_rdwr(i2c_msg(addr=0x40, flags=0, len=0))  # no buffer at all
    sim.i2c_rdwr(i2c_msg.write(0x40, b"\x10\xab\xcd"))
    assert list(chip.transactions) == [
        ("write", b""),
        ("write", b""),
        ("write", b"\x10\xab\xcd"),
    ]
    assert chip.peek(0x10, 2) == b"\xab\xcd"


def test_a_reused_read_transfer_returns_fresh_bytes_each_time() -> None:
    sim = SimulatedI2CBus(1)
    chip = sim.attach(SimulatedI2CDevice(0x40, registers={0: 1, 1: 2, 2: 3}))
    with I2CBus(sim) as bus:
        first = bus.write_then_read(0x40, b"\x00", 3)
        chip.poke(0, [7, 8, 9])
        second = bus.write_then_read(0x40, b"\x00", 3)  # the same prepared messages
        assert (first, second) == (b"\x01\x02\x03", b"\x07\x08\x09")
        assert type(first) is bytes
        assert bus.write_then_read(0x40, b"", 2) == b"\x00\x00"  # read alone, from the pointer
        assert bus.write_then_read(0x40, b"\x01\x05", 0) == b""
        assert chip.peek(1) == b"\x05"

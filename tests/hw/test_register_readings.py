"""Register readings: registers declared, not read by hand, polled one worker job a tick."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from waiting import run, until

from caioc.ca import AlarmSeverity, AlarmStatus, ChannelType
from caioc.hw import Device, I2CBus, I2CDevice, register_reading
from caioc.hw._device import _SharedScan
from caioc.hw.sim import SimulatedI2CBus, SimulatedI2CDevice

from .test_device import OnSimulatedI2C, make_chip

FAST = dict(period=0.02, timeout=0.5)


class SpyChip(I2CDevice):
    """An I2CDevice that notes the registers of every batch it is asked for."""

    batches: list[list[tuple[int | bytes, int]]]
    miscount = False  # return one result too few

    async def read_registers_batch_async(self, requests: Any, *, timeout: Any = None) -> Any:
        self.batches.append(list(requests))
        results = await super().read_registers_batch_async(requests, timeout=timeout)
        return results[:-1] if self.miscount else results


class Registers(OnSimulatedI2C, Device):
    """Five fast registers (one group) and a slow one (a group of its own)."""

    comm_failures = 3
    reconnect_delays = (0.02, 2.0, 0.1)

    temperature = register_reading(0x00, ">h", scale=1 / 256, units="degC", **FAST)
    raw = register_reading(0x02, ">H", **FAST)
    offsetted = register_reading(0x04, "b", offset=100.0, **FAST)
    words = register_reading(0x0C, ">2H", **FAST)  # two values: a decoder makes one
    ratio = register_reading(0x06, ">BB", 0.0, **FAST)
    slow = register_reading(0x0A, "B", period=30.0)

    @words.decoder
    def words(self, raw: bytes) -> int:  # type: ignore[no-redef]
        high, low = struct.unpack(">2H", raw)
        return high << 16 | low

    @ratio.decoder
    def ratio(self, raw: bytes) -> float:  # type: ignore[no-redef]
        numerator, denominator = raw
        return numerator / denominator  # 0: a ZeroDivisionError, a CALC alarm

    def __init__(self, bus: SimulatedI2CBus, prefix: str = "reg:") -> None:
        self.sim_bus = bus
        self.bus = None
        self.batches: list[list[tuple[int | bytes, int]]] = []
        self.opens = 0
        super().__init__(prefix)

    async def open(self) -> None:
        self.opens += 1
        await super().open()
        assert self.bus is not None
        self.chip = SpyChip(self.bus, self.address)
        self.chip.batches = self.batches


FAST_BATCH = [(0x00, 2), (0x02, 2), (0x04, 1), (0x0C, 4), (0x06, 2)]


class FlakyRegister(SimulatedI2CDevice):
    """A register map that NACKs every read of register ``bad``, or of those in ``bads``."""

    bad: int | None = None
    bads: frozenset[int] = frozenset()

    def handle_read(self, length: int) -> bytes:
        if self.pointer == self.bad or self.pointer in self.bads:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        return super().handle_read(length)


def make_registers() -> FlakyRegister:
    chip = make_chip()
    chip.__class__ = FlakyRegister
    chip.poke(0x00, struct.pack(">hHbxBBxxB", 5504, 0xBEEF, -3, 3, 4, 9))
    chip.poke(0x0C, struct.pack(">HH", 1, 2))
    return chip


def alarm(device: Device, attribute: str) -> tuple[AlarmStatus, AlarmSeverity]:
    channel: Any = getattr(device, attribute)
    return channel.alarm_status, channel.alarm_severity


GOOD = (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)


@contextlib.asynccontextmanager
async def started(kind: type[Registers] = Registers) -> AsyncIterator[tuple[FlakyRegister, Any]]:
    """A started device of *kind* on its simulated chip; shut down on the way out."""
    sim = SimulatedI2CBus()
    chip = sim.attach(make_registers())
    device = kind(sim)
    await device.startup()
    try:
        yield chip, device
    finally:
        await device.shutdown()


def test_registers_are_decoded_and_each_group_is_read_in_one_batch() -> None:
    unstarted = Registers(SimulatedI2CBus())
    assert alarm(unstarted, "raw") == (AlarmStatus.UDF, AlarmSeverity.INVALID)
    assert isinstance(unstarted.raw.value, int) and isinstance(unstarted.temperature.value, float)

    async def scenario() -> None:
        async with started() as (_, device):
            await until(lambda: len(device.batches) >= 5, "a few ticks")
            assert device.temperature.value == 21.5
            assert device.raw.value == 0xBEEF
            assert device.offsetted.value == 97.0
            assert device.ratio.value == 0.75
            assert device.slow.value == 9
            assert device.words.value == 0x10002
            for attribute in ("temperature", "raw", "offsetted", "words", "ratio", "slow"):
                assert alarm(device, attribute) == GOOD, attribute
            assert device.error_count.value == 0
            # One batch a tick for the fast group, the slow one read by itself.
            assert device.batches[0] in (FAST_BATCH, [(0x0A, 1)])
            assert device.batches.count([(0x0A, 1)]) == 1
            assert all(batch == FAST_BATCH for batch in device.batches if len(batch) > 1)

    run(scenario)


def test_a_failed_register_fails_its_own_reading_only() -> None:
    async def scenario() -> None:
        async with started() as (chip, device):
            await until(lambda: device.raw.value == 0xBEEF, "the first reading")
            stamp = device.temperature.timestamp
            chip.bad = 0x00  # the batch's first register fails from now on
            await until(lambda: alarm(device, "temperature")[0] != AlarmStatus.NO_ALARM, "NACK")
            assert alarm(device, "temperature") == (AlarmStatus.READ, AlarmSeverity.INVALID)
            assert device.temperature.value == 21.5 and device.temperature.timestamp == stamp
            assert "NoAcknowledge" in device.last_error.value
            chip.poke(0x02, [0x12, 0x34])  # the readings after it in the batch go on
            await until(lambda: device.raw.value == 0x1234, "the next register")
            assert alarm(device, "raw") == GOOD
            assert alarm(device, "temperature")[0] == AlarmStatus.READ
            # A good read after each failure: never disconnected, never reopened.
            assert device.connected.value == 1 and device.opens == 1
            chip.bad = None
            await until(lambda: alarm(device, "temperature") == GOOD, "the next good read")
            # A decoder's error: CALC on its own reading, the others keep their value.
            chip.poke(0x07, [0])
            await until(lambda: alarm(device, "ratio")[0] == AlarmStatus.CALC, "CALC")
            assert device.ratio.value == 0.75
            assert alarm(device, "raw") == GOOD and alarm(device, "offsetted") == GOOD

    run(scenario)


class ImpatientRegisters(Registers):
    comm_failures = 100  # a 0.3 s hang fails many ticks in a row: TIMEOUT, not COMM
    temperature = register_reading(0x00, ">h", scale=1 / 256, period=0.02, timeout=0.05)
    raw = register_reading(0x02, ">H", period=0.02, timeout=0.05)


def test_a_hung_batch_times_out_each_reading_of_it_and_polling_goes_on() -> None:
    async def scenario() -> None:
        async with started(ImpatientRegisters) as (chip, device):
            await until(lambda: device.raw.value == 0xBEEF, "the first reading")
            # The (50 ms) batch of temperature and raw hangs for 0.3 s.
            chip.faults.hang_next(1, seconds=0.3)
            await until(lambda: alarm(device, "raw")[0] == AlarmStatus.TIMEOUT, "TIMEOUT")
            await until(lambda: alarm(device, "temperature")[0] == AlarmStatus.TIMEOUT, "both")
            assert device.raw.value == 0xBEEF
            assert "BusTimeout" in device.last_error.value
            chip.poke(0x02, [0x00, 0x07])
            await until(lambda: device.raw.value == 7, "the polls after the hang")
            await until(lambda: alarm(device, "temperature") == GOOD, "recovery")

    run(scenario)


def test_an_unplugged_chip_is_comm_on_every_reading_and_comes_back() -> None:
    async def scenario() -> None:
        async with started() as (chip, device):
            await until(lambda: device.raw.value == 0xBEEF, "the first reading")
            chip.unplug()  # NACKs from now on: 3 failures in one batch take it offline
            await until(lambda: device.connected.value == 0, "disconnection")
            for attribute in ("temperature", "raw", "offsetted", "words", "ratio", "slow"):
                assert alarm(device, attribute) == (AlarmStatus.COMM, AlarmSeverity.INVALID)
            chip.poke(0x0A, [10])
            chip.replug(reset=False)
            await until(lambda: device.connected.value == 1, "reconnection")
            # After a reconnect every reading is read at once, the slow one too.
            await until(lambda: device.slow.value == 10, "the slow register at once")
            await until(lambda: alarm(device, "raw") == GOOD, "the polls again")

    run(scenario)


def test_a_chip_that_answers_its_probe_but_not_its_data_is_retried_until_it_does() -> None:
    async def scenario() -> None:
        async with started() as (chip, device):
            await until(lambda: device.raw.value == 0xBEEF, "the first reading")
            chip.bads = frozenset(register for register, _ in [*FAST_BATCH, (0x0A, 1)])
            await until(lambda: device.opens >= 3, "reconnections whose reads fail")
            assert alarm(device, "raw")[1] == AlarmSeverity.INVALID
            chip.poke(0x02, [0x00, 0x09])
            chip.bads = frozenset()
            await until(lambda: device.raw.value == 9, "the data again")
            await until(lambda: device.connected.value == 1, "connected")
            await until(lambda: alarm(device, "raw") == GOOD, "no alarm")

    run(scenario)


def test_proc_reads_one_register_now() -> None:
    async def scenario() -> None:
        async with started() as (chip, device):
            await until(lambda: device.slow.value == 9, "the first reading")
            chip.poke(0x0A, [42])
            proc = device.pvdb["reg:slow.PROC"]
            await proc.write(ChannelType.CHAR, 1, b"\x01")
            await until(lambda: device.slow.value == 42, "the value PROC read")
            assert device.batches.count([(0x0A, 1)]) == 2  # the start-up read, and PROC's

    run(scenario)


class OwnReader(Registers):
    """A register reading whose driver reads it its own way: polled as any reading."""

    raw = register_reading(0x02, ">H", **FAST)

    @raw.reader
    async def raw(self) -> int:  # type: ignore[no-redef]
        return int.from_bytes(await self.chip.read_registers_async(0x03, 1), "big") + 1000


def test_a_reader_of_its_own_replaces_the_register_read() -> None:
    assert not OwnReader.raw.batched and Registers.raw.batched  # type: ignore[attr-defined]

    async def scenario() -> None:
        async with started(OwnReader) as (_, device):
            await until(lambda: device.raw.value == 0xEF + 1000, "the driver's read")
            await until(lambda: len(device.batches) >= 3, "a few ticks")
            fast = [(0x00, 2), (0x04, 1), (0x0C, 4), (0x06, 2)]
            assert all(batch == fast for batch in device.batches if len(batch) > 1)

    run(scenario)


def test_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="not a byte"):
        register_reading(0x100, ">H")
    with pytest.raises(struct.error):
        register_reading(0x00, ">Q?x!")
    assert register_reading(b"\x01\x00", ">f").value == 0.0
    assert register_reading(0x00, ">H", value=7).value == 7
    # Several values from one format need a decoder, said when the class is made.
    with pytest.raises((TypeError, RuntimeError)) as caught:  # RuntimeError before 3.12
        type("Pair", (Device,), {"both": register_reading(0x00, ">hh")})
    error = caught.value if isinstance(caught.value, TypeError) else caught.value.__cause__
    assert "Pair.both: format '>hh' gives several values" in str(error)
    pair = register_reading(0x00, ">hh")
    pair.decoder(lambda device, raw: sum(struct.unpack(">hh", raw)))
    assert type("Pair", (Device,), {"both": pair}).both is pair  # type: ignore[attr-defined]


def test_a_port_that_miscounts_its_results_fails_the_readings_and_polling_goes_on() -> None:
    async def scenario() -> None:
        async with started() as (chip, device):
            await until(lambda: device.raw.value == 0xBEEF, "the first reading")
            device.chip.miscount = True
            await until(lambda: device.error_count.value > 0, "the failure")
            assert "4 results for 5" in device.last_error.value
            assert alarm(device, "raw")[1] == AlarmSeverity.INVALID
            chip.poke(0x02, [0x00, 0x05])  # reconnected (a fresh chip object): polled again
            await until(lambda: device.raw.value == 5 and alarm(device, "raw") == GOOD, "polls")

    run(scenario)


class Filtered(Registers):
    """A driver's own post (a filter, a conversion) sees every register value first."""

    async def post(self, attribute: str, value: Any, *, timestamp: float | None = None) -> None:
        await super().post(attribute, value + 1 if attribute == "raw" else value)


def test_a_drivers_own_post_gets_the_register_values() -> None:
    async def scenario() -> None:
        async with started(Filtered) as (_, device):
            await until(lambda: device.raw.value == 0xBEEF + 1, "the filtered value")
            assert device.offsetted.value == 97.0 and alarm(device, "raw") == GOOD

    run(scenario)


# -- the shared schedule: every device's registers of a period in one job of the bus ----


class SpyBus(I2CBus):
    """An I2CBus that notes the addresses of every multi-transfer job."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs: list[list[int]] = []

    async def transfers_to_async(self, requests: Any, *, timeout: Any = None) -> Any:
        self.jobs.append([address for address, _, _ in requests])
        return await super().transfers_to_async(requests, timeout=timeout)


class Scanned(Device):
    """Three registers of a chip on a bus the devices share, on the shared schedule."""

    shared_schedule = True
    comm_failures = 3
    reconnect_delays = (0.02, 2.0, 0.1)
    a = register_reading(0x00, "B", period=0.02, timeout=0.2)
    b = register_reading(0x01, "B", period=0.02, timeout=0.2)
    c = register_reading(0x02, "B", period=0.02, timeout=0.2)

    def __init__(self, prefix: str, bus: I2CBus, address: int) -> None:
        self.bus, self.address = bus, address
        super().__init__(prefix)

    async def open(self) -> None:
        self.chip = self.bus.device(self.address)

    async def probe(self) -> None:
        await self.chip.read_register_async(0x00)  # an unplugged chip does not answer


class OwnPort(Scanned):
    async def open(self) -> None:
        self.chip = SpyChip(self.bus, self.address)
        self.chip.batches = self.batches = []


@contextlib.asynccontextmanager
async def scanned(
    *kinds: type[Scanned],
) -> AsyncIterator[tuple[SimulatedI2CBus, SpyBus, list[Any]]]:
    """Devices of *kinds* at 0x40, 0x41 ... on one shared bus, started; shut down after."""
    sim = SimulatedI2CBus()
    bus = SpyBus(sim, timeout=0.5)
    devices = []
    for index, kind in enumerate(kinds):
        sim.attach(SimulatedI2CDevice(0x40 + index, registers={0: index, 1: 10 + index}))
        devices.append(kind(f"scan{index}:", bus, 0x40 + index))
    for device in devices:
        await device.startup()
    try:
        yield sim, bus, devices
    finally:
        for device in devices:
            await device.shutdown()
        bus.close()


def test_the_shared_schedule_reads_every_device_on_a_bus_in_one_job() -> None:
    async def scenario() -> None:
        async with scanned(Scanned, Scanned, Scanned) as (sim, bus, devices):
            await until(lambda: [d.b.value for d in devices] == [10, 11, 12], "first reads")
            scan = _SharedScan._scans[asyncio.get_running_loop()][0.02]
            # Once all have started (and read once by themselves): one job a tick for all.
            mark = len(bus.jobs) + 1  # the job in flight may be of before
            await until(lambda: len(bus.jobs) >= mark + 5, "a few ticks")
            together = [0x40] * 3 + [0x41] * 3 + [0x42] * 3
            assert all(job == together for job in bus.jobs[mark:]), bus.jobs[mark:]
            # One device unplugged: COMM on it alone, the others still read.
            sim.devices[0x41].unplug()
            await until(lambda: devices[1].connected.value == 0, "the unplugged one offline")
            sim.devices[0x42].poke(0x01, [99])
            await until(lambda: devices[2].b.value == 99, "the others read on")
            assert alarm(devices[2], "b") == GOOD and alarm(devices[0], "a") == GOOD
            assert alarm(devices[1], "b") == (AlarmStatus.COMM, AlarmSeverity.INVALID)
            sim.devices[0x41].replug(reset=False)
            await until(lambda: alarm(devices[1], "b") == GOOD, "the replugged one back")
            # A device shut down leaves the scan; the others go on.
            await devices[0].shutdown()
            sim.devices[0x42].poke(0x01, [7])
            await until(lambda: devices[2].b.value == 7, "the scan after it")
            mark = len(bus.jobs) + 1  # the job in flight may be of before
            await until(lambda: len(bus.jobs) >= mark + 3, "a few more ticks")
            assert all(job == [0x41] * 3 + [0x42] * 3 for job in bus.jobs[mark:])
        assert not _SharedScan._scans  # the last device gone, the scan ended
        await until(scan.task.done, "the scan's task to end")

    run(scenario)


def test_a_hung_shared_job_times_out_every_device_and_the_scan_goes_on() -> None:
    async def scenario() -> None:
        async with scanned(Scanned, Scanned) as (sim, _, devices):
            for device in devices:
                device.comm_failures = 100  # TIMEOUT on each reading, not COMM
            await until(lambda: devices[1].c.value == 0 and devices[1].b.value == 11, "reads")
            sim.devices[0x40].faults.hang_next(1, seconds=0.4)  # past the 0.2 s timeout
            for device in devices:
                await until(lambda d=device: alarm(d, "c")[0] == AlarmStatus.TIMEOUT, "TIMEOUT")
            sim.devices[0x41].poke(0x02, [5])
            await until(lambda: devices[1].c.value == 5, "the scan after the hang")
            await until(lambda: alarm(devices[0], "a") == GOOD, "recovery")

    run(scenario)


def test_a_device_whose_port_reads_its_own_way_is_read_through_it_in_the_pass() -> None:
    async def scenario() -> None:
        async with scanned(Scanned, OwnPort) as (_, bus, devices):
            await until(lambda: len(devices[1].batches) >= 5, "its own batches")
            assert devices[1].b.value == 11 and devices[0].b.value == 10
            assert all(job in ([0x40] * 3, [0x41] * 3) for job in bus.jobs)  # a job each
            assert all(batch == [(0, 1), (1, 1), (2, 1)] for batch in devices[1].batches)

    run(scenario)

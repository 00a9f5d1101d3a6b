"""The real clock's async calls share one loop timer per loop for their timeouts.

Each call's deadline goes into a heap and a single timer is armed for the
earliest; these check that every call still times out at its own
deadline, whatever the calls around it, and that calls which end in time
leave nothing behind.
"""

from __future__ import annotations

import asyncio

import pytest
from waiting import until

from caioc.hw import BusTimeout, I2CBus
from caioc.hw.sim import SimulatedI2CBus, SimulatedI2CDevice

#: Bound on waits that must end long before it (a failure, not a speed figure).
BOUND = 10.0


def real_bus(timeout: float) -> tuple[SimulatedI2CDevice, I2CBus]:
    sim = SimulatedI2CBus(1)
    chip = sim.attach(SimulatedI2CDevice(0x48, registers={0: 7}))
    return chip, I2CBus(sim, timeout=timeout)


def test_a_shorter_timeout_behind_a_longer_one_fires_at_its_own_deadline() -> None:
    chip, bus = real_bus(timeout=60.0)

    async def main() -> None:
        chip.faults.hang_next()  # until released: the first call holds the bus
        hung = asyncio.create_task(bus.read_byte_data_async(0x48, 0))
        await asyncio.sleep(0)  # submitted (and its 60 s timer armed) first
        short = bus.call_async(lambda smbus: smbus.read_byte_data(0x48, 0), timeout=0.05)
        # The 60 s timer must not be what wakes the short call.
        with pytest.raises(BusTimeout, match=r"did not start within 0\.05 s"):
            await asyncio.wait_for(short, BOUND)
        assert not hung.done()
        await until(lambda: not chip.faults.pending, "the hung access")
        chip.faults.release_hangs()
        with pytest.raises(BusTimeout):  # the hung access failed, as the adapter would
            await asyncio.wait_for(hung, BOUND)
        assert await bus.read_byte_data_async(0x48, 0) == 7

    with bus:
        asyncio.run(main())


def test_each_of_many_hung_calls_times_out_once() -> None:
    chip, bus = real_bus(timeout=0.05)

    async def main() -> None:
        chip.faults.hang_next()
        calls = [asyncio.create_task(bus.read_byte_data_async(0x48, 0)) for _ in range(20)]
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), BOUND)
        assert all(isinstance(outcome, BusTimeout) for outcome in outcomes)
        await until(lambda: not chip.faults.pending, "the hung access")
        chip.faults.release_hangs()
        assert await bus.read_byte_data_async(0x48, 0) == 7

    with bus:
        asyncio.run(main())
    assert bus.stats.timeouts == 20


def test_calls_that_end_in_time_leave_no_timer_behind() -> None:
    _, bus = real_bus(timeout=30.0)

    async def main() -> None:
        for _ in range(3):
            results = await asyncio.gather(*[bus.read_byte_data_async(0x48, 0) for _ in range(50)])
            assert results == [7] * 50
        mailbox = bus.worker._mailbox
        assert mailbox is not None
        # At most the calls of the last round wait for their (30 s) deadline;
        # earlier rounds were dropped as new calls came.
        assert len(mailbox._deadlines) <= 50
        loop = asyncio.get_running_loop()
        timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert len(timers) <= 1  # one timer for all of them

    with bus:
        asyncio.run(main())

"""The real clock's async calls travel in batches and share one loop timer for their timeouts.

The calls of one loop pass reach the worker together, and each batch's
deadline goes into a heap with a single timer armed for the earliest;
these check that every call still times out at its own deadline, whatever
the calls around it (in its batch or not), and that calls which end in
time leave nothing behind.
"""

from __future__ import annotations

import asyncio
from typing import Any

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
        # At most the last round waits for its (30 s) deadline;
        # earlier rounds were dropped as new calls came.
        assert len(mailbox._deadlines) <= 1  # a batch: one entry for all its calls
        loop = asyncio.get_running_loop()
        timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert len(timers) <= 1  # one timer for all of them

    with bus:
        asyncio.run(main())


class CountingQueue:
    """A worker's job queue that counts what is put on it (batches of calls)."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self.batches: list[int] = []

    def put(self, batch: Any) -> None:
        if batch is not None:
            self.batches.append(len(batch))
        self._queue.put(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


def test_the_calls_of_one_loop_pass_reach_the_worker_as_one_batch() -> None:
    _, bus = real_bus(timeout=5.0)
    queue = CountingQueue(bus.worker._jobs)
    bus.worker._jobs = queue  # type: ignore[assignment]

    async def main() -> None:
        for _ in range(3):
            results = await asyncio.gather(*[bus.read_byte_data_async(0x48, 0) for _ in range(20)])
            assert results == [7] * 20

    with bus:
        asyncio.run(main())
    assert queue.batches == [20, 20, 20]
    assert bus.stats.transactions == 60


def test_a_hung_call_in_a_batch_delays_none_before_it_and_times_out_those_after() -> None:
    chip, bus = real_bus(timeout=1.0)
    assert chip.bus is not None
    other = chip.bus.attach(SimulatedI2CDevice(0x49, registers={0: 9}))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ended: dict[str, float] = {}

        async def read(address: int, name: str) -> int:
            try:
                return await bus.read_byte_data_async(address, 0)
            finally:
                ended[name] = loop.time()

        start = loop.time()
        other.faults.hang_next()  # until released: the second call of the batch hangs
        calls = [read(0x48, "before"), read(0x49, "hung"), read(0x48, "after")]
        before, hung, after = await asyncio.wait_for(
            asyncio.gather(*calls, return_exceptions=True), BOUND
        )
        assert before == 7
        assert ended["before"] - start < 0.5  # not held back until the batch ends (1 s)
        assert isinstance(hung, BusTimeout) and "did not finish" in str(hung)
        assert isinstance(after, BusTimeout) and "did not start" in str(after)
        other.faults.release_hangs()
        assert await bus.read_byte_data_async(0x48, 0) == 7

    with bus:
        asyncio.run(main())
    assert bus.stats.timeouts == 2

"""Devices started apart poll together: readings of one period share the IOC's schedule.

With ``Device.shared_schedule``, after the first read at start-up a
reading is read at the multiples of its period, so two devices started
30 ms or more apart read at the same times (their reads reach a shared bus in one
batch); without it (the default), each keeps its own schedule from its
start.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from waiting import run, until

from caioc.hw import Device, reading

PERIOD = 0.05
APART = 0.03  # the second device starts this long after the first


class Clocked(Device):
    """One reading that notes the loop time of every read."""

    value = reading(0.0, period=PERIOD, timeout=0.5)

    def __init__(self, prefix: str, shared: bool) -> None:
        self.shared_schedule = shared
        self.reads: list[float] = []
        super().__init__(prefix)

    @value.reader
    async def value(self) -> float:  # type: ignore[no-redef]
        self.reads.append(asyncio.get_running_loop().time())
        return float(len(self.reads))


async def two_devices(shared: bool) -> tuple[list[float], list[float]]:
    first, second = Clocked("a:", shared), Clocked("b:", shared)
    await first.startup()
    await asyncio.sleep(APART)  # the gap under test, not a wait for a condition
    # ... and on to the middle between two ticks of the shared schedule, where
    # the second device's own schedule is as far from the shared one as can be
    # (a loop that wakes a little late still leaves them well apart).
    phase = asyncio.get_running_loop().time() % PERIOD
    await asyncio.sleep((PERIOD / 2 - phase) % PERIOD)
    await second.startup()
    try:
        await until(lambda: len(second.reads) >= 5, "five reads of the second device")
    finally:
        await second.shutdown()
        await first.shutdown()
    return first.reads, second.reads


def offsets(reads: list[float], start: float = 0.0) -> list[float]:
    """Each scheduled read's distance from the nearest of ``start`` + n periods."""
    return [abs(t - start - PERIOD * round((t - start) / PERIOD)) for t in reads[1:]]


@pytest.mark.parametrize("shared", [True, False])
def test_devices_started_apart_poll_on_one_schedule_or_their_own(shared: bool) -> None:
    assert Device.shared_schedule is False  # each device on its own unless it asks
    got: dict[str, list[float]] = {}

    async def scenario() -> None:
        got["first"], got["second"] = await two_devices(shared)

    run(scenario)
    first, second = got["first"], got["second"]
    # the first read comes at once, at start-up
    assert APART <= second[0] - first[0] < APART + PERIOD + 0.02
    # each later read of the second device, against the nearest of the first's
    gaps = [min(abs(t - u) for u in first[1:]) for t in second[1:4]]
    if shared:
        # the same times, to within the loop's wake-up jitter
        assert max(gaps) < 0.008, gaps
        assert max(offsets(first) + offsets(second)) < 0.008
    else:
        # Periods from each device's own start (its first read), so the gap
        # between them stays what it was at start-up (30 ms, or more if the
        # loop woke late): measured from the reads, not assumed.
        assert max(offsets(first, first[0]) + offsets(second, second[0])) < 0.008
        apart = (second[0] - first[0]) % PERIOD
        assert all(math.isclose(gap, min(apart, PERIOD - apart), abs_tol=0.008) for gap in gaps)
        # not on the shared schedule: started mid-way between its ticks
        assert min(offsets(second)) > 0.01, offsets(second)

"""Devices started apart poll together: readings of one period share the IOC's schedule.

With ``Device.shared_schedule``, after the first read at start-up a
reading is read at the multiples of its period, so two devices started
30 ms apart read at the same times (their reads reach a shared bus in one
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
    await second.startup()
    try:
        await until(lambda: len(second.reads) >= 5, "five reads of the second device")
    finally:
        await second.shutdown()
        await first.shutdown()
    return first.reads, second.reads


def offsets(reads: list[float]) -> list[float]:
    """Each scheduled read's distance from the nearest multiple of the period."""
    return [abs(t - PERIOD * round(t / PERIOD)) for t in reads[1:]]


@pytest.mark.parametrize("shared", [True, False])
def test_devices_started_apart_poll_on_one_schedule_or_their_own(shared: bool) -> None:
    assert Device.shared_schedule is False  # each device on its own unless it asks
    got: dict[str, list[float]] = {}

    async def scenario() -> None:
        got["first"], got["second"] = await two_devices(shared)

    run(scenario)
    first, second = got["first"], got["second"]
    # the first read comes at once, at start-up
    assert second[0] - first[0] == pytest.approx(APART, abs=0.02)
    # each later read of the second device, against the nearest of the first's
    gaps = [min(abs(t - u) for u in first[1:]) for t in second[1:4]]
    if shared:
        # the same times, to within the loop's wake-up jitter
        assert max(gaps) < 0.008, gaps
        assert max(offsets(first) + offsets(second)) < 0.008
    else:
        # a period after each device's own start: the 30 ms stay between them
        assert min(gaps) > 0.015, gaps
        assert not math.isclose(second[1] - first[1], 0.0, abs_tol=0.01)

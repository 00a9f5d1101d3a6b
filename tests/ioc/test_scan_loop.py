"""The scan loop under asyncio, trio and curio, started and stopped by hand.

``PVGroup.startup`` and ``shutdown`` run under whichever library awaits
them, without the runner. A scan hook that takes longer than its period
must not starve the other tasks: the loop yields between runs and drops
the runs it missed, rather than run them back to back.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from peers import async_libraries

from caioc.ioc import PVGroup, pvproperty, sleep
from caioc.ioc._async_lib import load_async_lib
from caioc.server import ChannelData

LIBRARIES = async_libraries()
#: Runs after which the overrunning hook stops its own scan (bounds the test).
LIMIT = 1000


class Overrun(PVGroup):
    """A scan hook that never awaits, at a period shorter than it takes."""

    busy = pvproperty(0)

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.runs = 0

    @busy.scan(period=1e-6)  # type: ignore[no-redef]
    async def busy(self, instance: ChannelData) -> None:
        self.runs += 1
        if self.runs == LIMIT:
            self._scans["busy"].select(0)  # Passive: the loop waits from now on


@pytest.mark.parametrize("library", LIBRARIES)
def test_an_overrunning_scan_lets_other_tasks_run(library: str) -> None:
    group = Overrun("O:")
    seen: list[int] = []

    async def main() -> None:
        await group.startup()
        for _ in range(3):
            await sleep(0)  # the scan loop must let this task back in
            seen.append(group.runs)
        await group.shutdown()

    load_async_lib(library).run(main)
    assert seen[-1] < LIMIT, seen  # the loop yielded long before it stopped itself
    assert not group._tasks


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """waiting.until for any of the three libraries (caioc.ioc.sleep between looks)."""
    for _ in range(int(timeout / 0.005)):
        if condition():
            return
        await sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


class Ticker(PVGroup):
    ticks = pvproperty(0)

    @ticks.scan(period=0.001)  # type: ignore[no-redef]
    async def ticks(self, instance: ChannelData) -> None:
        await instance.set(instance.value + 1)


@pytest.mark.parametrize("library", LIBRARIES)
def test_startup_and_shutdown_by_hand(library: str) -> None:
    group = Ticker("T:")
    counts: list[int] = []

    async def main() -> None:
        await group.startup()
        await until(lambda: group.ticks.value >= 5, "five scans")
        await group.shutdown()
        counts.append(group.ticks.value)
        await sleep(0.01)  # stopped: no scan runs any more
        counts.append(group.ticks.value)

    load_async_lib(library).run(main)
    assert counts[0] >= 5 and counts[0] == counts[1]

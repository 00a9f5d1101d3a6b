"""The virtual clock: time moves only when told, and waits follow it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

import pytest

from caioc.hw import REAL_CLOCK, Clock, I2CBus, RealClock, VirtualClock, VirtualClockStalled

from .conftest import BOUND

Starter = Callable[..., concurrent.futures.Future[Any]]


def test_both_clocks_satisfy_the_protocol() -> None:
    assert isinstance(REAL_CLOCK, Clock)
    assert isinstance(VirtualClock(), Clock)


def test_time_stands_still_until_advanced(clock: VirtualClock) -> None:
    assert clock.monotonic() == 0.0
    assert clock.monotonic() == 0.0
    clock.advance(1.5)
    assert clock.monotonic() == 1.5
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_timers_fire_in_order_at_their_own_deadline(clock: VirtualClock) -> None:
    fired: list[tuple[str, float]] = []
    clock.call_later(0.3, lambda: fired.append(("c", clock.monotonic())))
    clock.call_later(0.1, lambda: fired.append(("a", clock.monotonic())))
    cancelled = clock.call_later(0.2, lambda: fired.append(("b", clock.monotonic())))
    cancelled.cancel()
    clock.advance(0.25)
    assert fired == [("a", 0.1)]
    clock.advance(1.0)
    assert fired == [("a", 0.1), ("c", 0.3)]
    assert clock.monotonic() == 1.25
    clock.call_at(0.0, lambda: fired.append(("past", clock.monotonic())))
    assert fired[-1] == ("past", 1.25)


def test_sleep_blocks_until_the_clock_passes_the_deadline(
    clock: VirtualClock, background: Starter
) -> None:
    done = background(clock.sleep, 1.0)
    clock.wait_for_waiters(1)
    clock.advance(0.999)
    assert not done.done()
    clock.advance(0.001)
    done.result(timeout=BOUND)
    clock.sleep(0)  # zero and negative sleeps return at once


def test_wait_returns_when_the_future_completes_or_the_timeout_passes(
    clock: VirtualClock, background: Starter
) -> None:
    future: concurrent.futures.Future[int] = concurrent.futures.Future()
    waiting = background(clock.wait, future, 10.0)
    clock.wait_for_waiters(1)
    future.set_result(3)
    assert waiting.result(timeout=BOUND) is True
    assert clock.monotonic() == 0.0

    never: concurrent.futures.Future[int] = concurrent.futures.Future()
    waiting = background(clock.wait, never, 2.0)
    clock.wait_for_waiters(1)
    clock.advance(2.0)
    assert waiting.result(timeout=BOUND) is False


def test_a_forgotten_advance_fails_instead_of_hanging() -> None:
    clock = VirtualClock(stall_timeout=0.05)
    with pytest.raises(VirtualClockStalled):
        clock.sleep(1.0)
    with pytest.raises(TimeoutError):
        clock.wait_for_waiters(1, timeout=0.05)


def test_wait_async_follows_virtual_time(clock: VirtualClock) -> None:
    async def main() -> None:
        never: concurrent.futures.Future[None] = concurrent.futures.Future()
        task = asyncio.create_task(clock.wait_async(never, 1.0))
        await clock.wait_for_waiters_async(1)
        assert not task.done()
        clock.advance(1.0)
        assert await asyncio.wait_for(task, BOUND) is False

        soon: concurrent.futures.Future[None] = concurrent.futures.Future()
        task = asyncio.create_task(clock.wait_async(soon, 1.0))
        await clock.wait_for_waiters_async(1)
        threading.Thread(target=soon.set_result, args=(None,)).start()
        assert await asyncio.wait_for(task, BOUND) is True

    asyncio.run(main())


def test_real_clock_waits_in_real_time() -> None:
    clock = RealClock()
    future: concurrent.futures.Future[None] = concurrent.futures.Future()
    assert clock.wait(future, 0.01) is False
    future.set_result(None)
    assert clock.wait(future, 0.01) is True

    async def main() -> bool:
        pending: concurrent.futures.Future[None] = concurrent.futures.Future()
        threading.Thread(target=pending.set_result, args=(None,)).start()
        return await clock.wait_async(pending, BOUND)

    assert asyncio.run(main()) is True
    before = clock.monotonic()
    clock.sleep(0.001)
    assert clock.monotonic() > before


def test_idle_while_the_workers_have_nothing_to_do_or_wait_for_the_clock(
    clock: VirtualClock, bus: I2CBus
) -> None:
    assert clock.idle
    release = threading.Event()
    busy = bus.worker.submit(lambda: release.wait(BOUND), "busy in real time")
    assert not clock.idle  # queued: moving time on now could overtake it
    release.set()
    busy.result(timeout=BOUND)
    clock.wait_for_idle()
    asleep = bus.worker.submit(lambda: clock.sleep(1.0), "asleep on the clock")
    clock.wait_for_waiters(1)
    assert clock.idle  # only time can move it on
    clock.advance(1.0)
    asleep.result(timeout=BOUND)
    clock.wait_for_idle()


def test_a_worker_woken_by_the_clock_is_busy_at_once(clock: VirtualClock, bus: I2CBus) -> None:
    gate = threading.Event()

    def nap_then_work() -> None:
        clock.sleep(1.0)
        gate.wait(BOUND)  # still working, in real time, after the nap

    done = bus.worker.submit(nap_then_work, "nap")
    clock.wait_for_waiters(1)
    assert clock.idle
    clock.advance(1.0)
    assert not clock.idle  # woken, even before its thread runs again
    gate.set()
    done.result(timeout=BOUND)
    clock.wait_for_idle()

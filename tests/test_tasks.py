"""stop_tasks ends tasks that swallow a cancellation; wait_event is bounded."""

from __future__ import annotations

import asyncio

from waiting import run

from caioc._tasks import stop_tasks, wait_event


def test_a_task_that_swallows_a_cancel_is_stopped_anyway() -> None:
    swallowed = []

    async def stubborn() -> None:
        # What a loop on Python 3.11's wait_for can do: lose one cancel.
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)

    async def scenario() -> None:
        tasks = [asyncio.get_running_loop().create_task(stubborn()) for _ in range(3)]
        await asyncio.sleep(0)
        await asyncio.wait_for(stop_tasks(tasks), 5.0)
        assert all(task.done() for task in tasks)
        assert swallowed  # the first cancel really was lost

    run(scenario)


def test_finished_and_failed_tasks_are_fine() -> None:
    async def fail() -> None:
        raise RuntimeError("already broken")

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        done, broken = loop.create_task(asyncio.sleep(0)), loop.create_task(fail())
        await asyncio.wait([done, broken])
        await stop_tasks([done, broken])  # nothing raised here
        assert isinstance(broken.exception(), RuntimeError)
        await stop_tasks([])

    run(scenario)


def test_wait_event_says_whether_it_was_set() -> None:
    async def scenario() -> None:
        event = asyncio.Event()
        assert not await wait_event(event, 0.01)
        asyncio.get_running_loop().call_later(0.01, event.set)
        assert await wait_event(event, 5.0)

    run(scenario)

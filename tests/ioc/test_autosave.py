"""Autosave: values survive a restart, and SIGKILL never leaves a torn file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from peers import server_config

from caioc.ioc import Autosave, PVGroup, pvproperty


class Settings(PVGroup):
    """PVs an operator tunes and expects back after a restart."""

    gain = pvproperty(1.0, autosave=True)
    mode = pvproperty(0, enum_strings=["Off", "On"], autosave=True)
    offsets = pvproperty([0.0, 0.0, 0.0], autosave=True)
    reading = pvproperty(0.0)  # not saved


def test_save_then_restore(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    first = Settings("s:")
    saver = Autosave(first, path)
    assert set(saver.channels) == {"s:gain", "s:mode", "s:offsets"}
    first.gain.set_nowait(2.5)
    first.mode.set_nowait(1)
    first.offsets.set_nowait([1.0, 2.0, 3.0])
    first.reading.set_nowait(42.0)
    assert saver.save() and not saver.save()  # unchanged: nothing written
    second = Settings("s:")
    assert sorted(Autosave(second, path).restore()) == ["s:gain", "s:mode", "s:offsets"]
    assert second.gain.value == 2.5 and second.mode.value == 1
    assert list(second.offsets.value) == [1.0, 2.0, 3.0]
    assert second.reading.value == 0.0


def test_unusable_files_start_from_defaults(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text("{ not json")
    group = Settings("s:")
    assert Autosave(group, path).restore() == []
    path.write_text(json.dumps({"format": "caioc-autosave/1", "values": {"s:mode": 7}}))
    assert Autosave(group, path).restore() == []  # an index with no state: refused
    assert group.mode.value == 0


WRITER = """
import sys
from caioc.ioc import Autosave, PVGroup, pvproperty

class Counter(PVGroup):
    count = pvproperty(0, autosave=True)
    trace = pvproperty([0.0] * 2000, autosave=True)  # a large file, slow to write

group = Counter("c:")
saver = Autosave(group, sys.argv[1])
saver.restore()
n = group.count.value
saver.save()  # a file exists before any kill, however early it comes
print("READY", n, flush=True)
while True:
    n += 1
    group.count.set_nowait(n)
    group.trace.set_nowait([float(n)] * 2000)
    saver.save()
"""


@pytest.mark.parametrize("round_", range(5))
def test_sigkill_at_any_moment_leaves_a_complete_file(tmp_path: Path, round_: int) -> None:
    path = tmp_path / "counter.json"
    last = -1
    for attempt in range(4):
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith("READY"), ready
        restored = int(ready.split()[1])
        # restarts resume from what was saved: never behind the last kill
        assert restored >= last
        time.sleep(0.01 + 0.013 * (round_ + attempt))  # kill at assorted moments
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
        document = json.loads(path.read_text())  # complete and parseable
        values = document["values"]
        assert values["c:trace"] == [float(values["c:count"])] * 2000  # never torn
        last = values["c:count"]
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert len(leftovers) <= 4  # at most one temporary per kill, never the real file


def test_the_runner_restores_and_saves(tmp_path: Path) -> None:
    import asyncio

    from caioc.ioc import serve

    path = tmp_path / "ioc.json"

    class Started(Settings):
        async def startup(self) -> None:
            await super().startup()
            self.serving.set()

    async def life(value: float | None) -> float:
        group = Started("r:")
        group.serving = asyncio.Event()
        task = asyncio.get_running_loop().create_task(
            serve(group, config=server_config(), autosave=str(path))
        )
        await asyncio.wait_for(group.serving.wait(), 10)  # restored, then serving
        seen = group.gain.value
        if value is not None:
            await group.gain.set(value)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return float(seen)

    asyncio.run(life(3.5))  # first run: change the value; stopping saves it
    assert json.loads(path.read_text())["values"]["r:gain"] == 3.5
    assert asyncio.run(life(None)) == 3.5  # second run: restored before serving

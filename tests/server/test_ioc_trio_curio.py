"""A PVGroup IOC served under trio and curio (and asyncio, for comparison), seen by libca.

The IOC runs ``caioc.ioc.serve`` on a thread of its own under one library;
the C client (pyepics over libca) runs in a child process on the loopback
environment. Each library must run the group's scan loop at its period
(libca's monitor shows it), its startup and shutdown hooks, a putter that
awaits the library's own sleep and one that awaits ``caioc.ioc.sleep``
(each completing a put-callback), the record fields (.DESC, .SCAN, .HIHI
raising .SEVR) and autosave; stopping the IOC must leave no task behind.
The scripts that pick the library with ``--async-lib`` are run too, and
stop cleanly on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from peers import (
    async_libraries,
    ca_environment,
    free_port,
    process_until_ready,
    run_pyepics,
)

from caioc.ioc import PVGroup, pvproperty, serve, sleep
from caioc.server import ChannelData, ServerConfig

#: Seconds the IOC's thread may take to start or to stop.
THREAD_TIMEOUT = 10.0
#: The scan hook's period, and the period .SCAN changes it to (".2 second").
SCAN_PERIOD = 0.05
NEW_PERIOD, NEW_PERIOD_CHOICE = 0.2, 8
#: Seconds the putters sleep before they return.
PUT_SLEEP = 0.1

#: The libraries to serve on; trio and curio are optional.
LIBRARIES = async_libraries()


class Pump(PVGroup):
    """A pump: a scanned counter, slow setpoints, an alarmed pressure."""

    ticks = pvproperty(0, doc="Scans so far")
    speed = pvproperty(0.0, doc="Speed setpoint")
    level = pvproperty(0.0, autosave=True, doc="Level setpoint")
    pressure = pvproperty(
        0.0, upper_alarm_limit=8.0, upper_warning_limit=5.0, doc="Pressure in the line"
    )

    def __init__(self, prefix: str, library_sleep: Any) -> None:
        super().__init__(prefix)
        #: The serving library's own sleep (trio.sleep ...), for the speed putter.
        self.library_sleep = library_sleep
        self.events: list[str] = []
        #: Set by the startup hook: the IOC is serving.
        self.ready = threading.Event()

    @ticks.scan(period=SCAN_PERIOD)  # type: ignore[no-redef]
    async def ticks(self, instance: ChannelData) -> None:
        await sleep(0)  # the portable sleep, in the scan loop's task
        await instance.set(instance.value + 1)

    @ticks.startup  # type: ignore[no-redef]
    async def ticks(self, instance: ChannelData) -> None:
        self.events.append("startup")
        self.ready.set()

    @ticks.shutdown  # type: ignore[no-redef]
    async def ticks(self, instance: ChannelData) -> None:
        await sleep(0.001)  # a shutdown hook may await, even when cancelled
        self.events.append("shutdown")

    @speed.putter  # type: ignore[no-redef]
    async def speed(self, instance: ChannelData, value: float) -> float:
        await self.library_sleep(PUT_SLEEP)
        self.events.append(f"speed {value}")
        return value

    @level.putter  # type: ignore[no-redef]
    async def level(self, instance: ChannelData, value: float) -> float:
        await sleep(PUT_SLEEP)
        self.events.append(f"level {value}")
        return value


# -- the IOC on a thread, under one library ------------------------------------------


class IOCOnThread:
    """``caioc.ioc.serve(group)`` under one library on a thread; stopped by cancelling it.

    ``left`` is the set of tasks still alive once ``serve`` has returned
    that were not there before it started: it must be empty.
    """

    library = "?"

    def __init__(self, group: Pump, config: ServerConfig, autosave: Path) -> None:
        self.group = group
        self.config = config
        self.autosave = autosave
        self.failure: BaseException | None = None
        self.left: set[Any] | None = None
        self.thread = threading.Thread(target=self._main, name=f"{self.library} IOC")

    async def serve(self) -> None:
        await serve(self.group, config=self.config, autosave=str(self.autosave))

    def run_loop(self) -> None:
        raise NotImplementedError

    def request_stop(self) -> None:
        raise NotImplementedError

    def _main(self) -> None:
        try:
            self.run_loop()
        except BaseException as error:  # reported by the test, not lost on the thread
            self.failure = error
            self.group.ready.set()

    def __enter__(self) -> IOCOnThread:
        self.thread.start()
        assert self.group.ready.wait(THREAD_TIMEOUT), "the IOC did not start"
        if self.failure is not None:
            raise self.failure
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.thread.is_alive():
            self.request_stop()
        self.thread.join(THREAD_TIMEOUT)
        assert not self.thread.is_alive(), "the IOC did not stop"
        if self.failure is not None:
            raise self.failure


class AsyncioIOC(IOCOnThread):
    library = "asyncio"

    def run_loop(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        before = asyncio.all_tasks()
        self.task = asyncio.ensure_future(self.serve())
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.left = asyncio.all_tasks() - before

    def request_stop(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)


class TrioIOC(IOCOnThread):
    library = "trio"

    def run_loop(self) -> None:
        import trio

        class LiveTasks(trio.abc.Instrument):
            def __init__(self) -> None:
                self.live: set[Any] = set()

            def task_spawned(self, task: Any) -> None:
                self.live.add(task)

            def task_exited(self, task: Any) -> None:
                self.live.discard(task)

        self.tasks = LiveTasks()
        trio.run(self._run, instruments=[self.tasks])

    async def _run(self) -> None:
        import trio

        self.token = trio.lowlevel.current_trio_token()
        before = set(self.tasks.live)
        with trio.CancelScope() as self.scope:
            await self.serve()
        self.left = self.tasks.live - before

    def request_stop(self) -> None:
        import trio

        trio.from_thread.run_sync(self.scope.cancel, trio_token=self.token)


class CurioIOC(IOCOnThread):
    library = "curio"

    def run_loop(self) -> None:
        import curio
        from curio.kernel import Activation

        class LiveTasks(Activation):  # type: ignore[misc]
            def __init__(self) -> None:
                self.live: set[Any] = set()

            def created(self, task: Any) -> None:
                self.live.add(task)

            def terminated(self, task: Any) -> None:
                self.live.discard(task)

        self.tasks = LiveTasks()
        self.stopping = curio.UniversalEvent()  # a plain thread may set it
        curio.run(self._run, activations=[self.tasks])

    async def _run(self) -> None:
        import curio

        before = set(self.tasks.live)
        task = await curio.spawn(self.serve)
        await self.stopping.wait()
        await task.cancel()
        self.left = self.tasks.live - before

    def request_stop(self) -> None:
        self.stopping.set()


BACKENDS = {"asyncio": AsyncioIOC, "trio": TrioIOC, "curio": CurioIOC}


def library_sleep(library: str) -> Any:
    """``asyncio.sleep``, ``trio.sleep`` or ``curio.sleep``."""
    return importlib.import_module(library).sleep


LIBCA_CLIENT = f"""
import time
ticks, severities = [], []
ticks_pv = epics.PV(
    "P:ticks", auto_monitor=True,
    callback=lambda value=None, timestamp=None, **kw: ticks.append((value, timestamp)),
)
severity_pv = epics.PV(
    "P:pressure.SEVR", auto_monitor=True,
    callback=lambda value=None, **kw: severities.append(value),
)
assert ticks_pv.wait_for_connection(timeout=5) and severity_pv.wait_for_connection(timeout=5)
restored = epics.caget("P:level", timeout=5)
until(lambda: len(ticks) >= 10, "ten scans")
scanned = ticks[:10]
epics.caput("P:ticks.SCAN", 0, wait=True, timeout=5)
passive = epics.caget("P:ticks.SCAN", as_string=True, timeout=5)
stopped_at = len(ticks)
# a period again wakes the loop waiting in Passive; at most one update was
# still on its way when Passive was set, so the last three are at the new period
epics.caput("P:ticks.SCAN", {NEW_PERIOD_CHOICE}, wait=True, timeout=5)
until(lambda: len(ticks) >= stopped_at + 4, "the scan to resume")
resumed = ticks[-3:]
scan_field = epics.caget("P:ticks.SCAN", as_string=True, timeout=5)
puts = {{}}
for name, value in (("speed", 3.5), ("level", 2.5)):
    started = time.monotonic()
    status = epics.caput("P:" + name, value, wait=True, timeout=5)
    puts[name] = [status, time.monotonic() - started, epics.caget("P:" + name, timeout=5)]
until(lambda: severities, "the first SEVR update")
epics.caput("P:pressure", 9.0, wait=True, timeout=5)
until(lambda: severities[-1] == 2, "MAJOR from HIHI")
epics.caput("P:pressure.HIHI", 20.0, wait=True, timeout=5)
until(lambda: severities[-1] == 1, "MINOR once HIHI is above the value")
result = {{
    "restored": restored, "scanned": scanned, "passive": passive, "resumed": resumed,
    "scan_field": scan_field, "puts": puts,
    "desc": epics.caget("P:pressure.DESC", timeout=5),
    "severity": epics.caget("P:pressure.SEVR", as_string=True, timeout=5),
}}
"""


@pytest.mark.peers
@pytest.mark.parametrize("library", LIBRARIES)
def test_a_pvgroup_ioc_under_each_library_with_libca(library: str, tmp_path: Path) -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    env = ca_environment(free_port(), free_port())
    autosave = tmp_path / "pump.json"
    autosave.write_text(json.dumps({"format": "caioc-autosave/1", "values": {"P:level": 1.25}}))
    group = Pump("P:", library_sleep(library))
    with BACKENDS[library](group, ServerConfig.from_environment(env), autosave) as ioc:
        result = run_pyepics(LIBCA_CLIENT, env)
    assert ioc.left == set(), f"tasks left behind under {library}: {ioc.left}"
    assert group.events == ["startup", "speed 3.5", "level 2.5", "shutdown"]
    # the scan loop ran at its period, every update reached libca's monitor
    values = [value for value, _ in result["scanned"]]
    assert values == list(range(values[0], values[0] + 10))
    stamps = [stamp for _, stamp in result["scanned"]]
    assert 0.7 * SCAN_PERIOD <= (stamps[-1] - stamps[0]) / 9 <= 2.0 * SCAN_PERIOD
    # .SCAN stopped it (Passive) and restarted it at the new period
    assert result["passive"] == "Passive" and result["scan_field"] == ".2 second"
    stamps = [stamp for _, stamp in result["resumed"]]
    assert 0.7 * NEW_PERIOD <= (stamps[-1] - stamps[0]) / 2 <= 2.5 * NEW_PERIOD
    # both putters slept (the library's sleep, caioc.ioc.sleep) before the
    # put-callback came
    for name, value in (("speed", 3.5), ("level", 2.5)):
        status, seconds, read_back = result["puts"][name]
        assert status == 1 and seconds >= PUT_SLEEP and read_back == value, name
    assert result["desc"] == "Pressure in the line"
    assert result["severity"] == "MINOR"
    # autosave restored the level before serving and saved the new one on stop
    assert result["restored"] == 1.25
    assert json.loads(autosave.read_text())["values"] == {"P:level": 2.5}


# -- scripts that pick the library: --async-lib ----------------------------------------

#: The simple example run as its script would be, but with Ctrl-C delivered
#: as KeyboardInterrupt even when the test run ignores SIGINT (a background
#: job does, and children inherit that).
SIMPLE_SCRIPT = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv = ["simple", "--list-pvs", "--async-lib", sys.argv[1]]
from caioc.ioc_examples.simple import main
main()
print("STOPPED", flush=True)
"""


@pytest.mark.peers
@pytest.mark.parametrize("library", LIBRARIES)
def test_the_simple_example_on_each_library_stops_on_ctrl_c(library: str) -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    env = ca_environment(free_port(), free_port())
    argv = [sys.executable, "-c", SIMPLE_SCRIPT, library]
    with process_until_ready("", env, ready="    simple:C", argv=argv) as process:
        result = run_pyepics(
            """
            put = epics.caput("simple:A", 42, wait=True, timeout=5)
            result = {
                "put": put,
                "A": epics.caget("simple:A", timeout=5),
                "C": list(epics.caget("simple:C", timeout=5)),
                "desc": epics.caget("simple:A.DESC", timeout=5),
            }
            """,
            env,
        )
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=THREAD_TIMEOUT) == 0
        assert process.stdout is not None
        rest = process.stdout.read()
    assert result == {"put": 1, "A": 42, "C": [1.0, 2.0, 3.0], "desc": "An integer"}
    assert "STOPPED" in rest and "Traceback" not in rest, rest


def test_serve_checks_the_library_it_was_told() -> None:
    group = Pump("P:", asyncio.sleep)

    async def main() -> None:
        with pytest.raises(ValueError, match="running under asyncio, not trio"):
            await serve(group, async_lib="trio")

    asyncio.run(main())


def test_an_unknown_library_is_refused_by_name() -> None:
    from caioc.ioc import ioc_arg_parser, run

    with pytest.raises(ValueError, match="asyncio, trio, curio"):
        run(Pump("P:", asyncio.sleep), async_lib="gevent")
    with pytest.raises(SystemExit):
        ioc_arg_parser("P:", "", argv=["--async-lib", "gevent"])
    _, run_options = ioc_arg_parser("P:", "", argv=["--async-lib", "trio"])
    assert run_options["async_lib"] == "trio"
    assert ioc_arg_parser("P:", "", argv=[])[1]["async_lib"] == "asyncio"


def test_caioc_imports_neither_trio_nor_curio() -> None:
    """Only the back-end modules import their library."""
    import subprocess

    code = (
        "import sys\n"
        "before = set(sys.modules)  # what the interpreter's start-up loaded (site, .pth files)\n"
        "import caioc.server, caioc.client, caioc.ioc, caioc.ioc_examples.simple\n"
        "loaded = set(sys.modules) - before\n"
        "print(sorted({'trio', 'curio', 'argparse', 'json', 'tempfile'} & loaded))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    # argparse too: only a script that parses its options needs it; json and
    # tempfile only an IOC that autosaves
    assert output.stdout.strip() == "[]"

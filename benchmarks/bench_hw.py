"""Hardware layer: 100 PVs polled at 10 Hz from simulated I2C devices, in an IOC process.

The IOC (a child process, loopback environment, free ports) serves ten
simulated register devices on one simulated I2C bus (``SimulatedI2CBus``
under the real ``I2CBus``, so the worker thread, the error translation and
the ``Device`` polling all run as on a board), each device with ten
``reading``s polled every 0.1 s: 100 PVs, 1000 bus reads per second. Each
read is a 2-byte register read (``read_registers_async``: one ``i2c_rdwr``
with a repeated start) whose value changes on every read, so every poll
posts a new value.

The register-readings cases declare the same ten registers as
``register_reading``s: no driver code, one transfer per PV still (1000
a second), but each device's ten reads of a tick go to the bus worker as
one job and come back as one result, so a tick costs one task step per
device instead of two per PV. They run on the device's own schedule and
on the shared one (``Device.shared_schedule``), where the ten devices'
ticks fall together as an EPICS IOC scans the records of one period.

Another case reads each device's ten registers in one 20-byte transfer
(``r0`` is polled and posts ``r1`` ... ``r9`` from the same bytes, as the
BME280 and SHT3x drivers post their companion readings): 100 PVs at 10 Hz
from 100 bus reads a second.

Each case is measured over two windows after a warm-up:

* **IOC CPU**, in the first window: the child's CPU time (all threads,
  ``/proc``) per second of wall time, in % of one core. The reads are not
  timed in this window: timing them is the benchmark's work, not the IOC's;
* **hand-off latency** of each read, in the second window: from the driver's call on the event
  loop until the result is back in the driver, minus the time spent inside
  the bus call on the worker thread and minus the time the call waited
  behind earlier calls on the same bus (queueing is the bus being busy,
  not the hand-off). The median is the figure; the median *with* the
  queueing is printed beside it.

  The calls made in one pass of the event loop reach the worker as one
  batch (a poll tick's reads of a device, or of several), so a call's
  "earlier calls" are those before it in its batch as well as earlier
  batches; the wait until the batch is handed over at the end of the loop
  pass, the worker's wake-up and the way back to the driver all stay in
  the figure. Each call is timed on the worker by a wrapper around its own
  job, made per call in ``I2CBus._transfer`` (where the bus hands out the
  job of a read, built once and reused for every later read of the same
  registers).

The **floor** rows run the same schedule in bare asyncio, without caioc:
tasks on shared per-device timers that hand a job returning two bytes to
one worker thread, in batches, and take the results back with one wake-up
of the loop. No bus, no simulated chip, no PV. That is what asyncio and
the thread hand-offs cost by themselves on the machine at hand (on a VM,
where every wake-up of a thread costs tens of microseconds of CPU, most of
it).

A last row times the hand-off alone: sequential reads, one at a time on an
otherwise idle event loop in the benchmark's own process.

There is no reference implementation to run side by side for hardware, so
the figures are absolute and compared with the goals: IOC CPU < 5 % of one
core, median hand-off < 1 ms. With ``--monitor`` a C client (pyepics, in a
process of its own) also subscribes to all 100 PVs, so the IOC encodes and
sends 1000 monitor updates a second as well.

The CPU is also split by thread: the event loop (the IOC's main thread)
and the bus worker threads (``caioc-...``), each from its
``/proc/self/task/<id>/schedstat``.

Run from the repository root: ``python benchmarks/bench_hw.py`` (20 s
window), ``--quick`` (3 s), ``--seconds S``, ``--buses N``, ``--monitor``,
``--stagger``, ``--shared-schedule``, ``--registers`` or ``--block``
(those cases alone; ``--registers --shared-schedule`` the one case),
``--json PATH``.
``--profile PATH`` runs the event loop under
cProfile during the window and writes the statistics to PATH (``pstats``
format; the profiler's own cost inflates the CPU figures of that run).

``Device`` starts the polls of all its readings together, so the ten
reads of each device and period reach the bus worker in one batch; the
devices, started one after the other, keep schedules of their own. A
second case sets ``Device.shared_schedule``: readings of one period then
come due at the same moments in all devices (as an EPICS IOC scans the
records of one period together), all 100 reads of a period are submitted
in one burst, which costs less CPU, and the bus queue and the event loop
work through 100 results at once, each result waiting for the loop to
finish the ones before it. ``--stagger`` starts the ten devices a tenth
of a period apart (own schedules, bursts of ten).
"""

from __future__ import annotations

import contextvars
import json
import math
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import _harness as h

GOAL_CPU_PERCENT = 5.0
GOAL_HANDOFF_MS = 1.0

DEVICES = 10
READINGS_PER_DEVICE = 10
PERIOD = 0.1
WARM_UP = 1.0

# The IOC, run as ``python bench_hw.py --ioc --buses N``.
IOC_DOC = "the benchmark's IOC process (internal)"

T = TypeVar("T")


# A slot per read: [submitted, started on the worker, ended, end of the
# worker's previous call]; the driver sets it, the bus's _transfer picks it
# up as the call is made, and the worker fills it in.
SLOT: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("slot", default=None)


def timed_bus_class() -> type[Any]:
    """The real I2CBus, with each call's time inside the worker recorded in its SLOT.

    ``_transfer`` hands out the job of every write-then-read transfer (and
    ``_transfers`` that of a register readings' batch); the job of a read
    is prepared once and shared by all later reads of the same registers,
    so the timing wraps it afresh for each call.
    """
    from caioc.hw import I2CBus

    perf_counter = time.perf_counter

    class TimedI2CBus(I2CBus):
        last_end = 0.0  # written on the worker thread only

        def _timed(self, prepared: tuple[str, Any]) -> tuple[str, Any]:
            description, job = prepared
            slot = SLOT.get()
            if slot is None:
                return description, job

            def timed() -> Any:
                slot[3] = self.last_end
                slot[1] = perf_counter()
                try:
                    return job()
                finally:
                    slot[2] = self.last_end = perf_counter()

            return description, timed

        def _transfer(self, address: int, data: Any, length: int) -> tuple[str, Any]:
            return self._timed(super()._transfer(address, data, length))

        def _transfers(self, requests: Any) -> tuple[str, Any]:
            return self._timed(super()._transfers(requests))

    return TimedI2CBus


def counting_chip(address: int) -> Any:
    """A register map whose 16-bit registers count their reads: every value is new.

    A read of several registers at once (a block read) counts each of them.
    """
    from caioc.hw.sim import SimulatedI2CDevice

    class CountingChip(SimulatedI2CDevice):
        def handle_read(self, length: int) -> bytes:
            registers = self.registers
            for register in range(self.pointer, self.pointer + length - 1, 2):
                value = (int.from_bytes(registers[register : register + 2], "big") + 1) & 0xFFFF
                registers[register : register + 2] = value.to_bytes(2, "big")
            return super().handle_read(length)

    return CountingChip(address)


async def timed(call: Awaitable[T]) -> tuple[T, float, float]:
    """Await a bus call (a coroutine not started yet): (result, hand-off, hand-off + queueing)."""
    slot = [time.perf_counter(), 0.0, 0.0, 0.0]
    SLOT.set(slot)
    result = await call
    back = time.perf_counter()
    with_queue = back - slot[0] - (slot[2] - slot[1])
    return result, with_queue - max(0.0, slot[3] - slot[0]), with_queue


async def timed_read(chip: Any, register: int, length: int = 2) -> tuple[bytes, float, float]:
    """One register read: (bytes, hand-off, hand-off plus the wait behind other calls)."""
    return await timed(chip.read_registers_async(register, length))


def isolated_handoff(calls: int) -> dict[str, float]:
    """One call at a time, in this process, no IOC: the hand-off by itself."""
    import asyncio

    from caioc.hw.sim import SimulatedI2CBus

    sim = SimulatedI2CBus(1)
    sim.attach(counting_chip(0x40))
    bus = timed_bus_class()(sim, timeout=1.0)
    chip = bus.device(0x40)
    handoffs: list[float] = []

    async def main() -> None:
        for _ in range(calls):
            handoffs.append((await timed_read(chip, 2))[1])
            await asyncio.sleep(0.001)  # idle between calls, as between polls

    asyncio.run(main())
    bus.close()
    return {
        "median_ms": 1e3 * statistics.median(handoffs),
        "p99_ms": 1e3 * percentile(handoffs, 0.99),
        "calls": calls,
    }


def floor_main(seconds: float, block: bool) -> None:
    """The floor: the same schedule of reads in bare asyncio, without caioc; print its CPU %.

    Ten "devices" of ten tasks (or, with *block*, of one task), each task
    reading at 10 Hz on its device's timer (one loop timer per device and
    tick, as ``Device`` shares them); a read hands a job returning two bytes
    to one worker thread in batches (the calls of one loop pass), and the
    worker wakes the loop once for the results that are ready, as the bus
    worker does. No bus, no simulated chip, no PV, no alarm, no timeout:
    what asyncio and the thread hand-off cost by themselves.
    """
    import asyncio
    import queue
    import threading

    def job() -> bytes:
        return b"\x00\x01"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        jobs: queue.SimpleQueue[list[tuple[asyncio.Future[bytes], Callable[[], bytes]]]]
        jobs = queue.SimpleQueue()
        ready: list[tuple[asyncio.Future[bytes], bytes]] = []
        lock = threading.Lock()
        outbox: list[tuple[asyncio.Future[bytes], Callable[[], bytes]]] = []

        def deliver() -> None:
            with lock:
                done = ready[:]
                ready.clear()
            for future, value in done:
                future.set_result(value)

        def worker() -> None:
            while True:
                for future, function in jobs.get():
                    value = function()
                    with lock:
                        ready.append((future, value))
                        first = len(ready) == 1
                    if first:
                        loop.call_soon_threadsafe(deliver)

        def flush() -> None:
            jobs.put(outbox[:])
            outbox.clear()

        async def call() -> bytes:
            future = loop.create_future()
            if not outbox:
                loop.call_soon(flush)
            outbox.append((future, job))
            return await future

        values: dict[tuple[int, int], int] = {}

        async def poll(wake: Callable[[float], asyncio.Future[None]], key: tuple[int, int]) -> None:
            start, tick = loop.time(), 1
            while True:
                raw = await call()
                values[key] = int.from_bytes(raw[:2], "big")
                await wake(start + tick * PERIOD)
                tick += 1

        def timers() -> Callable[[float], asyncio.Future[None]]:
            waiting: dict[float, list[asyncio.Future[None]]] = {}

            def fire(when: float) -> None:
                for future in waiting.pop(when):
                    future.set_result(None)

            def wake(when: float) -> asyncio.Future[None]:
                future = loop.create_future()
                if when not in waiting:
                    waiting[when] = []
                    loop.call_at(when, fire, when)
                waiting[when].append(future)
                return future

            return wake

        threading.Thread(target=worker, daemon=True).start()
        tasks = []
        for device in range(DEVICES):
            wake = timers()
            for index in range(1 if block else READINGS_PER_DEVICE):
                tasks.append(loop.create_task(poll(wake, (device, index))))
            await asyncio.sleep(0.001)  # started one after the other, as the IOC's devices
        await asyncio.sleep(WARM_UP)
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        print("RESULT " + json.dumps({"cpu_percent": 100.0 * cpu / wall}), flush=True)

    asyncio.run(main())


def floor_run(seconds: float, block: bool) -> float:
    """The floor's CPU in % of one core, from a child process."""
    argv = [sys.executable, __file__, "--floor", "--seconds", str(seconds)]
    if block:
        argv.append("--block")
    with h.processes() as started:
        child = h.Process("floor", argv)
        started.append(child)
        result = json.loads(child.expect("RESULT", seconds + 30.0))
        child.stop(grace=1.0)
    return float(result["cpu_percent"])


def thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by this process's threads: the loop, the bus workers, others."""
    import threading

    totals = {"loop": 0.0, "workers": 0.0, "other": 0.0}
    main = threading.main_thread()
    for thread in threading.enumerate():
        try:
            with open(f"/proc/self/task/{thread.native_id}/schedstat") as stat:
                seconds = int(stat.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            continue
        if thread is main:
            totals["loop"] += seconds
        elif thread.name.startswith("caioc-"):
            totals["workers"] += seconds
        else:
            totals["other"] += seconds
    return totals


def ioc_main(
    buses: int, stagger: bool, shared: bool, kind: str, profile: str | None = None
) -> None:
    """Serve the devices; answer START / STOP on stdin with figures on stdout."""
    import asyncio
    import threading

    from caioc.hw import Device, I2CBus, reading, register_reading
    from caioc.hw.sim import SimulatedI2CBus
    from caioc.ioc import serve

    TimedI2CBus = timed_bus_class()

    measuring = False
    handoff: list[float] = []
    with_queue: list[float] = []
    reads = [0]

    def reader(register: int) -> Callable[[Any], Any]:
        async def read(self: Any) -> int:
            if not measuring:
                return int.from_bytes(await self.chip.read_registers_async(register, 2), "big")
            raw, alone, queued = await timed_read(self.chip, register)
            handoff.append(alone)
            with_queue.append(queued)
            reads[0] += 1
            return int.from_bytes(raw, "big")

        return read

    class RegisterSensor(Device):
        """Ten 16-bit registers, each a reading polled at 10 Hz."""

        shared_schedule = shared

        def __init__(self, prefix: str, bus: I2CBus, address: int) -> None:
            self.bus, self.address = bus, address
            super().__init__(prefix)

        async def open(self) -> None:
            self.chip = self.bus.device(self.address)

        async def probe(self) -> None:
            await self.chip.read_register_async(0)

        async def startup(self) -> None:
            if stagger:  # each device's polls a tenth of a period after the previous one's
                await asyncio.sleep(PERIOD * (self.address - 0x40) / DEVICES)
            await super().startup()

    class RegisterTimedBus(TimedI2CBus):  # type: ignore[misc, valid-type]
        """Register readings' batches timed as timed_read times a driver's read.

        Timed where every batch passes, a device's own or the shared scan's
        job for all the devices on the bus.
        """

        async def transfers_to_async(self, requests: Any, *, timeout: Any = None) -> Any:
            if not measuring:
                return await super().transfers_to_async(requests, timeout=timeout)
            call = super().transfers_to_async(requests, timeout=timeout)
            results, alone, queued = await timed(call)
            handoff.append(alone)
            with_queue.append(queued)
            reads[0] += 1
            return results

    def block_reader() -> Callable[[Any], Any]:
        """r0's read: all ten registers in one transfer; r1 ... r9 posted from it."""
        length = 2 * READINGS_PER_DEVICE

        async def read(self: Any) -> int:
            if not measuring:
                raw = await self.chip.read_registers_async(0, length)
            else:
                raw, alone, queued = await timed_read(self.chip, 0, length)
                handoff.append(alone)
                with_queue.append(queued)
                reads[0] += 1
            for index in range(1, READINGS_PER_DEVICE):
                await self.post(f"r{index}", int.from_bytes(raw[2 * index : 2 * index + 2], "big"))
            return int.from_bytes(raw[:2], "big")

        return read

    attributes: dict[str, Any] = {}
    for index in range(READINGS_PER_DEVICE):
        declared: reading
        if kind == "registers":
            declared = register_reading(2 * index, ">H", period=PERIOD, timeout=1.0)
        elif kind == "per-pv":
            declared = reading(0, period=PERIOD, timeout=1.0)
            declared.reader(reader(2 * index))
        elif index == 0:
            declared = reading(0, period=PERIOD, timeout=1.0)
            declared.reader(block_reader())
        else:
            declared = reading(0, period=None)  # posted by r0's read
        attributes[f"r{index}"] = declared
    Sensor = type("Sensor", (RegisterSensor,), attributes)

    sims = [SimulatedI2CBus(number) for number in range(1, buses + 1)]
    i2c = [RegisterTimedBus(sim, timeout=1.0) for sim in sims]
    devices = []
    for index in range(DEVICES):
        address = 0x40 + index
        sims[index % buses].attach(counting_chip(address))
        devices.append(Sensor(f"hw:s{index}:", i2c[index % buses], address))

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()

    async def main() -> None:
        nonlocal measuring
        cpu_before: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[str] = asyncio.Queue()

        def listen() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(commands.put_nowait, line.strip())

        threading.Thread(target=listen, daemon=True).start()
        server = loop.create_task(serve(*devices, log_level=30))
        while not all(device.connected.value for device in devices):
            await asyncio.sleep(0.01)
        print("READY", flush=True)
        while True:
            command = await commands.get()
            if command.startswith("START"):
                handoff.clear()
                with_queue.clear()
                reads[0] = 0
                errors = sum(int(d.error_count.value) for d in devices)
                transactions = sum(bus.stats.transactions for bus in i2c)
                measuring = command == "START timed"
                cpu_before = thread_cpu()
                if profiler is not None and not measuring:
                    profiler.enable()
                print("STARTED", flush=True)
            elif command == "STOP":
                cpu_after = thread_cpu()
                if profiler is not None and profile and not measuring:
                    profiler.disable()
                    profiler.dump_stats(profile)
                measuring = False
                result = {
                    "reads": sum(bus.stats.transactions for bus in i2c) - transactions,
                    "timed_reads": reads[0],
                    "handoff": handoff,
                    "with_queue": with_queue,
                    "errors": sum(int(d.error_count.value) for d in devices) - errors,
                    "threads": {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after},
                }
                print("RESULT " + json.dumps(result), flush=True)
            elif command == "QUIT":
                server.cancel()
                return

    asyncio.run(main())


MONITOR = """
import sys, threading, epics, epics.ca
names = [f"hw:s{d}:r{r}" for d in range(DEVICES) for r in range(READINGS)]
counts = [0]
lock = threading.Lock()

def update(**kw):
    with lock:
        counts[0] += 1

pvs = [epics.PV(name, callback=update, auto_monitor=True) for name in names]
for pv in pvs:
    pv.wait_for_connection(timeout=10)
print("READY", flush=True)
for line in sys.stdin:
    if line.strip() == "COUNT":
        print("COUNT", counts[0], flush=True)
epics.ca.finalize_libca()
"""


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def window(
    ioc: Any, client: Any, seconds: float, mode: str
) -> tuple[dict[str, Any], float, float, float | None]:
    """One measurement window in *mode* ("plain" or "timed"): (result, wall, CPU s, updates/s)."""
    ioc.send(f"START {mode}")
    ioc.expect("STARTED", 10.0)
    if client is not None:
        client.send("COUNT")
        updates_before = int(client.expect("COUNT", 10.0))
    cpu_before, wall_before = h.process_cpu(ioc.pid), time.monotonic()
    time.sleep(seconds)
    cpu_used = h.process_cpu(ioc.pid) - cpu_before
    wall = time.monotonic() - wall_before
    ioc.send("STOP")
    result = json.loads(ioc.expect("RESULT", 30.0))
    updates = None
    if client is not None:
        client.send("COUNT")
        updates = (int(client.expect("COUNT", 10.0)) - updates_before) / wall
    return result, wall, cpu_used.best, updates


def run(
    seconds: float,
    buses: int,
    monitor: bool,
    stagger: bool,
    shared: bool = False,
    kind: str = "per-pv",
    profile: str | None = None,
) -> dict[str, Any]:
    """One IOC process, two measurement windows; the figures.

    The CPU comes from the first window, where the reads are not timed
    (the timing of every read is the benchmark's work, not the IOC's); the
    hand-off from the second, where they are.
    """
    env = h.loopback_ca_environment(h.free_port(), h.free_port())
    argv = [sys.executable, __file__, "--ioc", "--buses", str(buses)]
    if stagger:
        argv.append("--stagger")
    if shared:
        argv.append("--shared-schedule")
    argv += ["--kind", kind]
    if profile:
        argv += ["--profile", profile]
    with h.processes() as started:
        ioc = h.Process("ioc", argv, env)
        started.append(ioc)
        ioc.expect("READY", 30.0)
        client = None
        if monitor:
            code = f"DEVICES, READINGS = {DEVICES}, {READINGS_PER_DEVICE}\n" + MONITOR
            client = h.Process("pyepics monitor", [sys.executable, "-c", code], env)
            started.append(client)
            client.expect("READY", 30.0)
        time.sleep(WARM_UP)
        result, wall, cpu_used, updates = window(ioc, client, seconds, "plain")
        timed = window(ioc, client, seconds, "timed")[0]
        ioc.send("QUIT")
        ioc.stop(grace=2.0)
    result["handoff"], result["with_queue"] = timed["handoff"], timed["with_queue"]
    result["errors"] += timed["errors"]
    result["updates_per_second"] = updates
    result["wall"] = wall
    result["cpu_percent"] = 100.0 * cpu_used / wall
    threads = result.pop("threads")
    result["loop_cpu_percent"] = 100.0 * threads["loop"] / wall
    result["workers_cpu_percent"] = 100.0 * threads["workers"] / wall
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = h.base_parser(__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, help="measurement window (default 20, quick 3)")
    parser.add_argument("--buses", type=int, default=1, help="spread the devices over N buses")
    parser.add_argument(
        "--stagger",
        action="store_true",
        help="start each device's polls a tenth of a period after the previous device's",
    )
    parser.add_argument("--monitor", action="store_true", help="a pyepics client monitors all PVs")
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="cProfile the IOC's event loop in the first no-client case; write pstats to PATH",
    )
    parser.add_argument(
        "--shared-schedule",
        action="store_true",
        help="only the case of devices on the shared poll schedule (Device.shared_schedule)",
    )
    parser.add_argument(
        "--block",
        action="store_true",
        help="only the case of one block read per device and period (the others posted)",
    )
    parser.add_argument(
        "--registers",
        action="store_true",
        help="only the case of register readings (a worker job per device and period)",
    )
    parser.add_argument("--kind", default="per-pv", help="the IOC's case (internal)")
    parser.add_argument("--ioc", action="store_true", help=IOC_DOC)
    parser.add_argument("--floor", action="store_true", help="the floor's process (internal)")
    args = parser.parse_args(argv)
    if args.floor:
        floor_main(args.seconds or 3.0, args.block)
        return 0
    if args.ioc:
        ioc_main(args.buses, args.stagger, args.shared_schedule, args.kind, args.profile)
        return 0
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    # (label, a client monitors, shared schedule, the devices' readings)
    cases = [
        ("a read per PV", False, False, "per-pv"),
        ("a read per PV, shared schedule", False, True, "per-pv"),
        ("register readings, a job per device", False, False, "registers"),
        ("register readings, shared schedule", False, True, "registers"),
        ("a block read per device", False, False, "block"),
    ]
    if args.shared_schedule:
        cases = [case for case in cases if case[2]]
    if args.block or args.registers:
        chosen = {"block"} if args.block else {"registers"}
        cases = [case for case in cases if case[3] in chosen]
    if args.monitor:
        cases.append(("pyepics monitors all", True, args.shared_schedule, cases[0][3]))
    rows = []
    figures: dict[str, Any] = {}
    for label, monitor, shared, kind in cases:
        print(f"{label}: 2 x {seconds:g} s windows ...", file=sys.stderr)
        profiled = not monitor and args.profile and label == cases[0][0]
        profile = str(Path(args.profile).resolve()) if profiled else None
        result = run(seconds, args.buses, monitor, args.stagger, shared, kind, profile)
        handoff_ms = 1e3 * statistics.median(result["handoff"]) if result["handoff"] else math.nan
        queued_ms = (
            1e3 * statistics.median(result["with_queue"]) if result["with_queue"] else math.nan
        )
        p99_ms = 1e3 * percentile(result["handoff"], 0.99)
        rate = result["reads"] / result["wall"]
        figures[label] = {
            "cpu_percent": result["cpu_percent"],
            "loop_cpu_percent": result["loop_cpu_percent"],
            "workers_cpu_percent": result["workers_cpu_percent"],
            "handoff_median_ms": handoff_ms,
            "handoff_p99_ms": p99_ms,
            "with_queue_median_ms": queued_ms,
            "reads_per_second": rate,
            "errors": result["errors"],
            "updates_per_second": result.get("updates_per_second"),
        }
        updates = result.get("updates_per_second")
        rows.append(
            [
                label,
                f"{rate:,.0f}",
                "-" if updates is None else f"{updates:,.0f}",
                f"{result['cpu_percent']:.1f}",
                "met" if result["cpu_percent"] < GOAL_CPU_PERCENT else "MISSED",
                f"{result['loop_cpu_percent']:.1f}",
                f"{result['workers_cpu_percent']:.1f}",
                f"{handoff_ms:.3f}",
                "met" if handoff_ms < GOAL_HANDOFF_MS else "MISSED",
                f"{p99_ms:.3f}",
                f"{queued_ms:.3f}",
                str(result["errors"]),
            ]
        )
    # A job per device and tick (register readings, block reads), or a job per read.
    for block in sorted({case[3] != "per-pv" for case in cases}):
        label = "floor: bare asyncio, " + ("a job per device" if block else "a read per PV")
        print(f"{label}: {seconds:g} s window ...", file=sys.stderr)
        floor_cpu = floor_run(seconds, block)
        figures[label] = {"cpu_percent": floor_cpu}
        reads_per_second = DEVICES * (1 if block else READINGS_PER_DEVICE) / PERIOD
        untimed = ["-", "", "-", "-", "-"]  # no hand-off figures: nothing is timed there
        rows.append(
            [label, f"{reads_per_second:,.0f}", "-", f"{floor_cpu:.1f}", "", "-", "-", *untimed]
        )
    calls = 300 if args.quick else 3000
    print(f"one call at a time: {calls} calls ...", file=sys.stderr)
    alone = isolated_handoff(calls)
    figures["one call at a time"] = alone
    rows.append(
        [
            "one call at a time, no IOC",
            "-",
            "-",
            "-",
            "",
            "-",
            "-",
            f"{alone['median_ms']:.3f}",
            "met" if alone["median_ms"] < GOAL_HANDOFF_MS else "MISSED",
            f"{alone['p99_ms']:.3f}",
            "-",
            "-",
        ]
    )
    print()
    print(
        f"{DEVICES * READINGS_PER_DEVICE} PVs polled every {PERIOD:g} s from {DEVICES} simulated "
        f"I2C devices on {args.buses} bus(es), one IOC process, {seconds:g} s window"
        + (
            ", devices started a tenth of a period apart."
            if args.stagger
            else ", devices started one after the other."
        )
    )
    print(
        "No reference implementation exists for this layer: absolute figures against the "
        f"goals (IOC CPU < {GOAL_CPU_PERCENT:g} % of one core, median hand-off "
        f"< {GOAL_HANDOFF_MS:g} ms)."
    )
    headers = [
        "case",
        "reads/s",
        "updates/s",
        "CPU % core",
        "goal",
        "loop %",
        "workers %",
        "hand-off ms",
        "goal",
        "p99 ms",
        "+queue ms",
        "errors",
    ]
    print(h.format_table(headers, rows, right={1, 2, 3, 5, 6, 7, 9, 10, 11}))
    print(
        "loop % / workers % = CPU of the event-loop thread / of the bus worker threads.\n"
        "hand-off = driver call on the loop until its result is back, minus the time inside the "
        "bus call\n  and minus the wait behind earlier calls on the bus (median); +queue = the "
        "same median with that wait.\n"
        "floor = the same schedule of reads and thread hand-offs in bare asyncio, without caioc "
        "(no bus,\n  no simulated chip, no PV): what asyncio and the hand-off cost by themselves.\n"
        "one call at a time = sequential reads 1 ms apart on an idle loop in this process: the "
        "hand-off\n  mechanism by itself, without the burst of a poll period."
    )
    if args.json:
        h.write_json(
            args.json,
            "bench_hw",
            [],
            h.settings_from(args),
            extra={"seconds": seconds, "buses": args.buses, "figures": figures},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

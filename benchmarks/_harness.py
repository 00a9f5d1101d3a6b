"""Small shared toolkit for the caioc benchmarks (core, server, client, hardware).

Everything a benchmark script needs besides the work it measures:

* :func:`base_parser` -- the common command line (``--quick``, ``--json PATH``,
  ``--repeats``, ``--min-time``, ``--tune-malloc``) and :func:`settings_from` to turn it into
  :class:`Settings`;
* :func:`measure` -- time several callables with :func:`time.perf_counter`,
  calibrating each so one repeat lasts at least ``min_time`` and
  *interleaving* the repeats of the contenders (A B A B ...), so that slow
  drift of the machine (frequency scaling, a noisy neighbour) hits both
  sides alike; the result keeps every repeat, and the rates use the best
  (the least disturbed run) with the median kept alongside;
* :class:`Row` and :func:`print_table` -- a comparison table with rates and
  the caioc/reference ratio;
* :func:`write_json` -- the same results plus the environment as JSON;
* :func:`free_port` and :func:`process_cpu` -- for benchmarks that run
  servers and clients as separate processes (a free loopback port; the CPU
  time a process has used, from ``/proc``).

The harness imports nothing from caioc or any peer, so every benchmark
chooses what it loads. Importing it puts the repository root on
``sys.path`` when caioc is not installed, so the scripts run from a plain
checkout as ``python benchmarks/<script>.py``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _malloc import tune_malloc

REPO_ROOT = Path(__file__).resolve().parent.parent

if importlib.util.find_spec("caioc") is None:  # a plain checkout, not installed
    sys.path.insert(0, str(REPO_ROOT))

MB = 1e6  #: MB/s in the tables are 10**6 bytes per second.


# --------------------------------------------------------------------------
# Settings and command line


@dataclass(frozen=True)
class Settings:
    """How long and how often to measure."""

    repeats: int = 7
    #: Seconds one repeat of one contender should last at least.
    min_time: float = 0.2
    quick: bool = False
    #: Whether :func:`tune_malloc` is in effect (``--tune-malloc``).
    malloc_tuned: bool = False


FULL = Settings()
QUICK = Settings(repeats=2, min_time=0.01, quick=True)


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run (2 repeats of ~10 ms each) to check the script works",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--repeats", type=int, help="repeats per measurement (default 7, quick 2)")
    parser.add_argument(
        "--min-time", type=float, help="seconds per repeat at least (default 0.2, quick 0.01)"
    )
    parser.add_argument(
        "--tune-malloc",
        action="store_true",
        help="stop glibc from returning freed memory to the kernel (see tune_malloc)",
    )
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The :class:`Settings` the parsed command line asks for."""
    base = QUICK if args.quick else FULL
    tuned = bool(getattr(args, "tune_malloc", False)) and tune_malloc()
    if getattr(args, "tune_malloc", False) and not tuned:
        print("warning: --tune-malloc needs glibc; running untuned", file=sys.stderr)
    return Settings(
        repeats=max(1, args.repeats or base.repeats),
        min_time=args.min_time if args.min_time is not None else base.min_time,
        quick=base.quick,
        malloc_tuned=tuned,
    )


# --------------------------------------------------------------------------
# Timing


@dataclass
class Timing:
    """Repeated timings of one callable doing ``work`` units per call."""

    name: str
    #: Units of work one call does (messages, MB ...).
    work: float
    unit: str
    #: Calls per repeat (chosen by calibration).
    calls: int
    #: Wall time of each repeat, in seconds.
    seconds: list[float] = field(default_factory=list)

    @property
    def per_call_best(self) -> float:
        """Seconds per call in the fastest repeat."""
        return min(self.seconds) / self.calls

    @property
    def per_call_median(self) -> float:
        """Seconds per call in the median repeat."""
        return statistics.median(self.seconds) / self.calls

    @property
    def best(self) -> float:
        """Rate (units per second) of the fastest repeat."""
        return self.work / self.per_call_best

    @property
    def median(self) -> float:
        """Rate (units per second) of the median repeat."""
        return self.work / self.per_call_median

    @property
    def spread(self) -> float:
        """(slowest - fastest) / fastest repeat: how noisy the measurement was."""
        return (max(self.seconds) - min(self.seconds)) / min(self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "work_per_call": self.work,
            "calls_per_repeat": self.calls,
            "repeat_seconds": self.seconds,
            "rate_best": self.best,
            "rate_median": self.median,
            "seconds_per_call_best": self.per_call_best,
            "seconds_per_call_median": self.per_call_median,
        }


def _run(fn: Callable[[], object], calls: int) -> float:
    perf_counter = time.perf_counter
    start = perf_counter()
    for _ in range(calls):
        fn()
    return perf_counter() - start


def calibrate(fn: Callable[[], object], min_time: float) -> int:
    """Calls of ``fn`` that take at least ``min_time`` seconds (at least 1)."""
    fn()  # warm caches, lazy imports, first-call allocations
    calls = 1
    while True:
        elapsed = _run(fn, calls)
        if elapsed >= min_time:
            return calls
        if elapsed <= 0:
            calls *= 10
        else:
            calls = max(calls * 2, math.ceil(calls * min_time * 1.1 / elapsed))


def measure(
    contenders: Mapping[str, Callable[[], object]],
    work: float | Mapping[str, float],
    unit: str,
    settings: Settings,
) -> dict[str, Timing]:
    """Time each callable in ``contenders``; one :class:`Timing` per name.

    ``work`` is the units of work one call does (the same for all, or per
    name). Each contender is calibrated on its own, then the repeats run
    interleaved. A full garbage collection runs before each repeat, outside
    the timed region; the collector stays enabled while timing, as it is in
    a real program.
    """
    timings: dict[str, Timing] = {}
    for name, fn in contenders.items():
        units = work[name] if isinstance(work, Mapping) else work
        timings[name] = Timing(name, units, unit, calibrate(fn, settings.min_time))
    for _ in range(settings.repeats):
        for name, fn in contenders.items():
            gc.collect()
            timings[name].seconds.append(_run(fn, timings[name].calls))
    return timings


# --------------------------------------------------------------------------
# Results


def ratio(ours: float | None, theirs: float | None) -> float:
    """``ours / theirs``, NaN when either is missing or ``theirs`` is zero."""
    if ours is None or theirs is None or theirs == 0 or math.isnan(theirs):
        return math.nan
    return ours / theirs


@dataclass
class Row:
    """One line of a comparison table: caioc beside a reference."""

    group: str
    label: str
    unit: str
    ours: Timing | None
    theirs: Timing | None = None
    note: str = ""
    #: Free-form tags a script uses to evaluate its goals ("scalar", "array" ...).
    tags: frozenset[str] = frozenset()

    @property
    def ratio(self) -> float:
        """caioc / reference, best repeats."""
        return ratio(
            self.ours.best if self.ours else None, self.theirs.best if self.theirs else None
        )

    @property
    def ratio_median(self) -> float:
        """caioc / reference, median repeats."""
        return ratio(
            self.ours.median if self.ours else None, self.theirs.median if self.theirs else None
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "label": self.label,
            "unit": self.unit,
            "note": self.note,
            "tags": sorted(self.tags),
            "caioc": self.ours.to_dict() if self.ours else None,
            "reference": self.theirs.to_dict() if self.theirs else None,
            "ratio_best": _json_float(self.ratio),
            "ratio_median": _json_float(self.ratio_median),
        }


def format_rate(value: float | None) -> str:
    """A rate with thousands separators, fewer decimals the larger it is."""
    if value is None or math.isnan(value):
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def format_ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: set[int]) -> str:
    """A plain-text table; columns whose index is in ``right`` align right.

    A row that is a single string is printed as a section heading.
    """
    body = [list(r) for r in rows]
    cells = [r for r in body if len(r) > 1]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(headers), rule]
    for r in body:
        out.append(line(r) if len(r) > 1 else f"[{r[0]}]")
    return "\n".join(out)


def print_table(
    rows: Sequence[Row], ours: str = "caioc", theirs: str = "reference", median: bool = True
) -> str:
    """Print (and return) the comparison table of ``rows``, grouped by ``Row.group``."""
    headers = ["case", "unit", ours, theirs, f"{ours}/{theirs}"]
    if median:
        headers.append("(median)")
    headers.append("notes")
    table: list[Sequence[str]] = []
    group = None
    for row in rows:
        if row.group != group:
            group = row.group
            table.append([group])
        cells = [
            row.label,
            row.unit,
            format_rate(row.ours.best if row.ours else None),
            format_rate(row.theirs.best if row.theirs else None),
            format_ratio(row.ratio),
        ]
        if median:
            cells.append(format_ratio(row.ratio_median))
        cells.append(row.note)
        table.append(cells)
    text = format_table(headers, table, right={2, 3, 4, 5} if median else {2, 3, 4})
    print(text)
    return text


# --------------------------------------------------------------------------
# Peer processes (server and client benchmarks)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on ``host`` right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port


@dataclass(frozen=True)
class CpuTimes:
    """CPU time a process has used so far (all its threads), in seconds.

    ``stat`` is user + system time from ``/proc/<pid>/stat`` (clock-tick
    resolution, usually 10 ms; it includes threads that have exited).
    ``sched`` is the sum of ``/proc/<pid>/task/*/schedstat`` (nanosecond
    resolution, live threads only; None where the kernel does not offer it).
    Subtract two samples for the CPU used in between.
    """

    stat: float
    sched: float | None = None

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        sched = None
        if self.sched is not None and other.sched is not None:
            sched = self.sched - other.sched
        return CpuTimes(self.stat - other.stat, sched)

    @property
    def best(self) -> float:
        """The finer of the two measures (``sched`` when there is one)."""
        return self.stat if self.sched is None else self.sched


def process_cpu(pid: int) -> CpuTimes:
    """User + system CPU time used so far by process ``pid`` (Linux ``/proc``)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return CpuTimes((utime + stime) / os.sysconf("SC_CLK_TCK"), _sched_seconds(pid))


def _sched_seconds(pid: int) -> float | None:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    total = 0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        except (OSError, ValueError, IndexError):
            return None
    return total / 1e9


# --------------------------------------------------------------------------
# JSON


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def package_version(package: str) -> str | None:
    """The installed version of ``package``, None if it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(packages: Iterable[str] = ("caioc", "numpy")) -> dict[str, Any]:
    """Where the numbers come from: interpreter, machine, package versions."""
    return {
        "python": sys.version,
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "packages": {name: package_version(name) for name in packages},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(
    path: str | os.PathLike[str],
    benchmark: str,
    rows: Sequence[Row],
    settings: Settings,
    packages: Iterable[str] = ("caioc", "numpy"),
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write ``rows`` with the settings and the environment to ``path``."""
    document = {
        "benchmark": benchmark,
        "settings": {
            "repeats": settings.repeats,
            "min_time": settings.min_time,
            "quick": settings.quick,
            "malloc_tuned": settings.malloc_tuned,
        },
        "environment": environment(packages),
        "rows": [row.to_dict() for row in rows],
        **(extra or {}),
    }
    Path(path).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------
# Subprocesses with bounded waits (client and IOC benchmarks)


def loopback_ca_environment(server_port: int, repeater_port: int) -> dict[str, str]:
    """EPICS variables for a loopback-only run (as tests/peers.py prepares them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_")}
    env.update(
        EPICS_CA_AUTO_ADDR_LIST="NO",
        EPICS_CA_ADDR_LIST="127.0.0.1",
        EPICS_CAS_INTF_ADDR_LIST="127.0.0.1",
        EPICS_CAS_AUTO_BEACON_ADDR_LIST="NO",
        EPICS_CAS_BEACON_ADDR_LIST="127.0.0.1",
        EPICS_CA_SERVER_PORT=str(server_port),
        EPICS_CA_REPEATER_PORT=str(repeater_port),
        EPICS_CA_MAX_ARRAY_BYTES="100000000",
        PYTHONUNBUFFERED="1",
    )
    return env


def with_bytecode_cache(env: Mapping[str, str], directory: str | None) -> dict[str, str]:
    """``env`` for a child that caches its bytecode in ``directory`` (None: ``env`` as it is).

    An installed package has its ``.pyc`` files (pip compiles them), but a
    development environment may set PYTHONDONTWRITEBYTECODE, and then every
    process compiles caioc's sources again (~0.2 s of CPU at each start).
    The benchmarks that time a start fill a cache of their own with one
    untimed start (PYTHONPYCACHEPREFIX; every package is read from it,
    the peers' as well).
    """
    env = dict(env)
    if directory is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = directory
    return env


class PeerError(RuntimeError):
    """A peer process exited, or did not say what was expected in time."""


class Process:
    """A child process whose output a thread collects; every wait is bounded.

    ``expect(prefix, timeout)`` returns the rest of the first output line
    starting with ``prefix`` (stdout and stderr merged); ``send`` writes a
    line to its stdin; ``stop`` kills it. Use inside :func:`processes` so
    that every process started is killed on the way out.
    """

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None):
        import queue
        import subprocess
        import threading
        from collections import deque

        self.name = name
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self.tail: deque[str] = deque(maxlen=40)
        threading.Thread(target=self._drain, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _drain(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                self.tail.append(line)
                self.lines.put((time.monotonic(), line))
        except (ValueError, OSError):
            pass
        self.lines.put(None)

    def expect_timed(self, prefix: str, timeout: float) -> tuple[float, str]:
        """(monotonic time the line was read, rest of the line) of the first ``prefix`` line."""
        import queue

        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise PeerError(self._report(f"no {prefix.strip()} in {timeout:g} s")) from None
            if item is None:
                self.lines.put(None)
                raise PeerError(self._report(f"exited before {prefix.strip()}"))
            when, line = item
            if line.startswith(prefix):
                return when, line[len(prefix) :].strip()

    def expect(self, prefix: str, timeout: float) -> str:
        return self.expect_timed(prefix, timeout)[1]

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            raise PeerError(self._report(f"cannot send {line}")) from None

    def _report(self, what: str) -> str:
        return f"{self.name}: {what}; its last output:\n" + "".join(self.tail)

    def stop(self, grace: float = 0.0) -> None:
        """End the process (after ``grace`` seconds for it to exit by itself)."""
        import contextlib
        import subprocess

        if grace and self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class processes:  # used like a function: ``with processes() as started``
    """A list to register :class:`Process` objects in; all are killed on exit."""

    def __enter__(self) -> list[Process]:
        self.started: list[Process] = []
        return self.started

    def __exit__(self, *exc_info: object) -> None:
        for process in reversed(self.started):
            process.stop()


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (10**6 bytes), from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / MB
    raise RuntimeError(f"no VmRSS for {pid}")


def idle_cpu_percent(pid: int, seconds: float) -> float:
    """CPU the process ``pid`` uses over ``seconds`` of wall time, in % of one core."""
    before, start = process_cpu(pid), time.monotonic()
    time.sleep(seconds)
    used, wall = process_cpu(pid) - before, time.monotonic() - start
    return 100.0 * used.best / wall

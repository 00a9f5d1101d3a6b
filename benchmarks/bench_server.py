"""CA servers side by side: softioc (C rsrv), caioc and caproto under one libca workload.

Each server runs in its own process on its own free loopback port, all
three at once; the client is pyepics (the C client library libca) in
processes of its own. Every server gets exactly the same work:

1. connect 1000 channels in one batch (``ca_create_channel`` for all, then
   one ``ca_pend_io`` until all are connected): seconds; then batched gets
   of all 1000 (``ca_array_get`` each, one ``ca_pend_io``): gets/s;
2. get round trip of one DBR_DOUBLE: ``epics.ca.get`` in a loop, and the
   bare libca round trip (``ca_array_get`` + ``ca_pend_io``): µs per get;
3. put with completion: ``epics.ca.put(wait=True)`` in a loop, and the
   bare libca round trip (``ca_sg_array_put`` + ``ca_sg_block``): µs per put;
4. monitor throughput and loss: one client subscribes while another
   process puts 10 000 values without waiting, once as a burst (libca
   ``ca_array_put`` in a tight loop, one flush at the end) and once paced
   (``epics.ca.put``, which flushes each put): updates received, lost %,
   whether the last value arrived, how long until it did;
5. get of a 1 MiB DOUBLE waveform (131072 elements) and of an 8 MB one
   (10**6 elements): MB/s (10**6 bytes/s);
6. a writable counter: 20 000 puts to it (``epics.ca.put`` loop) with one
   monitor on it: updates delivered and their rate;
7. memory: the server's RSS once started (1000+ scalars and both
   waveforms), after the run, and its peak; beside it the floor, a process
   that imports numpy and asyncio and holds both waveforms;
8. start-up: seconds from starting a fresh server process (alone on the
   machine) to its first answer to a UDP search, and the CPU it had used by
   then; beside them the floors, the interpreter alone and with numpy,
   asyncio and the waveforms;
9. load: 20 clients x 10 monitors on 10 PVs a libca putter writes at
   100 Hz for 20 s, its ``time.monotonic()`` as the value: updates lost,
   median and 99th-percentile latency from the put to the client;
10. the server's CPU time (user + system, all threads) during each phase,
   from ``/proc``, so the table shows its cost per request beside the wall
   time.

The table ends with the server issue's goals (ratios to softioc in the same
run, or absolute bounds), each marked met or MISSED for caioc and caproto.

The repeats run interleaved (softioc, caioc, caproto, then the next repeat
in a rotated order), each in fresh client processes. Wall figures are the
best repeat; CPU figures are the total over all repeats divided by the
requests served; lost % is the mean over repeats.

Server processes are ``_server_peer.py``, not this script: each imports
just its server library (with numpy and asyncio), as a real IOC of its kind
does, so that no server's start-up time or RSS includes this benchmark's
own imports (the harness, json, threading, subprocess, statistics ...,
~0.13 s of CPU and ~11 MB). Every peer reads its bytecode from a cache the
run fills with one untimed start of each, as an installed package has its
``.pyc`` files (``--cold``: the environment's setting, which with
PYTHONDONTWRITEBYTECODE compiles caioc at every start).

Run from the repository root: ``python benchmarks/bench_server.py`` (add
``--quick`` for a smoke run, ``--json PATH`` to keep the results,
``--servers caioc,softioc`` to choose the servers, ``--profile PATH`` to
write a cProfile of the caioc server process, ``--cold``).
"""

# Every client peer is this same file started again with a hidden first
# argument (``--peer ROLE SPEC``): the orchestrator imports no CA library at
# all, and libca reads its environment once, in a process prepared for it.
# The servers are _server_peer.py, which imports nothing but the server
# library under test (and numpy, asyncio): a server pays for no import of
# this script, so its start-up time and RSS are its own.

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import queue
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import _harness as h
import _server_peer as server_peer
from _server_peer import (
    COUNTER_PV,
    GET_PV,
    MONITOR_PV,
    PUT_PV,
    RATE_PVS,
    WAVEFORM8_LENGTH,
    WAVEFORM8_PV,
    WAVEFORM_LENGTH,
    WAVEFORM_PV,
    channel_names,
)

SERVERS = ("softioc", "caioc", "caproto")
#: Repeats of a full run (each is a few fresh client processes per server).
DEFAULT_REPEATS = 5
#: Seconds the subscriber waits for the last value once the puts are sent;
#: updates later than that count as lost.
FINAL_WAIT = 10.0
DBR_DOUBLE = 6
ECA_NORMAL = 1
CS_CONN = 2


@dataclass(frozen=True)
class Counts:
    """How much work one repeat does against one server."""

    channels: int = 1000
    gets: int = 5000
    puts: int = 2000
    monitor_puts: int = 10000
    arrays: int = 30
    #: Batches of gets of every channel (``channels`` gets, one ca_pend_io each).
    batches: int = 20
    #: Gets of the 8 MB waveform.
    arrays8: int = 10
    #: Puts to the counter with a monitor on it.
    counter_puts: int = 20000
    #: Fresh server starts timed to their first answered search (per server).
    starts: int = 3
    #: The load of group 9: clients x monitors on PVs put at ``load_hz``.
    load_clients: int = 20
    load_hz: float = 100.0
    load_seconds: float = 20.0
    #: Warm-up requests before each timed loop (first-call costs, caches).
    warmup: int = 50
    #: Seconds to let a server finish earlier work before a phase starts.
    settle: float = 0.3


FULL = Counts()
QUICK = Counts(
    channels=1000,
    gets=300,
    puts=200,
    monitor_puts=2000,
    arrays=3,
    batches=3,
    arrays8=2,
    counter_puts=2000,
    starts=1,
    load_clients=4,
    load_seconds=3.0,
    warmup=10,
    settle=0.05,
)


# ==========================================================================
# Peers: the clients (pyepics / libca)


def _libca() -> Any:
    from epics import ca

    return ca.initialize_libca()


def _connect(name: str, timeout: float = 10.0) -> Any:
    from epics import ca

    chid = ca.create_channel(name)
    if not ca.connect_channel(chid, timeout=timeout):
        raise RuntimeError(f"{name} did not connect in {timeout} s")
    return chid


def _phase(server_pid: int, run: Callable[[], int], calls: int, settle: float) -> dict[str, Any]:
    """Time ``run`` (which returns its failure count) with the server's CPU."""
    time.sleep(settle)
    cpu0, client0 = h.process_cpu(server_pid), time.process_time()
    start = time.perf_counter()
    failures = run()
    seconds = time.perf_counter() - start
    cpu = h.process_cpu(server_pid) - cpu0
    return {
        "calls": calls,
        "seconds": seconds,
        "failures": failures,
        "server_cpu": asdict(cpu),
        "client_cpu": time.process_time() - client0,
    }


def run_client(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Phases 1, 2, 3 and 5 against one server; the results as a dict."""
    import ctypes

    from epics import ca

    counts = Counts(**spec["counts"])
    pid = int(spec["server_pid"])
    libca = _libca()
    results: dict[str, Any] = {}

    def phase(run: Callable[[], int], calls: int) -> dict[str, Any]:
        return _phase(pid, run, calls, counts.settle)

    # 1. connect: create every channel without a connection handler, then one
    # ca_pend_io, which waits for exactly those to connect (libca's batch).
    names = [name.encode() for name in channel_names(counts.channels)]
    chids = [ctypes.c_void_p() for _ in names]
    create = libca.ca_create_channel

    def connect_all() -> int:
        for name, chid in zip(names, chids, strict=True):
            if create(name, None, None, 0, ctypes.byref(chid)) != ECA_NORMAL:
                raise RuntimeError("ca_create_channel failed")
        libca.ca_pend_io(30.0)
        return sum(1 for chid in chids if libca.ca_state(chid) != CS_CONN)

    results["connect"] = phase(connect_all, counts.channels)
    if results["connect"]["failures"]:
        raise RuntimeError(f"{results['connect']['failures']} channels did not connect")

    # 1b. batched gets: a DBR_DOUBLE get of every channel, then one ca_pend_io.
    batch_values = (ctypes.c_double * len(chids))()
    nans = (ctypes.c_double * len(chids))(*([math.nan] * len(chids)))
    array_get, pend_io = libca.ca_array_get, libca.ca_pend_io

    def batched_gets(batches: int) -> int:
        failures = 0
        for _ in range(batches):
            ctypes.memmove(batch_values, nans, ctypes.sizeof(batch_values))
            for i, chid in enumerate(chids):
                array_get(DBR_DOUBLE, 1, chid, ctypes.byref(batch_values, 8 * i))
            if pend_io(30.0) != ECA_NORMAL:
                failures += 1
        return failures

    batched_gets(1)
    results["get_batch"] = phase(lambda: batched_gets(counts.batches), counts.batches * len(chids))
    # every get of the last batch answered with its value (checked outside the timing)
    results["get_batch_content_ok"] = all(v == 0.0 for v in batch_values)

    # 2. get round trip of one DBR_DOUBLE.
    chid = _connect(GET_PV)
    get = ca.get

    def pyepics_gets(n: int) -> int:
        return sum(1 for _ in range(n) if get(chid, timeout=5.0) is None)

    value = ctypes.c_double()
    ref = ctypes.byref(value)

    def libca_gets(n: int) -> int:
        failures = 0
        for _ in range(n):
            array_get(DBR_DOUBLE, 1, chid, ref)
            if pend_io(5.0) != ECA_NORMAL:
                failures += 1
        return failures

    pyepics_gets(counts.warmup)
    libca_gets(counts.warmup)
    results["get_pyepics"] = phase(lambda: pyepics_gets(counts.gets), counts.gets)
    results["get_libca"] = phase(lambda: libca_gets(counts.gets), counts.gets)

    # 3. put with completion.
    chid_put = _connect(PUT_PV)
    put = ca.put
    values = iter(range(1, 10**9))

    def pyepics_puts(n: int) -> int:
        return sum(
            1 for _ in range(n) if put(chid_put, float(next(values)), wait=True, timeout=5.0) != 1
        )

    group = ctypes.c_uint()  # CA_SYNC_GID
    if libca.ca_sg_create(ctypes.byref(group)) != ECA_NORMAL:
        raise RuntimeError("ca_sg_create failed")
    gid = group.value
    sg_put, sg_block = libca.ca_sg_array_put, libca.ca_sg_block

    def libca_puts(n: int) -> int:
        # A synchronous group's put is a put-with-callback; ca_sg_block waits
        # in C until the server confirms it.
        failures = 0
        for _ in range(n):
            value.value = float(next(values))
            status = sg_put(gid, DBR_DOUBLE, 1, chid_put, ref)
            if status != ECA_NORMAL or sg_block(gid, 5.0) != ECA_NORMAL:
                failures += 1
        return failures

    pyepics_puts(counts.warmup)
    libca_puts(counts.warmup)
    results["put_pyepics"] = phase(lambda: pyepics_puts(counts.puts), counts.puts)
    results["put_libca"] = phase(lambda: libca_puts(counts.puts), counts.puts)
    last = float(next(values) - 1)
    results["put_readback_ok"] = get(chid_put, timeout=5.0) == last

    # 5. 1 MiB DOUBLE waveform.
    chid_wf = _connect(WAVEFORM_PV)
    buffer = (ctypes.c_double * WAVEFORM_LENGTH)()

    def pyepics_arrays(n: int) -> int:
        failures = 0
        for _ in range(n):
            array = get(chid_wf, timeout=10.0)
            if array is None or len(array) != WAVEFORM_LENGTH:
                failures += 1
        return failures

    def libca_arrays(n: int) -> int:
        failures = 0
        for _ in range(n):
            array_get(DBR_DOUBLE, WAVEFORM_LENGTH, chid_wf, buffer)
            if pend_io(10.0) != ECA_NORMAL:
                failures += 1
        return failures

    array = get(chid_wf, timeout=10.0)
    libca_arrays(1)
    results["array_content_ok"] = (
        array is not None
        and len(array) == WAVEFORM_LENGTH
        and float(array[-1]) == WAVEFORM_LENGTH - 1
        and buffer[WAVEFORM_LENGTH - 1] == WAVEFORM_LENGTH - 1
    )
    arrays = max(1, counts.arrays)
    results["array_pyepics"] = phase(lambda: pyepics_arrays(arrays), arrays)
    results["array_libca"] = phase(lambda: libca_arrays(arrays), arrays)

    # 5b. 8 MB DOUBLE waveform, libca into a ctypes buffer.
    chid_wf8 = _connect(WAVEFORM8_PV)
    buffer8 = (ctypes.c_double * WAVEFORM8_LENGTH)()

    def libca_arrays8(n: int) -> int:
        failures = 0
        for _ in range(n):
            array_get(DBR_DOUBLE, WAVEFORM8_LENGTH, chid_wf8, buffer8)
            if pend_io(30.0) != ECA_NORMAL:
                failures += 1
        return failures

    libca_arrays8(1)
    results["array8_content_ok"] = (
        buffer8[WAVEFORM8_LENGTH - 1] == WAVEFORM8_LENGTH - 1 and buffer8[1] == 1.0
    )
    arrays8 = max(1, counts.arrays8)
    results["array8_libca"] = phase(lambda: libca_arrays8(arrays8), arrays8)
    return results


def run_subscriber(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Subscribe to the monitor PV; count what arrives after GO."""
    from epics import ca

    base, count = int(spec["base"]), int(spec["n"])
    final = float(base + count)
    chid = _connect(spec.get("pv", MONITOR_PV))
    received: list[tuple[float, float]] = []
    monotonic = time.monotonic
    first = threading.Event()
    done = threading.Event()

    def on_update(value: Any = None, **kwargs: Any) -> None:
        received.append((monotonic(), value))
        first.set()
        if value == final:
            done.set()

    subscription = ca.create_subscription(chid, callback=on_update)
    if not first.wait(10.0):
        raise RuntimeError("no initial monitor update in 10 s")
    time.sleep(0.2)
    start = len(received)
    print("READY", flush=True)
    _expect_stdin("GO")
    _expect_stdin("PUTS_DONE")
    done.wait(FINAL_WAIT)
    updates = received[start:]
    ours = [v for _, v in updates if v is not None and base < v <= final]
    del subscription
    return {
        "updates": len(ours),
        "other_updates": len(updates) - len(ours),
        "final_correct": bool(updates) and updates[-1][1] == final,
        "last_value": updates[-1][1] if updates else None,
        "in_order": all(a < b for a, b in itertools.pairwise(ours)),
        "first_update": updates[0][0] if updates else None,
        "last_update": updates[-1][0] if updates else None,
    }


def run_putter(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Put ``n`` values without waiting, as a burst or paced, on GO."""
    import ctypes

    from epics import ca

    base, count, mode = int(spec["base"]), int(spec["n"]), spec["mode"]
    libca = _libca()
    chid = _connect(spec.get("pv", MONITOR_PV))
    print("READY", flush=True)
    _expect_stdin("GO")
    failures = 0
    start = time.perf_counter()
    if mode == "burst":
        value = ctypes.c_double()
        ref = ctypes.byref(value)
        array_put = libca.ca_array_put
        for i in range(1, count + 1):
            value.value = float(base + i)
            if array_put(DBR_DOUBLE, 1, chid, ref) != ECA_NORMAL:
                failures += 1
        libca.ca_flush_io()
    else:
        put = ca.put
        for i in range(1, count + 1):
            if put(chid, float(base + i)) != ECA_NORMAL:
                failures += 1
    seconds = time.perf_counter() - start
    print("DONE " + json.dumps({"seconds": seconds, "failures": failures}), flush=True)
    _expect_stdin("EXIT")
    return {}


def run_load_subscriber(spec: Mapping[str, Any]) -> dict[str, Any]:
    """One client of the load: a monitor on each rate PV; every update's latency.

    The putter writes its ``time.monotonic()`` as the value (one clock for
    all processes on Linux), so arrival time minus value is the latency from
    the put leaving the putter to the update reaching this client. The
    callback is a bare ctypes one on libca's own thread, so the figure is
    the servers' and libca's, not pyepics's.
    """
    import ctypes

    from epics import dbr

    libca = _libca()
    chids = [_connect(name) for name in RATE_PVS]
    monotonic = time.monotonic
    received: list[tuple[int, float, float]] = []  # (PV index, value, arrival)
    append = received.append
    index_of = {chid.value: index for index, chid in enumerate(chids)}

    @ctypes.CFUNCTYPE(None, dbr.event_handler_args)
    def on_update(args: Any) -> None:
        now = monotonic()
        if args.status == ECA_NORMAL:
            value = ctypes.cast(args.raw_dbr, ctypes.POINTER(ctypes.c_double))[0]
            append((index_of[args.chid], value, now))

    event_ids = [ctypes.c_void_p() for _ in chids]
    for chid, event_id in zip(chids, event_ids, strict=True):
        status = libca.ca_create_subscription(
            DBR_DOUBLE, 1, chid, 1 | 4, on_update, None, ctypes.byref(event_id)
        )
        if status != ECA_NORMAL:
            raise RuntimeError("ca_create_subscription failed")
    libca.ca_flush_io()
    deadline = time.monotonic() + 10.0
    while len({index for index, _, _ in list(received)}) < len(chids):
        if time.monotonic() > deadline:
            raise RuntimeError("no first update on every rate PV in 10 s")
        time.sleep(0.01)
    print("READY", flush=True)
    line = sys.stdin.readline().split()  # STOP <first put time> <rounds>
    if not line or line[0] != "STOP":
        raise SystemExit(f"expected STOP, got {line!r}")
    first, rounds = float(line[1]), int(line[2])

    def ours() -> list[tuple[int, float, float]]:
        return [r for r in list(received) if r[1] >= first]

    deadline = time.monotonic() + FINAL_WAIT
    while len(ours()) < rounds * len(chids) and time.monotonic() < deadline:
        time.sleep(0.01)
    updates = ours()
    per_pv = [0] * len(chids)
    for index, _, _ in updates:
        per_pv[index] += 1
    return {
        "updates": len(updates),
        "lost": sum(max(0, rounds - n) for n in per_pv),
        "latencies_us": [round((arrival - value) * 1e6) for _, value, arrival in updates],
    }


def run_rate_putter(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Put every rate PV at ``hz`` for ``seconds`` on GO, its clock as the value."""
    import ctypes

    libca = _libca()
    chids = [_connect(name) for name in RATE_PVS]
    print("READY", flush=True)
    _expect_stdin("GO")
    hz, seconds = float(spec["hz"]), float(spec["seconds"])
    value = ctypes.c_double()
    ref = ctypes.byref(value)
    array_put = libca.ca_array_put
    failures = rounds = 0
    first = time.monotonic()
    next_round = first
    while rounds < round(hz * seconds):
        for chid in chids:
            value.value = time.monotonic()
            if array_put(DBR_DOUBLE, 1, chid, ref) != ECA_NORMAL:
                failures += 1
        libca.ca_flush_io()
        rounds += 1
        next_round += 1.0 / hz
        time.sleep(max(0.0, next_round - time.monotonic()))
    done = {"first": first, "rounds": rounds, "failures": failures}
    print("DONE " + json.dumps(done), flush=True)
    _expect_stdin("EXIT")
    return {}


def _expect_stdin(word: str) -> None:
    line = sys.stdin.readline()
    if line.strip() != word:
        raise SystemExit(f"expected {word!r} on stdin, got {line!r}")


def peer_main(role: str, spec: Mapping[str, Any]) -> int:
    """A client peer (the servers are _server_peer.py)."""
    if spec.get("tune_malloc"):
        h.tune_malloc()
    runner = {
        "client": run_client,
        "subscriber": run_subscriber,
        "putter": run_putter,
        "load_subscriber": run_load_subscriber,
        "rate_putter": run_rate_putter,
    }[role]
    result = runner(spec)
    if role not in ("putter", "rate_putter"):
        print("RESULT " + json.dumps(result), flush=True)
    return 0


# ==========================================================================
# The orchestrator


class PeerError(RuntimeError):
    pass


class Peer:
    """One peer process; its output read by a thread, every wait bounded."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str]):
        self.name = name
        self.process = subprocess.Popen(
            list(argv),
            env=env,
            cwd=h.REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.tail: deque[str] = deque(maxlen=40)
        threading.Thread(target=self._drain, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _drain(self) -> None:
        assert self.process.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.process.stdout:
                self.tail.append(line)
                self.lines.put(line)
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        """The rest of the first output line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise PeerError(self._report(f"no {prefix.strip()} in {timeout:g} s")) from None
            if line is None:
                raise PeerError(self._report(f"exited before {prefix.strip()}"))
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise PeerError(self._report(f"cannot send {line}")) from None

    def _report(self, what: str) -> str:
        return f"{self.name}: {what}; its last output:\n" + "".join(self.tail)

    def stop(self, grace: float = 0.0) -> None:
        """End the process (after ``grace`` seconds for it to exit by itself)."""
        if grace:
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


def client_peer(name: str, role: str, spec: Mapping[str, Any], env: dict[str, str]) -> Peer:
    """A client peer: this file again, with ``--peer ROLE SPEC``."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--peer", role, json.dumps(spec)]
    return Peer(name, argv, env)


@dataclass(frozen=True)
class ServerSetup:
    """How server peers start: where the run keeps its files, bytecode and malloc."""

    #: A directory for the run's files (softioc's .db file).
    directory: str
    #: The bytecode cache of every peer (None: the environment's setting).
    pycache: str | None
    tune: bool

    def environment(self) -> dict[str, str]:
        """A loopback environment on fresh ports, with the bytecode cache."""
        env = h.loopback_ca_environment(h.free_port(), h.free_port())
        return h.with_bytecode_cache(env, self.pycache)

    def command(self, kind: str, counts: Counts, profile: str | None = None) -> list[str]:
        """The command line of a server (or floor) peer of ``kind``."""
        database = None
        if kind == "softioc":  # an IOC reads its database from a file
            database = os.path.join(self.directory, f"bench_{counts.channels}.db")
            if not os.path.exists(database):
                Path(database).write_text(server_peer.soft_database(counts.channels))
        return server_peer.command(
            kind, counts.channels, database=database, tune_malloc=self.tune, profile=profile
        )


@contextlib.contextmanager
def peers() -> Iterator[list[Peer]]:
    """A list to register peers in; all are killed on the way out."""
    started: list[Peer] = []
    try:
        yield started
    finally:
        for peer in reversed(started):
            peer.stop()


@dataclass
class ServerPeer:
    kind: str
    peer: Peer
    env: dict[str, str]


def start_servers(
    kinds: Sequence[str],
    counts: Counts,
    registry: list[Peer],
    setup: ServerSetup,
    profile: str | None,
) -> list[ServerPeer]:
    servers = []
    for kind in kinds:
        env = setup.environment()
        command = setup.command(kind, counts, profile if kind == "caioc" else None)
        peer = Peer(kind, command, env)
        registry.append(peer)
        servers.append(ServerPeer(kind, peer, env))
    for server in servers:  # started together, waited for in turn
        server.peer.expect("READY", 120.0)
    return servers


def client_run(server: ServerPeer, counts: Counts, registry: list[Peer], tune: bool) -> Any:
    spec = {"counts": asdict(counts), "server_pid": server.peer.pid, "tune_malloc": tune}
    client = client_peer(f"client of {server.kind}", "client", spec, server.env)
    registry.append(client)
    budget = (
        60.0
        + counts.gets * 0.01
        + counts.puts * 0.02
        + counts.arrays * 0.5
        + counts.batches * 2.0
        + counts.arrays8 * 3.0
    )
    result = json.loads(client.expect("RESULT ", budget))
    client.stop(grace=5.0)
    return result


def monitor_run(
    server: ServerPeer,
    counts: Counts,
    mode: str,
    base: int,
    registry: list[Peer],
    tune: bool,
    pv: str = MONITOR_PV,
    puts: int | None = None,
) -> dict[str, Any]:
    puts = counts.monitor_puts if puts is None else puts
    spec = {"base": base, "n": puts, "mode": mode, "tune_malloc": tune, "pv": pv}
    subscriber = client_peer(f"subscriber of {server.kind}", "subscriber", spec, server.env)
    putter = client_peer(f"putter to {server.kind}", "putter", spec, server.env)
    registry += [subscriber, putter]
    subscriber.expect("READY", 60.0)
    putter.expect("READY", 60.0)
    time.sleep(counts.settle)
    cpu0 = h.process_cpu(server.peer.pid)
    go = time.monotonic()
    subscriber.send("GO")
    putter.send("GO")
    sent = json.loads(putter.expect("DONE ", 60.0 + puts * 0.01))
    subscriber.send("PUTS_DONE")
    result = json.loads(subscriber.expect("RESULT ", FINAL_WAIT + 30.0))
    cpu = h.process_cpu(server.peer.pid) - cpu0
    putter.send("EXIT")
    subscriber.stop(grace=5.0)
    putter.stop(grace=5.0)
    last = result["last_update"]
    return {
        **result,
        "puts": puts,
        "put_seconds": sent["seconds"],
        "put_failures": sent["failures"],
        "delivery_seconds": None if last is None else last - go,
        "server_cpu": asdict(cpu),
    }


def counter_run(
    server: ServerPeer, counts: Counts, base: int, registry: list[Peer], tune: bool
) -> dict[str, Any]:
    """Group 6: ``counter_puts`` puts to the counter, one subscriber on it."""
    return monitor_run(
        server, counts, "paced", base, registry, tune, pv=COUNTER_PV, puts=counts.counter_puts
    )


def search_datagram(name: str, cid: int = 1) -> bytes:
    """VERSION + SEARCH for ``name``, answered only by a server that has it.

    Built by hand: the orchestrator loads no CA library.
    """
    payload = name.encode() + b"\0"
    payload += b"\0" * (-len(payload) % 8)
    version = struct.pack(">HHHHII", 0, 0, 0, 13, 0, 0)
    search = struct.pack(">HHHHII", 6, len(payload), 5, 13, cid, cid)  # 5: DONT_REPLY
    return version + search + payload


def is_search_reply(data: bytes) -> bool:
    """True if the datagram holds a SEARCH (6) response."""
    offset = 0
    while offset + 16 <= len(data):
        command, size = struct.unpack_from(">HH", data, offset)
        if command == 6:
            return True
        offset += 16 + size
    return False


def startup_run(
    kind: str, counts: Counts, registry: list[Peer], setup: ServerSetup
) -> tuple[float, float]:
    """Group 8: seconds from starting a fresh server to its first answered search,
    and the CPU seconds (all threads) it had used by then.

    A UDP socket sends the search every 5 ms from just before the process
    starts; the server is alone on the machine's CPUs meanwhile. The CPU
    figure depends far less than the wall time on how busy the machine is.
    """
    env = setup.environment()
    port = int(env["EPICS_CA_SERVER_PORT"])
    datagram = search_datagram(GET_PV)
    command = setup.command(kind, counts)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.005)
        started = time.monotonic()
        peer = Peer(f"{kind} (start-up)", command, env)
        registry.append(peer)
        try:
            while time.monotonic() - started < 120.0:
                if peer.process.poll() is not None:
                    raise PeerError(peer._report("exited before answering a search"))
                try:
                    sock.sendto(datagram, ("127.0.0.1", port))
                    if is_search_reply(sock.recv(4096)):
                        answered = time.monotonic()
                        cpu = h.process_cpu(peer.pid).best
                        break
                except OSError:  # a timeout, or nobody on the port yet
                    continue
            else:
                raise PeerError(peer._report("no search answered in 120 s"))
            peer.expect("READY", 120.0)
        finally:
            peer.stop()
    return answered - started, cpu


#: The floors of groups 7 and 8 (see _server_peer.py): the interpreter
#: alone, and with numpy, asyncio and both waveforms.
FLOORS = ("floor", "floor-numpy-asyncio")


def floor_run(
    kind: str, counts: Counts, registry: list[Peer], setup: ServerSetup
) -> dict[str, float]:
    """A floor peer: seconds from its start to its READY line, its CPU seconds by
    then, and its RSS 1 s later (when the servers' RSS is read after their start)."""
    started = time.monotonic()
    peer = Peer(f"{kind} (start-up)", setup.command(kind, counts), setup.environment())
    registry.append(peer)
    try:
        peer.expect("READY", 60.0)
        seconds = time.monotonic() - started
        cpu = h.process_cpu(peer.pid).best
        time.sleep(1.0)
        return {"start": seconds, "cpu": cpu, "rss": vm_mb(peer.pid, "VmRSS")}
    finally:
        peer.stop()


def vm_mb(pid: int, field: str) -> float:
    """``VmRSS``, ``VmHWM`` ... of ``/proc/<pid>/status`` in MB (10**6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / h.MB
    raise RuntimeError(f"no {field} for {pid}")


def load_run(
    server: ServerPeer, counts: Counts, registry: list[Peer], tune: bool
) -> dict[str, Any]:
    """Group 9: ``load_clients`` clients x 10 monitors on PVs put at ``load_hz``."""
    spec = {"hz": counts.load_hz, "seconds": counts.load_seconds, "tune_malloc": tune}
    clients = [
        client_peer(f"load client {i} of {server.kind}", "load_subscriber", spec, server.env)
        for i in range(counts.load_clients)
    ]
    putter = client_peer(f"rate putter to {server.kind}", "rate_putter", spec, server.env)
    registry += [*clients, putter]
    for peer in [*clients, putter]:
        peer.expect("READY", 120.0)
    time.sleep(counts.settle)
    cpu0, go = h.process_cpu(server.peer.pid), time.monotonic()
    putter.send("GO")
    done = json.loads(putter.expect("DONE ", 3 * counts.load_seconds + 30.0))
    cpu, wall = h.process_cpu(server.peer.pid) - cpu0, time.monotonic() - go
    for client in clients:
        client.send(f"STOP {done['first']!r} {done['rounds']}")
    results = [json.loads(client.expect("RESULT ", FINAL_WAIT + 60.0)) for client in clients]
    putter.send("EXIT")
    for peer in [*clients, putter]:
        peer.stop(grace=5.0)
    latencies = sorted(us for r in results for us in r["latencies_us"])

    def quantile(q: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1e3

    return {
        "clients": counts.load_clients,
        "rounds": done["rounds"],
        "put_failures": done["failures"],
        "expected": done["rounds"] * len(RATE_PVS) * counts.load_clients,
        "updates": sum(r["updates"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "median_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "max_ms": latencies[-1] / 1e3 if latencies else None,
        "server_cpu_percent": 100 * cpu.best / wall,
    }


# --------------------------------------------------------------------------
# Results


def _cpu(phase: Mapping[str, Any]) -> float:
    cpu = phase["server_cpu"]
    return cpu["stat"] if cpu.get("sched") is None else cpu["sched"]


@dataclass
class Line:
    """One row of the table: a figure per server."""

    group: str
    label: str
    unit: str
    values: dict[str, float | None]
    #: False for figures without a meaningful ratio (percentages, counts).
    ratio: bool = True
    #: How to print the figures (default: format_figure).
    text: Callable[[float | None], str] | None = None
    note: str = ""
    #: Names the line for the goals (:data:`GOALS`).
    key: str = ""


def format_figure(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:,.1f}"
    if value >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


Runs = Mapping[str, list[dict[str, Any]]]
Figure = Callable[[list[dict[str, Any]]], "float | None"]


def best_per_call(phase: str, scale: float) -> Figure:
    """The fastest repeat's seconds per call of a client phase, times ``scale``."""

    def figure(repeats: list[dict[str, Any]]) -> float:
        runs = [r["client"][phase] for r in repeats]
        return min(run["seconds"] / run["calls"] for run in runs) * scale

    return figure


def cpu_per_call(phases: Sequence[str], scale: float) -> Figure:
    """Server CPU seconds per call over every repeat of ``phases``, times ``scale``."""

    def figure(repeats: list[dict[str, Any]]) -> float:
        runs = [r["client"][phase] for r in repeats for phase in phases]
        return sum(_cpu(run) for run in runs) / sum(run["calls"] for run in runs) * scale

    return figure


def monitor_lines(kinds: Sequence[str], runs: Runs, counts: Counts, mode: str) -> list[Line]:
    title = {"burst": "ca_array_put loop, one flush", "paced": "epics.ca.put(wait=False) loop"}
    group = f"4. monitor, {counts.monitor_puts} puts: {title[mode]}"
    key = f"monitor_{mode}"
    repeats = len(runs[kinds[0]])

    def per_kind(figure: Figure) -> dict[str, float | None]:
        return {kind: figure([r[key] for r in runs[kind]]) for kind in kinds}

    def lost(run: dict[str, Any]) -> float:
        return 100 * (1 - run["updates"] / run["puts"])

    def delivery(rs: list[dict[str, Any]]) -> float | None:
        times = [r["delivery_seconds"] for r in rs if r["final_correct"]]
        return min(times) * 1e3 if times else None

    def cpu(rs: list[dict[str, Any]]) -> float:
        return sum(_cpu(r) for r in rs) / sum(r["puts"] for r in rs) * 1e6

    return [
        Line(
            group,
            "puts sent in",
            "ms",
            per_kind(lambda rs: min(r["put_seconds"] for r in rs) * 1e3),
            note="putter process, the client side",
        ),
        Line(
            group,
            "last update received after",
            "ms",
            per_kind(delivery),
            note="from GO to the last value at the subscriber",
        ),
        Line(
            group,
            "lost (mean of repeats)",
            "%",
            per_kind(lambda rs: statistics.mean(lost(r) for r in rs)),
            ratio=False,
        ),
        Line(
            group,
            "lost (worst repeat)",
            "%",
            per_kind(lambda rs: max(lost(r) for r in rs)),
            ratio=False,
        ),
        Line(
            group,
            "final value correct, in order",
            "runs",
            per_kind(lambda rs: sum(1 for r in rs if r["final_correct"] and r["in_order"])),
            ratio=False,
            text=lambda v: "-" if v is None else f"{v:.0f}/{repeats}",
        ),
        Line(group, "server CPU per put", "µs", per_kind(cpu)),
    ]


def summarize(
    kinds: Sequence[str], runs: Runs, counts: Counts, once: Mapping[str, dict[str, Any]]
) -> list[Line]:
    """The table's lines from every repeat of every server (``once``: the
    figures measured once per server: memory, start-up, the load)."""

    def per_kind(figure: Figure) -> dict[str, float | None]:
        return {kind: figure(runs[kind]) for kind in kinds}

    megabytes = WAVEFORM_LENGTH * 8 / h.MB
    connect, get, put, array = (
        "1. connect",
        "2. get DBR_DOUBLE",
        "3. put with completion",
        "5. get 1 MiB DOUBLE waveform",
    )
    batch = f"1b. batched get: {counts.channels} channels, one ca_pend_io"
    lines = [
        Line(
            connect,
            f"{counts.channels} channels, one batch",
            "s",
            per_kind(lambda rs: min(r["client"]["connect"]["seconds"] for r in rs)),
            key="connect",
        ),
        Line(connect, "server CPU per channel", "µs", per_kind(cpu_per_call(["connect"], 1e6))),
        Line(
            batch,
            "ca_array_get x N + ca_pend_io",
            "gets/s",
            {
                k: None if v is None else 1.0 / v
                for k, v in per_kind(best_per_call("get_batch", 1.0)).items()
            },
            key="get_batch",
        ),
        Line(batch, "server CPU per get", "µs", per_kind(cpu_per_call(["get_batch"], 1e6))),
        Line(get, "epics.ca.get", "µs/get", per_kind(best_per_call("get_pyepics", 1e6))),
        Line(
            get,
            "ca_array_get + ca_pend_io",
            "µs/get",
            per_kind(best_per_call("get_libca", 1e6)),
            key="get_libca",
        ),
        Line(
            get,
            "server CPU per get",
            "µs",
            per_kind(cpu_per_call(["get_pyepics", "get_libca"], 1e6)),
        ),
        Line(put, "epics.ca.put(wait=True)", "µs/put", per_kind(best_per_call("put_pyepics", 1e6))),
        Line(
            put,
            "ca_sg_array_put + ca_sg_block",
            "µs/put",
            per_kind(best_per_call("put_libca", 1e6)),
        ),
        Line(
            put,
            "server CPU per put",
            "µs",
            per_kind(cpu_per_call(["put_pyepics", "put_libca"], 1e6)),
        ),
    ]
    for mode in ("burst", "paced"):
        lines += monitor_lines(kinds, runs, counts, mode)
    for phase, label in (
        ("array_pyepics", "epics.ca.get"),
        ("array_libca", "ca_array_get + ca_pend_io"),
    ):
        seconds = per_kind(best_per_call(phase, 1.0))
        lines.append(
            Line(
                array,
                label,
                "MB/s",
                {k: None if v is None else megabytes / v for k, v in seconds.items()},
            )
        )
    lines.append(
        Line(
            array,
            "server CPU per get",
            "ms",
            per_kind(cpu_per_call(["array_pyepics", "array_libca"], 1e3)),
        )
    )
    array8 = "5b. get 8 MB DOUBLE waveform"
    seconds8 = per_kind(best_per_call("array8_libca", 1.0))
    megabytes8 = WAVEFORM8_LENGTH * 8 / h.MB
    lines += [
        Line(
            array8,
            "ca_array_get + ca_pend_io",
            "MB/s",
            {k: None if v is None else megabytes8 / v for k, v in seconds8.items()},
            key="array8",
        ),
        Line(array8, "server CPU per get", "ms", per_kind(cpu_per_call(["array8_libca"], 1e3))),
    ]
    lines += counter_lines(kinds, runs, counts)
    lines += once_lines(kinds, counts, once)
    return lines


def counter_lines(kinds: Sequence[str], runs: Runs, counts: Counts) -> list[Line]:
    group = f"6. counter: {counts.counter_puts} epics.ca.put to it, one monitor on it"
    puts = counts.counter_puts

    def per_kind(figure: Figure) -> dict[str, float | None]:
        return {kind: figure([r["counter"] for r in runs[kind]]) for kind in kinds}

    def rate(rs: list[dict[str, Any]]) -> float | None:
        rates = [
            r["updates"] / r["delivery_seconds"]
            for r in rs
            if r["final_correct"] and r["delivery_seconds"]
        ]
        return max(rates) if rates else None

    return [
        Line(
            group,
            "updates delivered (worst repeat)",
            "updates",
            per_kind(lambda rs: min(r["updates"] for r in rs)),
            ratio=False,
            text=lambda v: "-" if v is None else f"{v:.0f}/{puts}",
            key="counter_delivered",
        ),
        Line(
            group,
            "delivery rate",
            "updates/s",
            per_kind(rate),
            note="updates / (GO to the last update)",
            key="counter_rate",
        ),
        Line(
            group,
            "server CPU per put",
            "µs",
            per_kind(lambda rs: sum(_cpu(r) for r in rs) / sum(r["puts"] for r in rs) * 1e6),
        ),
    ]


def once_lines(
    kinds: Sequence[str], counts: Counts, once: Mapping[str, dict[str, Any]]
) -> list[Line]:
    """Memory, start-up and the load: measured once per server (start-up N times)."""

    def per_kind(key: str, scale: float = 1.0) -> dict[str, float | None]:
        values = {kind: once[kind].get(key) for kind in kinds}
        return {k: None if v is None else v * scale for k, v in values.items()}

    def load(key: str) -> dict[str, float | None]:
        return {kind: (once[kind]["load"] or {}).get(key) for kind in kinds}

    memory = "7. memory: 1000+ scalars, 1 MiB and 8 MB waveforms"
    start = "8. start-up"
    group = (
        f"9. {counts.load_clients} clients x {len(RATE_PVS)} monitors, "
        f"PVs put at {counts.load_hz:g} Hz for {counts.load_seconds:g} s"
    )
    return [
        Line(memory, "RSS after start", "MB", per_kind("rss_start"), key="rss"),
        Line(
            memory,
            "floor: Python + numpy + asyncio + both waveforms",
            "MB",
            per_kind("rss_floor_numpy_asyncio"),
            ratio=False,
            note="the same process for every server",
        ),
        Line(memory, "RSS after the run", "MB", per_kind("rss_end")),
        Line(memory, "peak RSS (VmHWM)", "MB", per_kind("hwm")),
        Line(
            start,
            f"start to first answered search (median of {counts.starts})",
            "s",
            per_kind("start"),
            key="start",
        ),
        Line(start, "CPU used by the first answer", "s", per_kind("start_cpu")),
        Line(
            start,
            "floor: the interpreter alone",
            "s",
            per_kind("start_floor"),
            ratio=False,
            note="a peer that prints READY at once",
        ),
        Line(
            start,
            "floor: Python + numpy + asyncio + both waveforms",
            "s",
            per_kind("start_floor_numpy_asyncio"),
            ratio=False,
            note="to its READY line",
        ),
        Line(
            start,
            "floor: its CPU by READY",
            "s",
            per_kind("cpu_floor_numpy_asyncio"),
            ratio=False,
        ),
        Line(
            group,
            "updates lost",
            "updates",
            load("lost"),
            ratio=False,
            text=lambda v: "-" if v is None else f"{v:.0f}",
            key="load_lost",
        ),
        Line(group, "median latency", "ms", load("median_ms"), key="load_median"),
        Line(group, "99th percentile latency", "ms", load("p99_ms")),
        Line(group, "server CPU", "% core", load("server_cpu_percent")),
    ]


#: The server issue's goals: (line key, what, kind of test, target). "ratio"
#: goals compare with softioc in the same run (for s/µs figures lower is
#: better, for rates higher); "max" goals are absolute upper bounds.
GOALS: list[tuple[str, str, str, float]] = [
    ("connect", "connect 1000 PVs", "ratio <=", 1.5),
    ("get_libca", "get round trip (libca)", "ratio <=", 1.3),
    ("get_batch", "batched gets of 1000 PVs, rate", "ratio >=", 0.7),
    ("counter_delivered", "counter: every update delivered", "all", 0.0),
    ("counter_rate", "counter: delivery rate", "ratio >=", 0.8),
    ("array8", "8 MB array, MB/s", "ratio >=", 0.9),
    ("rss", "RSS with the 1000 PVs, MB", "max", 40.0),
    ("start", "start to first answered search, s", "max <", 0.3),
    ("load_lost", "load: updates lost", "max", 0.0),
    ("load_median", "load: median latency, ms", "max", 2.0),
]


def goal_table(kinds: Sequence[str], lines: Sequence[Line], counts: Counts) -> str | None:
    """Each goal evaluated for caioc (and caproto beside it), softioc the reference."""
    if "softioc" not in kinds:
        return None
    by_key = {line.key: line for line in lines if line.key}
    others = [k for k in ("caioc", "caproto") if k in kinds]
    rows = []
    for key, what, test, target in GOALS:
        line = by_key[key]
        reference = line.values["softioc"]
        cells = [what, f"{test} {target:g}" if test != "all" else "all"]
        for kind in others:
            value = line.values[kind]
            if test.startswith("ratio"):
                figure = h.ratio(value, reference)
                met = figure <= target if "<=" in test else figure >= target
                shown = h.format_ratio(figure)
            elif test == "all":
                met = value is not None and value >= counts.counter_puts
                shown = format_figure(value)
            else:
                met = value is not None and (value < target if "<" in test else value <= target)
                shown = format_figure(value)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                met = False
            cells += [shown, "met" if met else "MISSED"]
        cells.append(format_figure(reference))
        rows.append(cells)
    headers = ["goal", "target", *(c for k in others for c in (k, "")), "softioc"]
    text = h.format_table(headers, rows, right=set(range(2, 3 + 2 * len(others))))
    print(text)
    return text


def ratio_pairs(kinds: Sequence[str]) -> list[tuple[str, str]]:
    wanted = [("caioc", "softioc"), ("caproto", "softioc"), ("caioc", "caproto")]
    return [(a, b) for a, b in wanted if a in kinds and b in kinds]


def table(kinds: Sequence[str], lines: Sequence[Line]) -> str:
    pairs = ratio_pairs(kinds)
    headers = ["case", "unit", *kinds, *(f"{a}/{b}" for a, b in pairs), "notes"]
    rows: list[Sequence[str]] = []
    group = None
    for line in lines:
        if line.group != group:
            group = line.group
            rows.append([group])
        show = line.text or format_figure
        cells = [line.label, line.unit, *(show(line.values[k]) for k in kinds)]
        for a, b in pairs:
            if line.ratio:
                cells.append(h.format_ratio(h.ratio(line.values[a], line.values[b])))
            else:
                cells.append("")
        cells.append(line.note)
        rows.append(cells)
    right = set(range(2, 2 + len(kinds) + len(pairs)))
    text = h.format_table(headers, rows, right)
    print(text)
    return text


def checks(
    kinds: Sequence[str],
    runs: Mapping[str, list[dict[str, Any]]],
    once: Mapping[str, dict[str, Any]],
) -> list[str]:
    """Correctness notes: anything a server got wrong during the run."""
    notes = []
    for kind in kinds:
        load = once[kind]["load"]
        if load is None:
            continue  # reported as a failure already
        if load["put_failures"]:
            notes.append(f"{kind} load: {load['put_failures']} puts failed")
        if load["lost"]:
            notes.append(f"{kind} load: {load['lost']} of {load['expected']} updates lost")
        for i, run in enumerate(runs[kind]):
            client = run["client"]
            failed = {
                phase: client[phase]["failures"]
                for phase in client
                if isinstance(client[phase], dict) and client[phase].get("failures")
            }
            if failed:
                notes.append(f"{kind} repeat {i + 1}: failed requests {failed}")
            if not client["array_content_ok"]:
                notes.append(f"{kind} repeat {i + 1}: the waveform read back wrong")
            if not client["get_batch_content_ok"]:
                notes.append(f"{kind} repeat {i + 1}: a batched get went unanswered or wrong")
            if not client["array8_content_ok"]:
                notes.append(f"{kind} repeat {i + 1}: the 8 MB waveform read back wrong")
            if not client["put_readback_ok"]:
                notes.append(f"{kind} repeat {i + 1}: the last put did not read back")
            for mode in ("burst", "paced", "counter"):
                monitor = run["counter" if mode == "counter" else f"monitor_{mode}"]
                if not monitor["final_correct"]:
                    notes.append(
                        f"{kind} repeat {i + 1}: {mode} monitor ended on "
                        f"{monitor['last_value']}, not the last put"
                    )
                if not monitor["in_order"]:
                    notes.append(f"{kind} repeat {i + 1}: {mode} monitor updates out of order")
                if monitor["put_failures"]:
                    notes.append(f"{kind} repeat {i + 1}: {monitor['put_failures']} puts failed")
    return notes


def print_profile(path: str, top: int = 30) -> None:
    import pstats

    print(f"\ncProfile of the caioc server process ({path}), by own time:")
    stats = pstats.Stats(path, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)


def main(argv: Sequence[str] | None = None) -> int:
    parser = h.base_parser(__doc__.split("\n")[0])
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated servers to run, of softioc,caioc,caproto (default all)",
    )
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="run the caioc server under cProfile, write the stats to PATH and print the top",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="no bytecode cache of the benchmark's own: with PYTHONDONTWRITEBYTECODE "
        "set, every peer compiles its sources at each start",
    )
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in SERVERS]
    if unknown or not kinds:
        parser.error(f"--servers takes some of {','.join(SERVERS)}, not {args.servers!r}")
    kinds = [k for k in SERVERS if k in kinds]  # table order
    settings = h.settings_from(args)
    if args.repeats is None and not settings.quick:
        settings = replace(settings, repeats=DEFAULT_REPEATS)
    counts = QUICK if settings.quick else FULL
    if args.min_time is not None:
        print("note: --min-time does not apply here (the counts are fixed)", file=sys.stderr)
    tune = settings.malloc_tuned
    profile = str(Path(args.profile).resolve()) if args.profile else None
    print(
        f"servers {', '.join(kinds)}; {settings.repeats} repeats, interleaved; "
        f"client pyepics {h.package_version('pyepics')} (libca); "
        f"softioc {h.package_version('softioc')}, caioc {h.package_version('caioc')}, "
        f"caproto {h.package_version('caproto')}; Python {sys.version.split()[0]}; "
        f"{os.cpu_count()} CPUs",
        file=sys.stderr,
    )
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    once: dict[str, dict[str, Any]] = {kind: {} for kind in kinds}
    failed: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_server_") as directory, peers() as registry:
        pycache = None if args.cold else os.path.join(directory, "pycache")
        setup = ServerSetup(directory, pycache, tune)
        if pycache is not None:  # one untimed start of each fills the cache
            print("filling the bytecode cache", file=sys.stderr)
            for kind in kinds:
                startup_run(kind, counts, registry, setup)
            for kind in FLOORS:
                floor_run(kind, counts, registry, setup)
        # 8. start-up, each server alone on the machine, before the others start
        starts: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
        for repeat in range(counts.starts):
            for kind in kinds[repeat % len(kinds) :] + kinds[: repeat % len(kinds)]:
                print(f"start-up {repeat + 1}/{counts.starts}: {kind}", file=sys.stderr)
                starts[kind].append(startup_run(kind, counts, registry, setup))
        floors = {
            kind: [floor_run(kind, counts, registry, setup) for _ in range(counts.starts)]
            for kind in FLOORS
        }
        for kind in kinds:
            once[kind]["starts"] = [seconds for seconds, _ in starts[kind]]
            once[kind]["start"] = statistics.median(once[kind]["starts"])
            once[kind]["start_cpus"] = [cpu for _, cpu in starts[kind]]
            once[kind]["start_cpu"] = statistics.median(once[kind]["start_cpus"])
            for floor, runs_of_floor in floors.items():
                for key in ("start", "cpu", "rss"):
                    figure = statistics.median(run[key] for run in runs_of_floor)
                    once[kind][f"{key}_{floor.replace('-', '_')}"] = figure
        servers = start_servers(kinds, counts, registry, setup, profile)
        time.sleep(1.0)  # let each server settle after start-up
        for server in servers:
            once[server.kind]["rss_start"] = vm_mb(server.peer.pid, "VmRSS")
        for repeat in range(settings.repeats):
            shift = repeat % len(servers)
            for server in servers[shift:] + servers[:shift]:
                print(f"repeat {repeat + 1}/{settings.repeats}: {server.kind}", file=sys.stderr)
                base = (repeat * len(servers) + servers.index(server)) * 10_000_000
                try:
                    run = {"client": client_run(server, counts, registry, tune)}
                    for offset, mode in enumerate(("burst", "paced")):
                        run[f"monitor_{mode}"] = monitor_run(
                            server, counts, mode, base + offset * 1_000_000, registry, tune
                        )
                    run["counter"] = counter_run(server, counts, base + 2_000_000, registry, tune)
                except PeerError as error:
                    # One server failing a repeat (a timeout, a crash) is a
                    # finding to report, not a reason to lose the others' run.
                    failed.append(f"{server.kind} repeat {repeat + 1} failed: {_first(error)}")
                    print(failed[-1], file=sys.stderr)
                    continue
                runs[server.kind].append(run)
        # 9. the load, once per server (it lasts load_seconds)
        for server in servers:
            print(f"load: {server.kind}", file=sys.stderr)
            try:
                once[server.kind]["load"] = load_run(server, counts, registry, tune)
            except PeerError as error:
                once[server.kind]["load"] = None
                failed.append(f"{server.kind} load failed: {_first(error)}")
                print(failed[-1], file=sys.stderr)
        for server in servers:
            with contextlib.suppress(OSError, RuntimeError):  # a server that died has no figures
                once[server.kind]["rss_end"] = vm_mb(server.peer.pid, "VmRSS")
                once[server.kind]["hwm"] = vm_mb(server.peer.pid, "VmHWM")
        if profile is not None:
            for server in servers:
                if server.kind == "caioc":
                    server.peer.process.send_signal(signal.SIGINT)
                    server.peer.expect("PROFILED", 60.0)
    print(f"finished in {time.monotonic() - started:.0f} s", file=sys.stderr)

    dropped = [kind for kind in kinds if not runs[kind]]
    failed += [f"{kind}: no repeat succeeded, left out of the table" for kind in dropped]
    kinds = [kind for kind in kinds if runs[kind]]
    lines = summarize(kinds, runs, counts, once)
    print()
    print(
        f"Servers on loopback, client pyepics/libca; best of {settings.repeats} repeats for "
        "wall figures, CPU = server user+sys over all repeats / requests."
    )
    print(
        "Ratios are figure / figure: for s, ms and µs below 1.00x is faster, "
        "for MB/s above 1.00x is faster."
    )
    table(kinds, lines)
    print()
    print("Goals (caioc; caproto beside it), ratios to softioc measured in this run:")
    goal_table(kinds, lines, counts)
    notes = failed + checks(kinds, runs, once)
    print()
    print(
        "\n".join(notes)
        if notes
        else "All requests succeeded; every monitor run ended on "
        "the last put with updates in order; every read-back matched."
    )
    if profile is not None:
        print_profile(profile)
    if args.json:
        h.write_json(
            args.json,
            "bench_server",
            [],
            settings,
            packages=("caioc", "caproto", "pyepics", "softioc", "epicscorelibs", "numpy"),
            extra={
                "servers": kinds,
                "counts": asdict(counts),
                "cpu_source": "schedstat" if _cpu_is_precise(runs) else "stat",
                "lines": [
                    {
                        "group": line.group,
                        "label": line.label,
                        "unit": line.unit,
                        "values": line.values,
                        "ratios": {
                            f"{a}/{b}": _json(h.ratio(line.values[a], line.values[b]))
                            for a, b in ratio_pairs(kinds)
                            if line.ratio
                        },
                    }
                    for line in lines
                ],
                "checks": notes,
                "runs": runs,
                "once": once,
            },
        )
    return 0


def _first(error: Exception) -> str:
    """The first line of an error (a peer's report goes on with its output)."""
    return str(error).split("\n", 1)[0]


def _json(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def _cpu_is_precise(runs: Mapping[str, list[dict[str, Any]]]) -> bool:
    return all(
        run["client"]["get_libca"]["server_cpu"].get("sched") is not None
        for rs in runs.values()
        for run in rs
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        sys.exit(peer_main(sys.argv[2], json.loads(sys.argv[3])))
    sys.exit(main())

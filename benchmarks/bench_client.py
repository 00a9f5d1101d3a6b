"""CA clients side by side against one softioc (C rsrv) server.

Clients: pyepics (the C library libca), caioc's asyncio client, caioc's
threaded client and caproto's threading client, each in a process of its
own, all against the same softioc server on a free loopback port:

1. connect 1000 channels (one batch): seconds, and the client's CPU
   seconds (all its threads) meanwhile (what is timed: see below);
2. get round trip of one DBR_DOUBLE: µs per get;
3. read of an 8 MB DOUBLE waveform (10**6 elements): MB/s;
4. monitor events received per second while a libca putter process writes
   a new value to the monitored record at a fixed offered rate;
5. a server that starts after the client: the client searches first, then
   softioc starts; seconds from the server's READY to the client connected;
6. idle CPU of the client with 1000 subscriptions and no traffic, % of a core.

What "connect" times, for every client alike: from asking for the 1000
channels until all of them are connected -- the searches, the TCP circuit
to the server (opened by the first answer), CREATE_CHAN and its replies.
Each client's context is running before the clock starts, as it is in a
program that has used CA already: its search socket, threads and
repeater registration are not timed. Per client:

* pyepics: ``ca.initialize_libca()`` makes the libca context, but libca
  opens its UDP machinery (socket, threads, repeater registration) only at
  the first ``ca_create_channel``; so one channel with a name nobody
  serves is created and cleared before the clock starts. Timed:
  ``create_channel`` of each name, then ``connect_channel`` of each.
* caioc (asyncio): ``Context.start()`` runs before the clock. Timed: one
  ``await ctx.connect(*names)`` on the loop (a coroutine submitted from the
  driver's thread, as for the threaded client).
* caioc-threaded: ``ThreadedContext()`` starts its context when made.
  Timed: ``ctx.connect(*names)``.
* caproto: ``Context()`` starts its shared broadcaster when made. Timed:
  ``get_pvs(*names)`` and ``wait_for_connection`` of each.

Run from the repository root: ``python benchmarks/bench_client.py``
(``--quick`` for a smoke run, ``--json PATH`` to keep the results,
``--clients caioc,pyepics`` to choose, ``--connect-only --repeats 15`` for
case 1 alone, with medians).
"""

# Every peer is this file started again as ``--peer ROLE SPEC`` so that the
# orchestrator imports no CA library and each client only its own.

from __future__ import annotations

import json
import math
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import _harness as h

CLIENTS = ("pyepics", "caioc", "caioc-threaded", "caproto")
PREFIX = "BENCH:"
GET_PV = PREFIX + "GET"
MONITOR_PV = PREFIX + "MON"
WAVEFORM_PV = PREFIX + "WF"
WAVEFORM_LENGTH = 1_000_000  # DOUBLE: 8 MB
DBR_DOUBLE = 6
ECA_NORMAL = 1

FULL = {
    "channels": 1000,
    "gets": 3000,
    "arrays": 10,
    "idle": 5.0,
    "monitor_rate": 50_000,
    "monitor_seconds": 3.0,
    "late_delay": 2.0,
    "repeats": 3,
}
QUICK = {
    "channels": 1000,
    "gets": 300,
    "arrays": 2,
    "idle": 2.0,
    "monitor_rate": 50_000,
    "monitor_seconds": 1.0,
    "late_delay": 1.0,
    "repeats": 1,
}


def channel_names(count: int) -> list[str]:
    return [f"{PREFIX}C{i:04d}" for i in range(count)]


# ==========================================================================
# Peers: the server and the putter


def serve_softioc(spec: Mapping[str, Any]) -> None:
    import os
    import tempfile

    import numpy as np
    from softioc import asyncio_dispatcher, builder, softioc

    names = [GET_PV, MONITOR_PV, *channel_names(int(spec["channels"]))]
    records = "".join(f'record(ao, "{name}") {{\n}}\n' for name in names)
    with tempfile.NamedTemporaryFile("w", suffix=".db", delete=False) as db:
        db.write(records)
    softioc.dbLoadDatabase(db.name)
    os.unlink(db.name)
    if spec.get("waveform"):
        builder.SetDeviceName(PREFIX.rstrip(":"))
        builder.WaveformIn(
            WAVEFORM_PV[len(PREFIX) :],
            initial_value=np.arange(WAVEFORM_LENGTH, dtype=np.float64),
        )
        builder.LoadDatabase()
    softioc.iocInit(asyncio_dispatcher.AsyncioDispatcher(), enable_pva=False)
    print("READY", flush=True)
    softioc.non_interactive_ioc()


def run_putter(spec: Mapping[str, Any]) -> None:
    """Write increasing values to the monitor PV at ``rate`` per second until told to stop."""
    import ctypes

    from epics import ca

    libca = ca.initialize_libca()
    chid = ca.create_channel(MONITOR_PV, connect=False)
    if not ca.connect_channel(chid, timeout=10.0):
        raise SystemExit("putter: no connection")
    rate = float(spec["rate"])
    stop = threading.Event()
    print("READY", flush=True)
    _expect_stdin("GO")
    threading.Thread(target=lambda: (_expect_stdin("STOP"), stop.set()), daemon=True).start()
    value = ctypes.c_double()
    ref = ctypes.byref(value)
    put, flush = libca.ca_array_put, libca.ca_flush_io
    batch = max(1, int(rate / 200))  # 200 flushes per second
    sent, start = 0, time.monotonic()
    while not stop.is_set():
        for _ in range(batch):
            sent += 1
            value.value = float(sent)
            put(DBR_DOUBLE, 1, chid, ref)
        flush()
        delay = start + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print("DONE " + json.dumps({"sent": sent, "seconds": time.monotonic() - start}), flush=True)


def _expect_stdin(word: str) -> str:
    line = sys.stdin.readline()
    if not line.startswith(word):
        raise SystemExit(f"expected {word!r} on stdin, got {line!r}")
    return line[len(word) :].strip()


# ==========================================================================
# Peers: the clients, behind one small interface


class Client:
    """What the driver needs of a client library (blocking calls)."""

    def connect(self, names: Sequence[str], timeout: float) -> None:
        raise NotImplementedError

    def gets(self, name: str, n: int) -> float:
        """Seconds for ``n`` sequential gets of ``name`` (value checked)."""
        raise NotImplementedError

    def arrays(self, name: str, n: int) -> float:
        """Seconds for ``n`` reads of the waveform (length checked)."""
        raise NotImplementedError

    def subscribe(self, names: Sequence[str], callback: Callable[[], None]) -> None:
        """Subscribe to every name; ``callback()`` on every update."""
        raise NotImplementedError


class PyepicsClient(Client):
    def __init__(self) -> None:
        from epics import ca

        self.ca = ca
        ca.initialize_libca()
        # libca starts its search machinery (UDP socket, threads, repeater
        # registration) with the first channel: start it here, untimed.
        ca.clear_channel(ca.create_channel(PREFIX + "NOBODY-SERVES-THIS", connect=False))
        self.chids: dict[str, Any] = {}
        self.keep: list[Any] = []

    def connect(self, names: Sequence[str], timeout: float) -> None:
        ca = self.ca
        new = {name: ca.create_channel(name, connect=False) for name in names}
        for name, chid in new.items():
            if not ca.connect_channel(chid, timeout=timeout):
                raise RuntimeError(f"{name} did not connect")
        self.chids.update(new)

    def gets(self, name: str, n: int) -> float:
        chid, get = self.chids[name], self.ca.get
        start = time.perf_counter()
        for _ in range(n):
            if get(chid, timeout=5.0) is None:
                raise RuntimeError("get failed")
        return time.perf_counter() - start

    def arrays(self, name: str, n: int) -> float:
        chid, get = self.chids[name], self.ca.get
        start = time.perf_counter()
        for _ in range(n):
            value = get(chid, timeout=30.0)
            if value is None or len(value) != WAVEFORM_LENGTH:
                raise RuntimeError("array get failed")
        return time.perf_counter() - start

    def subscribe(self, names: Sequence[str], callback: Callable[[], None]) -> None:
        def on_update(**kwargs: Any) -> None:
            callback()

        for name in names:
            self.keep.append(self.ca.create_subscription(self.chids[name], callback=on_update))


class CaiocAsyncClient(Client):
    """caioc's asyncio client; every phase runs (and is timed) inside the loop.

    The loop runs on a thread of its own so that the driver can stay
    blocking; the work and the timing of each phase happen in one coroutine.
    """

    def __init__(self) -> None:
        import asyncio

        from caioc.client import ClientConfig, Context

        self.asyncio = asyncio
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.ctx = Context(ClientConfig.from_environment())
        self.run(self.ctx.start())  # sockets and tasks up before any timing
        self.channels: dict[str, Any] = {}
        self.keep: list[Any] = []

    def run(self, coroutine: Any, timeout: float = 120.0) -> Any:
        return self.asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def connect(self, names: Sequence[str], timeout: float) -> None:
        async def connect() -> list[Any]:
            return await self.ctx.connect(*names, timeout=timeout)

        self.channels.update(zip(names, self.run(connect(), timeout + 10), strict=True))

    def gets(self, name: str, n: int) -> float:
        channel = self.channels[name]

        async def gets() -> float:
            start = time.perf_counter()
            for _ in range(n):
                await channel.read(timeout=5.0)
            return time.perf_counter() - start

        return float(self.run(gets()))

    def arrays(self, name: str, n: int) -> float:
        channel = self.channels[name]

        async def arrays() -> float:
            start = time.perf_counter()
            for _ in range(n):
                reading = await channel.read(timeout=30.0)
                if len(reading.value) != WAVEFORM_LENGTH:
                    raise RuntimeError("short array")
            return time.perf_counter() - start

        return float(self.run(arrays()))

    def subscribe(self, names: Sequence[str], callback: Callable[[], None]) -> None:
        def on_update(reading: Any) -> None:
            callback()

        async def subscribe() -> None:
            for name in names:
                self.keep.append(await self.channels[name].subscribe(callback=on_update))

        self.run(subscribe())


class CaiocThreadedClient(Client):
    def __init__(self) -> None:
        from caioc.client import ClientConfig, ThreadedContext

        self.ctx = ThreadedContext(ClientConfig.from_environment())
        self.keep: list[Any] = []

    def connect(self, names: Sequence[str], timeout: float) -> None:
        self.ctx.connect(*names, timeout=timeout)

    def gets(self, name: str, n: int) -> float:
        read = self.ctx.read
        start = time.perf_counter()
        for _ in range(n):
            read(name, timeout=5.0)
        return time.perf_counter() - start

    def arrays(self, name: str, n: int) -> float:
        read = self.ctx.read
        start = time.perf_counter()
        for _ in range(n):
            if len(read(name, timeout=30.0).value) != WAVEFORM_LENGTH:
                raise RuntimeError("short array")
        return time.perf_counter() - start

    def subscribe(self, names: Sequence[str], callback: Callable[[], None]) -> None:
        def on_update(reading: Any) -> None:
            callback()

        for name in names:
            self.keep.append(self.ctx.subscribe(name, on_update))


class CaprotoClient(Client):
    def __init__(self) -> None:
        import logging

        from caproto.threading.client import Context

        logging.getLogger("caproto").setLevel(logging.ERROR)
        self.ctx = Context()  # addresses from the (loopback) environment
        self.pvs: dict[str, Any] = {}
        self.keep: list[Any] = []

    def connect(self, names: Sequence[str], timeout: float) -> None:
        pvs = self.ctx.get_pvs(*names, timeout=timeout)
        for pv in pvs:
            pv.wait_for_connection(timeout=timeout)
        self.pvs.update(zip(names, pvs, strict=True))

    def gets(self, name: str, n: int) -> float:
        pv = self.pvs[name]
        start = time.perf_counter()
        for _ in range(n):
            pv.read(timeout=5.0)
        return time.perf_counter() - start

    def arrays(self, name: str, n: int) -> float:
        pv = self.pvs[name]
        start = time.perf_counter()
        for _ in range(n):
            if len(pv.read(timeout=30.0).data) != WAVEFORM_LENGTH:
                raise RuntimeError("short array")
        return time.perf_counter() - start

    def subscribe(self, names: Sequence[str], callback: Callable[[], None]) -> None:
        def on_update(sub: Any, response: Any) -> None:
            callback()

        self.keep.append(on_update)  # caproto holds callbacks weakly
        for name in names:
            sub = self.pvs[name].subscribe()
            sub.add_callback(on_update)
            self.keep.append(sub)


def make_client(kind: str) -> Client:
    return {
        "pyepics": PyepicsClient,
        "caioc": CaiocAsyncClient,
        "caioc-threaded": CaiocThreadedClient,
        "caproto": CaprotoClient,
    }[kind]()


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.count += 1


def run_client(spec: Mapping[str, Any]) -> None:
    """The main workload against the server; figures on stdout as ``R key value``."""
    counts = spec["counts"]
    client = make_client(spec["kind"])
    names = channel_names(int(counts["channels"]))

    def report(key: str, value: float) -> None:
        print(f"R {key} {value!r}", flush=True)

    start, cpu = time.perf_counter(), time.process_time()
    client.connect(names, timeout=30.0)
    report("connect", time.perf_counter() - start)
    # CPU of every thread of this client: less at the mercy of a busy host
    report("connect_cpu", time.process_time() - cpu)
    if counts.get("connect_only"):
        print("BYE", flush=True)
        return

    client.connect([GET_PV, WAVEFORM_PV, MONITOR_PV], timeout=10.0)
    client.gets(GET_PV, 20)  # warm-up
    report("get", client.gets(GET_PV, int(counts["gets"])) / int(counts["gets"]))
    client.arrays(WAVEFORM_PV, 1)
    arrays = int(counts["arrays"])
    report("array", arrays * WAVEFORM_LENGTH * 8 / h.MB / client.arrays(WAVEFORM_PV, arrays))

    # Idle: 1000 subscriptions, each has had its first update; no traffic.
    idle = Counter()
    client.subscribe(names, idle)
    deadline = time.monotonic() + 30.0
    while idle.count < len(names) and time.monotonic() < deadline:
        time.sleep(0.01)
    if idle.count < len(names):
        raise RuntimeError(f"only {idle.count} of {len(names)} first updates")
    print("IDLE_READY", flush=True)
    _expect_stdin("NEXT")

    monitor = Counter()
    client.subscribe([MONITOR_PV], monitor)
    deadline = time.monotonic() + 10.0
    while monitor.count < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    print(f"MON_READY {monitor.count}", flush=True)
    while True:
        line = sys.stdin.readline().strip()
        if line == "COUNT":
            with monitor.lock:
                print(f"COUNT {monitor.count} {time.monotonic()!r}", flush=True)
        else:
            break
    print("BYE", flush=True)


def run_late(spec: Mapping[str, Any]) -> None:
    """Search for a PV whose server is not up yet; print when it connects."""
    client = make_client(spec["kind"])
    done = threading.Event()

    def connect() -> None:
        client.connect([GET_PV], timeout=60.0)
        print(f"CONNECTED {time.monotonic()!r}", flush=True)
        done.set()

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    time.sleep(0.05)  # the first searches are out
    print("SEARCHING", flush=True)
    done.wait(70.0)
    _expect_stdin("EXIT")


def peer_main(role: str, spec: Mapping[str, Any]) -> int:
    {"server": serve_softioc, "putter": run_putter, "client": run_client, "late": run_late}[role](
        spec
    )
    return 0


# ==========================================================================
# The orchestrator


def peer(name: str, role: str, spec: Mapping[str, Any], env: Mapping[str, str]) -> h.Process:
    argv = [sys.executable, str(Path(__file__).resolve()), "--peer", role, json.dumps(spec)]
    return h.Process(name, argv, env)


KEYS_FIRST = ("connect", "connect_cpu", "get", "array")


def measure_client(
    kind: str, env: Mapping[str, str], counts: Mapping[str, Any], started: list[h.Process]
) -> dict[str, float]:
    result: dict[str, float] = {}
    client = peer(f"{kind} client", "client", {"kind": kind, "counts": counts}, env)
    started.append(client)
    try:
        connect_only = bool(counts.get("connect_only"))
        for key in ("connect", "connect_cpu") if connect_only else KEYS_FIRST:
            line = client.expect("R ", 300.0)
            got, value = line.split()
            if got != key:
                raise h.PeerError(f"{kind}: expected {key}, got {line}")
            result[key] = float(value)
        if connect_only:
            client.expect("BYE", 10.0)
            missing = [key for key, *_ in ROWS if key not in result] + ["offered"]
            return result | dict.fromkeys(missing, math.nan)
        client.expect("IDLE_READY", 60.0)
        time.sleep(1.0)
        result["idle"] = h.idle_cpu_percent(client.pid, float(counts["idle"]))
        result["idle_rss"] = h.rss_mb(client.pid)
        client.send("NEXT")
        first = client.expect("MON_READY", 30.0)
        putter = peer("putter", "putter", {"rate": counts["monitor_rate"]}, env)
        started.append(putter)
        try:
            putter.expect("READY", 30.0)
            putter.send("GO")
            time.sleep(0.5)
            client.send("COUNT")
            n0, t0 = map(float, client.expect("COUNT ", 10.0).split())
            time.sleep(float(counts["monitor_seconds"]))
            client.send("COUNT")
            n1, t1 = map(float, client.expect("COUNT ", 10.0).split())
            putter.send("STOP")
            sent = json.loads(putter.expect("DONE ", 10.0))
            result["monitor"] = (n1 - n0) / (t1 - t0)
            result["offered"] = sent["sent"] / sent["seconds"]
            if n1 - n0 == 0:
                print(f"{kind}: no monitor events (first update count {first})", file=sys.stderr)
        finally:
            putter.stop(grace=2.0)
        client.send("EXIT")
        client.expect("BYE", 10.0)
    finally:
        client.stop(grace=2.0)
    return result


def wait_until_idle(pid: int, window: float = 0.1, busy: float = 0.005, limit: float = 5.0) -> None:
    """Wait (at most ``limit`` s) until process ``pid`` uses under ``busy`` s of CPU per ``window``.

    A server still busy after the previous client (tearing down its
    thousand channels, say) slows whichever client comes next: without
    this wait, the caioc client that mostly followed pyepics in the
    rotation connected measurably slower than the one that did not.
    """
    deadline = time.monotonic() + limit
    before = h.process_cpu(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = h.process_cpu(pid)
        if (now - before).best < busy:
            return
        before = now


def _udp_port_held(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def start_repeater(env: Mapping[str, str], started: list[h.Process]) -> h.Process:
    """caioc's repeater on the environment's repeater port, bound when this returns.

    Every client registers with it (libca and caproto too), so all of them
    hear the beacons, as on a host where a repeater runs.
    """
    port = int(env["EPICS_CA_REPEATER_PORT"])
    argv = [sys.executable, "-m", "caioc.cli.repeater", "--port", str(port)]
    repeater = h.Process("repeater", argv, env)
    started.append(repeater)
    deadline = time.monotonic() + 30.0
    while not _udp_port_held(port):
        if repeater.process.poll() is not None or time.monotonic() > deadline:
            raise h.PeerError(repeater._report("did not bind its port"))
        time.sleep(0.01)
    return repeater


def measure_late(kind: str, delay: float, started: list[h.Process], repeater: bool) -> float:
    """Seconds from a late server's READY to the client connected."""
    env = h.loopback_ca_environment(h.free_port(), h.free_port())
    if not repeater:
        env["CAIOC_CA_SPAWN_REPEATER"] = "NO"  # as the others: no repeater at all
    helper = start_repeater(env, started) if repeater else None
    client = peer(f"{kind} late client", "late", {"kind": kind}, env)
    started.append(client)
    server = None
    try:
        client.expect("SEARCHING", 60.0)
        time.sleep(delay)
        server = peer("late softioc", "server", {"channels": 0, "waveform": False}, env)
        started.append(server)
        ready, _ = server.expect_timed("READY", 60.0)
        connected = float(client.expect("CONNECTED ", 65.0))
        client.send("EXIT")
        return connected - ready
    finally:
        client.stop(grace=2.0)
        if server is not None:
            server.stop()
        if helper is not None:
            helper.stop()


ROWS = (
    # key, label, unit, scale, higher is better
    ("connect", "connect 1000 channels", "s", 1.0, False),
    ("connect_cpu", "  client CPU during it", "s", 1.0, False),
    ("get", "get DBR_DOUBLE round trip", "µs", 1e6, False),
    ("array", "read 8 MB DOUBLE array", "MB/s", 1.0, True),
    ("monitor", "monitor events received", "ev/s", 1.0, True),
    ("late", "late server: READY -> connected", "s", 1.0, False),
    ("idle", "idle CPU, 1000 subscriptions", "% core", 1.0, False),
    ("idle_rss", "client RSS with 1000 subscriptions", "MB", 1.0, False),
)


def best(values: Sequence[float], higher: bool) -> float:
    return max(values) if higher else min(values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = h.base_parser(__doc__.split("\n")[0])
    parser.add_argument(
        "--clients",
        default=",".join(CLIENTS),
        help=f"comma-separated clients, of {','.join(CLIENTS)} (default all)",
    )
    parser.add_argument(
        "--no-repeater",
        action="store_true",
        help="run no CA repeater (and let no client start one): clients then find a late "
        "server by their search back-off alone",
    )
    parser.add_argument(
        "--connect-only",
        action="store_true",
        help="measure only the connect case (quick; use --repeats 10 or more: the "
        "medians are printed too)",
    )
    args = parser.parse_args(argv)
    repeater = not args.no_repeater
    kinds = [k for k in CLIENTS if k in args.clients.split(",")]
    if not kinds:
        parser.error("no known client in --clients")
    counts = dict(QUICK if args.quick else FULL)
    if args.repeats:
        counts["repeats"] = args.repeats
    if args.connect_only:
        counts["connect_only"] = True
    repeats = int(counts["repeats"])
    print(
        f"clients {', '.join(kinds)} against softioc {h.package_version('softioc')}; "
        f"{repeats} repeat(s); {'a' if repeater else 'no'} CA repeater; "
        f"pyepics {h.package_version('pyepics')}, "
        f"caproto {h.package_version('caproto')}; Python {sys.version.split()[0]}",
        file=sys.stderr,
    )
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    started_at = time.monotonic()
    with h.processes() as started:
        env = h.loopback_ca_environment(h.free_port(), h.free_port())
        if repeater:
            start_repeater(env, started)
        else:
            env["CAIOC_CA_SPAWN_REPEATER"] = "NO"
        server = peer("softioc", "server", {"channels": counts["channels"], "waveform": True}, env)
        started.append(server)
        server.expect("READY", 120.0)
        for repeat in range(repeats):
            order = kinds[repeat % len(kinds) :] + kinds[: repeat % len(kinds)]
            for kind in order:
                print(f"repeat {repeat + 1}/{repeats}: {kind}", file=sys.stderr)
                time.sleep(0.3)
                wait_until_idle(server.pid)
                run = measure_client(kind, env, counts, started)
                if not args.connect_only:
                    run["late"] = measure_late(kind, float(counts["late_delay"]), started, repeater)
                runs[kind].append(run)
    print(f"finished in {time.monotonic() - started_at:.0f} s", file=sys.stderr)

    figures: dict[str, dict[str, float]] = {}
    for key, _, _, scale, higher in ROWS:
        figures[key] = {k: best([r[key] for r in runs[k]], higher) * scale for k in kinds}
    offered = min(r["offered"] for k in kinds for r in runs[k])

    pairs = [(a, b) for a, b in (("caioc", "pyepics"), ("caioc", "caproto")) if a in kinds]
    pairs += [(a, b) for a, b in (("caioc-threaded", "pyepics"),) if a in kinds]
    pairs = [(a, b) for a, b in pairs if b in kinds]
    headers = ["case", "unit", *kinds, *(f"{a}/{b}" for a, b in pairs)]
    table = []
    for key, label, unit, _, _ in ROWS:
        if args.connect_only and not key.startswith("connect"):
            continue
        cells = [label, unit, *(_fmt(figures[key][k]) for k in kinds)]
        cells += [h.format_ratio(h.ratio(figures[key][a], figures[key][b])) for a, b in pairs]
        table.append(cells)
    print()
    monitor = "" if args.connect_only else f"monitor offered ~{offered:,.0f} puts/s by a libca "
    print(
        f"One softioc server (C rsrv) on loopback; best of {repeats} repeat(s); "
        + (f"{monitor}putter; " if monitor else "")
        + "ratios are figure/figure (for s, µs, %, MB below 1.00x is better; for MB/s, "
        "ev/s above)."
    )
    print(h.format_table(headers, table, right=set(range(2, len(headers)))))
    if args.connect_only:
        medians = {k: statistics.median(r["connect"] for r in runs[k]) for k in kinds}
        print(
            "connect, median of the repeats: "
            + ", ".join(f"{k} {_fmt(medians[k])} s" for k in kinds)
            + "".join(
                f"; {a}/{b} {h.format_ratio(h.ratio(medians[a], medians[b]))}" for a, b in pairs
            )
        )
    if args.json:
        h.write_json(
            args.json,
            "bench_client",
            [],
            h.settings_from(args),
            packages=("caioc", "caproto", "pyepics", "softioc", "numpy"),
            extra={"counts": counts, "figures": figures, "runs": runs, "offered": offered},
        )
    return 0


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:,.1f}"
    if value >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        sys.exit(peer_main(sys.argv[2], json.loads(sys.argv[3])))
    sys.exit(main())

"""The server processes of bench_server.py, and the PV names they serve.

``python benchmarks/_server_peer.py KIND CHANNELS [--db PATH] [--tune-malloc] [--profile PATH]``
serves the benchmark's PVs (``CHANNELS`` scalar channels besides the named
ones, both waveforms) with KIND until killed, and prints ``READY <port>``
once it serves:

* ``softioc``: the soft ``ao`` records of the ``.db`` file at PATH (written
  by the orchestrator, as an IOC's database is a file) and two builder
  waveforms, served by the C rsrv;
* ``caioc``: ``caioc.server.Server`` over ``ChannelDouble`` channels;
* ``caproto``: ``caproto.asyncio.server.Context`` over ``ChannelDouble``.

Two more kinds measure floors: ``floor`` prints READY at once (the
interpreter's own start), ``floor-numpy-asyncio`` after importing numpy and
asyncio and filling both waveforms (what any numpy/asyncio server of these
PVs starts from).

Fairness: a server's start-up time and RSS are the benchmark's figures,
so this file imports only ``os`` and ``sys`` at its top (and
``collections.abc``, a small alias of a module the interpreter has loaded
already), and each kind
imports just its own library (numpy, asyncio, and cProfile with
``--profile``), as a real IOC of that kind does: nothing of the harness,
the orchestrator (json, threading, subprocess, statistics ...) or the
client side. ``bench_server.py`` takes the PV names from here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable  # _collections_abc is loaded at start-up

PREFIX = "BENCH:"
GET_PV = PREFIX + "GET"
PUT_PV = PREFIX + "PUT"
MONITOR_PV = PREFIX + "MON"
#: The 1 MiB DOUBLE waveform (131072 elements).
WAVEFORM_PV = PREFIX + "WF"
WAVEFORM_LENGTH = 131072
#: The 8 MB DOUBLE waveform (10**6 elements).
WAVEFORM8_PV = PREFIX + "WF8"
WAVEFORM8_LENGTH = 1_000_000
#: The writable counter: puts to it with a monitor on it (group 6).
COUNTER_PV = PREFIX + "COUNT"
#: The PVs the load of group 9 updates at 100 Hz.
RATE_PVS = [f"{PREFIX}R{i:02d}" for i in range(10)]
KINDS = ("softioc", "caioc", "caproto", "floor", "floor-numpy-asyncio")


def channel_names(count: int) -> list[str]:
    return [f"{PREFIX}C{i:04d}" for i in range(count)]


def scalar_names(channels: int) -> list[str]:
    """Every scalar PV: the named ones and ``channels`` more."""
    return [GET_PV, PUT_PV, MONITOR_PV, COUNTER_PV, *RATE_PVS, *channel_names(channels)]


def soft_database(channels: int) -> str:
    """The softioc peer's ``.db`` file: a soft-channel ``ao`` per scalar.

    A put processes the record in C (builder's ``aOut`` would call Python
    device support on every put).
    """
    return "".join(f'record(ao, "{name}") {{\n}}\n' for name in scalar_names(channels))


def waveforms() -> dict[str, object]:
    """Both waveforms' names and contents (numpy arrays).

    Used in comprehensions, so that a server that copies an array frees the
    original, as one given ``np.arange(...)`` does.
    """
    import numpy as np

    return {
        WAVEFORM_PV: np.arange(WAVEFORM_LENGTH, dtype=np.float64),
        WAVEFORM8_PV: np.arange(WAVEFORM8_LENGTH, dtype=np.float64),
    }


def serve_softioc(database: str) -> None:
    from softioc import asyncio_dispatcher, builder, softioc

    softioc.dbLoadDatabase(database)
    # Reads of a waveform never process it: rsrv copies the array in C.
    builder.SetDeviceName(PREFIX.rstrip(":"))
    for name, value in waveforms().items():
        builder.WaveformIn(name[len(PREFIX) :], initial_value=value)
    del value  # the record has its copy
    builder.LoadDatabase()
    softioc.iocInit(asyncio_dispatcher.AsyncioDispatcher(), enable_pva=False)
    print("READY", flush=True)
    softioc.non_interactive_ioc()


def serve_caioc(channels: int, profile: str | None) -> None:
    import asyncio

    from caioc.server import ChannelDouble, Server, ServerConfig

    pvdb = {name: ChannelDouble(value=0.0) for name in scalar_names(channels)}
    pvdb.update({name: ChannelDouble(value=value) for name, value in waveforms().items()})

    async def main() -> None:
        server = Server(pvdb, ServerConfig.from_environment())
        await server.start()
        print("READY", server.tcp_port, flush=True)
        await asyncio.Future()

    _run_maybe_profiled(lambda: asyncio.run(main()), profile)


def serve_caproto(channels: int, profile: str | None) -> None:
    import asyncio
    import logging

    from caproto import ChannelDouble
    from caproto.asyncio.server import Context

    logging.getLogger("caproto").setLevel(logging.ERROR)
    pvdb = {name: ChannelDouble(value=0.0) for name in scalar_names(channels)}
    pvdb.update({name: ChannelDouble(value=value) for name, value in waveforms().items()})

    async def ready(async_lib: object) -> None:
        print("READY", context.port, flush=True)

    context: Context

    async def main() -> None:
        nonlocal context
        context = Context(pvdb)  # interfaces and ports from the environment
        await context.run(startup_hook=ready)

    _run_maybe_profiled(lambda: asyncio.run(main()), profile)


def floor_numpy_asyncio() -> None:
    import asyncio  # noqa: F401  (imported for its cost, as every server here does)

    kept = waveforms()
    print("READY", flush=True)
    sys.stdin.readline()
    del kept


def _run_maybe_profiled(run: Callable[[], None], profile: str | None) -> None:
    """Call ``run``; with ``profile``, under cProfile, written there on SIGINT."""
    if profile is None:
        run()
        return
    import cProfile
    import signal

    profiler = cProfile.Profile()

    def dump(signum: int, frame: object) -> None:
        profiler.disable()
        profiler.dump_stats(profile)
        print("PROFILED", flush=True)
        os._exit(0)

    signal.signal(signal.SIGINT, dump)
    profiler.enable()
    run()


def command(
    kind: str,
    channels: int,
    *,
    database: str | None = None,
    tune_malloc: bool = False,
    profile: str | None = None,
) -> list[str]:
    """The command line of one peer process of ``kind``."""
    argv = [sys.executable, os.path.abspath(__file__), kind, str(channels)]
    if database is not None:
        argv += ["--db", database]
    if tune_malloc:
        argv.append("--tune-malloc")
    if profile is not None:
        argv += ["--profile", profile]
    return argv


def main(argv: list[str]) -> int:
    kind, channels, options = argv[0], int(argv[1]), argv[2:]
    if kind not in KINDS:
        raise SystemExit(f"unknown kind {kind!r}, not one of {', '.join(KINDS)}")

    def option(name: str) -> str | None:
        return options[options.index(name) + 1] if name in options else None

    if "--tune-malloc" in options:
        from _malloc import tune_malloc

        tune_malloc()
    if kind == "floor":
        print("READY", flush=True)
        sys.stdin.readline()
    elif kind == "floor-numpy-asyncio":
        floor_numpy_asyncio()
    elif kind == "softioc":
        database = option("--db")
        if database is None:
            raise SystemExit("softioc needs --db PATH")
        serve_softioc(database)
    elif kind == "caioc":
        serve_caioc(channels, option("--profile"))
    else:
        serve_caproto(channels, option("--profile"))
    return 0


if __name__ == "__main__":
    # From a plain checkout caioc is importable from the repository root;
    # appended, so that an installed caioc still comes first.
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main(sys.argv[1:]))

"""Running CA peers on loopback for tests: our server, softioc, pyepics.

libca reads its environment once, so every peer runs in its own process
with an environment made for the test: loopback only, a free server port
and a repeater port of its own.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import random
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caioc.server import Server, ServerConfig

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def importable(name: str) -> bool:
    """Whether module ``name`` imports here: installed is not enough (curio 1.6
    is installed but fails to import on Python 3.13)."""
    try:
        importlib.import_module(name)
    except Exception:
        return False
    return True


def async_libraries() -> list[Any]:
    """asyncio, trio and curio as pytest params, each skipped where it does not import."""
    import pytest

    return [
        pytest.param(
            name,
            marks=pytest.mark.skipif(not importable(name), reason=f"{name} does not import here"),
        )
        for name in ("asyncio", "trio", "curio")
    ]


#: The discard port: beacons sent here reach nobody (a quiet test server).
NOWHERE = ("127.0.0.1", 9)

#: Bounded waits for code run in a child process (a pyepics client, a
#: server script), which cannot import ``waiting``: ``until(condition,
#: what)`` returns once ``condition()`` holds, ``read_until(read, check,
#: what)`` returns the first ``read()`` that passes ``check``; both raise
#: AssertionError naming ``what`` after ``timeout`` seconds. libca runs
#: monitor callbacks on its own threads, so sleeping between looks is fine.
SCRIPT_WAITS = """
import time as _time

def read_until(read, check, what, timeout=10.0):
    deadline = _time.monotonic() + timeout
    while True:
        value = read()
        if check(value):
            return value
        if _time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        _time.sleep(0.005)

def until(condition, what, timeout=10.0):
    read_until(condition, bool, what, timeout)
"""


#: Ports handed out by free_port in this process (never twice).
_GIVEN: set[int] = set()
#: Where free_port looks: below Linux's ephemeral range (32768-60999), so a
#: port it gives out is never the client end of some connection, or one of
#: its TIME_WAIT leftovers, by the time a server binds it (softioc's rsrv
#: then fails with "CAS: No TCP server started").
_PORTS = range(20000, 32768)


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 right now, not given out before."""
    while True:
        port = random.choice(_PORTS)
        if port in _GIVEN:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                tcp.bind(("127.0.0.1", port))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        _GIVEN.add(port)
        return port


#: The end of a server script that has defined ``pvdb``: serve it with our
#: server on the environment's port, print "READY <port>", serve until killed.
SERVE_PVDB = """
import asyncio as _asyncio
from caioc.server import Server as _Server, ServerConfig as _ServerConfig

async def _serve_pvdb():
    server = _Server(pvdb, _ServerConfig.from_environment())
    await server.start()
    print("READY", server.tcp_port, flush=True)
    await _asyncio.Future()

_asyncio.run(_serve_pvdb())
"""


def server_config(
    port: int = 0, beacons: tuple[str, int] = NOWHERE, **options: Any
) -> ServerConfig:
    """A server on 127.0.0.1 only, beaconing to ``beacons`` (by default nobody).

    ``port=0`` lets the system pick a free port; ``options`` are further
    ServerConfig fields.
    """
    from caioc.server import ServerConfig  # only the tests that serve need it

    return ServerConfig(
        port=port,
        interfaces=["127.0.0.1"],
        beacon_addresses=[beacons],
        auto_beacon_addresses=False,
        **options,
    )


@asynccontextmanager
async def serving(
    pvdb: dict[str, Any], config: ServerConfig | None = None
) -> AsyncIterator[Server]:
    """Our server in this process on ``config`` (by default server_config()); stopped after."""
    from caioc.server import Server

    server = Server(pvdb, config or server_config())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def ca_environment(server_port: int, repeater_port: int) -> dict[str, str]:
    """EPICS variables for a loopback-only test run."""
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
        # caioc's tools would start a repeater as libca does; the tests that
        # want one start it themselves.
        CAIOC_CA_SPAWN_REPEATER="NO",
    )
    return env


@contextmanager
def process_until_ready(
    code: str,
    env: dict[str, str],
    timeout: float = 30.0,
    ready: str = "READY",
    argv: list[str] | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """Run ``code`` (or ``argv``) until it prints a line starting ``ready``; kill it after.

    A peer that neither gets ready nor exits within ``timeout`` is killed,
    so a silent, hung peer fails the test instead of hanging the run.
    """
    process = subprocess.Popen(
        argv or [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        process.kill()  # readline() below then sees the end of the output

    watchdog = threading.Timer(timeout, expire)
    watchdog.start()
    try:
        assert process.stdout is not None
        seen: list[str] = []
        while (line := process.stdout.readline()) and not line.startswith(ready):
            seen.append(line)
        watchdog.cancel()
        if expired.is_set():
            raise RuntimeError(f"peer not {ready} within {timeout} s:\n" + "".join(seen))
        if not line:
            raise RuntimeError(f"peer exited before {ready}:\n" + "".join(seen))
        yield process
    finally:
        watchdog.cancel()
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def run_to_end(
    argv: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` from the repository root with no input, to its end; its output as text."""
    return subprocess.run(
        argv,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_pyepics(code: str, env: dict[str, str], timeout: float = 60.0) -> Any:
    """Run client ``code`` with pyepics (libca); it sets ``result``; return it.

    The code runs with ``epics`` imported and the waits of SCRIPT_WAITS
    defined, and must assign a JSON-able value to ``result``.
    """
    program = (
        "import json, epics, epics.ca\n"
        + SCRIPT_WAITS
        + textwrap.dedent(code)
        + "\nprint('RESULT ' + json.dumps(result), flush=True)\n"
        + "epics.ca.finalize_libca()\n"
    )
    completed = run_to_end([sys.executable, "-c", program], env, timeout)
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(
        f"pyepics client failed (exit {completed.returncode}):\n"
        f"{completed.stdout}\n{completed.stderr}"
    )


def run_pyepics_each(code: str, envs: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The ``result`` of ``code`` run by libca against each server of ``envs``, at once."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(envs)) as pool:
        futures = {name: pool.submit(run_pyepics, code, env) for name, env in envs.items()}
        return {name: future.result() for name, future in futures.items()}


def serving_board(
    name: str, env: dict[str, str], *options: str
) -> AbstractContextManager[subprocess.Popen[str]]:
    """``caioc run NAME --sim --list-pvs``: a board file's IOC on simulated hardware.

    Entered once it has printed its PV list (it is then serving); killed on the way out.
    """
    argv = [sys.executable, "-m", "caioc.cli.main", "run", name, "--sim", "--list-pvs", *options]
    return process_until_ready("", env, ready="PVs:", argv=argv)

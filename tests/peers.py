"""Running CA peers on loopback for tests: our server, softioc, pyepics.

libca reads its environment once, so every peer runs in its own process
with an environment made for the test: loopback only, a free server port
and a repeater port of its own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return int(port)


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
    """Run ``code`` (or ``argv``) until it prints a line starting ``ready``; kill it after."""
    process = subprocess.Popen(
        argv or [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        assert process.stdout is not None
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("peer exited before READY:\n" + "".join(seen))
            seen.append(line)
            if line.startswith(ready):
                break
        else:
            raise RuntimeError("peer not READY in time:\n" + "".join(seen))
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def run_pyepics(code: str, env: dict[str, str], timeout: float = 60.0) -> Any:
    """Run client ``code`` with pyepics (libca); it sets ``result``; return it.

    The code runs with ``epics`` imported and must assign a JSON-able value
    to ``result``.
    """
    program = (
        "import json, epics, epics.ca\n"
        + textwrap.dedent(code)
        + "\nprint('RESULT ' + json.dumps(result), flush=True)\n"
        + "epics.ca.finalize_libca()\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(
        f"pyepics client failed (exit {completed.returncode}):\n"
        f"{completed.stdout}\n{completed.stderr}"
    )

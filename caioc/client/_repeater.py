"""Starting a CA repeater on demand, as libca starts caRepeater.

A client hears beacons only through the repeater, which must hold the
repeater port before any client registers. libca tests whether the port is
free and, if so, starts ``caRepeater`` detached; caioc starts its own
(``python -m caioc.cli.repeater``) the same way. The repeater is asked to
exit once no client has been registered for a while, so one started for a
short script does not outlive it forever.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

__all__ = ["IDLE_EXIT", "repeater_port_held", "spawn_repeater"]

log = logging.getLogger("caioc.client")

#: Seconds a repeater started by a client lives on without any client.
IDLE_EXIT = 10.0


def repeater_port_held(port: int) -> bool:
    """Whether some socket holds UDP ``port`` on this host (libca's test).

    A repeater binds its port without SO_REUSEADDR, so binding it here
    fails while one runs. Errors other than "in use" count as held: when
    in doubt, do not start a second repeater.
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("0.0.0.0", port))
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            log.debug("bind test of UDP port %d failed: %s", port, error)
        return True
    finally:
        probe.close()
    return False


async def spawn_repeater(port: int, idle_exit: float = IDLE_EXIT) -> int | None:
    """Start a detached repeater on ``port``; its process id, or None on failure.

    The repeater runs in a session of its own (a Ctrl-C meant for the
    client does not reach it) and is not our child once started: a shell
    puts it in the background and exits, so no zombie and no process handle
    stays behind in the client. The shell runs on a worker thread: it takes
    a few milliseconds, and a cancelled caller leaves nothing half done.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _spawn, port, idle_exit)


def _spawn(port: int, idle_exit: float) -> int | None:
    package_root = str(Path(__file__).resolve().parent.parent.parent)
    env = dict(os.environ)
    # The repeater must import the same caioc, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    argv = [
        sys.executable,
        "-m",
        "caioc.cli.repeater",
        "--port",
        str(port),
        "--exit-when-idle",
        str(idle_exit),
    ]
    script = shlex.join(argv) + " </dev/null >/dev/null 2>&1 & echo $!"
    try:
        shell = subprocess.run(
            ["/bin/sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
            cwd="/",
            timeout=10,
            check=True,
        )
        pid = int(shell.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, IndexError, ValueError) as error:
        log.warning("cannot start a CA repeater on UDP port %d: %s", port, error)
        return None
    log.info("started a CA repeater (pid %d) on UDP port %d", pid, port)
    return pid

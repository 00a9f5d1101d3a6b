"""What the soak tests share: the server in its own process, raw clients, checks.

The server runs in a child process (``soak_server.py``) so that its RSS,
threads, file descriptors and CPU can be read from ``/proc`` without the
test's own sockets and objects in the figures. The test talks to it over
stdin/stdout and watches its circuits come and go from the lines it prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from peers import ROOT, ca_environment, free_port, run_pyepics

from caioc.ca import (
    NEED_DATA,
    ChannelType,
    Command,
    EventAddResponse,
    Role,
    VersionRequest,
    VirtualCircuit,
)

HERE = Path(__file__).resolve().parent

#: Bound on any single wait for the server process.
TIMEOUT = 30.0


def pv_names(count: int) -> list[str]:
    """The names soak_server.py serves (``SOAK:0000`` ...)."""
    return [f"SOAK:{i:04d}" for i in range(count)]


class Child:
    """A child process whose output a thread collects; every wait is bounded."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.env = env
        self.process = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.tail: deque[str] = deque(maxlen=50)
        threading.Thread(target=self._drain, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _drain(self) -> None:
        assert self.process.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.process.stdout:
                self.tail.append(line)
                self.take(line)
        self.lines.put(None)

    def take(self, line: str) -> None:
        """Handle one line of output (queued for :meth:`expect`)."""
        self.lines.put(line)

    def expect(self, prefix: str, timeout: float = TIMEOUT) -> str:
        """The rest of the next line starting with ``prefix`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(self._report(f"no {prefix} in {timeout:g} s")) from None
            if line is None:
                self.lines.put(None)
                raise AssertionError(self._report(f"exited before {prefix}"))
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def alive(self) -> bool:
        return self.process.poll() is None

    def _report(self, what: str) -> str:
        return f"{self.name}: {what}; its last output:\n" + "".join(self.tail)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class SoakServer(Child):
    """The caioc server in its own process, asked for its figures over a pipe."""

    def __init__(self, spec: dict[str, Any]) -> None:
        #: (monotonic time, + or -, circuits after) for every circuit change.
        self.circuit_events: list[tuple[float, str, int]] = []
        self.circuits = 0
        env = ca_environment(free_port(), free_port())
        argv = [sys.executable, str(HERE / "soak_server.py"), json.dumps(spec)]
        super().__init__("soak server", argv, env)
        self.port = int(self.expect("READY"))

    def take(self, line: str) -> None:
        if line.startswith("CIRCUIT "):
            _, sign, when, count = line.split()
            self.circuit_events.append((float(when), sign, int(count)))
            self.circuits = int(count)
        else:
            self.lines.put(line)

    def command(self, line: str, reply: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.expect(reply)

    def stats(self) -> dict[str, Any]:
        """Circuits, subscriptions, pending, rss_kb, threads, fds, cpu (see soak_server.py)."""
        return dict(json.loads(self.command("STATS", "STATS ")))

    def cpu_seconds(self) -> float:
        """CPU (user + system) the server process has used so far, from /proc."""
        text = Path(f"/proc/{self.pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def soak_server(pvs: int = 10, **config: Any) -> Iterator[SoakServer]:
    server = SoakServer({"pvs": pvs, "config": config})
    try:
        yield server
    finally:
        server.close()


def well_behaved_get(env: dict[str, str], name: str) -> float:
    """A caget by the C client (pyepics/libca, in a process of its own)."""
    code = f"result = epics.caget({name!r}, timeout=5.0)"
    value = run_pyepics(code, env, timeout=60.0)
    if value is None:
        raise AssertionError(f"a well-behaved client could not read {name}")
    return float(value)


async def served(env: dict[str, str], name: str) -> float:
    """:func:`well_behaved_get` without blocking the test's event loop."""
    return await asyncio.to_thread(well_behaved_get, env, name)


_Client = TypeVar("_Client", bound="CoreClient")


class CoreClient(asyncio.Protocol):
    """A CA client made of caioc's core over one socket; it can stop reading."""

    def __init__(self) -> None:
        self.core = VirtualCircuit(Role.CLIENT, max_payload=10**8)
        self.transport: asyncio.Transport | None = None
        self.channels: list[Any] = []
        #: subscription id -> its newest value, and the number of updates.
        self.latest: dict[int, float] = {}
        self.updates = 0
        self.others: list[Command] = []
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls: type[_Client], port: int, receive_buffer: int | None = None) -> _Client:
        """Connect to 127.0.0.1:``port`` (with a small ``receive_buffer``, the
        socket fills sooner once the client stops reading)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        _, client = await loop.create_connection(cls, sock=sock)
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def data_received(self, data: bytes) -> None:
        core = self.core
        core.receive_data(data)
        while (command := core.next_command()) is not NEED_DATA:
            self.take(command)  # type: ignore[arg-type]

    def take(self, command: Command) -> None:
        """Keep one received command: an update's value, anything else as is."""
        if type(command) is EventAddResponse:
            self.latest[command.subscriptionid] = command.to_python()[0]
            self.updates += 1
        else:
            self.others.append(command)

    def send(self, *commands: Command) -> None:
        assert self.transport is not None
        self.transport.write(self.core.send(*commands))

    async def open(self, names: list[str], timeout: float = TIMEOUT) -> list[Any]:
        from waiting import until

        channels = [self.core.create_channel(name) for name in names]
        version = [] if self.channels else [VersionRequest(0)]  # once per circuit
        self.send(*version, *(channel.create() for channel in channels))
        await until(
            lambda: all(channel.sid is not None for channel in channels),
            f"{len(names)} channels to connect",
            timeout,
        )
        self.channels += channels
        return channels

    def subscribe(self, channel: Any, data_type: int = ChannelType.DOUBLE) -> int:
        request = channel.subscribe(data_type, 1)
        self.send(request)
        return int(request.subscriptionid)

    def pause(self) -> None:
        """Stop reading the socket (the server's writes back up)."""
        assert self.transport is not None
        self.transport.pause_reading()

    def resume(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def idle_socket(port: int) -> socket.socket:
    """A connection that never says anything."""
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)

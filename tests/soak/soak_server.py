"""A caioc server in a process of its own, for soak tests that watch its footprint.

Run as ``python soak_server.py SPEC`` (SPEC: JSON with ``pvs``, the number of
DOUBLE scalars ``SOAK:0000``...; ``config``, ServerConfig fields to override).
The server's RSS, threads, file descriptors and CPU are only meaningful
measured from its own process, which is why it is not run in the test's.

It prints ``READY <tcp port>`` once serving, and ``CIRCUIT <+|-> <monotonic
time> <count>`` whenever a circuit opens or closes (``time.monotonic`` is
one clock for every process on Linux, so the test can compare it with the
moment it killed a client). Commands, one per line on stdin:

``STATS``
    ``STATS {json}``: circuits, subscriptions, pending updates, circuits
    paused on a full socket, RSS (kB), threads, open file descriptors, CPU
    seconds so far.
``UPDATE <hz>``
    set every PV at ``hz``, each time to ``time.monotonic()`` (a client
    subtracts it from its own clock to get the latency); ``UPDATING``.
``STOP``
    stop updating; ``STOPPED {json}``: rounds done and each PV's last value.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from caioc.server import ChannelDouble, Server, ServerConfig


def pv_names(count: int) -> list[str]:
    return [f"SOAK:{i:04d}" for i in range(count)]


class WatchedCircuits(set[Any]):
    """The server's set of circuits, announcing each arrival and departure."""

    def add(self, circuit: Any) -> None:
        super().add(circuit)
        print(f"CIRCUIT + {time.monotonic():.6f} {len(self)}", flush=True)

    def discard(self, circuit: Any) -> None:
        if circuit in self:
            super().discard(circuit)
            print(f"CIRCUIT - {time.monotonic():.6f} {len(self)}", flush=True)


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def stats(server: Server, pvdb: dict[str, ChannelDouble]) -> dict[str, Any]:
    circuits = list(server.circuits)
    return {
        "circuits": len(circuits),
        "subscriptions": sum(data.subscription_count for data in pvdb.values()),
        "pending": sum(
            len(s.pending)
            for circuit in circuits
            for s in getattr(circuit, "subscriptions", {}).values()
        ),
        # circuits whose socket is full (the client is not reading)
        "paused": sum(1 for circuit in circuits if not getattr(circuit, "can_write", True)),
        "rss_kb": rss_kb(),
        "threads": len(os.listdir("/proc/self/task")),
        "fds": len(os.listdir("/proc/self/fd")),
        "cpu": time.process_time(),
    }


async def update(pvdb: dict[str, ChannelDouble], hz: float, done: list[int]) -> None:
    """Set every PV ``hz`` times a second (on a fixed schedule, no drift)."""
    loop = asyncio.get_running_loop()
    period = 1.0 / hz
    next_round = loop.time()
    channels = list(pvdb.values())
    while True:
        now = time.monotonic()
        for channel in channels:
            channel.set_nowait(now)
        done[0] += 1
        next_round += period
        # A server too busy to keep the schedule skips rounds, never bunches them.
        next_round = max(next_round, loop.time())
        await asyncio.sleep(next_round - loop.time())


async def main(spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    pvdb = {name: ChannelDouble(value=0.0) for name in pv_names(int(spec.get("pvs", 10)))}
    config = ServerConfig.from_environment()
    for name, value in spec.get("config", {}).items():
        setattr(config, name, value)
    server = Server(pvdb, config)
    server.circuits = WatchedCircuits()
    await server.start()
    print("READY", server.tcp_port, flush=True)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    updater: asyncio.Task[None] | None = None
    rounds = [0]
    while line := (await reader.readline()).decode().split():
        command = line[0]
        if command == "STATS":
            print("STATS", json.dumps(stats(server, pvdb)), flush=True)
        elif command == "UPDATE":
            rounds[0] = 0
            updater = loop.create_task(update(pvdb, float(line[1]), rounds))
            print("UPDATING", flush=True)
        elif command == "STOP":
            if updater is not None:
                updater.cancel()
                updater = None
            last = {name: data.value for name, data in pvdb.items()}
            print("STOPPED", json.dumps({"rounds": rounds[0], "last": last}), flush=True)
        else:
            print("UNKNOWN", command, flush=True)
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))

"""IOC statistics PVs, in the spirit of the iocStats module.

Add ``stats = SubGroup(StatsGroup, prefix="stats:")`` to an IOC and it
serves its uptime, CPU load, memory, and the clients and channels its
server carries, refreshed every few seconds. Readings come from /proc on
Linux (and ``resource``/``os`` elsewhere); nothing is spawned.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from typing import TYPE_CHECKING, Any

from ..server import ChannelData
from ._group import PVGroup, pvproperty

if TYPE_CHECKING:
    from ..server._server_logic import ServerLogic

__all__ = ["StatsGroup", "attach_server", "detach_server"]

_STARTED = time.monotonic()
#: The servers serving IOCs in this process (asyncio, trio or curio ones).
_servers: list[ServerLogic] = []


def attach_server(server: ServerLogic) -> None:
    """Let statistics count ``server``'s clients and channels."""
    _servers.append(server)


def detach_server(server: ServerLogic) -> None:
    """Stop counting ``server`` (it stopped)."""
    if server in _servers:
        _servers.remove(server)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        # ru_maxrss is the peak, in kB on Linux: the best we have elsewhere.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class StatsGroup(PVGroup):
    """Health of this IOC process."""

    uptime = pvproperty(0.0, units="s", precision=0, read_only=True, doc="Seconds since start")
    cpu = pvproperty(
        0.0,
        units="%",
        precision=1,
        read_only=True,
        upper_warning_limit=80.0,
        upper_alarm_limit=95.0,
        doc="CPU use of the IOC process",
    )
    memory = pvproperty(0.0, units="MB", precision=1, read_only=True, doc="Resident memory")
    clients = pvproperty(0, read_only=True, doc="Connected CA clients")
    channels = pvproperty(0, read_only=True, doc="Open CA channels")
    host = pvproperty(socket.gethostname()[:39], read_only=True, doc="Host name")
    pid = pvproperty(os.getpid(), read_only=True, doc="Process id")

    def __init__(self, prefix: str = "", **kwargs: Any) -> None:
        super().__init__(prefix, **kwargs)
        self._last_cpu = (_cpu_seconds(), time.monotonic())

    @uptime.scan(period=2.0)  # type: ignore[no-redef]  # the hook keeps the PV's name
    async def uptime(self, instance: ChannelData) -> None:
        await self.refresh()

    async def refresh(self) -> None:
        """Take fresh readings now."""
        now = time.monotonic()
        cpu = _cpu_seconds()
        last_cpu, last_time = self._last_cpu
        self._last_cpu = (cpu, now)
        if now > last_time:
            await self.cpu.set(round(100.0 * (cpu - last_cpu) / (now - last_time), 1))
        await self.uptime.set(round(now - _STARTED))
        await self.memory.set(round(_rss_bytes() / 1e6, 1))
        circuits = [circuit for server in _servers for circuit in server.circuits]
        await self.clients.set(len(circuits))
        await self.channels.set(sum(len(circuit.core.channels) for circuit in circuits))

"""Status PVs of one bus or port: is it connected, how much traffic, what failed.

A :class:`~caioc.hw.Device` says how one device is doing; when several
devices share a bus, the bus's own figures tell a wiring fault (every
device on the bus failing, the adapter gone) from a device fault::

    bus = I2CBus(1)
    status = PortStatus("rpi:i2c1:", bus=bus)   # rpi:i2c1:connected ...

or, inside an IOC's group, ``i2c1 = SubGroup(PortStatus, prefix="i2c1:",
bus=bus)``. It works for anything with the :class:`PortStats` of a
:class:`~caioc.hw.BusWorker`: :class:`~caioc.hw.I2CBus`,
:class:`~caioc.hw.SPIBus`, :class:`~caioc.hw.SerialPort`.

Counters change with every call, often hundreds of times a second, and a
monitor update per call would cost more than the call. So the PVs follow
the counters at most every *interval* seconds, and only when a figure
changed; a change of the error state (the bus starts failing, recovers,
the link goes or comes back) is published at once, but never more often
than every *min_gap* seconds, so a flapping bus cannot flood the monitors
either.

The source's ``stats`` may be a different :class:`PortStats` from one
moment to the next (a driver that opens a fresh port at each reconnection,
a board file that finds the stats in whichever device holds the bus): the
group follows the new one from its next refresh, and its figures start
again from the new one's.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from .._tasks import wait_event
from ..ioc import PVGroup, pvproperty
from ._worker import PortSnapshot, PortStats

__all__ = ["PortStatus", "StatusSource"]

# An EPICS string holds 39 characters and a terminator.
_STRING_CHARS = 39


class StatusSource(Protocol):
    """What :class:`PortStatus` needs from a bus or port."""

    @property
    def stats(self) -> PortStats:
        """The counters to serve."""
        ...

    @property
    def closed(self) -> bool:
        """True once the bus or port is closed for good."""
        ...


def _fit(text: str) -> str:
    return text.encode()[:_STRING_CHARS].decode(errors="ignore")


class PortStatus(PVGroup):
    """PVs that follow the :class:`PortStats` of *bus* (see the module doc)."""

    connected = pvproperty(
        0, enum_strings=["Disconnected", "Connected"], read_only=True, doc="Link up"
    )
    transactions = pvproperty(0, read_only=True, doc="Calls since start")
    error_count = pvproperty(0, read_only=True, doc="Failed calls since start")
    timeout_count = pvproperty(0, read_only=True, doc="Calls that timed out")
    last_error = pvproperty("", read_only=True, doc="The latest failure")

    def __init__(
        self,
        prefix: str = "",
        *,
        bus: StatusSource,
        interval: float = 1.0,
        min_gap: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if interval <= 0 or min_gap < 0:
            raise ValueError("interval must be positive and min_gap not negative")
        super().__init__(prefix, **kwargs)
        self.bus = bus
        self.interval = interval
        self.min_gap = min_gap
        self._published: PortSnapshot | None = None
        self._wake: asyncio.Event | None = None
        self._listener: Any = None
        self._followed: PortStats | None = None  # whose listener list holds ours
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def startup(self) -> None:
        """Publish the figures now, then follow them."""
        await super().startup()
        loop = asyncio.get_running_loop()
        wake = self._wake = asyncio.Event()
        self._stopping = False

        def listener() -> None:
            # Any thread; a closed loop means nobody follows any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

        self._listener = listener
        await self.refresh()
        self._task = loop.create_task(self._follow())

    async def shutdown(self) -> None:
        """Stop following (idempotent)."""
        if self._followed is not None:
            self._followed.remove_listener(self._listener)
            self._followed = None
        self._listener = None
        if self._task is not None:
            # The flag as well as the cancel: wait_for (Python < 3.12) drops
            # a cancellation that arrives as the wake-up it waits for is set,
            # and a bus that closes wakes its status just as it is stopped.
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await super().shutdown()

    async def refresh(self) -> None:
        """Publish every figure that changed since the last publication."""
        stats = self.bus.stats
        if stats is not self._followed and self._listener is not None:
            if self._followed is not None:
                self._followed.remove_listener(self._listener)
            stats.add_listener(self._listener)
            self._followed = stats
        now = stats.snapshot()
        if self.bus.closed:
            now = now._replace(connected=False)
        before = self._published
        self._published = now
        if before is None or now.connected != before.connected:
            await self.connected.set(int(now.connected))
        if before is None or now.transactions != before.transactions:
            await self.transactions.set(now.transactions)
        if before is None or now.errors != before.errors:
            await self.error_count.set(now.errors)
        if before is None or now.timeouts != before.timeouts:
            await self.timeout_count.set(now.timeouts)
        if before is None or (now.last_error, now.last_error_time) != (
            before.last_error,
            before.last_error_time,
        ):
            # The PV's timestamp is when the error happened, not when we saw it.
            await self.last_error.set(_fit(now.last_error), timestamp=now.last_error_time)

    async def _follow(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        next_periodic = loop.time() + self.interval
        while not self._stopping:
            await wait_event(self._wake, max(0.0, next_periodic - loop.time()))
            self._wake.clear()
            await self.refresh()
            if loop.time() >= next_periodic:
                next_periodic = loop.time() + self.interval
            # Bounds the update rate when the error state flaps.
            await asyncio.sleep(self.min_gap)

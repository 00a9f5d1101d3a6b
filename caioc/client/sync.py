"""One-shot calls for scripts: read, write, or watch a PV for a while.

::

    from caioc.client import sync

    sync.read("weather:outside:temperature").value
    sync.write("thermostat:setpoint", 21.5)            # waits for completion
    for update in sync.monitor("thermostat:temperature", 10.0):
        print(update.timestamp, update.value)

Each call blocks, is bounded by its timeout, and runs on the process-wide
:func:`~caioc.client.shared_context` (configured from the EPICS_CA_*
environment, started on first use, closed at exit) unless given a
``context``. Errors are the client's: :class:`~caioc.client.ChannelTimeout`
names the PV and where it was searched for, :class:`~caioc.client.ServerError`
carries the server's message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..ca import SubscriptionMask
from ._context import Reading
from ._threaded import ThreadedContext, shared_context

__all__ = ["monitor", "read", "read_many", "write"]


def _context(context: ThreadedContext | None) -> ThreadedContext:
    return shared_context() if context is None else context


def read(
    name: str,
    data_type: int | None = None,
    data_count: int | None = None,
    *,
    timeout: float = 2.0,
    context: ThreadedContext | None = None,
) -> Reading:
    """Read ``name`` once (its native type unless ``data_type`` says otherwise)."""
    return _context(context).read(name, data_type, data_count, timeout=timeout)


def read_many(
    names: Iterable[str], *, timeout: float = 2.0, context: ThreadedContext | None = None
) -> list[Reading | None]:
    """Read several PVs at once; None for each that did not answer in time."""
    return _context(context).read_many(list(names), timeout=timeout)


def write(
    name: str,
    value: Any,
    data_type: int | None = None,
    *,
    wait: bool = True,
    timeout: float = 2.0,
    context: ThreadedContext | None = None,
) -> None:
    """Write ``value`` to ``name``; with ``wait`` (default), until the server completed it."""
    _context(context).write(name, value, data_type, wait=wait, timeout=timeout)


def monitor(
    name: str,
    duration: float,
    *,
    data_type: int | None = None,
    mask: int = SubscriptionMask.VALUE | SubscriptionMask.ALARM,
    callback: Callable[[Reading], None] | None = None,
    context: ThreadedContext | None = None,
) -> list[Reading]:
    """Subscribe to ``name`` for ``duration`` seconds; every update received, in order.

    The first update is the value at subscription time, as CA sends it.
    ``callback``, if given, is also called with each update as it arrives
    (on the client's thread).
    """
    if duration < 0:
        raise ValueError(f"duration must be >= 0, not {duration}")
    threaded = _context(context)
    received: list[Reading] = []
    lock = threading.Lock()

    def collect(update: Reading) -> None:
        with lock:
            received.append(update)
        if callback is not None:
            callback(update)

    subscription = threaded.subscribe(name, collect, data_type, mask=mask)
    try:
        time.sleep(duration)  # the caller asked to watch for this long
    finally:
        threaded.unsubscribe(subscription)
    with lock:
        return list(received)

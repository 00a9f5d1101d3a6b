"""A lock for the data layer that works under asyncio, trio and curio.

Channel data serialises the puts that pass through an awaiting put hook, so
puts reach the hook and the stored value in the order they came. The hook
runs as a coroutine of whichever library serves the channel; a lock of the
wrong library fails the moment two puts contend. :class:`PutLock` therefore
makes the lock of the library running when it is first taken.
"""

from __future__ import annotations

import asyncio
import sys
from types import TracebackType
from typing import Any

__all__ = ["PutLock", "running_library"]


def running_library() -> str:
    """``"asyncio"``, ``"trio"`` or ``"curio"``: the library running this code.

    Only libraries already imported are asked, so none is imported here.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    meta = sys.modules.get("curio.meta")
    if meta is not None and meta.curio_running():
        return "curio"
    raise RuntimeError("no asyncio, trio or curio event loop is running")


def _new_lock() -> Any:
    library = running_library()
    if library == "asyncio":
        return asyncio.Lock()
    return sys.modules[library].Lock()  # imported: running_library saw it run


class PutLock:
    """An ``async with`` lock bound, on first use, to the library running it.

    A channel is served by one event loop at a time, so the first library
    to take the lock is the one every later put comes from.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock: Any = None

    async def __aenter__(self) -> None:
        if self._lock is None:
            self._lock = _new_lock()
        await self._lock.__aenter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._lock.__aexit__(kind, error, traceback)

"""The async library an IOC runs on: asyncio, trio or curio, behind one small interface.

The IOC toolkit (:class:`~caioc.ioc.PVGroup`'s scan loops, autosave, the
runner) is written once against :class:`AsyncLib`: sleeping, a clock, an
event that plain code can set, starting and stopping a background task,
shielding clean-up from cancellation, and serving a ``pvdb``. Each library
supplies it in its own idioms next to its server back-end, reusing that
back-end's wake-up event and server: :data:`ASYNCIO` here,
``caioc.server.trio.async_lib`` and ``caioc.server.curio.async_lib``.
Those modules are imported only when their library is asked for or already
running, so caioc never imports trio or curio by itself.

The library is the one running the code: ``trio.run(caioc.ioc.serve,
group)`` serves under trio; :func:`caioc.ioc.run` (``async_lib=``) and the
``--async-lib`` option of :func:`caioc.ioc.ioc_arg_parser` pick it for a
script. Hooks that want to sleep portably await :func:`sleep`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, cast

from .._tasks import stop_tasks, wait_event
from ..server import Server, ServerConfig
from ..server._locks import running_library

if TYPE_CHECKING:
    from ..server._access import AccessSecurity
    from ..server._circuit import Wakeup
    from ..server._server_logic import ServerLogic

__all__ = ["ASYNCIO", "LIBRARIES", "AsyncLib", "current_async_lib", "load_async_lib", "sleep"]

#: The names ``async_lib=`` and ``--async-lib`` take.
LIBRARIES = ("asyncio", "trio", "curio")


class AsyncLib(Protocol):
    """What the IOC toolkit needs of an async library."""

    #: ``"asyncio"``, ``"trio"`` or ``"curio"``.
    name: str

    def sleep(self, seconds: float) -> Awaitable[Any]:
        """The library's own sleep."""

    async def sleep_forever(self) -> None:
        """Sleep until cancelled."""

    def time(self) -> float:
        """The clock the library's timeouts run on, in seconds."""

    def new_event(self) -> Wakeup:
        """An event plain (non-async) code may set: the server back-end's wake-up."""

    async def wait_event(self, event: Wakeup, timeout: float) -> bool:
        """Wait for ``event`` at most ``timeout`` s; True if it was set."""

    async def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``function(*args)`` as a background task of its own; a handle for :meth:`stop_tasks`.

        The task outlives the caller (``PVGroup.startup`` returns with its
        scan loops running), as an asyncio task does; whoever spawned it
        stops it with :meth:`stop_tasks`.
        """

    async def stop_tasks(self, tasks: Iterable[Any]) -> None:
        """Cancel ``tasks`` (handles of :meth:`spawn`) and wait until each has ended."""

    def shielded(self) -> AbstractAsyncContextManager[Any]:
        """A block cancellation does not interrupt: clean-up after a cancellation."""

    def serving(
        self,
        pvdb: Mapping[str, Any],
        config: ServerConfig,
        access_security: AccessSecurity | None = None,
    ) -> AbstractAsyncContextManager[ServerLogic]:
        """Serve ``pvdb`` for the block: bound on entry, clients told goodbye on exit.

        With ``access_security`` its rules decide what each client may do,
        and a configuration loaded from a file is re-read when the file
        changes while serving (the server's watch task).
        """

    def run(self, function: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``function()`` to completion in a new event loop of the library."""


class _Asyncio:
    """asyncio's :class:`AsyncLib`: what the toolkit always did, one call away."""

    name = "asyncio"
    sleep = staticmethod(asyncio.sleep)
    new_event = staticmethod(asyncio.Event)
    stop_tasks = staticmethod(stop_tasks)

    async def sleep_forever(self) -> None:
        await asyncio.get_running_loop().create_future()

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait_event(self, event: Wakeup, timeout: float) -> bool:
        return await wait_event(cast(asyncio.Event, event), timeout)

    async def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return asyncio.ensure_future(function(*args))

    def shielded(self) -> AbstractAsyncContextManager[Any]:
        # asyncio cancels once: awaits in a ``finally`` after it already run.
        return contextlib.nullcontext()

    @contextlib.asynccontextmanager
    async def serving(
        self,
        pvdb: Mapping[str, Any],
        config: ServerConfig,
        access_security: AccessSecurity | None = None,
    ) -> AsyncIterator[ServerLogic]:
        server = Server(pvdb, config, access_security)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()

    def run(self, function: Callable[[], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            return await function()

        return asyncio.run(main())


ASYNCIO: AsyncLib = _Asyncio()


def load_async_lib(name: str) -> AsyncLib:
    """The :class:`AsyncLib` called ``name`` (imports trio's or curio's back-end if asked)."""
    if name == "asyncio":
        return ASYNCIO
    if name not in LIBRARIES:
        raise ValueError(f"async_lib must be one of {', '.join(LIBRARIES)}, not {name!r}")
    module = importlib.import_module(f"caioc.server.{name}")
    return cast(AsyncLib, module.async_lib)


def current_async_lib() -> AsyncLib:
    """The :class:`AsyncLib` of the library running this code (RuntimeError if none)."""
    name = running_library()
    return ASYNCIO if name == "asyncio" else load_async_lib(name)


async def sleep(seconds: float) -> None:
    """Sleep ``seconds`` in whichever library runs the caller: for portable hooks."""
    await current_async_lib().sleep(seconds)

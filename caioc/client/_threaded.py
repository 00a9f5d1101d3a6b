"""A blocking client for scripts and notebooks, over the asyncio one.

One daemon thread runs an event loop with a :class:`Context`; the methods
here submit coroutines to it and wait for the answer, so any thread may
call them. Subscription callbacks run on that loop's thread; keep them
short, or hand the work to a queue. With nothing to do the thread sleeps
in the selector: idle CPU is nil.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from ..ca import AccessRights, SubscriptionMask
from ._config import ClientConfig
from ._context import AccessCallback, Channel, ConnectionCallback, Context, Reading, Subscription

__all__ = ["ThreadedContext", "shared_context"]

T = TypeVar("T")

#: Extra seconds a blocking call waits beyond its own timeout before it
#: gives up on the loop thread itself.
_GRACE = 5.0


class ThreadedContext:
    """A :class:`Context` on its own thread, with blocking methods."""

    def __init__(self, config: ClientConfig | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="caioc-client", daemon=True
        )
        self._thread.start()
        self.context = self._call(self._make(config), None)

    async def _make(self, config: ClientConfig | None) -> Context:
        context = Context(config)
        await context.start()
        return context

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("blocking client calls cannot be made from a callback")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(None if timeout is None else timeout + _GRACE)

    def connect(self, *names: str, timeout: float = 2.0) -> list[Channel]:
        """Connected channels for ``names`` (searched as one batch)."""
        return self._call(self.context.connect(*names, timeout=timeout), timeout)

    def read(
        self,
        name: str,
        data_type: int | None = None,
        data_count: int | None = None,
        timeout: float = 2.0,
    ) -> Reading:
        """Connect if needed, and read ``name`` once."""

        async def read() -> Reading:
            (channel,) = await self.context.connect(name, timeout=timeout)
            return await channel.read(data_type, data_count, timeout)

        return self._call(read(), 2 * timeout)

    def write(
        self,
        name: str,
        value: Any,
        data_type: int | None = None,
        *,
        wait: bool = True,
        timeout: float = 2.0,
    ) -> None:
        """Connect if needed, and write ``value`` (waiting for completion)."""

        async def write() -> None:
            (channel,) = await self.context.connect(name, timeout=timeout)
            await channel.write(value, data_type, wait=wait, timeout=timeout)

        self._call(write(), 2 * timeout)

    def subscribe(
        self,
        name: str,
        callback: Callable[[Reading], None],
        data_type: int | None = None,
        data_count: int | None = None,
        mask: int = SubscriptionMask.VALUE | SubscriptionMask.ALARM,
    ) -> Subscription:
        """Call ``callback`` (on the client thread) with every update of ``name``.

        The subscription is made at once and takes effect when the channel
        connects, now or later.
        """

        async def subscribe() -> Subscription:
            channel = self.context.channel(name)
            return await channel.subscribe(data_type, data_count, mask, callback)

        return self._call(subscribe(), None)

    def channel(self, name: str, priority: int = 0) -> Channel:
        """The channel for ``name``, searching now; it need not connect yet."""
        if threading.current_thread() is self._thread:  # from a callback: no need to wait
            return self.context.channel(name, priority)

        async def channel() -> Channel:
            return self.context.channel(name, priority)

        return self._call(channel(), None)

    def add_connection_callback(
        self, channel: Channel, callback: ConnectionCallback, *, call_now: bool = True
    ) -> None:
        """Call ``callback(channel, connected)`` (on the client thread) on each change.

        With ``call_now`` a channel connected already is reported at once
        (as ``True``): registering and looking at the state happen on the
        client thread together, so no transition falls between them.
        """

        def add() -> None:
            channel.add_connection_callback(callback)
            if call_now and channel.is_connected:
                channel._notify([callback], True)

        self._loop.call_soon_threadsafe(add)

    def add_access_callback(
        self, channel: Channel, callback: AccessCallback, *, call_now: bool = True
    ) -> None:
        """Call ``callback(channel, rights)`` (on the client thread) on each change.

        With ``call_now`` the present rights of a connected channel are
        reported at once, as libca does when the handler is installed.
        """

        def add() -> None:
            channel.add_access_callback(callback)
            if call_now and channel.access_rights != AccessRights.NO_ACCESS:
                channel._notify([callback], channel.access_rights)

        self._loop.call_soon_threadsafe(add)

    def remove_connection_callback(self, channel: Channel, callback: ConnectionCallback) -> None:
        """Stop calling ``callback`` for ``channel``."""
        self._loop.call_soon_threadsafe(channel.remove_connection_callback, callback)

    def remove_access_callback(self, channel: Channel, callback: AccessCallback) -> None:
        """Stop calling ``callback`` for ``channel``."""
        self._loop.call_soon_threadsafe(channel.remove_access_callback, callback)

    def unsubscribe(self, subscription: Subscription) -> None:
        """End a subscription made by :meth:`subscribe`."""
        self._call(subscription.clear(), None)

    def read_many(self, names: Iterable[str], timeout: float = 2.0) -> list[Reading | None]:
        """Read several PVs at once; None for those that did not answer."""

        async def one(channel: Channel) -> Reading | None:
            try:
                await channel.wait_for_connection(timeout)
                return await channel.read(timeout=timeout)
            except Exception:
                return None

        async def read_all() -> list[Reading | None]:
            channels = [self.context.channel(name) for name in names]
            return list(await asyncio.gather(*(one(channel) for channel in channels)))

        return self._call(read_all(), 2 * timeout)

    def close(self) -> None:
        """Close the context and stop the thread (idempotent)."""
        if self._loop.is_closed():
            return
        if self._loop.is_running():
            self._call(self.context.close(), None)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=_GRACE)
        self._loop.close()

    def __enter__(self) -> ThreadedContext:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_shared: ThreadedContext | None = None
_shared_lock = threading.Lock()


def shared_context() -> ThreadedContext:
    """The process-wide client most scripts want (made on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ThreadedContext()
            atexit.register(_shared.close)
        return _shared

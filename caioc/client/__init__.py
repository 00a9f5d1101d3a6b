"""Channel Access clients on the core: asyncio first.

``async with Context() as ctx: (pv,) = await ctx.connect("name")`` then
``await pv.read()``, ``await pv.write(value)``, ``await pv.subscribe()``;
:class:`ThreadedContext` does the same from threads, and :mod:`.sync`
offers one-shot ``read``/``write``/``monitor`` calls for scripts.
"""

from . import sync
from ._config import ClientConfig
from ._context import (
    AccessCallback,
    Channel,
    ChannelTimeout,
    ClientError,
    ConnectionCallback,
    Context,
    Disconnected,
    Reading,
    ServerError,
    Subscription,
)
from ._threaded import ThreadedContext, shared_context

__all__ = [
    "AccessCallback",
    "Channel",
    "ChannelTimeout",
    "ClientConfig",
    "ClientError",
    "ConnectionCallback",
    "Context",
    "Disconnected",
    "Reading",
    "ServerError",
    "Subscription",
    "ThreadedContext",
    "shared_context",
    "sync",
]

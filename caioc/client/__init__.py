"""Channel Access clients on the core: asyncio first.

``async with Context() as ctx: (pv,) = await ctx.connect("name")`` then
``await pv.read()``, ``await pv.write(value)``, ``await pv.subscribe()``.
"""

from ._config import ClientConfig
from ._context import (
    Channel,
    ChannelTimeout,
    ClientError,
    Context,
    Disconnected,
    Reading,
    ServerError,
    Subscription,
)
from ._threaded import ThreadedContext, shared_context

__all__ = [
    "Channel",
    "ChannelTimeout",
    "ClientConfig",
    "ClientError",
    "Context",
    "Disconnected",
    "Reading",
    "ServerError",
    "Subscription",
    "ThreadedContext",
    "shared_context",
]

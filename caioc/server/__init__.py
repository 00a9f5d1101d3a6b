"""The Channel Access server (asyncio; trio and curio through thin adapters).

``Server(pvdb).serve_forever()`` serves a mapping of PV names to
:class:`ChannelData` (``ChannelDouble``, ``ChannelEnum`` ...);
:class:`ServerConfig` reads the EPICS_CA_* and EPICS_CAS_* environment.
The same server runs under trio (:mod:`caioc.server.trio`) and curio
(:mod:`caioc.server.curio`); neither library is imported unless asked for.

``Server(pvdb, config, AccessSecurity.from_file("rules.acf"))`` enforces an
EPICS access security file (:class:`AccessSecurity`); the .acf parser is
imported on first use of that name, not with this package.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ._config import ServerConfig
from ._data import (
    ChannelChar,
    ChannelData,
    ChannelDouble,
    ChannelEnum,
    ChannelError,
    ChannelFloat,
    ChannelInteger,
    ChannelShort,
    ChannelString,
    ChannelValueError,
)
from ._server import Server, run

if TYPE_CHECKING:
    from ._access import AccessSecurity
    from ._access_acf import AccessConfigError

__all__ = [
    "AccessConfigError",
    "AccessSecurity",
    "ChannelChar",
    "ChannelData",
    "ChannelDouble",
    "ChannelEnum",
    "ChannelError",
    "ChannelFloat",
    "ChannelInteger",
    "ChannelShort",
    "ChannelString",
    "ChannelValueError",
    "Server",
    "ServerConfig",
    "run",
]

# Access security is loaded when first named (most servers have none).
__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {"._access": ("AccessSecurity",), "._access_acf": ("AccessConfigError",)},
)

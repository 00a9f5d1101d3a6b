"""The Channel Access server (asyncio; trio and curio through thin adapters).

``Server(pvdb).serve_forever()`` serves a mapping of PV names to
:class:`ChannelData` (``ChannelDouble``, ``ChannelEnum`` ...);
:class:`ServerConfig` reads the EPICS_CA_* and EPICS_CAS_* environment.
The same server runs under trio (:mod:`caioc.server.trio`) and curio
(:mod:`caioc.server.curio`); neither library is imported unless asked for.
"""

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

__all__ = [
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

"""The asyncio Channel Access server.

``Server(pvdb).serve_forever()`` serves a mapping of PV names to
:class:`ChannelData` (``ChannelDouble``, ``ChannelEnum`` ...);
:class:`ServerConfig` reads the EPICS_CA_* and EPICS_CAS_* environment.
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

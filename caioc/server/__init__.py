"""The asyncio Channel Access server.

``Server(pvdb).serve_forever()`` serves a mapping of PV names to
:class:`ChannelData`; :class:`ServerConfig` reads the EPICS_CA_* and
EPICS_CAS_* environment.
"""

from ._config import ServerConfig
from ._data import ChannelData, ChannelError
from ._server import Server, run

__all__ = ["ChannelData", "ChannelError", "Server", "ServerConfig", "run"]

"""The sans-I/O Channel Access protocol core.

Bytes in, commands out: no sockets, clocks, threads or environment here.
"""

from ._broadcaster import Broadcaster
from ._circuit import ClientChannel, ReadRun, ServerChannel, VirtualCircuit, error_for
from ._commands import *  # noqa: F403
from ._commands import __all__ as _command_names
from ._constants import *  # noqa: F403
from ._constants import __all__ as _constant_names
from ._dbr import *  # noqa: F403
from ._dbr import __all__ as _dbr_names
from ._errors import CaiocError, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._framing import NEED_DATA, StreamParser, max_payload_for, parse_datagram
from ._search import read_searches, search_datagram, search_response_datagram
from ._state import BroadcasterState, ChannelState, CircuitState

__all__ = [
    *_command_names,
    *_constant_names,
    *_dbr_names,
    "NEED_DATA",
    "Broadcaster",
    "BroadcasterState",
    "CaiocError",
    "ChannelState",
    "CircuitState",
    "ClientChannel",
    "LocalProtocolError",
    "ProtocolError",
    "ReadRun",
    "RemoteProtocolError",
    "ServerChannel",
    "StreamParser",
    "VirtualCircuit",
    "error_for",
    "max_payload_for",
    "parse_datagram",
    "read_searches",
    "search_datagram",
    "search_response_datagram",
]

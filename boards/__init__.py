"""Board definitions and board files (installed as ``caioc.boards``).

:mod:`._models` describes Raspberry Pi models (header, buses, GPIO chip);
:mod:`._boardfile` loads TOML board files that wire devices to PVs.
"""

from ._boardfile import BoardFile, BoardFileError, DeviceSpec, build, load
from ._models import BOARDS, Board, HeaderPin, detect_board, resolve_pin

__all__ = [
    "BOARDS",
    "Board",
    "BoardFile",
    "BoardFileError",
    "DeviceSpec",
    "HeaderPin",
    "build",
    "detect_board",
    "load",
    "resolve_pin",
]

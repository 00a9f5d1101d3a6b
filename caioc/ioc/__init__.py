"""The IOC toolkit: declarative PVs with record-like fields, hooks, a runner.

See :class:`PVGroup` and :class:`pvproperty`; ``caioc.ioc_examples`` has
runnable examples. An IOC serves under asyncio (the default), trio or curio:
``run(group, async_lib="trio")`` or ``--async-lib trio``; hooks that sleep
with :func:`sleep` run under all three.
"""

from ._async_lib import sleep
from ._autosave import Autosave
from ._fields import FIELDS
from ._group import PVDatabase, PVGroup, SubGroup, pvproperty
from ._run import ioc_arg_parser, run, serve
from ._stats import StatsGroup

__all__ = [
    "FIELDS",
    "Autosave",
    "PVDatabase",
    "PVGroup",
    "StatsGroup",
    "SubGroup",
    "ioc_arg_parser",
    "pvproperty",
    "run",
    "serve",
    "sleep",
]

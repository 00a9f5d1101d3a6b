"""The IOC toolkit: declarative PVs with record-like fields, hooks, a runner.

See :class:`PVGroup` and :class:`pvproperty`; ``caioc.ioc_examples`` has
runnable examples. An IOC serves under asyncio (the default), trio or curio:
``run(group, async_lib="trio")`` or ``--async-lib trio``; hooks that sleep
with :func:`sleep` run under all three.
"""

from .._lazy import lazy_exports
from ._async_lib import sleep
from ._autosave import Autosave
from ._fields import FIELDS
from ._group import PVDatabase, PVGroup, SubGroup, pvproperty
from ._run import ioc_arg_parser, run, serve
from ._stats import StatsGroup

__all__ = [
    "FIELDS",
    "Autosave",
    "DatabaseError",
    "DatabaseGroup",
    "PVDatabase",
    "PVGroup",
    "StatsGroup",
    "SubGroup",
    "ioc_arg_parser",
    "load_database",
    "pvproperty",
    "run",
    "serve",
    "sleep",
]

# EPICS database files (caioc softioc): their parser loads only when named.
__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {"._database": ("DatabaseError", "DatabaseGroup", "load_database")},
)

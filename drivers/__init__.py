"""Device drivers, one module per device family (installed as ``caioc.drivers``).

Each driver is a :class:`caioc.hw.Device` with a simulator that models the
physical quantity, registered in :mod:`._registry` for board files.
"""

from ._registry import DriverInfo, available, lookup, register

__all__ = ["DriverInfo", "available", "lookup", "register"]

"""Names of a package imported from their module on first use (PEP 562).

A package whose names pull in optional or heavy libraries (numpy's users,
smbus2, pyserial, GPIO libraries) lists them here instead of importing its
modules up front: ``import caioc.hw`` then costs nothing, and the first
use of ``caioc.hw.I2CBus`` imports ``caioc.hw.i2c``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: dict[str, Any], modules: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` (its ``globals()`` is
    ``namespace``), serving each name of ``modules`` (relative module ->
    names) from its module, imported on first use and then kept as a plain
    attribute."""
    module_of = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value  # once imported, a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ())})

    return __getattr__, __dir__

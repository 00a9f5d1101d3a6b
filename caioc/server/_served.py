"""What the network layer needs of a served channel, and the states of ``sync``.

Kept apart from :mod:`caioc.server._filters` (which re-exports both) so
that a server whose clients never ask for a filter does not load the
filter and channel-name modules at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..ca import AccessRights
    from ._data_support import Subscription

__all__ = ["MODIFIER_START", "ServedChannel", "States"]

#: What starts a field, ``$`` or filters in a channel name (see ``_names``):
#: a name without it is a plain PV name.
MODIFIER_START = re.compile(r"[.$\[{]")


class ServedChannel(Protocol):
    """What the network layer needs from the data behind a channel."""

    @property
    def native_type(self) -> int:
        """DBR type of the CREATE_CHAN reply."""

    @property
    def max_length(self) -> int:
        """Element count of the CREATE_CHAN reply."""

    @property
    def length(self) -> int:
        """The current element count."""

    def access_rights(self, host: str, user: str) -> AccessRights:
        """What the client on ``host`` named ``user`` may do."""

    async def read(
        self, data_type: int, data_count: int, client_version: int
    ) -> tuple[bytes | memoryview, int]:
        """(payload, count) of the value as ``data_type``."""

    async def write(self, data_type: int, data_count: int, payload: bytes | memoryview) -> None:
        """Store a client's put."""

    def subscribe(self, subscription: Subscription) -> None:
        """Start sending updates to ``subscription``."""

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop sending updates to ``subscription``."""


class States:
    """Named boolean states for the ``sync`` filter (epics-base's dbState).

    A ``sync`` channel can only be created for a state that exists. Setting
    or clearing a state sends nothing by itself: the filter looks at the
    state whenever an update of its PV arrives.
    """

    def __init__(self) -> None:
        self._values: dict[str, bool] = {}

    def create(self, name: str, value: bool = False) -> None:
        """Make ``name`` a state (an existing one keeps its value)."""
        self._values.setdefault(name, bool(value))

    def set(self, name: str) -> None:
        """Set the state ``name`` (KeyError if it was never created)."""
        self._check(name)
        self._values[name] = True

    def clear(self, name: str) -> None:
        """Clear the state ``name`` (KeyError if it was never created)."""
        self._check(name)
        self._values[name] = False

    def get(self, name: str) -> bool:
        """The value of the state ``name`` (KeyError if it was never created)."""
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def _check(self, name: str) -> None:
        if name not in self._values:
            raise KeyError(f"no state named {name!r}")

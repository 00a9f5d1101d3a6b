"""Client configuration from the EPICS_CA_* environment, as libca reads it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .._netif import interfaces
from ..ca import DEFAULT_MAX_ARRAY_BYTES, REPEATER_PORT, SERVER_PORT

__all__ = ["ClientConfig"]


def _split(value: str) -> list[str]:
    return [item for item in value.replace(",", " ").split() if item]


def _address(item: str, default_port: int) -> tuple[str, int]:
    host, _, port = item.partition(":")
    return host, int(port) if port else default_port


@dataclass
class ClientConfig:
    """Where a client searches and how long it waits."""

    #: Destinations of search datagrams, (host, port).
    search_addresses: list[tuple[str, int]] = field(default_factory=list)
    server_port: int = SERVER_PORT
    repeater_port: int = REPEATER_PORT
    #: Seconds without traffic before a circuit is probed with ECHO.
    connection_timeout: float = 30.0
    max_array_bytes: int = DEFAULT_MAX_ARRAY_BYTES
    #: Longest pause between two searches for a name not found yet; a
    #: beacon from a server not seen before restarts every search at once.
    max_search_interval: float = 1.0
    #: Register with the CA repeater on ``repeater_port`` to hear beacons.
    use_repeater: bool = True

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> ClientConfig:
        """The configuration the environment describes (``os.environ`` by default)."""
        env = os.environ if env is None else env
        port = int(env.get("EPICS_CA_SERVER_PORT", "") or SERVER_PORT)
        addresses = [_address(item, port) for item in _split(env.get("EPICS_CA_ADDR_LIST", ""))]
        auto = env.get("EPICS_CA_AUTO_ADDR_LIST", "YES").strip().upper() not in ("NO", "N", "0")
        if auto:
            # libca searches every interface's broadcast address.
            addresses += [(interface.broadcast, port) for interface in interfaces()]
        return cls(
            search_addresses=list(dict.fromkeys(addresses)),
            server_port=port,
            repeater_port=int(env.get("EPICS_CA_REPEATER_PORT", "") or REPEATER_PORT),
            connection_timeout=float(env.get("EPICS_CA_CONN_TMO", "") or 30.0),
            max_array_bytes=int(env.get("EPICS_CA_MAX_ARRAY_BYTES", "") or DEFAULT_MAX_ARRAY_BYTES),
        )

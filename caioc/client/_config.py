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


def _flag(value: str, default: bool) -> bool:
    value = value.strip().upper()
    if not value:
        return default
    return value not in ("NO", "N", "0", "FALSE")


def _address(item: str, default_port: int) -> tuple[str, int]:
    host, _, port = item.partition(":")
    return host, int(port) if port else default_port


#: libca's floor for EPICS_CA_MAX_SEARCH_PERIOD, seconds.
MIN_SEARCH_PERIOD = 60.0


@dataclass
class ClientConfig:
    """Where a client searches and how long it waits."""

    #: Destinations of search datagrams, (host, port).
    search_addresses: list[tuple[str, int]] = field(default_factory=list)
    server_port: int = SERVER_PORT
    repeater_port: int = REPEATER_PORT
    #: Seconds without traffic before a circuit is probed with ECHO
    #: (EPICS_CA_CONN_TMO).
    connection_timeout: float = 30.0
    #: Seconds an ECHO probe may go unanswered before the circuit counts
    #: as lost and its channels disconnect (libca's CA_ECHO_TIMEOUT).
    echo_timeout: float = 5.0
    max_array_bytes: int = DEFAULT_MAX_ARRAY_BYTES
    #: Longest pause between two searches for a name not found yet; a
    #: beacon anomaly (a new, restarted or returning server) restarts every
    #: search at once. Short by default, so a server whose beacons do not
    #: reach us is still found within a second; EPICS_CA_MAX_SEARCH_PERIOD
    #: sets it as libca reads it (at least 60 s) for networks with many
    #: names that are never found.
    max_search_interval: float = 1.0
    #: Register with the CA repeater on ``repeater_port`` to hear beacons.
    use_repeater: bool = True
    #: Start a repeater (``python -m caioc.cli.repeater``, detached) when
    #: none holds ``repeater_port``, as libca does. Off in a configuration
    #: built by hand; :meth:`from_environment` turns it on unless
    #: ``CAIOC_CA_SPAWN_REPEATER`` says NO.
    spawn_repeater: bool = False
    #: CA name servers, (host, port), searched over TCP
    #: (EPICS_CA_NAME_SERVERS), besides the UDP ``search_addresses``.
    name_servers: list[tuple[str, int]] = field(default_factory=list)

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
        name_servers = [
            _address(item, port) for item in _split(env.get("EPICS_CA_NAME_SERVERS", ""))
        ]
        period = env.get("EPICS_CA_MAX_SEARCH_PERIOD", "").strip()
        return cls(
            max_search_interval=max(float(period), MIN_SEARCH_PERIOD) if period else 1.0,
            search_addresses=list(dict.fromkeys(addresses)),
            server_port=port,
            repeater_port=int(env.get("EPICS_CA_REPEATER_PORT", "") or REPEATER_PORT),
            connection_timeout=float(env.get("EPICS_CA_CONN_TMO", "") or 30.0),
            max_array_bytes=int(env.get("EPICS_CA_MAX_ARRAY_BYTES", "") or DEFAULT_MAX_ARRAY_BYTES),
            spawn_repeater=_flag(env.get("CAIOC_CA_SPAWN_REPEATER", ""), True),
            name_servers=list(dict.fromkeys(name_servers)),
        )

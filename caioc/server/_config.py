"""Server configuration from the EPICS_CA_* / EPICS_CAS_* environment.

The names and defaults are epics-base's (envDefs, the CA server reference):
a server configured for rsrv behaves the same under caioc.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..ca import DEFAULT_MAX_ARRAY_BYTES, REPEATER_PORT, SERVER_PORT

__all__ = ["ServerConfig"]


def _split(value: str) -> list[str]:
    return [item for item in value.replace(",", " ").split() if item]


def _flag(value: str, default: bool) -> bool:
    if not value:
        return default
    return value.strip().upper() in ("YES", "Y", "TRUE", "1", "ON")


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number") from None


def _address(item: str, default_port: int) -> tuple[str, int]:
    host, _, port = item.partition(":")
    return host, int(port) if port else default_port


@dataclass
class ServerConfig:
    """Where and how a caioc server listens, announces itself and limits peers."""

    #: TCP and UDP port (EPICS_CA_SERVER_PORT, EPICS_CAS_SERVER_PORT wins).
    port: int = SERVER_PORT
    #: Interfaces to serve on (EPICS_CAS_INTF_ADDR_LIST); empty = all.
    interfaces: list[str] = field(default_factory=lambda: ["0.0.0.0"])
    #: Where beacons go, (host, port) (EPICS_CAS_BEACON_ADDR_LIST, else
    #: EPICS_CA_ADDR_LIST; plus broadcast when auto is on).
    beacon_addresses: list[tuple[str, int]] = field(default_factory=list)
    auto_beacon_addresses: bool = True
    #: Seconds between beacons once the start-up burst is over.
    beacon_period: float = 15.0
    #: Clients whose searches are ignored (EPICS_CAS_IGNORE_ADDR_LIST).
    ignore_addresses: list[str] = field(default_factory=list)
    #: Largest payload accepted or sent (EPICS_CA_MAX_ARRAY_BYTES).
    max_array_bytes: int = DEFAULT_MAX_ARRAY_BYTES
    repeater_port: int = REPEATER_PORT
    #: Seconds a circuit may go without sending a complete message before
    #: it is closed (0: never; CAIOC_CAS_IDLE_TIMEOUT). An idle libca client
    #: sends ECHO every EPICS_CA_CONN_TMO (30 s), so set more than that.
    idle_timeout: float = 0.0
    #: Most circuits served at once (0: no cap; CAIOC_CAS_MAX_CIRCUITS); a
    #: connection over the cap is closed at once, before any reply.
    max_circuits: int = 0

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> ServerConfig:
        """The configuration the environment describes (``os.environ`` by default)."""
        env = os.environ if env is None else env
        port = int(
            _number(env, "EPICS_CAS_SERVER_PORT", _number(env, "EPICS_CA_SERVER_PORT", SERVER_PORT))
        )
        repeater = int(_number(env, "EPICS_CA_REPEATER_PORT", REPEATER_PORT))
        interfaces = _split(env.get("EPICS_CAS_INTF_ADDR_LIST", "")) or ["0.0.0.0"]
        beacon_list = env.get("EPICS_CAS_BEACON_ADDR_LIST", "")
        if not beacon_list.strip():
            beacon_list = env.get("EPICS_CA_ADDR_LIST", "")
        beacons = [_address(item, repeater) for item in _split(beacon_list)]
        auto = _flag(
            env.get("EPICS_CAS_AUTO_BEACON_ADDR_LIST", env.get("EPICS_CA_AUTO_ADDR_LIST", "")),
            True,
        )
        return cls(
            port=port,
            interfaces=interfaces,
            beacon_addresses=beacons,
            auto_beacon_addresses=auto,
            beacon_period=_number(env, "EPICS_CAS_BEACON_PERIOD", 15.0),
            ignore_addresses=_split(env.get("EPICS_CAS_IGNORE_ADDR_LIST", "")),
            max_array_bytes=int(_number(env, "EPICS_CA_MAX_ARRAY_BYTES", DEFAULT_MAX_ARRAY_BYTES)),
            repeater_port=repeater,
            idle_timeout=_number(env, "CAIOC_CAS_IDLE_TIMEOUT", 0.0),
            max_circuits=int(_number(env, "CAIOC_CAS_MAX_CIRCUITS", 0)),
        )

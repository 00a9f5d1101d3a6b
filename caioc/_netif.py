"""The host's IPv4 interfaces and their broadcast addresses.

CA finds servers by broadcast: clients search the broadcast address of each
interface (EPICS_CA_AUTO_ADDR_LIST) and servers bound to one interface also
listen on its broadcast address, which is how several IOCs on one host
share the UDP port. On Linux the addresses come from the SIOCGIF* ioctls;
elsewhere only the limited broadcast address is known.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import sys
from dataclasses import dataclass

__all__ = ["Interface", "broadcast_address_of", "interfaces"]

# <linux/sockios.h>
_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_SIOCGIFBRDADDR = 0x8919
_SIOCGIFNETMASK = 0x891B
# <net/if.h>
_IFF_UP = 0x1
_IFF_BROADCAST = 0x2
_IFF_LOOPBACK = 0x8


@dataclass(frozen=True)
class Interface:
    """One IPv4 interface that is up."""

    name: str
    address: str
    netmask: str
    broadcast: str
    loopback: bool


def _ioctl_address(sock: socket.socket, request: int, name: str) -> str | None:
    import fcntl  # Unix only; imported here so the module loads anywhere

    packed = struct.pack("256s", name.encode()[:15])
    try:
        result = fcntl.ioctl(sock.fileno(), request, packed)
    except OSError:
        return None
    return socket.inet_ntoa(result[20:24])


def _flags(sock: socket.socket, name: str) -> int:
    import fcntl

    packed = struct.pack("256s", name.encode()[:15])
    try:
        result = fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, packed)
    except OSError:
        return 0
    return int(struct.unpack_from("H", result, 16)[0])


def interfaces() -> list[Interface]:
    """Every IPv4 interface that is up, loopback included."""
    if not sys.platform.startswith("linux"):
        return []
    found: list[Interface] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            flags = _flags(sock, name)
            if not flags & _IFF_UP:
                continue
            address = _ioctl_address(sock, _SIOCGIFADDR, name)
            netmask = _ioctl_address(sock, _SIOCGIFNETMASK, name)
            if address is None or netmask is None:
                continue
            broadcast = None
            if flags & _IFF_BROADCAST:
                broadcast = _ioctl_address(sock, _SIOCGIFBRDADDR, name)
            if broadcast is None:
                # Loopback has no broadcast flag, yet Linux delivers its
                # network's broadcast (127.255.255.255) to every listener.
                network = ipaddress.IPv4Network(f"{address}/{netmask}", strict=False)
                broadcast = str(network.broadcast_address)
            found.append(Interface(name, address, netmask, broadcast, bool(flags & _IFF_LOOPBACK)))
    return found


def broadcast_address_of(address: str) -> str | None:
    """The broadcast address of the interface that has ``address``, if any."""
    with contextlib.suppress(OSError):
        for interface in interfaces():
            if interface.address == address:
                return interface.broadcast
    return None

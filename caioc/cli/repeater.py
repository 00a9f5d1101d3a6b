"""``caioc-repeater``: the CA repeater, as epics-base's ``caRepeater``.

Servers send their beacons (RSRV_IS_UP) to UDP port 5065
(``EPICS_CA_REPEATER_PORT``). Only one process on a host can receive a
unicast datagram on a port, so one repeater per host binds it and fans
every beacon out to the CA clients on the host that registered with it.

What it does, following epics-base's ``repeater.cpp``:

* binds the repeater port on all interfaces, without ``SO_REUSEADDR``; if
  the port is taken a repeater already runs, and it exits 0 quietly;
* a REPEATER_REGISTER, or an empty datagram (clients before CA 4.x, and
  libca to this day), registers its sender, if the sender's address is one
  of this host's; each registration is confirmed with a REPEATER_CONFIRM
  carrying the client's address, and a no-op (a zeroed VERSION header, as
  caRepeater sends) goes to the other clients so that dead ones show up;
* every other datagram that holds well-formed server messages is
  forwarded to every registered client but its sender, with the address of
  a beacon that left it 0 filled in with the beacon's source;
* a client whose port is gone is dropped: each client has a connected UDP
  socket, so a send after an ICMP port-unreachable fails with
  ECONNREFUSED; then, and after each new registration and every
  ``verify_interval`` seconds, the repeater tries to bind the client's
  port: if that succeeds nobody holds it any more (caRepeater's test).

Clients are known by port, as caRepeater knows them (libca registers from
the loopback and from an interface address in turn). Unlike caRepeater it
caps the number of clients (``--max-clients``), checks them periodically
too, retries a confirmation once on a fresh socket when the old one still
holds the error of a previous owner of the port, and drops datagrams that
are not CA server messages instead of forwarding them.

Run it as ``caioc-repeater`` or ``python -m caioc.cli.repeater``; ``-v``
logs registrations and drops, ``-vv`` every datagram. CA clients that find
no repeater start one with ``--exit-when-idle``, so that it goes away some
seconds after its last client (caRepeater, started by libca, stays).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..ca import (
    REPEATER_PORT,
    Broadcaster,
    CommandId,
    ProtocolError,
    RepeaterConfirmResponse,
    Role,
    parse_datagram,
)

__all__ = [
    "DEFAULT_MAX_CLIENTS",
    "NOOP",
    "Repeater",
    "RepeaterClient",
    "exit_when_idle",
    "is_local_address",
    "main",
    "port_is_held",
]

log = logging.getLogger("caioc.repeater")

#: Bytes in a CA message header.
HEADER_SIZE = 16

#: Clients beyond this many are refused (after dropping dead ones).
DEFAULT_MAX_CLIENTS = 512
#: Seconds between liveness checks of every client.
DEFAULT_VERIFY_INTERVAL = 60.0
#: caRepeater's no-op: a VERSION header of zeros.
NOOP = bytes(HEADER_SIZE)
#: Where a beacon's address field sits (header field parameter2).
_ADDRESS_OFFSET = 12
_RSRV_IS_UP = int(CommandId.RSRV_IS_UP)
_COMMAND_AND_SIZE = struct.Struct(">HH")
_EXTENDED_SIZE = struct.Struct(">I")


def port_is_held(port: int) -> bool:
    """Whether some socket on this host holds UDP ``port`` (caRepeater's test).

    Binding the port on all interfaces without ``SO_REUSEADDR`` fails with
    EADDRINUSE while any socket has it. Another error says nothing about
    the port, so it counts as held.
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("0.0.0.0", port))
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            log.debug("bind test of port %d failed: %s", port, error)
        return True
    finally:
        probe.close()
    return False


def is_local_address(host: str) -> bool:
    """Whether ``host`` is one of this host's IPv4 addresses."""
    try:
        if ipaddress.IPv4Address(host).is_loopback:
            return True
    except ValueError:
        return False
    # Only a local address can be bound: caRepeater's test too.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((host, 0))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@dataclass(eq=False)
class RepeaterClient:
    """A registered client: its address and a UDP socket connected to it."""

    address: tuple[str, int]
    sock: socket.socket = field(repr=False)
    #: Registrations received and confirmations sent.
    registrations: int = 0
    confirmations: int = 0
    #: Datagrams forwarded (no-ops included).
    forwarded: int = 0

    @classmethod
    def connect(cls, address: tuple[str, int]) -> RepeaterClient:
        """A client with a fresh socket connected to ``address``."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        return cls(address, sock)

    @property
    def port(self) -> int:
        """The client's UDP port."""
        return self.address[1]

    def send(self, data: bytes) -> bool:
        """Send one datagram; False if the send failed (maybe the client is gone)."""
        try:
            self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            # The socket's buffer is full: lose this datagram, as UDP may.
            return True
        except OSError as error:
            log.debug("send to %s:%d failed: %s", *self.address, error)
            return False
        self.forwarded += 1
        return True

    def reconnect(self) -> None:
        """Replace the socket with a fresh one connected to the client."""
        fresh = RepeaterClient.connect(self.address)
        self.sock.close()
        self.sock = fresh.sock

    def alive(self) -> bool:
        """Whether the client's port is still held."""
        return port_is_held(self.port)

    def close(self) -> None:
        """Close the socket to the client."""
        self.sock.close()


class Repeater(asyncio.DatagramProtocol):
    """A CA repeater on UDP ``port`` (0: any free port, for tests).

    ``await start()`` binds (False if a repeater already holds the port),
    ``await serve_forever()`` runs until cancelled, ``close()`` stops.
    """

    def __init__(
        self,
        port: int = REPEATER_PORT,
        *,
        host: str = "0.0.0.0",
        max_clients: int = DEFAULT_MAX_CLIENTS,
        verify_interval: float = DEFAULT_VERIFY_INTERVAL,
    ) -> None:
        self.port = port
        self.host = host
        self.max_clients = max_clients
        self.verify_interval = verify_interval
        #: Registered clients by port, as caRepeater keys them.
        self.clients: dict[int, RepeaterClient] = {}
        #: Datagrams forwarded, dropped as not CA, and registrations refused.
        self.forwarded = 0
        self.dropped = 0
        self.refused = 0
        self._core = Broadcaster(Role.REPEATER)
        self._transport: asyncio.DatagramTransport | None = None
        self._changed: asyncio.Event | None = None
        self._verifier: asyncio.Task[None] | None = None
        self._closed: asyncio.Future[None] | None = None

    # -- life cycle -------------------------------------------------------

    async def start(self) -> bool:
        """Bind the repeater port; False if another process holds it."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # No SO_REUSEADDR: a second repeater must fail to bind, and
            # libca tests whether a repeater runs by binding the port.
            sock.bind((self.host, self.port))
        except OSError as error:
            sock.close()
            if error.errno == errno.EADDRINUSE:
                return False
            raise
        self.port = sock.getsockname()[1]
        self._changed = asyncio.Event()
        self._closed = loop.create_future()
        await loop.create_datagram_endpoint(lambda: self, sock=sock)
        self._verifier = loop.create_task(self._verify_periodically())
        log.info("CA repeater listening on UDP %s:%d", self.host, self.port)
        return True

    async def serve_forever(self) -> None:
        """Run until :meth:`close` or cancellation."""
        if self._closed is None:
            raise RuntimeError("start() the repeater first")
        try:
            await asyncio.shield(self._closed)
        finally:
            self.close()

    def close(self) -> None:
        """Stop listening and forget every client."""
        if self._verifier is not None:
            self._verifier.cancel()
            self._verifier = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for client in self.clients.values():
            client.close()
        self.clients.clear()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    async def wait_until(
        self, predicate: Callable[[Repeater], bool], timeout: float | None = None
    ) -> None:
        """Wait until ``predicate(self)`` holds after some datagram or check."""

        async def wait() -> None:
            assert self._changed is not None
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # -- asyncio.DatagramProtocol ----------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (asyncio's own datagram transports do not derive from DatagramTransport)
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        try:
            self.handle(data, (str(addr[0]), int(addr[1])))
        except Exception:  # never let one datagram stop the repeater
            log.exception("unexpected error handling a datagram from %s", addr)
        finally:
            self._notify()

    def error_received(self, exc: Exception) -> None:
        # Linux reports an ICMP error for an earlier send on recv; harmless.
        log.debug("UDP error on the repeater socket: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    # -- the repeater proper ----------------------------------------------

    def handle(self, data: bytes, sender: tuple[str, int]) -> None:
        """Act on one datagram received from ``sender``."""
        log.debug("%d bytes from %s:%d", len(data), *sender)
        # An empty datagram is a legacy REPEATER_REGISTER; caRepeater looks
        # at the first command only, and so do we.
        if len(data) == 0 or (
            len(data) >= HEADER_SIZE
            and int.from_bytes(data[:2], "big") == CommandId.REPEATER_REGISTER
        ):
            if len(data) > HEADER_SIZE:
                log.debug("ignoring %d bytes after a registration", len(data) - HEADER_SIZE)
            self.register(sender)
            return
        try:
            commands = self._core.recv(data)
        except ProtocolError:
            try:  # something that is not a beacon, but what a client may decode
                commands = parse_datagram(data, Role.SERVER)
            except ProtocolError as error:
                self.dropped += 1
                log.debug("dropping a datagram from %s:%d: %s", *sender, error)
                return
        if not commands:
            return
        self.fan_out(self._fill_in_addresses(data, sender[0]), sender)

    @staticmethod
    def _fill_in_addresses(data: bytes, host: str) -> bytes:
        """``data`` with each beacon's 0 address replaced by ``host``, as caRepeater does.

        ``data`` holds whole, checked messages; their headers are walked
        here because only the raw bytes tell where each one starts.
        """
        patched: bytearray | None = None
        offset = 0
        while offset + HEADER_SIZE <= len(data):
            command, size = _COMMAND_AND_SIZE.unpack_from(data, offset)
            header = HEADER_SIZE
            if size == 0xFFFF and offset + HEADER_SIZE + 8 <= len(data):
                size = _EXTENDED_SIZE.unpack_from(data, offset + HEADER_SIZE)[0]
                header += 8
            where = offset + _ADDRESS_OFFSET
            if command == _RSRV_IS_UP and data[where : where + 4] == b"\0\0\0\0":
                if patched is None:
                    patched = bytearray(data)
                patched[where : where + 4] = socket.inet_aton(host)
            offset += header + size
        return data if patched is None else bytes(patched)

    def register(self, address: tuple[str, int]) -> RepeaterClient | None:
        """Register (or re-register) the client at ``address`` and confirm it."""
        host, port = address
        if not is_local_address(host):
            self.refused += 1
            log.info("refusing a registration from %s:%d: not a local address", host, port)
            return None
        client = self.clients.get(port)
        new = client is None
        if client is None:
            if len(self.clients) >= self.max_clients:
                self.verify_clients()
            if len(self.clients) >= self.max_clients:
                self.refused += 1
                log.warning(
                    "refusing %s:%d: %d clients registered already", host, port, self.max_clients
                )
                return None
            try:
                client = RepeaterClient.connect(address)
            except OSError as error:
                log.warning("cannot reach the client %s:%d: %s", host, port, error)
                return None
            self.clients[port] = client
            log.info("registered client %s:%d (%d now)", host, port, len(self.clients))
        client.registrations += 1
        confirm = self._core.send(RepeaterConfirmResponse(client.address[0]))
        sent = client.send(confirm)
        if not sent and not new:
            # The socket may still hold the error of a client that used this
            # port before: start afresh once.
            try:
                client.reconnect()
            except OSError as error:
                log.debug("cannot reconnect to %s:%d: %s", *client.address, error)
            else:
                sent = client.send(confirm)
        if not sent:
            self._remove(client, "its confirmation could not be sent")
            return None
        client.confirmations += 1
        # caRepeater pokes the other clients so dead ones are noticed even
        # when no beacons come.
        self.fan_out(NOOP, address, exclude=client)
        if new:
            self.verify_clients()
        return client

    def fan_out(
        self, data: bytes, sender: tuple[str, int], exclude: RepeaterClient | None = None
    ) -> None:
        """Send ``data`` to every client except ``sender`` (and ``exclude``)."""
        for client in list(self.clients.values()):
            if client.address == sender or client is exclude:
                continue
            if not client.send(data) and not client.alive():
                self._remove(client, "its port is closed")
        if data is not NOOP:
            self.forwarded += 1

    def verify_clients(self) -> None:
        """Drop every client whose port nobody holds any more."""
        for client in list(self.clients.values()):
            if not client.alive():
                self._remove(client, "its port is closed")

    def _remove(self, client: RepeaterClient, why: str) -> None:
        if self.clients.get(client.port) is client:
            del self.clients[client.port]
        client.close()
        log.info("dropped client %s:%d: %s", *client.address, why)
        self._notify()

    async def _verify_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.verify_interval)
            self.verify_clients()
            self._notify()


def _port_from_environment() -> int:
    text = os.environ.get("EPICS_CA_REPEATER_PORT", "").strip()
    if not text:
        return REPEATER_PORT
    try:
        port = int(text)
    except ValueError:
        raise SystemExit(f"caioc-repeater: EPICS_CA_REPEATER_PORT={text!r} is not a port") from None
    if not 0 < port < 65536:
        raise SystemExit(f"caioc-repeater: EPICS_CA_REPEATER_PORT={port} is not a port")
    return port


async def exit_when_idle(repeater: Repeater, idle: float) -> None:
    """Close ``repeater`` once it has had no live client for ``idle`` seconds.

    For repeaters that clients start on demand (as libca starts caRepeater):
    such a repeater goes away with the last client that wanted it, instead
    of outliving it forever; the next client starts one again.
    """
    loop = asyncio.get_running_loop()
    step = min(1.0, idle / 4)
    quiet_since = loop.time()
    while True:
        await asyncio.sleep(step)
        repeater.verify_clients()
        if repeater.clients:
            quiet_since = loop.time()
        elif loop.time() - quiet_since >= idle:
            log.info("no client for %g s: exiting", idle)
            repeater.close()
            return


async def _run(repeater: Repeater, idle: float | None = None) -> int:
    if not await repeater.start():
        log.info("UDP port %d is in use: a repeater runs already; exiting", repeater.port)
        return 0
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, repeater.close)
    watcher = None if idle is None else loop.create_task(exit_when_idle(repeater, idle))
    await repeater.serve_forever()
    if watcher is not None:
        watcher.cancel()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``caioc-repeater``."""
    parser = argparse.ArgumentParser(
        prog="caioc-repeater",
        description="Forward CA server beacons to the CA clients of this host, as caRepeater "
        "does. Exits at once, quietly, if a repeater already holds the port.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"UDP port (default: EPICS_CA_REPEATER_PORT, else {REPEATER_PORT})",
    )
    parser.add_argument(
        "--max-clients",
        type=int,
        default=DEFAULT_MAX_CLIENTS,
        help="most clients registered at once (default %(default)s)",
    )
    parser.add_argument(
        "--verify-interval",
        type=float,
        default=DEFAULT_VERIFY_INTERVAL,
        help="seconds between checks that clients still run (default %(default)s)",
    )
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="exit once no client has been registered for SECONDS (default: never); "
        "clients that start a repeater themselves ask for this",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log activity (-vv: every datagram)"
    )
    args = parser.parse_args(argv)
    level = (
        logging.WARNING
        if not args.verbose
        else (logging.INFO, logging.DEBUG)[min(args.verbose, 2) - 1]
    )
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    port = args.port if args.port is not None else _port_from_environment()
    repeater = Repeater(port, max_clients=args.max_clients, verify_interval=args.verify_interval)
    try:
        return asyncio.run(_run(repeater, args.exit_when_idle))
    except KeyboardInterrupt:
        return 0
    except OSError as error:
        print(f"caioc-repeater: cannot bind UDP port {port}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

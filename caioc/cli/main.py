"""``caioc``: the project's main command.

With no arguments it runs the demo IOC (a simulated thermostat, see
:mod:`caioc.cli.demo`) until interrupted. ``caioc --self-check`` instead
runs a client and a server circuit of the core against each other in
memory and prints every command that crosses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..ca import (
    NEED_DATA,
    ChannelType,
    Command,
    ReadNotifyRequest,
    ReadNotifyResponse,
    Role,
    VersionRequest,
    VersionResponse,
    VirtualCircuit,
    WriteNotifyRequest,
    WriteNotifyResponse,
)
from . import board

__all__ = ["main", "run_demo"]

_CAPABILITIES = """\
caioc {version}: EPICS Channel Access in pure Python

Available now:
  caioc.ca      sans-I/O CA 4.13 core: every command, DBR types 0-38,
                conversions, circuit/channel/UDP state machines
  caioc.server  asyncio CA server (search, beacons, get/put/monitor)
Planned (see the project's issues): the IOC toolkit, clients and the
caioc-get/-put/-monitor/-repeater/-shark tools, the hardware layer
(serial, I2C, GPIO, SPI with simulators), drivers and Raspberry Pi
board files.
"""


def _pump(
    sender: VirtualCircuit, receiver: VirtualCircuit, data: bytes, out: list[str]
) -> list[Command]:
    """Deliver ``data`` to ``receiver``; log and return the commands it yields."""
    receiver.receive_data(data)
    arrow = "C->S" if sender.our_role is Role.CLIENT else "S->C"
    received: list[Command] = []
    while (command := receiver.next_command()) is not NEED_DATA:
        out.append(f"  {arrow} {command!r}")
        received.append(command)  # type: ignore[arg-type]
    return received


def run_demo(out: list[str]) -> Command:
    """A connect, put and get between two in-memory circuits; returns the last reply.

    The server end keeps the value the client put and answers the read
    with it, so what comes back has crossed the core twice.
    """
    client = VirtualCircuit(Role.CLIENT)
    server = VirtualCircuit(Role.SERVER)
    _pump(server, client, server.send(VersionResponse(0, 13)), out)
    channel = client.create_channel("demo:temperature")
    _pump(client, server, client.send(VersionRequest(0, 13), channel.create()), out)
    (served,) = server.channels.values()
    _pump(server, client, server.send(*served.create(ChannelType.DOUBLE, 1, sid=7)), out)
    (put,) = _pump(client, server, client.send(channel.write(21.5)), out)
    assert isinstance(put, WriteNotifyRequest)
    stored = float(put.data[0])  # what the server end received
    _pump(server, client, server.send(WriteNotifyResponse(put.data_type, 1, 1, put.ioid)), out)
    (get,) = _pump(client, server, client.send(channel.read(ChannelType.TIME_DOUBLE)), out)
    assert isinstance(get, ReadNotifyRequest)
    answer = ReadNotifyResponse(
        stored, ChannelType.TIME_DOUBLE, ioid=get.ioid, metadata={"status": 0, "severity": 0}
    )
    (reply,) = _pump(server, client, server.send(answer), out)
    value, _ = reply.to_python()  # type: ignore[attr-defined]
    out.append(f"  value read back: {value}")
    return reply


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``caioc`` command."""
    parser = argparse.ArgumentParser(prog="caioc", description="EPICS Channel Access in Python")
    parser.add_argument("--version", action="version", version=f"caioc {__version__}")
    parser.add_argument(
        "--self-check",
        action="store_true",
        help="run a client and a server circuit in memory and show what crosses",
    )
    parser.add_argument("--prefix", default="caioc:demo:", help="PV name prefix of the demo IOC")
    parser.add_argument("--list-pvs", action="store_true", help="print the PV names and exit")
    board.add_commands(parser)
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is not None:
        try:
            return int(args.handler(args))
        except ValueError as error:  # BoardFileError: file:line: what is wrong
            print(f"caioc: {error}", file=sys.stderr)
            return 2
    print(_CAPABILITIES.format(version=__version__))
    if args.self_check:
        lines: list[str] = []
        run_demo(lines)
        print("Self-check: a client and a server circuit talking in memory:")
        print("\n".join(lines))
        return 0
    from . import demo

    if args.list_pvs:
        print("\n".join(demo.make_pvdb(args.prefix)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(demo.serve(args.prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())

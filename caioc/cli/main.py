"""``caioc``: the project's main command.

With no arguments it runs the demo IOC (a simulated thermostat, see
:mod:`caioc.cli.demo`) until interrupted. ``caioc --self-check`` instead
runs a client and a server circuit of the core against each other in
memory and prints every command that crosses.

Before it imports numpy, the command sets ``OPENBLAS_THREAD_TIMEOUT=4``
unless the environment has a value: numpy's OpenBLAS then lets its idle
worker threads sleep at once instead of spinning ~0.1 s of CPU each while
the IOC starts (see :data:`BLAS_DEFAULTS`). Set the variable to keep
OpenBLAS's default (28). Only the ``caioc`` command does this, not
``import caioc``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import __version__
from . import board

if TYPE_CHECKING:
    # Imported where used: caioc.ca loads numpy, and main() must set the
    # OpenBLAS default (see below) before numpy is first imported.
    from ..ca import Command, VirtualCircuit

__all__ = ["BLAS_DEFAULTS", "main", "run_demo"]

#: Environment defaults the ``caioc`` command sets before it imports numpy,
#: unless the user has set them. OpenBLAS (numpy's BLAS) starts a worker
#: thread per extra CPU core when numpy is imported, and an idle worker
#: spins for 2**28 CPU cycles (OPENBLAS_THREAD_TIMEOUT's default exponent,
#: ~0.1 s at 2.5 GHz, more on a slower board) before it sleeps: CPU that an
#: IOC starting up needs for itself. 2**4 cycles, OpenBLAS's minimum, has
#: idle workers sleep at once. The number of threads, and so every numerical
#: result, stays the same; only back-to-back BLAS calls may wait a little
#: longer for a worker to wake. Measured on a quiet 2-core VM: ~0.09 s less
#: CPU used by the time numpy is loaded and the IOC answers its first search.
BLAS_DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "4"}

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
    from ..ca import NEED_DATA, Role

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
    from ..ca import (
        ChannelType,
        ReadNotifyRequest,
        ReadNotifyResponse,
        Role,
        VersionRequest,
        VersionResponse,
        VirtualCircuit,
        WriteNotifyRequest,
        WriteNotifyResponse,
    )

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


def _set_blas_defaults() -> None:
    """Set :data:`BLAS_DEFAULTS` the user has not set, if numpy is not loaded yet."""
    if "numpy" not in sys.modules:  # later, OpenBLAS has read its environment
        for name, value in BLAS_DEFAULTS.items():
            os.environ.setdefault(name, value)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``caioc`` command."""
    _set_blas_defaults()
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

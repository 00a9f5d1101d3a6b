"""``caioc run|check|boards|drivers``: IOCs from board files.

``caioc run FILE`` serves the devices a board file wires to PVs (``--sim``
on simulated hardware); ``caioc check FILE`` validates it and probes the
devices without serving; ``caioc boards`` and ``caioc drivers`` list what
board files may name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

__all__ = ["add_commands", "board_file_path"]


def board_file_path(name: str) -> Path:
    """A path as given, or the shipped board file of that name."""
    path = Path(name)
    if path.exists() or path.suffix == ".toml":
        return path
    from caioc import boards

    shipped = Path(boards.__file__).parent / "files" / f"{name}.toml"
    return shipped if shipped.exists() else path


def _load(name: str) -> Any:
    from caioc.boards import load

    return load(board_file_path(name))


def cmd_run(args: argparse.Namespace) -> int:
    from caioc.boards import build
    from caioc.ioc import serve

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
    )
    board_file = _load(args.board_file)
    devices = build(board_file, sim=args.sim, prefix=args.prefix)
    mode = "simulated hardware" if args.sim else "hardware"
    logging.getLogger("caioc").info(
        "board file %s: %d devices on %s", board_file.path, len(devices), mode
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(*devices, interfaces=args.interfaces, list_pvs=args.list_pvs))
    return 0


async def _probe(devices: list[Any]) -> list[str]:
    problems = []
    for device in devices:
        try:
            await device.open()
            await device.probe()
        except Exception as error:  # report every device, then fail
            problems.append(f"{device.prefix}: {type(error).__name__}: {error}")
        finally:
            with contextlib.suppress(Exception):
                await device.close()
    return problems


def cmd_check(args: argparse.Namespace) -> int:
    from caioc.boards import build

    board_file = _load(args.board_file)
    devices = build(board_file, sim=args.sim)
    problems = asyncio.run(_probe(devices))
    for device in devices:
        state = "FAILED" if any(p.startswith(device.prefix) for p in problems) else "ok"
        print(f"{device.prefix:30s} {type(device).__name__:20s} {state}")
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


def cmd_boards(args: argparse.Namespace) -> int:
    from caioc.boards import BOARDS, detect_board

    here = detect_board()
    for name, board in BOARDS.items():
        mark = "  (this machine)" if here is board else ""
        print(f"{name:24s} gpiochip {board.gpio_chip_label}{mark}")
    return 0


def cmd_drivers(args: argparse.Namespace) -> int:
    from caioc.drivers import available

    for info in available():
        address = "" if info.default_address is None else f" address 0x{info.default_address:02x}"
        print(f"{info.name:12s} {info.bus:7s}{address:14s} {info.summary}")
        if info.options:
            options = ", ".join(f"{k}={v!r}" for k, v in info.options.items())
            print(f"{'':12s} options: {options}")
    return 0


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Add the board-file subcommands to ``caioc``'s parser."""
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="serve the devices of a board file")
    run.add_argument("board_file", help="a board file, or the name of a shipped one")
    run.add_argument("--sim", action="store_true", help="run on simulated hardware")
    run.add_argument("--prefix", default=None, help="PV prefix (default: the file's)")
    run.add_argument("--list-pvs", action="store_true", help="print the PVs when serving")
    run.add_argument("--interfaces", nargs="+", default=None, help="addresses to serve on")
    run.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    run.set_defaults(handler=cmd_run)
    check = commands.add_parser("check", help="validate a board file and probe its devices")
    check.add_argument("board_file")
    check.add_argument("--sim", action="store_true", help="probe simulated hardware")
    check.set_defaults(handler=cmd_check)
    commands.add_parser("boards", help="list the board models").set_defaults(handler=cmd_boards)
    commands.add_parser("drivers", help="list the drivers").set_defaults(handler=cmd_drivers)

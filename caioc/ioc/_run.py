"""Running an IOC from the command line: options EPICS users expect.

``ioc_arg_parser`` gives every IOC script the same options (``--prefix``,
``--list-pvs``, ``--interfaces``, ``-v``/``-q``, ``--macro NAME=VALUE``)
and ``run`` serves a group until interrupted, running its startup and
shutdown hooks around the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any

from ..server import Server, ServerConfig
from ._autosave import Autosave
from ._group import PVDatabase, PVGroup
from ._stats import attach_server, detach_server

__all__ = ["ioc_arg_parser", "run"]


def _macro(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"a macro is NAME=VALUE, not {text!r}")
    return name, value


def ioc_arg_parser(
    default_prefix: str,
    desc: str,
    argv: Sequence[str] | None = None,
    macros: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse the IOC options: (group options, run options)."""
    parser = argparse.ArgumentParser(description=desc)
    parser.add_argument("--prefix", default=default_prefix, help="PV name prefix")
    parser.add_argument("--list-pvs", action="store_true", help="print the PVs when serving")
    parser.add_argument(
        "--interfaces",
        nargs="+",
        default=None,
        help="addresses to serve on (default: EPICS_CAS_INTF_ADDR_LIST or all)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument(
        "--macro", action="append", type=_macro, default=[], help="NAME=VALUE for {NAME}"
    )
    parser.add_argument(
        "--autosave", default=None, metavar="FILE", help="restore and save autosave PVs here"
    )
    args = parser.parse_args(argv)
    all_macros = {**(macros or {}), **dict(args.macro)}
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose else logging.INFO)
    return (
        {"prefix": args.prefix, "macros": all_macros},
        {
            "interfaces": args.interfaces,
            "list_pvs": args.list_pvs,
            "log_level": level,
            "autosave": args.autosave,
        },
    )


async def serve(
    *groups: PVGroup,
    interfaces: list[str] | None = None,
    list_pvs: bool = False,
    log_level: int = logging.INFO,
    config: ServerConfig | None = None,
    autosave: str | None = None,
) -> None:
    """Serve ``groups`` (one IOC) until cancelled.

    With ``autosave`` (a file path), the groups' autosave PVs are restored
    from it before serving and saved to it as they change.
    """
    config = config or ServerConfig.from_environment()
    if interfaces:
        config.interfaces = list(interfaces)
    pvdb = PVDatabase()
    for group in groups:
        pvdb.merge(group.pvdb)  # fields not yet made stay so
    savers = (
        [
            Autosave(group, f"{autosave}" if len(groups) == 1 else f"{autosave}.{index}")
            for index, group in enumerate(groups)
        ]
        if autosave
        else []
    )
    for saver in savers:
        restored = saver.restore()
        logging.getLogger("caioc").info("restored %d PVs from %s", len(restored), saver.path)
    save_tasks = [asyncio.get_running_loop().create_task(saver.run()) for saver in savers]
    server = Server(pvdb, config)
    await server.start()
    attach_server(server)
    started: list[PVGroup] = []
    try:
        for group in groups:
            await group.startup()
            started.append(group)
        if list_pvs:
            print("PVs:", flush=True)
            for group in groups:
                for name in group.pv_names:
                    print(f"    {name}", flush=True)
        logging.getLogger("caioc").info("IOC ready, %d channels", len(pvdb))
        await asyncio.Future()
    finally:
        for task in save_tasks:
            task.cancel()  # each saves once more as it stops
        await asyncio.gather(*save_tasks, return_exceptions=True)
        for group in reversed(started):
            await group.shutdown()
        detach_server(server)
        await server.stop()


def run(*groups: PVGroup, **run_options: Any) -> None:
    """Serve ``groups`` until Ctrl-C (the end of every IOC script)."""
    level = run_options.get("log_level", logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    if os.environ.get("PYTHONASYNCIODEBUG"):
        logging.getLogger("asyncio").setLevel(logging.DEBUG)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(*groups, **run_options))

"""Running an IOC from the command line: options EPICS users expect.

``ioc_arg_parser`` gives every IOC script the same options (``--prefix``,
``--list-pvs``, ``--interfaces``, ``-v``/``-q``, ``--macro NAME=VALUE``,
``--autosave FILE``, ``--async-lib asyncio|trio|curio``, ``-a/--acf FILE``)
and ``run`` serves a group until interrupted, running its startup and
shutdown hooks around the server, on the async library chosen (asyncio by
default). ``serve`` is the same as a coroutine of whichever library awaits
it. ``-a rules.acf`` (softIoc's option) enforces an EPICS access security
file, re-read when it changes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..server import ServerConfig
from ._async_lib import LIBRARIES, current_async_lib, load_async_lib
from ._autosave import Autosave
from ._group import PVDatabase, PVGroup
from ._stats import attach_server, detach_server

if TYPE_CHECKING:
    from ..server._access import AccessSecurity

__all__ = ["ioc_arg_parser", "load_access_security", "run", "serve"]


def load_access_security(
    source: AccessSecurity | str | os.PathLike[str],
    substitutions: dict[str, str] | None = None,
) -> AccessSecurity:
    """``source`` if it is an :class:`~caioc.server.AccessSecurity`, else the .acf file it names.

    A file is loaded now (so that a server watches it for changes): one
    that cannot be read raises ValueError naming it, one that does not
    parse raises :class:`~caioc.server.AccessConfigError` (a ValueError),
    ``file:line:column: what is wrong``. ``substitutions`` expand the
    file's ``$(NAME)`` macros, as softIoc's ``-m`` macros do its ``-a`` file.
    """
    from ..server import AccessSecurity  # the .acf parser: only for IOCs that use one

    if isinstance(source, AccessSecurity):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"access_security is an .acf file or an AccessSecurity, not {type(source).__name__}"
        )
    path = os.fspath(source)
    try:
        return AccessSecurity.from_file(path, substitutions=substitutions)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"{path}: cannot read the access security file: {reason}") from None


def _macro(text: str) -> tuple[str, str]:
    import argparse

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
    import argparse  # only IOC scripts parse options: not imported with caioc.ioc

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
    parser.add_argument(
        "-a",
        "--acf",
        default=None,
        metavar="FILE",
        help="enforce this EPICS access security file (.acf), re-read when it changes; "
        "--macro values expand its $(NAME)",
    )
    parser.add_argument(
        "--async-lib",
        choices=LIBRARIES,
        default="asyncio",
        help="the async library to serve on (default: asyncio; trio and curio if installed)",
    )
    args = parser.parse_args(argv)
    all_macros = {**(macros or {}), **dict(args.macro)}
    security = None
    if args.acf is not None:
        # loaded now, with the macros (softIoc's -m applies to its -a file):
        # a file that cannot be used is an error in the command line
        try:
            security = load_access_security(args.acf, all_macros or None)
        except ValueError as error:
            parser.error(str(error))
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose else logging.INFO)
    return (
        {"prefix": args.prefix, "macros": all_macros},
        {
            "interfaces": args.interfaces,
            "list_pvs": args.list_pvs,
            "log_level": level,
            "autosave": args.autosave,
            "async_lib": args.async_lib,
            "access_security": security,
        },
    )


async def serve(
    *groups: PVGroup,
    interfaces: list[str] | None = None,
    list_pvs: bool = False,
    log_level: int = logging.INFO,
    config: ServerConfig | None = None,
    autosave: str | None = None,
    async_lib: str | None = None,
    access_security: AccessSecurity | str | os.PathLike[str] | None = None,
) -> None:
    """Serve ``groups`` (one IOC) until cancelled, under the library awaiting this.

    ``asyncio.run(serve(group))``, ``trio.run(serve, group)`` and
    ``curio.run(serve, group)`` all serve ``group``. With ``autosave`` (a
    file path), the groups' autosave PVs are restored from it before
    serving and saved to it as they change. ``async_lib`` (from
    :func:`ioc_arg_parser`'s run options) only checks that the library
    awaiting this is the one chosen; :func:`run` starts the right one.
    ``access_security`` (an .acf file's path or an
    :class:`~caioc.server.AccessSecurity`) decides what clients may read
    and write; a file is loaded before anything is served (ValueError if
    it cannot be read or parsed, see :func:`load_access_security`) and is
    re-read when it changes, the new rights pushed to connected clients.
    """
    lib = current_async_lib()
    if async_lib is not None and async_lib != lib.name:
        raise ValueError(f"serve() is running under {lib.name}, not {async_lib}: use run()")
    security = None if access_security is None else load_access_security(access_security)
    if security is not None and security.path is not None:
        logging.getLogger("caioc").info("access security: rules from %s", security.path)
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
    async with lib.serving(pvdb, config, access_security=security) as server:
        attach_server(server)
        save_tasks: list[Any] = []
        started: list[PVGroup] = []
        try:
            for saver in savers:
                save_tasks.append(await lib.spawn(saver.run))
            for group in groups:
                await group.startup()
                started.append(group)
            if list_pvs:
                print("PVs:", flush=True)
                for group in groups:
                    for name in group.pv_names:
                        print(f"    {name}", flush=True)
            logging.getLogger("caioc").info("IOC ready, %d channels", len(pvdb))
            await lib.sleep_forever()
        finally:
            async with lib.shielded():  # cancelled (Ctrl-C): still stop in order
                await lib.stop_tasks(save_tasks)  # each saves once more as it stops
                for group in reversed(started):
                    await group.shutdown()
                detach_server(server)


def run(*groups: PVGroup, async_lib: str = "asyncio", **run_options: Any) -> None:
    """Serve ``groups`` until Ctrl-C (the end of every IOC script).

    ``async_lib`` is the library to serve on: ``"asyncio"`` (the default),
    ``"trio"`` or ``"curio"`` (installed separately); the other options
    are :func:`serve`'s. An ``access_security`` file that cannot be read
    or parsed ends the program (SystemExit) with its name and the line at
    fault, before anything is served.
    """
    lib = load_async_lib(async_lib)
    if run_options.get("access_security") is not None:
        try:
            run_options["access_security"] = load_access_security(run_options["access_security"])
        except ValueError as error:
            raise SystemExit(f"{os.path.basename(sys.argv[0]) or 'caioc'}: {error}") from None
    level = run_options.get("log_level", logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    if os.environ.get("PYTHONASYNCIODEBUG"):
        logging.getLogger("asyncio").setLevel(logging.DEBUG)
    with contextlib.suppress(KeyboardInterrupt):
        lib.run(functools.partial(serve, *groups, **run_options))

"""``caioc softioc``: serve the records of EPICS database files, as softIoc does.

``caioc softioc -m P=lab:,R=t1: -d thermo.db -d more.db`` serves every
record of the files (see :mod:`caioc.ioc._database` for the record types
and what is not supported). As in softIoc, each ``-m`` sets the macros of
the ``-d`` files after it, and ``-a FILE.acf`` enforces access security
(its macros are the last ``-m``'s). What the files ask for that is not
supported is logged as a warning per record and field before serving;
``--strict`` makes it an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from typing import Any


class _InOrder(argparse.Action):
    """-d and -m into one list, in the order given (-m applies to the -d after it)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        steps = list(getattr(namespace, self.dest, None) or [])
        steps.append((self.const, values))
        setattr(namespace, self.dest, steps)


def add_parser(commands: Any) -> None:
    """Add ``softioc`` to ``caioc``'s subcommands."""
    parser = commands.add_parser(
        "softioc",
        help="serve the records of EPICS database files (.db), as softIoc does",
        description="Serve the records of EPICS database files, as epics-base's softIoc does.",
    )
    parser.add_argument(
        "-d",
        "--database",
        dest="steps",
        action=_InOrder,
        const="d",
        metavar="FILE.db",
        help="load the records of this database file (repeatable)",
    )
    parser.add_argument(
        "-m",
        "--macros",
        dest="steps",
        action=_InOrder,
        const="m",
        metavar="NAME=VALUE,...",
        help="macros for the -d files after it",
    )
    parser.add_argument(
        "-a", "--acf", default=None, metavar="FILE", help="enforce this access security file"
    )
    parser.add_argument("--list-pvs", action="store_true", help="print the PVs when serving")
    parser.add_argument("--interfaces", nargs="+", default=None, help="addresses to serve on")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument(
        "--strict", action="store_true", help="refuse to start if anything is not supported"
    )
    parser.set_defaults(handler=cmd_softioc, steps=[])


def cmd_softioc(args: argparse.Namespace) -> int:
    from ..ioc import serve
    from ..ioc._database import DatabaseError, DatabaseGroup, load_database, parse_macros
    from ..ioc._run import load_access_security

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
    )
    log = logging.getLogger("caioc.softioc")
    macros: dict[str, str] = {}
    records: dict[str, Any] = {}
    files = 0
    try:
        for kind, value in args.steps:
            if kind == "m":
                macros = parse_macros(value)
            else:
                load_database(value, macros, records)
                files += 1
    except DatabaseError as error:
        print(f"caioc softioc: {error}", file=sys.stderr)
        return 2
    if not files:
        print("caioc softioc: no database file: give one with -d FILE.db", file=sys.stderr)
        return 2
    group = DatabaseGroup(list(records.values()))
    for problem in group.problems:
        log.warning("%s", problem)
    if group.problems and args.strict:
        print(
            f"caioc softioc: {len(group.problems)} things not supported (--strict)",
            file=sys.stderr,
        )
        return 2
    if not group.pv_names:
        print("caioc softioc: no record to serve", file=sys.stderr)
        return 2
    security = None
    if args.acf is not None:
        try:
            security = load_access_security(args.acf, macros or None)
        except ValueError as error:
            print(f"caioc softioc: {error}", file=sys.stderr)
            return 2
    log.info("%d records from %d database files", len(records), files)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                group,
                interfaces=args.interfaces,
                list_pvs=args.list_pvs,
                access_security=security,
            )
        )
    return 0

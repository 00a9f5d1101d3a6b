"""``caioc run|check|deploy|boards|drivers``: IOCs from board files.

``caioc run FILE`` serves the devices a board file wires to PVs (``--sim``
on simulated hardware); ``caioc check FILE`` validates it and probes the
devices without serving; ``caioc deploy FILE`` writes the systemd unit that
runs it as a service; ``caioc boards`` and ``caioc drivers`` list what
board files may name. ``--acf FILE`` (or ``access_security`` in the board
file's ``[board]`` table) enforces an EPICS access security file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_commands", "board_file_path", "caioc_command", "systemd_unit"]


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


def _access_security(args: argparse.Namespace, board_file: Any) -> Any:
    """The access security of ``--acf``, else of the board file's key, loaded; or None.

    A file that cannot be read or parsed raises ValueError naming it (and
    the line, for a syntax error): reported before anything starts.
    """
    source = args.acf if args.acf is not None else board_file.access_security
    if source is None:
        return None
    from caioc.ioc._run import load_access_security  # the .acf parser: only when asked for

    return load_access_security(source)


def cmd_run(args: argparse.Namespace) -> int:
    from caioc.boards import build
    from caioc.ioc import serve

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
    )
    board_file = _load(args.board_file)
    security = _access_security(args, board_file)
    devices = build(board_file, sim=args.sim, prefix=args.prefix)
    mode = "simulated hardware" if args.sim else "hardware"
    logging.getLogger("caioc").info(
        "board file %s: %d devices on %s", board_file.path, len(devices), mode
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                *devices,
                interfaces=args.interfaces,
                list_pvs=args.list_pvs,
                access_security=security,
            )
        )
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
    security = _access_security(args, board_file)
    if security is not None:
        groups = ", ".join(sorted(security.config.groups))
        print(f"access security {security.path}: ok (ASG {groups})")
        for warning in security.warnings:
            print(f"  {warning}")
    devices = build(board_file, sim=args.sim)
    problems = asyncio.run(_probe(devices))
    for device in devices:
        state = "FAILED" if any(p.startswith(device.prefix) for p in problems) else "ok"
        print(f"{device.prefix:30s} {type(device).__name__:20s} {state}")
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


# -- caioc deploy: a systemd unit -------------------------------------------------------------

#: Where ``--install`` puts units: the directory for the administrator's own.
SYSTEMD_UNIT_DIRECTORY = Path("/etc/systemd/system")
_ENVIRONMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.-]+")


def caioc_command() -> list[str]:
    """The absolute command line that starts this very ``caioc``.

    The console script when that is what runs (``~/caioc/bin/caioc``),
    otherwise this interpreter with ``-m caioc.cli.main``: either way the
    service runs the same installation, virtualenv included, as the user
    who generated the unit.
    """
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "caioc" and script.is_file():
        return [str(script.resolve())]
    return [str(Path(sys.executable).absolute()), "-m", "caioc.cli.main"]


def _safe_name(text: str) -> str:
    """*text* with what a unit name may not hold turned into dashes."""
    return re.sub(r"[^A-Za-z0-9:_.-]+", "-", text).strip("-") or "ioc"


def _quoted(text: str) -> str:
    """*text* as one systemd word: as it is when plain, else in double quotes."""
    if text and not re.search(r"[\s\"'\\;]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _exec_word(word: str) -> str:
    """One ExecStart word as systemd reads it (systemd.service, "Command lines")."""
    # % starts a specifier and $ a variable in ExecStart: double them.
    return _quoted(word.replace("%", "%%").replace("$", "$$"))


def _environment_line(name: str, value: str) -> str:
    """An Environment= line (systemd.exec): quoted if needed, % doubled, no $ expansion."""
    return "Environment=" + _quoted(f"{name}={value}".replace("%", "%%"))


def systemd_unit(
    board_file: Path,
    *,
    user: str,
    working_directory: Path,
    environment: Sequence[tuple[str, str]] = (),
    command: Sequence[str] | None = None,
    run_options: Sequence[str] = (),
    restart_seconds: float = 5.0,
    description: str | None = None,
) -> str:
    """The text of a systemd service unit that runs ``caioc run BOARD_FILE``.

    *environment* holds (name, value) pairs for ``Environment=`` lines
    (EPICS_CA_* / EPICS_CAS_* settings); *command* is how to start caioc
    (default :func:`caioc_command`); *run_options* go after the board file.
    """
    argv = [*(command or caioc_command()), "run", str(board_file), *run_options]
    lines = [
        "[Unit]",
        # Specifiers (%) are expanded in these two as well.
        "Description=" + (description or f"caioc IOC ({board_file.name})").replace("%", "%%"),
        # Serve once the network is configured, so the server binds the
        # interfaces EPICS_CAS_INTF_ADDR_LIST names and beacons reach them.
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"User={user}",
        f"WorkingDirectory={str(working_directory).replace('%', '%%')}",
    ]
    lines += [_environment_line(name, value) for name, value in environment]
    lines += [
        # Log lines reach the journal as soon as they are written.
        "Environment=PYTHONUNBUFFERED=1",
        "ExecStart=" + " ".join(_exec_word(word) for word in argv),
        # caioc stops cleanly on SIGINT (devices closed, ports released).
        "KillSignal=SIGINT",
        "TimeoutStopSec=20",
        "Restart=on-failure",
        f"RestartSec={restart_seconds:g}",
        "StandardOutput=journal",
        "StandardError=journal",
        f"SyslogIdentifier=caioc-{_safe_name(board_file.stem)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def _environment(pairs: Sequence[str]) -> list[tuple[str, str]]:
    result = []
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not _ENVIRONMENT_NAME.fullmatch(name):
            raise ValueError(f"--env takes NAME=VALUE, not {pair!r}")
        if not name.startswith(("EPICS_CA_", "EPICS_CAS_")):
            raise ValueError(f"--env is for EPICS_CA_* and EPICS_CAS_* settings, not {name}")
        if "\n" in value:
            raise ValueError(f"{name}: a value may not span lines")
        result.append((name, value))
    return result


def _default_user() -> str:
    import getpass  # only deploy needs it (and it loads termios): not at every start

    # Under sudo, the unit is for the person who asked, not for root.
    return os.environ.get("SUDO_USER") or getpass.getuser()


def cmd_deploy(args: argparse.Namespace) -> int:
    path = board_file_path(args.board_file)
    # a board file (or an .acf file) that cannot run must not become a service
    _access_security(args, _load(str(path)))
    board_file = path.resolve()
    name = args.name or f"caioc-{_safe_name(board_file.stem)}"
    if not _UNIT_NAME.fullmatch(name):
        raise ValueError(f"a unit name is letters, digits and :_.-, not {name!r}")
    run_options = [*(["--sim"] if args.sim else []), *(["-q"] if args.quiet else [])]
    if args.prefix is not None:
        run_options += ["--prefix", args.prefix]
    if args.interfaces:
        run_options += ["--interfaces", *args.interfaces]
    if args.acf is not None:
        # absolute: the service runs in its own working directory
        run_options += ["--acf", str(Path(args.acf).resolve())]
    unit = systemd_unit(
        board_file,
        user=args.user or _default_user(),
        working_directory=Path(args.working_directory or board_file.parent).absolute(),
        environment=_environment(args.env),
        run_options=run_options,
        restart_seconds=args.restart_sec,
    )
    if args.output is None and not args.install:
        sys.stdout.write(unit)
        return 0
    target = Path(args.output) if args.output else Path(args.unit_directory) / f"{name}.service"
    try:
        target.write_text(unit)
    except OSError as error:
        hint = " (installing needs root: sudo)" if args.install else ""
        print(f"caioc: cannot write {target}: {error.strerror}{hint}", file=sys.stderr)
        return 1
    print(f"wrote {target}")
    if args.install:
        print("to start it now and at every boot:")
        print(f"  sudo systemctl daemon-reload && sudo systemctl enable --now {name}")
        print(f"its log: journalctl -u {name} -f")
    return 0


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


_ACF_HELP = (
    "enforce this EPICS access security file (re-read when it changes; "
    "default: the board file's access_security, if any)"
)


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
    run.add_argument("--acf", metavar="FILE", default=None, help=_ACF_HELP)
    run.set_defaults(handler=cmd_run)
    check = commands.add_parser(
        "check", help="validate a board file (and its .acf file) and probe its devices"
    )
    check.add_argument("board_file")
    check.add_argument("--sim", action="store_true", help="probe simulated hardware")
    check.add_argument("--acf", metavar="FILE", default=None, help="validate this .acf file")
    check.set_defaults(handler=cmd_check)
    deploy = commands.add_parser(
        "deploy",
        help="print (or write) a systemd unit that runs a board file as a service",
        description="Print a systemd unit for 'caioc run BOARD_FILE': restarted on "
        "failure, logging to the journal. Nothing is written unless --output or "
        "--install says where.",
    )
    deploy.add_argument("board_file", help="a board file, or the name of a shipped one")
    deploy.add_argument("--user", help="the account the IOC runs as (default: you)")
    deploy.add_argument(
        "--working-directory", help="the service's directory (default: the board file's)"
    )
    deploy.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an EPICS_CA_*/EPICS_CAS_* setting for the service (repeatable)",
    )
    deploy.add_argument("--name", help="the unit's name (default: caioc-BOARD)")
    deploy.add_argument(
        "--restart-sec", type=float, default=5.0, help="seconds before a restart (default 5)"
    )
    deploy.add_argument("--sim", action="store_true", help="serve simulated hardware")
    deploy.add_argument("--prefix", default=None, help="PV prefix (default: the file's)")
    deploy.add_argument("--interfaces", nargs="+", default=None, help="addresses to serve on")
    deploy.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    deploy.add_argument("--acf", metavar="FILE", default=None, help=_ACF_HELP)
    where = deploy.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", help="write the unit to this file")
    where.add_argument(
        "--install",
        action="store_true",
        help="write it to the systemd unit directory (needs root) and say how to enable it",
    )
    deploy.add_argument(
        "--unit-directory",
        default=str(SYSTEMD_UNIT_DIRECTORY),
        help=f"where --install writes (default {SYSTEMD_UNIT_DIRECTORY})",
    )
    deploy.set_defaults(handler=cmd_deploy)
    commands.add_parser("boards", help="list the board models").set_defaults(handler=cmd_boards)
    commands.add_parser("drivers", help="list the drivers").set_defaults(handler=cmd_drivers)
    from . import softioc

    softioc.add_parser(commands)

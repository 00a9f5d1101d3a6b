"""Small-IOC footprint: caioc's simulated weather station beside caproto's simple IOC.

For each IOC process (loopback environment, free ports):

* start-up: seconds from the process start to the first answer to a CA
  SEARCH for one of its PVs (a raw UDP socket sends the search datagram,
  built with ``caioc.ca``, every 5 ms until a reply arrives);
* RSS after start-up (``VmRSS`` from ``/proc/<pid>/status``, 1 s after the
  first answer), in MB (10**6 bytes);
* idle CPU over a few seconds with no client, % of one core;
* the CPU time the process had used by its first answer (user + system):
  start-up work that, unlike the wall-clock figure, hardly depends on how
  busy the machine is.

A ``python -c "import numpy"`` process is measured beside them as the RSS
floor of any IOC that uses numpy, and one that imports asyncio too as the
floor of an asyncio IOC (both IOCs here are). The goals are RSS <= 30 MB, start-up
< 0.3 s and idle CPU < 1 %. ``--importtime`` adds the heaviest imports of
the caioc IOC (``python -X importtime``).

Bytecode: an installed caioc has its ``.pyc`` files (pip compiles them, as
it did caproto's and numpy's), but a development environment may set
PYTHONDONTWRITEBYTECODE, and then every start compiles caioc's sources
again (about 0.2 s of CPU). So the IOCs run with a bytecode cache of their
own (PYTHONPYCACHEPREFIX in a temporary directory, filled by one untimed
start of each); ``--cold`` keeps the environment's setting instead.

Run from the repository root: ``python benchmarks/bench_ioc.py``
(``--quick``, ``--json PATH``, ``--repeats N``, ``--cold``).
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import _harness as h

GOAL_RSS_MB = 30.0
GOAL_START_S = 0.3
GOAL_IDLE_PERCENT = 1.0

PY = sys.executable
IOCS: dict[str, dict[str, Any]] = {
    "caioc weather-station --sim": {
        "argv": [PY, "-m", "caioc.cli.main", "run", "weather-station", "--sim", "-q"],
        "pv": "weather:outside:temperature",
    },
    "caproto simple": {
        "argv": [PY, "-m", "caproto.ioc_examples.simple"],
        "pv": "simple:A",
    },
    "python + numpy (floor)": {
        "argv": [PY, "-c", "import sys, numpy; print('READY', flush=True); sys.stdin.read()"],
        "pv": None,
    },
    # Both IOCs serve with asyncio, which loads ssl (libcrypto),
    # concurrent.futures, inspect ...: the floor of an asyncio IOC.
    "python + numpy + asyncio (floor)": {
        "argv": [
            PY,
            "-c",
            "import sys, numpy, asyncio; print('READY', flush=True); sys.stdin.read()",
        ],
        "pv": None,
    },
}


def search_datagram(name: str) -> bytes:
    from caioc.ca import Broadcaster, Role

    broadcaster = Broadcaster(Role.CLIENT)
    (group,) = broadcaster.search([name], cids=[1])
    return broadcaster.send(*group)


def is_search_reply(data: bytes) -> bool:
    """True if the datagram holds a SEARCH (6) response."""
    offset = 0
    while offset + 16 <= len(data):
        command = int.from_bytes(data[offset : offset + 2], "big")
        size = int.from_bytes(data[offset + 2 : offset + 4], "big")
        if command == 6:
            return True
        offset += 16 + size
    return False


def first_answer(datagram: bytes, port: int, process: h.Process, timeout: float) -> float:
    """Monotonic time of the first SEARCH reply from 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.005)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.process.poll() is not None:
                raise h.PeerError(process._report("exited before answering"))
            try:
                sock.sendto(datagram, ("127.0.0.1", port))
                data = sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            if is_search_reply(data):
                return time.monotonic()
    raise h.PeerError(process._report(f"no SEARCH answer in {timeout:g} s"))


def measure(
    name: str, spec: Mapping[str, Any], idle: float, pycache: str | None = None
) -> dict[str, float]:
    """One fresh process of ``spec``; with ``pycache``, bytecode is cached there."""
    env = h.with_bytecode_cache(h.loopback_ca_environment(h.free_port(), h.free_port()), pycache)
    port = int(env["EPICS_CA_SERVER_PORT"])
    datagram = search_datagram(spec["pv"]) if spec["pv"] else b""
    with h.processes() as started:
        process = h.Process(name, spec["argv"], env)
        started.append(process)
        if spec["pv"]:
            start = first_answer(datagram, port, process, 30.0) - process.started
        else:
            start = process.expect_timed("READY", 30.0)[0] - process.started
        start_cpu = h.process_cpu(process.pid).best
        time.sleep(1.0)
        rss = h.rss_mb(process.pid)
        cpu = h.idle_cpu_percent(process.pid, idle)
    return {"start": start, "start_cpu": start_cpu, "rss": rss, "idle": cpu}


def import_costs(top: int = 15, pycache: str | None = None) -> list[tuple[float, str]]:
    """The heaviest cumulative imports (ms) of the caioc board IOC, nested at most 2 deep.

    What ``caioc run weather-station --sim`` imports before it serves: the
    command, the board file's drivers and buses, the IOC toolkit and server.
    """
    code = (
        "import caioc.cli.main, caioc.ioc\n"
        "from caioc.boards import build\n"
        "from caioc.cli.board import _load\n"
        "build(_load('weather-station'), sim=True)\n"
    )
    env = h.with_bytecode_cache(os.environ, pycache)
    for _ in range(2 if pycache is not None else 1):  # the first fills the cache
        completed = subprocess.run(
            [PY, "-X", "importtime", "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=h.REPO_ROOT,
            env=env,
        )
    costs = []
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, package = line[len("import time:") :].split("|")
        depth = (len(package) - len(package.lstrip()) - 1) // 2
        if depth <= 2:
            costs.append((int(cumulative) / 1e3, "  " * depth + package.strip()))
    return sorted(costs, reverse=True)[:top]


def main(argv: Sequence[str] | None = None) -> int:
    parser = h.base_parser(__doc__.split("\n")[0])
    parser.add_argument("--importtime", action="store_true", help="show caioc's heaviest imports")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="no bytecode cache of the benchmark's own: with PYTHONDONTWRITEBYTECODE "
        "set, caioc is compiled at every start",
    )
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    idle = 2.0 if args.quick else 5.0
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in IOCS}
    costs: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench_ioc_pycache_") as directory:
        pycache = None if args.cold else directory
        if pycache is not None:
            for name, spec in IOCS.items():
                print(f"filling the bytecode cache: {name}", file=sys.stderr)
                measure(name, spec, 0.1, pycache)
        for repeat in range(repeats):
            for name, spec in IOCS.items():
                print(f"repeat {repeat + 1}/{repeats}: {name}", file=sys.stderr)
                runs[name].append(measure(name, spec, idle, pycache))
        if args.importtime:
            costs = import_costs(pycache=pycache)
    keys = ("start", "start_cpu", "rss", "idle")
    figures = {
        name: {key: statistics.median(r[key] for r in rs) for key in keys}
        for name, rs in runs.items()
    }
    names = list(IOCS)
    rows = []
    for key, label, unit, goal in (
        ("rss", "RSS after start-up", "MB", f"<= {GOAL_RSS_MB:g}"),
        ("start", "start to first SEARCH answer", "s", f"< {GOAL_START_S:g}"),
        ("start_cpu", "CPU used by then", "s", ""),
        ("idle", f"idle CPU over {idle:g} s", "% core", f"< {GOAL_IDLE_PERCENT:g}"),
    ):
        cells = [label, unit, *(_fmt(figures[n][key]) for n in names), goal]
        ours = figures[names[0]][key]
        limit = {"rss": GOAL_RSS_MB, "start": GOAL_START_S, "idle": GOAL_IDLE_PERCENT}.get(key)
        if limit is None:
            cells.append("")
        else:
            met = ours <= limit if key == "rss" else ours < limit
            cells.append("met" if met else "MISSED")
        cells.append(h.format_ratio(h.ratio(ours, figures[names[1]][key])))
        rows.append(cells)
    print()
    print(f"Median of {repeats} run(s), each a fresh process on loopback with free ports,")
    if args.cold:
        setting = os.environ.get("PYTHONDONTWRITEBYTECODE") or "unset"
        print(f"bytecode as the environment has it (--cold: PYTHONDONTWRITEBYTECODE {setting}).")
    else:
        print("bytecode compiled once and cached, as in an installed package.")
    print("(A floor's start-up is to its READY line: the interpreter and its imports.)")
    headers = ["figure", "unit", *names, "goal (caioc)", "caioc", "caioc/caproto"]
    print(h.format_table(headers, rows, right=set(range(2, len(headers) - 1))))
    if args.importtime:
        print("\nHeaviest imports of the caioc board IOC (cumulative ms, top-level, then any):")
        for ms, package in costs:
            print(f"  {ms:8.1f}  {package}")
    if args.json:
        h.write_json(
            args.json,
            "bench_ioc",
            [],
            h.settings_from(args),
            packages=("caioc", "caproto", "numpy"),
            extra={
                "figures": figures,
                "runs": runs,
                "argv": {n: s["argv"] for n, s in IOCS.items()},
                "bytecode_cache": not args.cold,
            },
        )
    return 0


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value >= 10:
        return f"{value:,.1f}"
    if value >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


if __name__ == "__main__":
    sys.exit(main())

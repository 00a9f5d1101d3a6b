"""Promises of the project itself: entry points, packaging, generated docs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_main_command_runs_the_core_self_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "caioc.cli.main", "--self-check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "caioc" in result.stdout
    # The demo crosses every step of a connect, a put and a get.
    for name in (
        "VersionRequest",
        "CreateChanRequest",
        "AccessRightsResponse",
        "CreateChanResponse",
        "WriteNotifyRequest",
        "WriteNotifyResponse",
        "ReadNotifyRequest",
        "ReadNotifyResponse",
    ):
        assert name in result.stdout, name
    assert "value read back: 21.5" in result.stdout


def test_drivers_and_boards_install_inside_the_caioc_namespace(tmp_path: Path) -> None:
    # Run from elsewhere so the checkout itself is not on sys.path.
    probe = (
        "import importlib.util, caioc.drivers, caioc.boards\n"
        "print(caioc.drivers.__file__)\n"
        "print(caioc.boards.__file__)\n"
        "print(importlib.util.find_spec('drivers'), importlib.util.find_spec('boards'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    )
    drivers, boards, top_level = result.stdout.splitlines()
    assert Path(drivers).parent == ROOT / "drivers"
    assert Path(boards).parent == ROOT / "boards"
    assert top_level == "None None"


@pytest.mark.parametrize("folder", ["caioc", "drivers", "boards"])
def test_caioc_never_imports_caproto(folder: str) -> None:
    pattern = re.compile(r"^\s*(import|from)\s+caproto\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / folder).rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert offenders == []


def test_state_machine_page_matches_the_tables() -> None:
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_state_diagrams
    finally:
        sys.path.pop(0)
    page = (ROOT / "docs" / "state-machines.md").read_text()
    assert page == make_state_diagrams.render(), "run python docs/make_state_diagrams.py"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python3 -m pip install -e '.[test]' && python3 -m pytest"
    assert command in readme
    install, test = command.split(" && ")
    assert install in ci and test in ci


def test_board_file_reference_matches_the_code(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_board_reference
    finally:
        sys.path.pop(0)
    page = (ROOT / "docs" / "board-files.md").read_text()
    assert page == make_board_reference.render(), "run python docs/make_board_reference.py"
    # and its example is a valid board file
    from caioc.boards import load

    example = page.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.toml").write_text(example)
    assert [d.driver for d in load(tmp_path / "example.toml").devices] == ["bme280"]


def test_benchmark_server_peers_import_nothing_of_the_benchmark() -> None:
    # bench_server.py times each server's start and reads its RSS: a server
    # process (benchmarks/_server_peer.py) must pay for its own library and
    # nothing else, so its top imports only what the interpreter has loaded.
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "sys.path.insert(0, 'benchmarks')\n"
        "import _server_peer\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    assert set(result.stdout.split()) <= {"_server_peer", "__future__", "collections.abc"}

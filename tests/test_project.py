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


#: A stand-in for every interpreter .ci/run calls: it logs what it was asked
#: to do (its own path, then its arguments) and does only what the script
#: needs of it (a venv is a directory with this script as its python).
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$0 $*" >> "$FAKE_LOG"
case "$1 $2" in
    "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;
    "-m pytest") case "$0" in *"$FAKE_FAIL_IN"*) exit "$FAKE_PYTEST_STATUS" ;; esac ;;
esac
exit 0
"""


def run_ci(
    tmp_path: Path, pytest_status: int, versions: list[str], fail_in: str = "/"
) -> tuple[int, list[str], str]:
    """.ci/run with fake interpreters: python3 on PATH, ``versions`` under PYENV_ROOT.

    pytest exits with ``pytest_status`` under the interpreters whose path
    holds ``fail_in`` (all by default), 0 under the others.
    """
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir(exist_ok=True)
    log.write_text("")
    fakes = [bin_dir / "python3"]
    for version in versions:
        home = tmp_path / "pyenv" / "versions" / f"{version}.1" / "bin"
        home.mkdir(parents=True, exist_ok=True)
        fakes.append(home / f"python{version}")
    for fake in fakes:
        fake.write_text(FAKE_PYTHON)
        fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYENV_ROOT": str(tmp_path / "pyenv"),
        "TMPDIR": str(tmp_path),
        "FAKE_LOG": str(log),
        "FAKE_PYTEST_STATUS": str(pytest_status),
        "FAKE_FAIL_IN": fail_in,
    }
    done = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, timeout=60
    )
    return done.returncode, log.read_text().splitlines(), done.stderr.decode()


def test_ci_runs_the_readme_test_command(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    command = "python3 -m pip install -e '.[test]' && python3 -m pytest"
    assert command in readme
    status, calls, _ = run_ci(tmp_path, 0, [])
    assert status == 0
    # the README's two commands, in order, with python3 from PATH
    python3 = str(tmp_path / "bin" / "python3")
    assert calls[:2] == [f"{python3} -m pip install -e .[test]", f"{python3} -m pytest"]


def test_ci_runs_the_suite_under_the_other_pythons_found(tmp_path: Path) -> None:
    status, calls, _ = run_ci(tmp_path, 0, ["3.10", "3.13"])
    assert status == 0
    runs = [call.split(" -m ")[0] for call in calls if call.endswith(" -m pytest")]
    assert len(runs) == 3  # python3, then a venv of 3.10 and one of 3.13
    venvs = [call.split()[-1] for call in calls if " -m venv " in call]
    assert [call.split()[0] for call in calls if " -m venv " in call] == [
        str(tmp_path / "pyenv" / "versions" / f"{v}.1" / "bin" / f"python{v}")
        for v in ("3.10", "3.13")
    ]
    assert runs[1:] == [f"{venv}/bin/python" for venv in venvs]
    assert all(f"{venv}/bin/python -m pip install -e .[test]" in calls for venv in venvs)


@pytest.mark.parametrize(
    ("pytest_status", "fail_in"),
    [(1, "/"), (5, "/"), (1, "/tmp."), (5, "/tmp.")],  # mktemp names the venvs tmp.*
    ids=["failure", "no tests", "failure under 3.13 only", "no tests under 3.13 only"],
)
def test_ci_fails_when_a_suite_fails_or_finds_no_tests(
    tmp_path: Path, pytest_status: int, fail_in: str
) -> None:
    status, calls, errors = run_ci(tmp_path, pytest_status, ["3.13"], fail_in)
    assert status != 0
    assert ("collected no tests" in errors) == (pytest_status == 5)
    if fail_in != "/":  # python3's run passed, and 3.13's ran
        assert sum(call.endswith(" -m pytest") for call in calls) == 2


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

"""The suite's ``slow`` marker: skipped by default, run on demand (tests/conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"

SAMPLE = """
import pytest

def test_quick():
    pass

@pytest.mark.slow
def test_long():
    pass
"""

INI = """[pytest]
addopts = -p no:cacheprovider
markers =
    slow: long runs
"""


def outcome(tmp_path: Path, *args: str) -> dict[str, str]:
    """Each sample test's outcome in a pytest run with ``args`` (a fresh process)."""
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "pytest.ini").write_text(INI)
    # hypothesis's plugin costs seconds of start-up per run; the sample needs none.
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:hypothesispytest", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    results = {}
    for line in completed.stdout.splitlines():
        if line.startswith("test_sample.py::"):
            name, _, rest = line.partition(" ")
            results[name.split("::")[1]] = rest.split()[0]
    return results


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), {"test_quick": "PASSED", "test_long": "SKIPPED"}),
        (("-m", "slow"), {"test_long": "PASSED"}),
        (("-m", "not slow"), {"test_quick": "PASSED"}),
        (("--run-slow",), {"test_quick": "PASSED", "test_long": "PASSED"}),
        (("-m", "slow or not slow"), {"test_quick": "PASSED", "test_long": "PASSED"}),
    ],
)
def test_slow_tests_run_only_when_asked(
    tmp_path: Path, args: tuple[str, ...], expected: dict[str, str]
) -> None:
    assert outcome(tmp_path, *args) == expected

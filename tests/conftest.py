"""Suite-wide options: long soak and stress tests run only when asked for.

Tests marked ``slow`` take tens of seconds and load the machine; they are
skipped unless the run selects them with a marker expression that names
``slow`` (``-m slow``, ``-m "slow and peers"``) or passes ``--run-slow``.

A run started as a background job without job control (``pytest &`` in a
script: the shell then ignores SIGINT for it) would hand that ignore down
to every child, and the tests that stop a tool or an IOC with SIGINT, as a
user's Ctrl-C does, would wait for it in vain: Python's own handler is put
back, so children start with the default action.
"""

from __future__ import annotations

import signal

import pytest

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run the tests marked slow (long soak and stress runs)",
    )


def slow_requested(config: pytest.Config) -> bool:
    """Whether this run asked for the slow tests (``--run-slow`` or ``-m ...slow...``)."""
    # Any -m expression naming the marker is a deliberate choice about slow
    # tests: "-m slow" selects them, "-m 'not slow'" deselects them itself.
    return bool(config.getoption("--run-slow")) or "slow" in (config.option.markexpr or "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if slow_requested(config):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or --run-slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)

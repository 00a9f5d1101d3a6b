"""Access security for board files: ``access_security`` in ``[board]``, or ``--acf FILE``.

``caioc run BOARD --sim`` serves the board's PVs under the rules of the
.acf file its ``[board]`` table names (next to the board file), or of the
file ``--acf`` names instead; the C client (pyepics over libca) sees the
rights. A bad key, a missing file or a syntax error stops ``caioc run``
before anything is served, naming the file and the line; ``caioc check``
validates the .acf file too and ``caioc deploy`` carries ``--acf`` into
the service's command line.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from peers import ROOT, ca_environment, free_port, process_until_ready, run_pyepics

import caioc.boards
from caioc.boards import BoardFileError, load
from caioc.cli.main import main

GPIO_DEMO = Path(caioc.boards.__file__).parent / "files" / "gpio-demo.toml"

READ_ONLY = "ASG(DEFAULT) {\n    RULE(1, READ)\n}\n"
WRITABLE = "ASG(DEFAULT) {\n    RULE(1, WRITE)\n}\n"


def board_with(tmp_path: Path, value: str | None = '"rules.acf"') -> Path:
    """The shipped GPIO demo with ``access_security = <value>`` in its [board] table."""
    text = GPIO_DEMO.read_text()
    assert '\nprefix = "demo:"\n' in text
    if value is not None:
        text = text.replace(
            '\nprefix = "demo:"\n', f'\nprefix = "demo:"\naccess_security = {value}\n'
        )
    path = tmp_path / "boards" / "demo.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def key_line(board: Path) -> int:
    lines = board.read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.startswith("access_security"))


#: What the C client sees of the relay: its rights, and whether a put goes through.
CLIENT = """
relay = epics.PV("demo:relay:state")
until(relay.wait_for_connection, "demo:relay:state to connect")
try:
    relay.put(1, wait=True, timeout=5)
    put = "done"
except epics.ca.CASeverityException as error:
    put = "refused: " + str(error)
result = {
    "read": relay.read_access,
    "write": relay.write_access,
    "put": put,
    "value": relay.get(timeout=5, use_monitor=False),
}
"""


def serve_and_look(board: Path, *options: str) -> dict[str, object]:
    env = ca_environment(free_port(), free_port())
    argv = [sys.executable, "-m", "caioc.cli.main", "run", str(board), "--sim", *options]
    with process_until_ready("", env, argv=[*argv, "--list-pvs"], ready="PVs:"):
        result: dict[str, object] = run_pyepics(CLIENT, env)
    return result


@pytest.mark.peers
def test_the_board_files_acf_is_enforced_and_acf_overrides_it(tmp_path: Path) -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    board = board_with(tmp_path)
    (board.parent / "rules.acf").write_text(READ_ONLY)  # next to the board file
    (tmp_path / "writable.acf").write_text(WRITABLE)
    assert load(board).access_security == board.parent / "rules.acf"

    read_only = serve_and_look(board)
    assert read_only["read"] is True and read_only["write"] is False
    assert str(read_only["put"]).startswith("refused")
    assert read_only["value"] == 0  # still Off

    overridden = serve_and_look(board, "--acf", str(tmp_path / "writable.acf"))
    assert overridden == {"read": True, "write": True, "put": "done", "value": 1}


def caioc_run(board: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``caioc run BOARD --sim`` to its end: it must refuse to start."""
    env = ca_environment(free_port(), free_port())
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "caioc.cli.main",
            "run",
            str(board),
            "--sim",
            "--list-pvs",
            *options,
        ],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def refused(completed: subprocess.CompletedProcess[str]) -> str:
    assert completed.returncode != 0
    assert "PVs:" not in completed.stdout and "serving" not in completed.stderr
    assert "Traceback" not in completed.stderr
    return completed.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"missing.acf"', "missing.acf does not exist"),
        ("5", "access_security must be the path of an .acf file"),
        ('""', "access_security must be the path of an .acf file"),
        ('"."', "is not a file"),
    ],
)
def test_a_bad_access_security_key_is_the_board_files_line(
    tmp_path: Path, value: str, message: str
) -> None:
    board = board_with(tmp_path, value)
    with pytest.raises(BoardFileError) as error:
        load(board)
    assert error.value.line == key_line(board)
    assert str(error.value).startswith(f"{board}:{key_line(board)}: ")
    assert message in str(error.value)


def test_caioc_run_refuses_a_missing_acf_file_before_serving(tmp_path: Path) -> None:
    board = board_with(tmp_path, '"missing.acf"')
    stderr = refused(caioc_run(board))
    assert f"{board}:{key_line(board)}: access_security: " in stderr
    assert "missing.acf does not exist" in stderr
    # --acf naming no file
    board = board_with(tmp_path, None)
    stderr = refused(caioc_run(board, "--acf", str(tmp_path / "nowhere.acf")))
    assert f"{tmp_path / 'nowhere.acf'}: cannot read the access security file" in stderr


def test_caioc_run_refuses_an_acf_syntax_error_with_its_file_and_line(tmp_path: Path) -> None:
    board = board_with(tmp_path)
    rules = board.parent / "rules.acf"
    rules.write_text("ASG(DEFAULT) {\n    RULE(1, READ)\n    RULE(1 WRITE)\n}\n")
    stderr = refused(caioc_run(board))
    assert f"caioc: {rules}:3:" in stderr
    assert "keeping the old rules" not in stderr


def test_caioc_check_validates_the_acf_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    board = board_with(tmp_path)
    rules = board.parent / "rules.acf"
    rules.write_text(READ_ONLY)
    assert main(["check", str(board), "--sim"]) == 0
    out = capsys.readouterr().out
    assert f"access security {rules}: ok" in out
    rules.write_text("ASG(DEFAULT) {\n    RULE(1, NOTHING)\n}\n")
    assert main(["check", str(board), "--sim"]) == 2
    captured = capsys.readouterr()
    assert f"{rules}:2:" in captured.err and "demo:relay" not in captured.out
    # --acf is checked in its place
    (tmp_path / "other.acf").write_text(WRITABLE)
    assert main(["check", str(board), "--sim", "--acf", str(tmp_path / "other.acf")]) == 0
    assert f"access security {tmp_path / 'other.acf'}: ok" in capsys.readouterr().out


def exec_argv(unit: str) -> list[str]:
    (line,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_caioc_deploy_carries_acf_to_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    board = board_with(tmp_path, None)
    (tmp_path / "site.acf").write_text(READ_ONLY)
    monkeypatch.chdir(tmp_path)
    assert main(["deploy", str(board), "--sim", "--acf", "site.acf"]) == 0
    argv = exec_argv(capsys.readouterr().out)
    # absolute: the service runs in the board file's directory, not here
    assert argv[-3:] == ["--sim", "--acf", str((tmp_path / "site.acf").resolve())]
    assert main(["deploy", str(board)]) == 0
    assert "--acf" not in exec_argv(capsys.readouterr().out)
    # a broken file does not become a service
    (tmp_path / "site.acf").write_text("ASG(DEFAULT) {\n")
    assert main(["deploy", str(board), "--acf", "site.acf"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "site.acf:" in captured.err


def board_with_relay_group(tmp_path: Path, group: str, level: str = "0") -> Path:
    """board_with(), the relay's [[device]] table given access_group and access_level."""
    board = board_with(tmp_path)
    text = board.read_text()
    assert '\nname = "relay"\n' in text
    board.write_text(
        text.replace(
            '\nname = "relay"\n',
            f'\nname = "relay"\naccess_group = {group}\naccess_level = {level}\n',
        )
    )
    return board


#: The relay's group may only be read; every other PV may be written.
GUARDED = "ASG(DEFAULT) {\n    RULE(1, WRITE)\n}\nASG(operators) {\n    RULE(1, READ)\n}\n"


def test_a_devices_access_group_places_its_pvs_and_their_fields(tmp_path: Path) -> None:
    from caioc.boards import build

    board = board_with_relay_group(tmp_path, '"operators"', "1")
    (board.parent / "rules.acf").write_text(GUARDED)
    spec = {s.name: s for s in load(board).devices}
    assert (spec["relay"].access_group, spec["relay"].access_level) == ("operators", 1)
    assert (spec["button"].access_group, spec["button"].access_level) == ("DEFAULT", 0)
    devices = {d.prefix: d for d in build(load(board), sim=True)}
    relay, button = devices["demo:relay:"], devices["demo:button:"]
    for name in ("demo:relay:state", "demo:relay:state.PROC", "demo:relay:connected"):
        channel = relay.pvdb[name]
        assert (channel.access_group, channel.access_level) == ("operators", 1), name
    channel = button.pvdb["demo:button:state"]
    assert (channel.access_group, channel.access_level) == ("DEFAULT", 0)


@pytest.mark.peers
def test_the_c_client_may_not_switch_a_relay_in_a_read_only_group(tmp_path: Path) -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    board = board_with_relay_group(tmp_path, '"operators"')
    (board.parent / "rules.acf").write_text(GUARDED)
    guarded = serve_and_look(board)
    assert guarded["read"] is True and guarded["write"] is False
    assert str(guarded["put"]).startswith("refused")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("access_group", "5", "access_group must be an ASG name"),
        ("access_group", '"two words"', "access_group must be an ASG name"),
        ("access_level", "2", "access_level must be 0 or 1"),
        ("access_level", "true", "access_level must be 0 or 1"),
    ],
)
def test_a_bad_device_access_key_is_its_line(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    group, level = ('"operators"', value) if key == "access_level" else (value, "0")
    board = board_with_relay_group(tmp_path, group, level)
    (board.parent / "rules.acf").write_text(GUARDED)  # only the device key is wrong
    line = next(
        n for n, text in enumerate(board.read_text().splitlines(), 1) if text.startswith(key)
    )
    with pytest.raises(BoardFileError) as error:
        load(board)
    assert str(error.value).startswith(f"{board}:{line}: ") and message in str(error.value)

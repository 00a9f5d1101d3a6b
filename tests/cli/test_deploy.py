"""``caioc deploy``: a systemd unit that runs the board file, restarts, logs to the journal."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from peers import ROOT, ca_environment, free_port, process_until_ready

import caioc.boards
from caioc.cli import board
from caioc.cli.main import main

WEATHER = Path(caioc.boards.__file__).parent / "files" / "weather-station.toml"
LOOPBACK = {
    "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
    "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
    "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
}


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file -> (key, value) in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), line
            current = sections.setdefault(line[1:-1], [])
            continue
        key, equals, value = line.partition("=")
        assert equals and current is not None, f"not key=value in a section: {line!r}"
        current.append((key, value))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [value for name, value in unit[section] if name == key]


def exec_argv(unit: dict[str, list[tuple[str, str]]]) -> list[str]:
    """ExecStart as systemd splits it (quotes, escapes; %% and $$ undone)."""
    (line,) = values(unit, "Service", "ExecStart")
    return [word.replace("%%", "%").replace("$$", "$") for word in shlex.split(line)]


def environment(unit: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    result = {}
    for line in values(unit, "Service", "Environment"):
        for word in shlex.split(line.replace("%%", "%")):
            name, _, value = word.partition("=")
            result[name] = value
    return result


def deploy(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["deploy", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_unit_is_printed_and_nothing_is_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    status, out, _ = deploy(
        capsys,
        "weather-station",
        "--user",
        "pi",
        "-e",
        "EPICS_CAS_INTF_ADDR_LIST=192.168.1.20",
        "--env",
        "EPICS_CA_ADDR_LIST=192.168.1.255 10.0.0.255",
        "--restart-sec",
        "7",
    )
    assert status == 0 and not list(tmp_path.iterdir())
    unit = parse_unit(out)
    assert set(unit) == {"Unit", "Service", "Install"}
    assert values(unit, "Unit", "After") == ["network-online.target"]
    assert values(unit, "Service", "Restart") == ["on-failure"]
    assert values(unit, "Service", "RestartSec") == ["7"]
    assert values(unit, "Service", "User") == ["pi"]
    assert values(unit, "Service", "WorkingDirectory") == [str(WEATHER.parent.resolve())]
    assert values(unit, "Service", "StandardOutput") == ["journal"]
    assert values(unit, "Service", "StandardError") == ["journal"]
    assert values(unit, "Install", "WantedBy") == ["multi-user.target"]
    assert environment(unit) == {
        "EPICS_CAS_INTF_ADDR_LIST": "192.168.1.20",
        "EPICS_CA_ADDR_LIST": "192.168.1.255 10.0.0.255",
        "PYTHONUNBUFFERED": "1",
    }
    argv = exec_argv(unit)
    # The same installation that generated it: this interpreter, absolute.
    assert argv[:3] == [str(Path(sys.executable).absolute()), "-m", "caioc.cli.main"]
    assert argv[3:] == ["run", str(WEATHER.resolve())]


def test_the_exec_start_command_serves_the_board_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = deploy(
        capsys,
        str(WEATHER),
        "--sim",
        "--prefix",
        "svc:",
        *(f"--env={name}={value}" for name, value in LOOPBACK.items()),
    )
    assert status == 0
    unit = parse_unit(out)
    argv = exec_argv(unit)
    assert argv[-4:] == ["run", str(WEATHER.resolve()), "--sim", "--prefix", "svc:"][-4:]
    # Run it as systemd would: the unit's environment, in its directory.
    env = {**ca_environment(free_port(), free_port()), **environment(unit)}
    with process_until_ready("", env, argv=[*argv, "--list-pvs"], ready="PVs:") as process:
        assert process.poll() is None
        # KillSignal=SIGINT: a stop is clean (exit 0), so Restart=on-failure leaves it stopped.
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    assert values(unit, "Service", "WorkingDirectory") == [str(WEATHER.parent.resolve())]


def test_systemd_accepts_the_unit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    target = tmp_path / "caioc-weather.service"
    status, out, _ = deploy(
        capsys, str(WEATHER), "--user", "root", "-e", "EPICS_CA_ADDR_LIST=a b", "-o", str(target)
    )
    assert status == 0 and out == f"wrote {target}\n"
    checked = subprocess.run(
        [analyze, "verify", str(target)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert target.name not in checked.stdout + checked.stderr  # no complaint about it
    # The check can fail: a broken ExecStart is refused.
    broken = tmp_path / "broken.service"
    broken.write_text(target.read_text().replace("ExecStart=", "ExecStart=/nonexistent/"))
    refused = subprocess.run(
        [analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0


def test_awkward_paths_and_prefixes_survive_quoting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "my 50% boards"
    folder.mkdir()
    path = folder / 'lab "A" 100%.toml'
    path.write_text(WEATHER.read_text())
    status, out, _ = deploy(capsys, str(path), "--prefix", "$HOME:%n;", "--user", "root")
    assert status == 0
    unit = parse_unit(out)
    assert values(unit, "Unit", "Description") == ['caioc IOC (lab "A" 100%%.toml)']
    (line,) = values(unit, "Service", "ExecStart")
    assert "100%%" in line and "$$HOME:%%n" in line  # no systemd specifier or variable left
    assert exec_argv(unit)[-4:] == ["run", str(path.resolve()), "--prefix", "$HOME:%n;"]
    directory = str(folder.resolve()).replace("%", "%%")
    assert values(unit, "Service", "WorkingDirectory") == [directory]
    assert values(unit, "Service", "SyslogIdentifier") == ["caioc-lab-A-100"]
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:  # systemd itself reads it without a complaint
        target = tmp_path / "awkward.service"
        target.write_text(out)
        checked = subprocess.run(
            [analyze, "verify", str(target)], capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0 and not checked.stderr, checked.stderr


def test_install_writes_to_the_unit_directory_and_says_what_next(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, _ = deploy(
        capsys, str(WEATHER), "--install", "--unit-directory", str(tmp_path), "--name", "ioc1"
    )
    assert status == 0
    target = tmp_path / "ioc1.service"
    assert parse_unit(target.read_text())["Service"]
    assert f"wrote {target}" in out
    assert "systemctl daemon-reload && sudo systemctl enable --now ioc1" in out
    assert "journalctl -u ioc1" in out
    status, out, err = deploy(
        capsys, str(WEATHER), "--install", "--unit-directory", str(tmp_path / "missing")
    )
    assert status == 1 and "cannot write" in err and "sudo" in err
    assert Path("/etc/systemd/system") == board.SYSTEMD_UNIT_DIRECTORY


def test_mistakes_are_refused_before_anything_is_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[device]]\ndriver = "nope"\nname = "x"\nbus = "i2c-1"\n')
    target = tmp_path / "unit.service"
    status, _, err = deploy(capsys, str(bad), "-o", str(target))
    assert status == 2 and "bad.toml:2" in err and not target.exists()
    status, _, err = deploy(capsys, str(WEATHER), "-e", "PATH=/tmp", "-o", str(target))
    assert status == 2 and "EPICS_CA_" in err and not target.exists()
    status, _, err = deploy(capsys, str(WEATHER), "-e", "EPICS_CA_ADDR_LIST", "-o", str(target))
    assert status == 2 and "NAME=VALUE" in err
    status, _, err = deploy(capsys, str(WEATHER), "--name", "a/b", "-o", str(target))
    assert status == 2 and not target.exists()


def test_the_default_user_is_whoever_asked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")  # sudo caioc deploy --install
    _, out, _ = deploy(capsys, str(WEATHER))
    assert values(parse_unit(out), "Service", "User") == ["alice"]
    monkeypatch.delenv("SUDO_USER")
    monkeypatch.setenv("USER", "bob")
    monkeypatch.setenv("LOGNAME", "bob")
    _, out, _ = deploy(capsys, str(WEATHER))
    assert values(parse_unit(out), "Service", "User") == ["bob"]


def test_a_console_script_is_used_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "bin" / "caioc"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script), "deploy"])
    assert board.caioc_command() == [str(script.resolve())]
    monkeypatch.setattr(sys, "argv", [str(ROOT / "caioc" / "cli" / "main.py")])
    assert board.caioc_command()[1:] == ["-m", "caioc.cli.main"]
    assert os.path.isabs(board.caioc_command()[0])

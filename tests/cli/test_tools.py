"""caioc-get, -put and -monitor against softioc (the C IOC) and caioc's server.

The tools must print what epics-base's caget, caput and camonitor print,
character for character. The expected texts below are written by hand from
the formats of epics-base's ``tool_lib.c``: a ``%-30s`` name column and a
blank for scalars (just the name and the separator for arrays and other
separators), values with ``%g``, ``count v1 v2 ...`` for arrays, the wide
``name timestamp value [stat sevr]`` lines with two trailing separators
when there is no alarm, ``<undefined>`` for a zero timestamp.

Every tool runs as a subprocess (``python -m caioc.cli.get`` ...); the runs
of one server go through a small pool so the module stays fast.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from peers import ROOT, SERVE_PVDB, ca_environment, free_port, process_until_ready, run_to_end

SOFTIOC = r"""
import numpy
from softioc import asyncio_dispatcher, builder, softioc
builder.SetDeviceName("T")
builder.aOut("AO", initial_value=3.25, EGU="mm", PREC=3, DRVH=100, DRVL=-100)
builder.longOut("LO", initial_value=7)
builder.longOut("NEG", initial_value=-5)
builder.mbbOut("MB", "Off", "On", initial_value=1)
builder.stringOut("SO", initial_value="hello")
builder.WaveformOut("WF", initial_value=numpy.arange(5.0) + 0.5)
text = b'a long string, longer than forty characters: "quoted"\tand tabbed\0'
builder.WaveformOut("CW", initial_value=numpy.frombuffer(text, numpy.uint8), length=100)
builder.records.ai("UDF")
builder.aOut("PAO", initial_value=1.0, PREC=2)
builder.longOut("PLO", initial_value=0, HIGH=100, HSV="MINOR")
builder.mbbOut("PMB", "Off", "On", initial_value=0)
builder.WaveformOut("PWF", initial_value=numpy.zeros(5))
builder.WaveformOut("PCW", initial_value=numpy.frombuffer(b"init\0", numpy.uint8), length=100)
builder.stringOut("PSO", initial_value="init")
builder.longOut("MON", initial_value=0, HIGH=100, HSV="MINOR")
builder.LoadDatabase()
softioc.iocInit(asyncio_dispatcher.AsyncioDispatcher(), enable_pva=False)
print("READY", flush=True)
softioc.non_interactive_ioc()
"""

CAIOC = (
    r"""
import numpy
from caioc.ca import EPICS_EPOCH_OFFSET
from caioc.server import (ChannelChar, ChannelDouble, ChannelEnum, ChannelInteger,
                          ChannelString)
text = 'a long string, longer than forty characters: "quoted"\tand tabbed'
pvdb = {
    "T:AO": ChannelDouble(value=3.25, units="mm", precision=3,
                          upper_disp_limit=100.0, lower_disp_limit=-100.0,
                          upper_ctrl_limit=100.0, lower_ctrl_limit=-100.0),
    "T:LO": ChannelInteger(value=7),
    "T:NEG": ChannelInteger(value=-5),
    "T:MB": ChannelEnum(value=1, enum_strings=["Off", "On"]),
    "T:SO": ChannelString(value="hello"),
    "T:WF": ChannelDouble(value=numpy.arange(5.0) + 0.5),
    "T:CW": ChannelChar(value=text, max_length=100),
    "T:UDF": ChannelDouble(value=0.0, timestamp=float(EPICS_EPOCH_OFFSET),
                           alarm_status=17, alarm_severity=3),
    "T:PAO": ChannelDouble(value=1.0, precision=2),
    "T:PLO": ChannelInteger(value=0, upper_warning_limit=100),
    "T:PMB": ChannelEnum(value=0, enum_strings=["Off", "On"]),
    "T:PWF": ChannelDouble(value=numpy.zeros(5)),
    "T:PCW": ChannelChar(value="init", max_length=100),
    "T:PSO": ChannelString(value="init"),
    "T:MON": ChannelInteger(value=0, upper_warning_limit=100),
}
"""
    + SERVE_PVDB
)

SERVERS = {"softioc": SOFTIOC, "caioc": CAIOC}
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}"
TOOLS = {"get": "caioc.cli.get", "put": "caioc.cli.put", "monitor": "caioc.cli.monitor"}


@dataclass
class Run:
    """What one tool run gave."""

    rc: int
    out: str
    err: str


def tool(env: dict[str, str], name: str, *args: str, timeout: float = 20.0) -> Run:
    """Run ``caioc-<name> args`` to completion."""
    done = run_to_end([sys.executable, "-m", TOOLS[name], *args], env, timeout)
    return Run(done.returncode, done.stdout, done.stderr)


def col(name: str) -> str:
    """The name column of a scalar: ``%-30s`` and the blank separator."""
    return f"{name:<30} "


# The runs against each server: gets of PVs nobody writes, and chains of
# puts (each chain on its own PVs, run in order).
GETS: dict[str, Sequence[str]] = {
    "default": ("T:AO", "T:LO", "T:MB", "T:SO", "T:WF", "T:NEG"),
    "terse": ("-t", "T:AO", "T:MB", "T:WF"),
    "server_string": ("-t", "-s", "T:AO"),
    "hex": ("-n", "-0x", "-lb", "T:MB", "T:LO", "T:NEG", "T:AO", "T:WF"),
    "octal_and_float_hex": ("-0o", "-lx", "T:LO", "T:NEG", "T:AO", "T:WF"),
    "binary": ("-0b", "-lo", "T:LO", "T:NEG", "T:WF"),
    "e_format_count": ("-e3", "-#2", "T:WF", "T:AO"),
    "f_format_separator": ("-f", "5", "-F,", "T:AO", "T:WF"),
    "g_format": ("-g2", "T:AO"),
    "count_chars": ("-#", "4", "T:CW"),
    "long_string": ("-S", "T:CW"),
    "callback": ("-c", "-p", "5", "-w", "5", "T:WF", "T:AO"),
    "wide": ("-a", "T:AO", "T:MB", "T:WF", "T:UDF"),
    "wide_separator": ("-a", "-F|", "T:AO", "T:UDF"),
    "ctrl_double": ("-d", "CTRL_DOUBLE", "T:AO"),
    "ctrl_enum": ("-d", "31", "T:MB"),
    "time_enum": ("-d", "DBR_TIME_ENUM", "T:MB"),
    "missing": ("-w", "0.3", "T:NOPE"),
    "missing_some": ("-w", "0.3", "T:AO", "T:NOPE"),
}
PUTS: dict[str, Sequence[Sequence[str]]] = {
    "double": (
        ("T:PAO", "2.5"),
        ("-t", "T:PAO", "3"),
        ("-c", "-w", "5", "-p", "1", "T:PAO", "-1.25"),
    ),
    "long": (("-l", "T:PLO", "150"),),
    "enum": (
        ("T:PMB", "On"),
        ("-n", "T:PMB", "0"),
        ("T:PMB", "Bogus"),
        ("-s", "T:PMB", "1"),
        ("T:PMB", "1"),
    ),
    "array": (
        ("-a", "T:PWF", "3", "1", "2", "-3"),
        ("-a", "T:PWF", "6", "1", "2", "3", "4", "5", "6"),
    ),
    "long_string": (
        ("-S", "T:PCW", 'hello\\tworld "x"'),
        ("-S", "T:PCW", "caf\\xc3\\xa9"),
    ),
    "string": (("T:PSO", "hello", "there", "world"), ("-F:", "T:PSO", "bye")),
    "missing": (("-w", "0.3", "T:NOPE", "1"),),
}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The environment that finds one running server."""
    if request.param == "softioc":
        pytest.importorskip("softioc", reason="softioc (the C IOC) not installed")
    env = ca_environment(free_port(), free_port())
    with process_until_ready(SERVERS[request.param], env):
        yield env


@pytest.fixture(scope="module")
def runs(server: dict[str, str]) -> dict[str, Run | list[Run]]:
    """Every get and put chain against the server, a few at a time."""

    def chain(commands: Sequence[Sequence[str]]) -> list[Run]:
        return [tool(server, "put", *args) for args in commands]

    with ThreadPoolExecutor(max_workers=4) as pool:
        chains = {key: pool.submit(chain, commands) for key, commands in PUTS.items()}
        gets = {key: pool.submit(tool, server, "get", *args) for key, args in GETS.items()}
        results: dict[str, Run | list[Run]] = {f"put:{k}": f.result() for k, f in chains.items()}
        results.update({k: f.result() for k, f in gets.items()})
    return results


def get(runs: dict[str, Run | list[Run]], key: str) -> Run:
    run = runs[key]
    assert isinstance(run, Run)
    assert run.rc == 0 and run.err == "", run
    return run


def puts(runs: dict[str, Run | list[Run]], key: str) -> list[Run]:
    chain = runs[f"put:{key}"]
    assert isinstance(chain, list)
    return chain


# -- caioc-get ------------------------------------------------------------------


def test_get_default_format(runs: dict[str, Run | list[Run]]) -> None:
    assert get(runs, "default").out == (
        "T:AO                           3.25\n"
        "T:LO                           7\n"
        "T:MB                           On\n"
        "T:SO                           hello\n"
        "T:WF 5 0.5 1.5 2.5 3.5 4.5\n"
        "T:NEG                          -5\n"
    )


def test_get_terse_and_server_string(runs: dict[str, Run | list[Run]]) -> None:
    assert get(runs, "terse").out == "3.25\nOn\n5 0.5 1.5 2.5 3.5 4.5\n"
    assert get(runs, "server_string").out == "3.250\n"  # PREC 3, converted by the server


def test_get_enum_as_number_and_integer_bases(runs: dict[str, Run | list[Run]]) -> None:
    # -n reads the enum as DBR_TIME_INT, so -0x applies to it too; -lb rounds doubles
    assert get(runs, "hex").out == (
        col("T:MB") + "0x1\n" + col("T:LO") + "0x7\n" + col("T:NEG") + "0xFFFFFFFB\n"
        + col("T:AO") + "11\n" + "T:WF 5 1 10 11 100 101\n"
    )  # fmt: skip
    assert get(runs, "octal_and_float_hex").out == (
        col("T:LO") + "0o7\n" + col("T:NEG") + "0o37777777773\n"
        + col("T:AO") + "0x3\n" + "T:WF 5 0x1 0x2 0x3 0x4 0x5\n"
    )  # fmt: skip
    assert get(runs, "binary").out == (
        col("T:LO") + "111\n" + col("T:NEG") + "11111111111111111111111111111011\n"
        + "T:WF 5 0o1 0o2 0o3 0o4 0o5\n"
    )  # fmt: skip


def test_get_float_formats_counts_and_separator(runs: dict[str, Run | list[Run]]) -> None:
    # -# prints the count even for a scalar, whose name column stays padded
    assert get(runs, "e_format_count").out == (
        "T:WF 2 5.000e-01 1.500e+00\n" + col("T:AO") + "1 3.250e+00\n"
    )
    assert get(runs, "f_format_separator").out == (
        "T:AO,3.25000\nT:WF,5,0.50000,1.50000,2.50000,3.50000,4.50000\n"
    )
    assert get(runs, "g_format").out == col("T:AO") + "3.2\n"


def test_get_char_arrays_and_callbacks(runs: dict[str, Run | list[Run]]) -> None:
    assert get(runs, "count_chars").out == "T:CW 4 97 32 108 111\n"
    assert get(runs, "long_string").out == (
        'T:CW a long string, longer than forty characters: \\"quoted\\"\\tand tabbed\n'
    )
    assert get(runs, "callback").out == "T:WF 5 0.5 1.5 2.5 3.5 4.5\n" + col("T:AO") + "3.25\n"


def test_get_wide_format(runs: dict[str, Run | list[Run]]) -> None:
    lines = get(runs, "wide").out.splitlines(keepends=True)
    assert len(lines) == 4
    assert re.fullmatch(rf"T:AO {{27}}{STAMP} 3\.25  \n", lines[0])
    assert re.fullmatch(rf"T:MB {{27}}{STAMP} On  \n", lines[1])
    assert re.fullmatch(rf"T:WF {STAMP} 5 0\.5 1\.5 2\.5 3\.5 4\.5  \n", lines[2])
    assert lines[3] == "T:UDF                          <undefined> 0 UDF INVALID\n"
    wide = get(runs, "wide_separator").out.splitlines(keepends=True)
    assert re.fullmatch(rf"T:AO\|{STAMP}\|3\.25\|\|\n", wide[0])
    assert wide[1] == "T:UDF|<undefined>|0|UDF|INVALID\n"


def test_get_specified_dbr_types(runs: dict[str, Run | list[Run]]) -> None:
    assert get(runs, "ctrl_double").out == (
        "T:AO\n"
        "    Native data type: DBF_DOUBLE\n"
        "    Request type:     DBR_CTRL_DOUBLE\n"
        "    Element count:    1\n"
        "    Value:            3.25\n"
        "    Status:           NO_ALARM\n"
        "    Severity:         NO_ALARM\n"
        "    Units:            mm\n"
        "    Precision:        3\n"
        "    Lo disp limit:    -100\n"
        "    Hi disp limit:    100\n"
        "    Lo alarm limit:   nan\n"
        "    Lo warn limit:    nan\n"
        "    Hi warn limit:    nan\n"
        "    Hi alarm limit:   nan\n"
        "    Lo ctrl limit:    -100\n"
        "    Hi ctrl limit:    100\n"
    )
    assert get(runs, "ctrl_enum").out == (
        "T:MB\n"
        "    Native data type: DBF_ENUM\n"
        "    Request type:     DBR_CTRL_ENUM\n"
        "    Element count:    1\n"
        "    Value:            On\n"
        "    Status:           NO_ALARM\n"
        "    Severity:         NO_ALARM\n"
        "    Enums:            ( 2)\n"
        "                      [ 0] Off\n"
        "                      [ 1] On\n"
    )
    assert re.fullmatch(
        "T:MB\n"
        "    Native data type: DBF_ENUM\n"
        "    Request type:     DBR_TIME_ENUM\n"
        "    Element count:    1\n"
        "    Value:            1\n"
        f"    Timestamp:        {STAMP}\n"
        "    Status:           NO_ALARM\n"
        "    Severity:         NO_ALARM\n",
        get(runs, "time_enum").out,
    )


def test_get_missing_pvs_exit_1(runs: dict[str, Run | list[Run]]) -> None:
    assert runs["missing"] == Run(1, "", "Channel connect timed out: 'T:NOPE' not found.\n")
    # epics-base 7 reads nothing when any channel is missing
    assert runs["missing_some"] == Run(1, "", "Channel connect timed out: some PV(s) not found.\n")


def test_options_errors_and_help() -> None:
    env = ca_environment(free_port(), free_port())
    argvs = {
        "unknown": ("get", "-z", "T:AO"),
        "no_argument": ("get", "T:AO", "-w"),
        "no_value": ("put", "T:PAO"),
        "no_name": ("monitor",),
        "help": ("get", "-h"),
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(tool, env, *argv) for key, argv in argvs.items()}
        run = {key: future.result() for key, future in futures.items()}
    assert run["unknown"] == Run(1, "", "Unrecognized option: '-z'. ('caget -h' for help.)\n")
    assert run["no_argument"] == Run(
        1, "", "Option '-w' requires an argument. ('caget -h' for help.)\n"
    )
    assert run["no_value"] == Run(1, "", "No value specified. ('caput -h' for help.)\n")
    assert run["no_name"] == Run(1, "", "No pv name specified. ('camonitor -h' for help.)\n")
    assert run["help"].rc == 0 and run["help"].out == ""
    assert run["help"].err.startswith("\nUsage: caget [options] <PV name> ...\n")


# -- caioc-put ------------------------------------------------------------------


def test_put_double_plain_terse_and_callback(runs: dict[str, Run | list[Run]]) -> None:
    plain, terse, callback = puts(runs, "double")
    assert plain == Run(
        0, "Old : T:PAO                          1\nNew : T:PAO                          2.5\n", ""
    )
    assert terse == Run(0, "3\n", "")
    assert callback == Run(0, f"Old : {col('T:PAO')}3\nNew : {col('T:PAO')}-1.25\n", "")


def test_put_long_format_shows_the_alarm(runs: dict[str, Run | list[Run]]) -> None:
    (run,) = puts(runs, "long")
    assert run.rc == 0 and run.err == ""
    assert re.fullmatch(
        rf"Old : T:PLO {{26}}{STAMP} 0  \nNew : T:PLO {{26}}{STAMP} 150 HIGH MINOR\n", run.out
    )


def test_put_enum_strings_numbers_and_refusals(runs: dict[str, Run | list[Run]]) -> None:
    name, number, bogus, forced_string, index_as_text = puts(runs, "enum")
    assert name == Run(0, f"Old : {col('T:PMB')}Off\nNew : {col('T:PMB')}On\n", "")
    assert number == Run(0, f"Old : {col('T:PMB')}1\nNew : {col('T:PMB')}0\n", "")
    assert bogus == Run(1, "", "Enum string value 'Bogus' invalid.\n")
    assert forced_string == Run(1, "", "Enum string value '1' invalid.\n")
    assert index_as_text == Run(0, f"Old : {col('T:PMB')}Off\nNew : {col('T:PMB')}On\n", "")


def test_put_arrays(runs: dict[str, Run | list[Run]]) -> None:
    three, too_many = puts(runs, "array")
    assert three == Run(0, "Old : T:PWF 5 0 0 0 0 0\nNew : T:PWF 5 1 2 -3 0 0\n", "")
    assert too_many == Run(
        1,
        "Old : T:PWF 5 1 2 -3 0 0\n",
        "Error from put operation: Invalid element count requested\n",
    )


def test_put_long_strings_with_escapes(runs: dict[str, Run | list[Run]]) -> None:
    tabbed, utf8 = puts(runs, "long_string")
    assert tabbed == Run(0, 'Old : T:PCW init\nNew : T:PCW hello\\tworld \\"x\\"\n', "")
    assert utf8 == Run(0, 'Old : T:PCW hello\\tworld \\"x\\"\nNew : T:PCW caf\\xc3\\xa9\n', "")


def test_put_string_joins_words_and_separator(runs: dict[str, Run | list[Run]]) -> None:
    words, separated = puts(runs, "string")
    assert words == Run(0, f"Old : {col('T:PSO')}init\nNew : {col('T:PSO')}hello there world\n", "")
    assert separated == Run(0, "Old : T:PSO:hello there world\nNew : T:PSO:bye\n", "")


def test_put_missing_pv_exit_1(runs: dict[str, Run | list[Run]]) -> None:
    assert puts(runs, "missing") == [Run(1, "", "Channel connect timed out: 'T:NOPE' not found.\n")]


# -- caioc-monitor --------------------------------------------------------------


class Lines:
    """The lines a running process prints, read by a thread, awaited with a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(target=self._read, args=(stdout,), daemon=True).start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line {count} within {timeout} s: {self.lines}") from None
            assert line is not None, f"ended after {self.lines}"
            self.lines.append(line)
        return self.lines


def test_monitor_sees_puts_from_another_process(server: dict[str, str]) -> None:
    argvs = {
        "default": ("-w", "0.3", "T:MON", "T:NOPE"),
        "incremental": ("-tsi", "-0x", "-F|", "T:MON"),
        "alarm_only": ("-m", "a", "-tn", "T:MON"),
    }
    processes = {
        key: subprocess.Popen(
            [sys.executable, "-m", TOOLS["monitor"], *argv],
            env=server,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, argv in argvs.items()
    }
    try:
        lines = {key: Lines(process) for key, process in processes.items()}
        first = lines["default"].wait_for(2)
        lines["incremental"].wait_for(1)
        lines["alarm_only"].wait_for(1)
        assert tool(server, "put", "-t", "T:MON", "42") == Run(0, "42\n", "")
        lines["default"].wait_for(3)
        lines["incremental"].wait_for(2)
        assert tool(server, "put", "-t", "T:MON", "150") == Run(0, "150\n", "")
        default = lines["default"].wait_for(4)
        incremental = lines["incremental"].wait_for(3)
        alarm_only = lines["alarm_only"].wait_for(2)
        for process in processes.values():
            process.send_signal(signal.SIGINT)
        for key, process in processes.items():
            _, err = process.communicate(timeout=10)
            assert process.returncode == -signal.SIGINT, (key, err)
            assert err == "", (key, err)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert re.fullmatch(rf"T:MON {{26}}{STAMP} 0  \n", first[0])
    assert first[1] == "T:NOPE                         *** Not connected (PV not found)\n"
    assert re.fullmatch(rf"T:MON {{26}}{STAMP} 42  \n", default[2])
    assert re.fullmatch(rf"T:MON {{26}}{STAMP} 150 HIGH MINOR\n", default[3])
    assert re.fullmatch(rf"T:MON\|{STAMP}\|0x0\|\|\n", incremental[0])
    assert re.fullmatch(r"T:MON\| {14}( {0,3})\+\d+\.\d{6}\|0x2A\|\|\n", incremental[1])
    assert re.fullmatch(r"T:MON\| {14}( {0,3})\+\d+\.\d{6}\|0x96\|HIGH\|MINOR\n", incremental[2])
    # -m a: the first value, then only the update that changed the alarm
    assert alarm_only == [col("T:MON") + " 0  \n", col("T:MON") + " 150 HIGH MINOR\n"]

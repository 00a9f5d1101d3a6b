"""Access security for IOC scripts: ``-a/--acf FILE``, seen by libca, re-read when it changes.

An IOC script run with ``--acf`` (softIoc's ``-a``) serves its PVs under
the rules of the file: the C client (pyepics over libca) may read a PV of
a READ-only group but not write it, writes a PV of a WRITE group, and,
once the file is rewritten, sees write access granted and writes without
the IOC restarting, under each async library. A file that cannot be read
or parsed stops the script before anything is served, naming the file
and the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from peers import (
    ROOT,
    ca_environment,
    free_port,
    importable,
    process_until_ready,
    run_pyepics,
    run_to_end,
    server_config,
)
from waiting import background, run, until

#: An IOC script: ``setpoint`` in the operators' group at ASL 0, ``limit``
#: in it at ASL 1, ``readback`` in DEFAULT.
IOC = """
from caioc.ioc import PVGroup, ioc_arg_parser, pvproperty, run

class Valves(PVGroup):
    setpoint = pvproperty(1.0, access_group="operators", access_level=0)
    limit = pvproperty(2.0, access_group="operators", access_level=1)
    readback = pvproperty(3.0)

options, run_options = ioc_arg_parser("acf:", "an IOC under access security")
run(Valves(**options), **run_options)
"""

#: Everyone reads; the operators' ASL 0 PVs may be written.
READ_ONLY = """
ASG(DEFAULT) {
    RULE(1, READ)
}
ASG(operators) {
    RULE(1, READ)
    RULE(0, WRITE)
}
"""

#: The new version: DEFAULT PVs may be written too.
DEFAULT_WRITABLE = READ_ONLY.replace(
    "ASG(DEFAULT) {\n    RULE(1, READ)", "ASG(DEFAULT) {\n    RULE(1, WRITE)"
)

#: The libraries to serve on (trio and curio if installed). Each IOC waits
#: for its server's file watch (every 5 s), so they run side by side.
LIBRARIES = ["asyncio", *(name for name in ("trio", "curio") if importable(name))]

#: The C client's side: rights and puts, the file rewritten, rights and puts again.
CLIENT = """
import os

acf = {acf!r}
new_rules = {new_rules!r}
pvs = {{name: epics.PV("acf:" + name) for name in ("setpoint", "limit", "readback")}}
for pv in pvs.values():
    until(pv.wait_for_connection, pv.pvname + " to connect")

def put(name, value):
    try:
        pvs[name].put(value, wait=True, timeout=5)
    except epics.ca.CASeverityException as error:
        return "refused: " + str(error)
    return "done"

before = {{
    name: [pv.read_access, pv.write_access, pv.get(timeout=5)] for name, pv in pvs.items()
}}
tries = [("setpoint", 11.0), ("limit", 12.0), ("readback", 13.0)]
puts = {{name: put(name, value) for name, value in tries}}
after_puts = {{name: pv.get(timeout=5, use_monitor=False) for name, pv in pvs.items()}}

# New rules, written whole (a reader never sees half a file).
with open(acf + ".new", "w") as file:
    file.write(new_rules)
os.replace(acf + ".new", acf)
until(lambda: pvs["readback"].write_access, "write access to acf:readback", timeout=20)
put_after_change = put("readback", 14.0)
result = {{
    "before": before,
    "puts": puts,
    "after_puts": after_puts,
    "put_after_change": put_after_change,
    "readback": pvs["readback"].get(timeout=5, use_monitor=False),
    "limit_write_access": pvs["limit"].write_access,
}}
"""


@pytest.mark.peers
def test_acf_rules_are_enforced_and_reloaded_for_the_c_client(tmp_path: Path) -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    results = {}
    with contextlib.ExitStack() as iocs, ThreadPoolExecutor(len(LIBRARIES)) as clients:
        running = {}
        for library in LIBRARIES:
            acf = tmp_path / f"{library}.acf"
            acf.write_text(READ_ONLY)
            env = ca_environment(free_port(), free_port())
            argv = [sys.executable, "-c", IOC, "--acf", str(acf), "--async-lib", library]
            ioc = iocs.enter_context(
                process_until_ready("", env, argv=[*argv, "--list-pvs"], ready="PVs:")
            )
            client = CLIENT.format(acf=str(acf), new_rules=DEFAULT_WRITABLE)
            running[library] = (ioc, clients.submit(run_pyepics, client, env))
        for library, (ioc, job) in running.items():
            results[library] = job.result()
            assert ioc.poll() is None, library  # the same IOC throughout
    for library, result in results.items():
        assert result["before"] == {
            "setpoint": [True, True, 1.0],
            "limit": [True, False, 2.0],
            "readback": [True, False, 3.0],
        }, library
        assert result["puts"]["setpoint"] == "done", library
        assert result["puts"]["limit"].startswith("refused"), library
        assert result["puts"]["readback"].startswith("refused"), library
        assert result["after_puts"] == {"setpoint": 11.0, "limit": 2.0, "readback": 3.0}, library
        # the file changed: the new right was pushed, and the put goes through
        assert result["put_after_change"] == "done", library
        assert result["readback"] == 14.0, library
        assert result["limit_write_access"] is False, library  # ASL 1 still reads only


def run_ioc(*options: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """The IOC script run to its end (it should not start serving)."""
    env = ca_environment(free_port(), free_port())
    return run_to_end([sys.executable, "-c", IOC, "--list-pvs", *options], env, timeout)


def test_a_missing_acf_file_stops_the_ioc_before_serving(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.acf"
    completed = run_ioc("-a", str(missing))
    assert completed.returncode != 0
    assert f"{missing}: cannot read the access security file" in completed.stderr
    assert "PVs:" not in completed.stdout and "Traceback" not in completed.stderr


def test_an_acf_syntax_error_stops_the_ioc_with_the_file_and_line(tmp_path: Path) -> None:
    acf = tmp_path / "broken.acf"
    acf.write_text("ASG(DEFAULT) {\n    RULE(1, READ)\n    RULE(1 WRITE)\n}\n")
    completed = run_ioc("--acf", str(acf))
    assert completed.returncode != 0
    assert f"{acf}:3:" in completed.stderr
    assert "PVs:" not in completed.stdout and "Traceback" not in completed.stderr
    assert "keeping the old rules" not in completed.stderr  # there were none


def test_serve_loads_a_path_before_serving_and_takes_rules_already_loaded(
    tmp_path: Path,
) -> None:
    from caioc.ioc import serve
    from caioc.ioc._run import load_access_security
    from caioc.server import AccessConfigError, AccessSecurity

    security = AccessSecurity.from_text(READ_ONLY)
    assert load_access_security(security) is security
    acf = tmp_path / "rules.acf"
    acf.write_text(READ_ONLY)
    loaded = load_access_security(os.fspath(acf))
    assert loaded.path == acf and "operators" in loaded.config.groups
    acf.write_text("ASG(DEFAULT) { RULE(1, BOGUS) }\n")
    with pytest.raises(AccessConfigError, match=rf"{acf}:1:"):
        load_access_security(acf)

    # serve() fails on the file before it binds anything (no port is needed)
    from caioc.ioc import PVGroup, pvproperty

    class One(PVGroup):
        value = pvproperty(0.0)

    with pytest.raises(AccessConfigError, match=rf"{acf}:1:"):
        asyncio.run(serve(One("x:"), access_security=acf))


def test_serve_serves_under_the_rules_of_a_path(tmp_path: Path) -> None:
    from caioc.ca import AccessRights
    from caioc.ioc import PVGroup, _stats, pvproperty, serve

    class One(PVGroup):
        value = pvproperty(0.0, access_group="operators")

    acf = tmp_path / "rules.acf"
    acf.write_text(READ_ONLY)

    def ours() -> list[Any]:
        return [s for s in _stats._servers if s.access_security is not None]

    async def scenario() -> None:
        ioc = serve(One("x:"), config=server_config(), access_security=acf)
        async with background(ioc):
            await until(lambda: bool(ours()), "the IOC to serve")
            (server,) = ours()
            security = server.access_security
            assert security.path == acf  # loaded from the file: watched
            assert security.rights("operators", 0, "anyone", "anywhere") == AccessRights.READ_WRITE
            assert security.rights("DEFAULT", 0, "anyone", "anywhere") == AccessRights.READ

    run(scenario)


def test_the_option_is_a_run_option_loaded_at_once(tmp_path: Path) -> None:
    from caioc.ioc import ioc_arg_parser

    acf = tmp_path / "rules.acf"
    acf.write_text(READ_ONLY)
    for option in ("-a", "--acf"):
        security = ioc_arg_parser("P:", "", argv=[option, str(acf)])[1]["access_security"]
        assert security.path == acf and "operators" in security.config.groups
    assert ioc_arg_parser("P:", "", argv=[])[1]["access_security"] is None


def test_the_server_package_loads_the_acf_parser_only_when_asked() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        before = set(sys.modules)
        import caioc.server
        on_import = sorted(m for m in set(sys.modules) - before if "_access" in m)
        listed = "AccessSecurity" in caioc.server.__all__ and "AccessSecurity" in dir(caioc.server)
        security = caioc.server.AccessSecurity.from_text("ASG(DEFAULT) { RULE(1, READ) }")
        rights = security.rights("DEFAULT", 1, "anyone", "anywhere").name
        print(json.dumps([on_import, listed, rights, "caioc.server._access" in sys.modules]))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    on_import, listed, rights, loaded_after = json.loads(completed.stdout)
    assert on_import == []
    assert listed is True
    assert rights == "READ"
    assert loaded_after is True


def test_the_macros_of_an_ioc_script_expand_in_its_acf_file(tmp_path: Path) -> None:
    from caioc.ioc import ioc_arg_parser

    acf = tmp_path / "rules.acf"
    acf.write_text('ASG(DEFAULT) {\n    INPA("$(P)mode")\n    RULE(1, WRITE) { CALC("A=1") }\n}\n')
    argv = ["--acf", str(acf), "--macro", "P=plant:"]
    _, run_options = ioc_arg_parser("x:", "macros", argv, macros={"P": "default:"})
    security = run_options["access_security"]
    assert security.path == acf
    assert security.inputs() == {"DEFAULT": {"A": "plant:mode"}}
    # a macro with no value is an error in the command line, naming the file
    with pytest.raises(SystemExit) as stopped:
        ioc_arg_parser("x:", "macros", ["--acf", str(acf), "--macro", "Q=other"])
    assert stopped.value.code == 2
    # a missing file too
    with pytest.raises(SystemExit) as stopped:
        ioc_arg_parser("x:", "macros", ["--acf", str(tmp_path / "nowhere.acf")])
    assert stopped.value.code == 2


def test_the_fields_of_a_pv_are_in_its_access_security_group() -> None:
    """.DRVH, .HIHI, .PROC ... of a guarded PV are guarded by the same rules (as in EPICS)."""
    from caioc.ca import AccessRights
    from caioc.ioc import PVGroup, pvproperty
    from caioc.server import AccessSecurity

    class Two(PVGroup):
        guarded = pvproperty(0.0, access_group="operators", access_level=1)
        free = pvproperty(0.0)

    rules = AccessSecurity.from_text(
        "UAG(ops) { alice }\n"
        "ASG(DEFAULT) { RULE(1, WRITE) }\n"
        "ASG(operators) { RULE(1, READ) RULE(1, WRITE) { UAG(ops) } }\n"
    )
    pvdb = Two("x:").pvdb

    def rights(name: str, user: str) -> AccessRights:
        channel = pvdb[name]
        return rules.rights(channel.access_group, channel.access_level, user, "host")

    for field in ("VAL", "DRVH", "HIHI", "HHSV", "PROC", "DISA", "EGU", "DESC"):
        assert rights(f"x:guarded.{field}", "bob") == AccessRights.READ, field
        assert rights(f"x:guarded.{field}", "alice") == AccessRights.READ_WRITE, field
        assert rights(f"x:free.{field}", "bob") == AccessRights.READ_WRITE, field
    assert pvdb["x:guarded.DRVH"].access_level == 1

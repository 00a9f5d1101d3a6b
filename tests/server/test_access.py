"""Access security: .acf parsing, rule semantics, CALC inputs, reloads (caioc.server._access)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caioc.ca import AccessRights
from caioc.server._access import (
    DEFAULT_GROUP,
    AccessConfigError,
    AccessSecurity,
    RuleAccess,
    parse_acf,
)
from caioc.server._access_calc import CalcError, calc_is_true, compile_calc

NO, R, RW = AccessRights.NO_ACCESS, AccessRights.READ, AccessRights.READ_WRITE

# The first example of the Application Developer's Guide, "Access Security":
# everybody reads, user1 and user2 write when they are on host1 or host2.
GUIDE_SIMPLE = """\
UAG(uag) {user1,user2}
HAG(hag) {host1,host2}
ASG(DEFAULT) {
    RULE(1,READ)
    RULE(1,WRITE) {
        UAG(uag)
        HAG(hag)
    }
}
"""

# The guide's larger example: operators in the control room, a read-only
# group, and a group whose writes depend on the state of the machine (INP/CALC).
GUIDE_FULL = """\
# Access security configuration, after the Application Developer's Guide
UAG(op) {op1, op2, superguy}
UAG(opUp) {op1, op2}
UAG(sys) {superguy}
HAG(icr) {silver, phebos, gaea}
HAG(cas) {cas01, cas02}
ASG(DEFAULT) {
    RULE(1, READ)
    RULE(0, WRITE) {
        UAG(op)
        HAG(icr, cas)
    }
}
ASG(ro) {
    RULE(1, READ)
}
ASG(critical) {
    INPA(LI:OPSTATE)
    INPB(LI:lev1permit)
    RULE(0, WRITE, TRAPWRITE) {
        UAG(op)
        CALC("A=1")
    }
    RULE(1, WRITE) {
        UAG(opUp)
        CALC("(A=1)&&(B=1)")
    }
    RULE(1, WRITE) {
        UAG(sys)
    }
    RULE(1, READ)
}
"""


def test_guide_simple_example() -> None:
    security = AccessSecurity.from_text(GUIDE_SIMPLE, "simple.acf")
    assert security.rights("DEFAULT", 0, "user1", "host2") == RW
    assert security.rights("DEFAULT", 1, "user2", "host1") == RW
    assert security.rights("DEFAULT", 1, "user1", "elsewhere") == R
    assert security.rights("DEFAULT", 0, "someone", "host1") == R
    assert security.inputs() == {}
    config = security.config
    assert config.uags == {"uag": frozenset({"user1", "user2"})}
    assert config.hags == {"hag": frozenset({"host1", "host2"})}
    assert [(r.level, r.access, r.uags, r.hags) for r in config.groups["DEFAULT"].rules] == [
        (1, RuleAccess.READ, (), ()),
        (1, RuleAccess.WRITE, ("uag",), ("hag",)),
    ]


def test_guide_full_example() -> None:
    security = AccessSecurity.from_text(GUIDE_FULL)
    assert sorted(security.config.groups) == ["DEFAULT", "critical", "ro"]
    assert security.inputs() == {"critical": {"A": "LI:OPSTATE", "B": "LI:lev1permit"}}
    # DEFAULT: operators write ASL 0 PVs from the control room or the CA servers
    assert security.rights("DEFAULT", 0, "op1", "gaea") == RW
    assert security.rights("DEFAULT", 0, "op1", "cas02") == RW
    assert security.rights("DEFAULT", 1, "op1", "gaea") == R
    assert security.rights("DEFAULT", 0, "visitor", "gaea") == R
    assert security.rights("ro", 0, "superguy", "gaea") == R
    # critical: inputs not yet received, only superguy writes
    assert security.rights("critical", 0, "op1", "x") == R
    assert security.rights("critical", 1, "superguy", "x") == RW
    security.set_pv("LI:OPSTATE", 1)
    assert security.access("critical", 0, "op1", "x") == (RW, True)
    assert security.access("critical", 1, "op1", "x") == (R, False)
    security.set_pv("LI:lev1permit", 1.0)
    assert security.access("critical", 1, "op1", "x") == (RW, False)
    assert security.rights("critical", 1, "superguy", "x") == RW


def test_syntax_variants() -> None:
    text = """
    # comments, quoted names, empty groups, groups without bodies
    UAG("odd user") {"alice smith", bob, "1000"}   # trailing comment
    UAG(nobody)
    HAG(labs) {"Lab-PC.example.org", 10.0.0.7}
    ASG(empty)
    ASG("quoted group") {RULE(1, RWX) {UAG("odd user")}}
    ASG(rpc) {RULE(0, RPC, NOTRAPWRITE) {UAG(nobody, "odd user") HAG(labs)}}
    ASG(DEFAULT) {RULE(1, "READ")}
    """
    security = AccessSecurity.from_text(text)
    assert security.config.uags["odd user"] == {"alice smith", "bob", "1000"}
    assert security.config.uags["nobody"] == frozenset()
    assert security.config.hags["labs"] == {"lab-pc.example.org", "10.0.0.7"}
    assert security.rights("quoted group", 1, "alice smith", "h") == RW
    assert security.rights("quoted group", 1, "alice", "h") == NO
    assert security.rights("unknown group", 1, "alice", "h") == R  # falls back to DEFAULT
    assert security.rights("empty", 0, "bob", "h") == NO
    assert security.rights("rpc", 0, "bob", "LAB-PC.EXAMPLE.ORG") == RW
    assert security.rights("rpc", 0, "bob", "10.0.0.7") == RW
    assert security.rights("rpc", 1, "bob", "10.0.0.7") == NO  # RULE(0, ...) only


# -- syntax errors ------------------------------------------------------------

SYNTAX_ERRORS = [
    ("UAG(x) { a @ }", 1, 12, "invalid character '@'"),
    ('HAG(h) { "host\n }', 1, 10, "closing quote missing"),
    ('HAG(h) { "host', 1, 10, "closing quote missing"),
    ("UAG(x) {a}\nFOO(y)", 2, 1, "expected UAG, HAG or ASG, found 'FOO'"),
    ("INPA(x)", 1, 1, "expected UAG, HAG or ASG, found keyword INPA"),
    ("UAG x", 1, 5, "expected '(' after UAG, found 'x'"),
    ("UAG(x {a}", 1, 7, "expected ')' after the UAG name, found '{'"),
    ("UAG(x", 1, 6, "expected ')' after the UAG name, found end of file"),
    ("UAG(x) {}", 1, 9, "expected a user name, found '}'"),
    ("HAG(h) {a b}", 1, 11, "expected ',' or '}', found 'b'"),
    ("# hi\nUAG(ops) {\n\talice,\n\tbob\n\tcarol}\n", 5, 2, "expected ',' or '}', found 'carol'"),
    ("UAG(RULE)", 1, 5, "found keyword RULE (quote it)"),
    ("UAG(x)\nUAG(x)", 2, 5, "duplicate UAG 'x' (first defined at line 1)"),
    ("HAG(x)\n\nHAG(x)", 3, 5, "duplicate HAG 'x' (first defined at line 1)"),
    ("ASG(a)\nASG(a)", 2, 5, "duplicate ASG 'a'"),
    ("ASG(DEFAULT) {RULE(1,READ)}\nASG(DEFAULT)", 2, 5, "duplicate ASG 'DEFAULT'"),
    ("ASG(g) {}", 1, 9, "expected INP<A-L> or RULE, found '}'"),
    ("ASG(g) {FOO}", 1, 9, "expected INP<A-L> or RULE, found 'FOO'"),
    ("ASG(g) {INPM(x)}", 1, 9, "expected INP<A-L> or RULE, found 'INPM'"),
    ("ASG(g) {INPA(x) INPA(y)}", 1, 17, "INPA is already defined in this ASG"),
    ("ASG(g) {\n  RULE(1, READ)\n", 3, 1, "expected INP<A-L>, RULE or '}', found end of file"),
    ("ASG(g) {RULE(x, READ)}", 1, 14, "expected the rule's level (an integer), found 'x'"),
    ("ASG(g) {RULE(1.5, READ)}", 1, 14, "expected the rule's level (an integer), found '1.5'"),
    ("ASG(g) {RULE(-1, READ)}", 1, 14, "RULE level must not be negative: -1"),
    ("ASG(g) {RULE(1 READ)}", 1, 16, "expected ',' after the rule's level, found 'READ'"),
    ("ASG(g) {RULE(1, READWRITE)}", 1, 17, "expected NONE, READ, WRITE, RPC or RWX"),
    ("ASG(g) {RULE(1, read)}", 1, 17, "expected NONE, READ, WRITE, RPC or RWX, found 'read'"),
    ("ASG(g) {RULE(1,WRITE,LOG)}", 1, 22, "expected TRAPWRITE or NOTRAPWRITE, found 'LOG'"),
    ("ASG(g) {RULE(1,WRITE {UAG(x)}}", 1, 22, "expected ')' to close RULE(...), found '{'"),
    ("ASG(g) {RULE(1,READ) {}}", 1, 23, "expected UAG, HAG or CALC, found '}'"),
    ('ASG(g) {RULE(1,READ) {METHOD("ca")}}', 1, 23, "expected UAG, HAG or CALC, found 'METHOD'"),
    ("ASG(g) {RULE(1,WRITE) {UAG(nobody)}}", 1, 28, "no UAG named 'nobody' is defined above"),
    ("ASG(g) {RULE(1,WRITE) {HAG(nowhere)}}", 1, 28, "no HAG named 'nowhere' is defined above"),
    ("ASG(g) {RULE(1,WRITE) {UAG(a)}}\nUAG(a) {x}", 1, 28, "no UAG named 'a' is defined above"),
    ('ASG(g) {RULE(1,WRITE) {CALC("A=")}}', 1, 32, "Incomplete expression, operand missing"),
    ('ASG(g) {RULE(1,WRITE) {CALC("A:=1")}}', 1, 31, "Assignment (:= or ;) is not allowed"),
    ('ASG(g) {RULE(1,WRITE) {CALC("A=1") CALC("B=1")}}', 1, 36, "a RULE takes at most one CALC"),
    ("ASG(g) {RULE(1,WRITE) {CALC(A=1)}}", 1, 30, "invalid character '='"),
]


@pytest.mark.parametrize(("text", "line", "column", "message"), SYNTAX_ERRORS)
def test_syntax_errors_say_where(text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(AccessConfigError) as info:
        parse_acf(text, "bad.acf")
    error = info.value
    assert (error.filename, error.line, error.column) == ("bad.acf", line, column), error
    assert message in error.message
    assert str(error).startswith(f"bad.acf:{line}:{column}: ")
    assert isinstance(error, ValueError)


def test_a_second_empty_default_group_is_accepted() -> None:
    config = parse_acf("ASG(DEFAULT)\nASG(DEFAULT) {RULE(1, READ)}")
    assert len(config.groups[DEFAULT_GROUP].rules) == 1


def test_macro_substitution() -> None:
    text = "UAG(ops) {$(USER)}\nASG(${G=main}) {RULE(1, WRITE) {UAG(ops)}}"
    security = AccessSecurity.from_text(text, substitutions={"USER": "alice"})
    assert security.rights("main", 1, "alice", "h") == RW
    with pytest.raises(AccessConfigError) as info:
        parse_acf("\nASG($(G))", substitutions={})
    assert (info.value.line, info.value.column) == (2, 5)
    assert "macro 'G' is undefined" in str(info.value)


# -- rule semantics ------------------------------------------------------------


def rights_of(text: str, asg: str = "g", user: str = "u", host: str = "h") -> tuple[Any, Any]:
    """Rights at ASL 0 and ASL 1."""
    security = AccessSecurity.from_text(text)
    return security.rights(asg, 0, user, host), security.rights(asg, 1, user, host)


@pytest.mark.parametrize(
    ("rules", "asl0", "asl1"),
    [
        ("RULE(1, WRITE)", RW, RW),  # level 1 covers ASL 0 and 1
        ("RULE(0, WRITE)", RW, NO),  # level 0 only ASL 0
        ("RULE(0, WRITE) RULE(1, READ)", RW, R),
        ("RULE(1, READ)", R, R),
        ("RULE(1, NONE)", NO, NO),
        ("RULE(1, READ) RULE(1, NONE)", R, R),  # rules only ever add access
        ("RULE(1, WRITE) RULE(1, READ)", RW, RW),  # the highest applicable access wins
        ("RULE(1, RWX)", RW, RW),
        ("RULE(1, RPC)", RW, RW),
        ("RULE(5, READ)", R, R),
    ],
)
def test_levels_and_access(rules: str, asl0: AccessRights, asl1: AccessRights) -> None:
    assert rights_of(f"ASG(g) {{{rules}}}") == (asl0, asl1)


GROUPS = """
UAG(a) {alice, bob}
UAG(c) {carol}
UAG(none)
HAG(cr) {Console1, console2}
"""


@pytest.mark.parametrize(
    ("clauses", "user", "host", "expected"),
    [
        ("UAG(a)", "alice", "anywhere", RW),
        ("UAG(a)", "carol", "anywhere", R),
        ("UAG(a)", "Alice", "anywhere", R),  # user names compare exactly
        ("UAG(a, c)", "carol", "x", RW),  # several UAGs: any of them
        ("UAG(a) UAG(c)", "carol", "x", RW),  # several UAG clauses too
        ("UAG(none)", "alice", "x", R),  # an empty group matches nobody
        ("HAG(cr)", "anyone", "CONSOLE1", RW),  # hosts compare case-insensitively
        ("HAG(cr)", "anyone", "console3", R),
        ("UAG(a) HAG(cr)", "bob", "console2", RW),  # UAG and HAG must both hold
        ("UAG(a) HAG(cr)", "bob", "laptop", R),
        ("UAG(a) HAG(cr)", "carol", "console2", R),
        ('UAG(a) CALC("1")', "bob", "x", RW),
        ('UAG(a) CALC("0")', "bob", "x", R),
        ('UAG(a) CALC("2")', "bob", "x", R),  # true means 1
    ],
)
def test_uag_hag_calc_conditions(
    clauses: str, user: str, host: str, expected: AccessRights
) -> None:
    text = GROUPS + f"ASG(g) {{RULE(1, READ) RULE(1, WRITE) {{{clauses}}}}}"
    assert AccessSecurity.from_text(text).rights("g", 1, user, host) == expected


def test_default_group_and_unknown_groups() -> None:
    with_default = AccessSecurity.from_text("ASG(DEFAULT) {RULE(1, READ)} ASG(w) {RULE(1, WRITE)}")
    assert with_default.rights("w", 1, "u", "h") == RW
    assert with_default.rights("DEFAULT", 1, "u", "h") == R
    assert with_default.rights("", 1, "u", "h") == R  # no ASG: DEFAULT
    assert with_default.rights("typo", 1, "u", "h") == R  # undefined ASG: DEFAULT, as asLib
    assert with_default.group_of("typo") == DEFAULT_GROUP
    assert with_default.group_of("w") == "w"
    without_default = AccessSecurity.from_text("ASG(w) {RULE(1, WRITE)}")
    assert without_default.rights("w", 0, "u", "h") == RW
    assert without_default.rights("DEFAULT", 0, "u", "h") == NO
    assert without_default.rights("typo", 0, "u", "h") == NO
    assert AccessSecurity().rights("DEFAULT", 0, "u", "h") == NO  # nothing loaded yet


def test_trap_write_comes_from_the_granting_rule() -> None:
    text = """
    UAG(ops) {alice}
    ASG(g) {
        RULE(1, READ, TRAPWRITE)
        RULE(1, WRITE, TRAPWRITE) {UAG(ops)}
        RULE(1, WRITE, NOTRAPWRITE)
    }
    """
    security = AccessSecurity.from_text(text)
    assert security.access("g", 0, "alice", "h") == (RW, True)
    assert security.access("g", 0, "bob", "h") == (RW, False)


# -- CALC inputs -----------------------------------------------------------------

INTERLOCK = """
UAG(ops) {alice}
ASG(DEFAULT) {RULE(1, READ)}
ASG(lock) {
    INPA(ioc:mode)
    INPB(ioc:key)
    RULE(1, READ)
    RULE(0, WRITE) {UAG(ops) CALC("A=1 && B#0")}
}
ASG(mode) {
    INPC(ioc:mode)
    RULE(1, WRITE) {CALC("C>=2")}
}
"""


def test_inputs_drive_calc_conditions_and_callbacks() -> None:
    security = AccessSecurity.from_text(INTERLOCK)
    assert security.inputs() == {
        "lock": {"A": "ioc:mode", "B": "ioc:key"},
        "mode": {"C": "ioc:mode"},
    }
    calls: list[frozenset[str] | None] = []
    security.on_change(calls.append)
    assert security.input_value("lock", "A") is None  # invalid until a value arrives
    assert security.rights("lock", 0, "alice", "h") == R

    assert security.set_input("lock", "B", 5) is False  # A still invalid: nothing changes
    assert calls == []
    assert security.set_input("lock", "A", 1.0) is True
    assert calls == [frozenset({"lock"})]
    assert security.rights("lock", 0, "alice", "h") == RW
    assert security.rights("lock", 1, "alice", "h") == R
    assert security.rights("lock", 0, "bob", "h") == R

    assert security.set_input("lock", "INPB", 0) is True  # "INPB" or "B"
    assert security.rights("lock", 0, "alice", "h") == R
    assert security.set_input("lock", "b", 0) is False  # same value: no callback
    assert len(calls) == 2
    security.set_input("lock", "B", 7)
    assert security.set_input("lock", "A", None) is True  # disconnected / INVALID
    assert security.rights("lock", 0, "alice", "h") == R
    assert security.input_value("lock", "A") is None
    assert security.input_value("lock", "B") == 7.0


def test_set_pv_feeds_every_group_reading_it() -> None:
    security = AccessSecurity.from_text(INTERLOCK)
    calls: list[frozenset[str] | None] = []
    security.on_change(calls.append)
    security.set_pv("ioc:key", 1)
    calls.clear()
    assert security.set_pv("ioc:mode", 1) is True
    assert calls == [frozenset({"lock"})]  # "mode" needs C >= 2: its rule did not change
    assert security.set_pv("ioc:mode", 2) is True
    assert calls[-1] == frozenset({"lock", "mode"})
    assert security.rights("mode", 1, "anyone", "h") == RW
    assert security.rights("lock", 0, "alice", "h") == R
    assert security.set_pv("not:an:input", 1) is False


def test_set_input_rejects_unknown_groups_and_letters() -> None:
    security = AccessSecurity.from_text(INTERLOCK)
    with pytest.raises(KeyError, match="no ASG"):
        security.set_input("nope", "A", 1)
    with pytest.raises(KeyError, match="no input INPC"):
        security.set_input("lock", "C", 1)


def test_calc_truth_window_and_unbound_letters() -> None:
    text = 'ASG(g) {INPA(pv) RULE(1, WRITE) {CALC("A + L")}}'  # L has no INP: always 0
    security = AccessSecurity.from_text(text)
    for value, expected in [(1.0, RW), (1.009, RW), (0.991, RW), (1.02, NO), (0.98, NO)]:
        security.set_input("g", "A", value)
        assert security.rights("g", 0, "u", "h") == expected, value


def test_callbacks_errors_are_logged_and_unsubscribe_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    security = AccessSecurity.from_text(INTERLOCK)
    seen: list[object] = []

    def broken(groups: frozenset[str] | None) -> None:
        raise RuntimeError("boom")

    security.on_change(broken)
    remove = security.on_change(seen.append)
    security.set_pv("ioc:key", 1)
    with caplog.at_level(logging.ERROR, logger="caioc.server._access"):
        security.set_pv("ioc:mode", 1)
    assert seen == [frozenset({"lock"})]
    assert "change callback" in caplog.text
    remove()
    remove()  # harmless twice
    security.set_pv("ioc:mode", 0)
    assert len(seen) == 1


# -- check_client_ip -------------------------------------------------------------

HOSTS = """
HAG(cr) {console1, 10.1.2.3, ghost}
ASG(g) {RULE(1, READ) RULE(1, WRITE) {HAG(cr)}}
"""


class FakeResolver:
    def __init__(self, table: dict[str, str]) -> None:
        self.table = table
        self.asked: list[str] = []

    def __call__(self, host: str) -> str:
        self.asked.append(host)
        try:
            return self.table[host]
        except KeyError:
            raise OSError(f"unknown host {host}") from None


def test_check_client_ip_resolves_hosts_at_load_time(caplog: pytest.LogCaptureFixture) -> None:
    resolver = FakeResolver({"console1": "192.168.0.10"})
    with caplog.at_level(logging.WARNING):
        security = AccessSecurity.from_text(HOSTS, check_client_ip=True, resolver=resolver)
    assert security.check_client_ip
    assert resolver.asked == ["console1", "ghost"]  # IP literals need no resolving
    assert security.config.hags["cr"] == {"192.168.0.10", "10.1.2.3", "unresolved:ghost"}
    assert any("ghost" in warning for warning in security.warnings)
    assert "unable to resolve host 'ghost'" in caplog.text
    assert security.rights("g", 0, "u", "192.168.0.10") == RW
    assert security.rights("g", 0, "u", "::ffff:10.1.2.3") == RW  # IPv4-mapped IPv6
    assert security.rights("g", 0, "u", "console1") == R  # names no longer count
    assert security.rights("g", 0, "u", "ghost") == R
    assert security.rights("g", 0, "u", "unresolved:ghost") == R
    # without check_client_ip the names are compared, nothing is resolved
    plain = AccessSecurity.from_text(HOSTS, resolver=resolver)
    assert resolver.asked == ["console1", "ghost"]
    assert plain.rights("g", 0, "u", "Console1") == RW
    assert plain.rights("g", 0, "u", "192.168.0.10") == R


def test_check_client_ip_resolves_again_on_reload(tmp_path: Path) -> None:
    path = tmp_path / "ioc.acf"
    path.write_text(HOSTS)
    resolver = FakeResolver({"console1": "192.168.0.10"})
    security = AccessSecurity.from_file(path, check_client_ip=True, resolver=resolver)
    resolver.table["console1"] = "192.168.0.11"
    security.reload()
    assert security.rights("g", 0, "u", "192.168.0.11") == RW
    assert security.rights("g", 0, "u", "192.168.0.10") == R


# -- files and reloads -------------------------------------------------------------


def touch(path: Path, text: str) -> None:
    """Rewrite a file and make sure its modification time moves on."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    later = max(path.stat().st_mtime_ns, before + 1_000_000_000)
    os.utime(path, ns=(later, later))


def test_reload_keeps_the_old_rules_when_the_new_file_is_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ioc.acf"
    path.write_text(GUIDE_SIMPLE)
    security = AccessSecurity.from_file(path)
    assert security.path == path
    calls: list[frozenset[str] | None] = []
    security.on_change(calls.append)
    touch(path, GUIDE_SIMPLE + "ASG(extra) {RULE(1, WRONG)}\n")
    with caplog.at_level(logging.ERROR), pytest.raises(AccessConfigError) as info:
        security.reload()
    assert (info.value.filename, info.value.line, info.value.column) == (str(path), 10, 21)
    assert "keeping the old rules" in caplog.text
    assert security.rights("DEFAULT", 0, "user1", "host1") == RW
    assert calls == []
    touch(path, "ASG(DEFAULT) {RULE(1, READ)}")
    security.reload()
    assert calls == [None]  # a reload may change anything
    assert security.rights("DEFAULT", 0, "user1", "host1") == R


def test_reload_keeps_the_old_rules_when_the_file_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "ioc.acf"
    path.write_text(GUIDE_SIMPLE)
    security = AccessSecurity.from_file(path)
    path.unlink()
    with pytest.raises(OSError):
        security.reload()
    assert security.rights("DEFAULT", 0, "user1", "host1") == RW
    assert security.poll() is False


def test_poll_reloads_only_changed_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ioc.acf"
    path.write_text(GUIDE_SIMPLE)
    security = AccessSecurity.from_file(path)
    calls: list[frozenset[str] | None] = []
    security.on_change(calls.append)
    assert security.poll() is False
    touch(path, "ASG(DEFAULT) {RULE(1, WRITE)}")
    assert security.poll() is True
    assert security.rights("DEFAULT", 1, "x", "y") == RW
    assert security.poll() is False
    touch(path, "ASG(DEFAULT) {RULE(1, WRITE)")  # broken: logged once, old rules stay
    with caplog.at_level(logging.ERROR):
        assert security.poll() is False
        assert security.poll() is False
    assert caplog.text.count("keeping the old rules") == 1
    assert security.rights("DEFAULT", 1, "x", "y") == RW
    touch(path, "ASG(DEFAULT) {RULE(1, READ)}")
    assert security.poll() is True
    assert security.rights("DEFAULT", 1, "x", "y") == R
    assert calls == [None, None]


def test_reload_keeps_input_values_of_unchanged_bindings(tmp_path: Path) -> None:
    path = tmp_path / "ioc.acf"
    path.write_text(INTERLOCK)
    security = AccessSecurity.from_file(path)
    security.set_pv("ioc:mode", 1)
    security.set_pv("ioc:key", 1)
    assert security.rights("lock", 0, "alice", "h") == RW
    touch(path, INTERLOCK.replace("INPB(ioc:key)", "INPB(ioc:other)"))
    security.reload()
    assert security.input_value("lock", "A") == 1.0  # same PV, same input: kept
    assert security.input_value("lock", "B") is None  # another PV now: invalid again
    assert security.rights("lock", 0, "alice", "h") == R


def test_watch_polls_with_the_given_sleep(tmp_path: Path) -> None:
    path = tmp_path / "ioc.acf"
    path.write_text(GUIDE_SIMPLE)
    security = AccessSecurity.from_file(path)
    intervals: list[float] = []

    class Stop(Exception):
        pass

    async def fake_sleep(interval: float) -> None:
        intervals.append(interval)
        if len(intervals) == 2:
            touch(path, "ASG(DEFAULT) {RULE(1, WRITE)}")
        if len(intervals) == 3:
            raise Stop

    with pytest.raises(Stop):
        asyncio.run(security.watch(0.5, sleep=fake_sleep))
    assert intervals == [0.5, 0.5, 0.5]
    assert security.rights("DEFAULT", 1, "x", "y") == RW
    with pytest.raises(ValueError, match="positive"):
        asyncio.run(security.watch(0))


def test_watch_takes_the_poll_interval_by_default(tmp_path: Path) -> None:
    path = tmp_path / "ioc.acf"
    path.write_text(GUIDE_SIMPLE)
    security = AccessSecurity.from_file(path, poll_interval=0.25)
    intervals: list[float] = []

    class Stop(Exception):
        pass

    async def fake_sleep(interval: float) -> None:
        intervals.append(interval)
        raise Stop

    with pytest.raises(Stop):
        asyncio.run(security.watch(sleep=fake_sleep))
    assert intervals == [0.25]
    assert AccessSecurity.from_file(path).poll_interval == 5.0


def test_text_configurations_cannot_reload_but_can_be_replaced() -> None:
    security = AccessSecurity.from_text(GUIDE_SIMPLE)
    with pytest.raises(RuntimeError):
        security.reload()
    assert security.poll() is False
    with pytest.raises(AccessConfigError):
        security.load_text("ASG(DEFAULT) {", "new.acf")
    assert security.rights("DEFAULT", 0, "user1", "host1") == RW
    security.load_text("ASG(DEFAULT) {RULE(1, READ)}")
    assert security.rights("DEFAULT", 0, "user1", "host1") == R
    assert "DEFAULT" in repr(security)


# -- the CALC evaluator ------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1+2*3", 7.0),
        ("(1+2)*3", 9.0),
        ("2^3^2", 64.0),  # left-associative, as postfix.c
        ("2**3", 8.0),
        ("-2^2", 4.0),  # unary minus binds tighter than ^
        ("7%3", 1.0),
        ("-7%3", -1.0),  # C remainder
        ("7.9%3.9", 1.0),  # integer operands
        ("1%0", math.nan),
        ("1/0", math.inf),
        ("1/CEIL(-0.5)", -math.inf),  # C's ceil keeps the sign of zero
        ("-1/0", -math.inf),
        ("0/0", math.nan),
        ("3=3", 1.0),
        ("3==4", 0.0),
        ("3#4", 1.0),
        ("3!=3", 0.0),
        ("1<2=1", 1.0),  # comparisons chain left to right
        ("1<=1 && 2>=3", 0.0),
        ("0 || 2", 1.0),
        ("!0", 1.0),
        ("!5", 0.0),
        ("1|2&&0", 1.0),  # && binds tighter than | and ||
        ("0 ? 1 : 0 ? 2 : 3", 3.0),
        ("1 ? 0 ? 5 : 6 : 7", 6.0),
        ("NAN ? 1 : 2", 1.0),  # NaN is true, as in C
        ("ABS(-3)+SQRT(16)+SQR(4)", 9.0),  # SQR is the square root
        ("0", 0.0),
        ("MAX(1, 5, 3) - MIN(4, 2, 8)", 3.0),
        ("MAX(1, NAN, 3)", math.nan),
        ("ISNAN(1, NAN) + FINITE(1, 2) + ISINF(-INF)", 3.0),
        ("FLOOR(-1.5) + CEIL(1.2) + NINT(2.5) + NINT(-2.5)", -2.0 + 2 + 3 - 3),
        ("LOG(1000) + LN(1) + LOGE(1) + EXP(0)", 4.0),
        ("LN(0)", -math.inf),
        ("SQRT(-1)", math.nan),
        ("FMOD(7, 4) + ATAN2(1, 0)", 3.0),  # ATAN2(a, b) is atan2(b, a)
        ("SIN(0) + COS(0) + TAN(0) + ASIN(0) + ACOS(1) + ATAN(0)", 1.0),
        ("SINH(0) + COSH(0) + TANH(0)", 1.0),
        ("EXP(1000) + SINH(-1000)", math.nan),
        ("ASIN(2)", math.nan),
        ("PI - 4*ATAN(1) + D2R*R2D", 1.0),
        ("0x10 + 0XfF", 271.0),
        ("0xFFFFFFFF", -1.0),  # hex literals are 32-bit integers
        ("5 & 3 | 8 XOR 1", 8.0),
        ("6 AND 3 OR 0", 2.0),
        ("~0 + NOT 0", -2.0),
        ("1 << 4 >> 2", 4.0),
        ("-16 >> 2", -4.0),
        ("-1 >>> 28", 15.0),
        ("4294967296 | 0", 0.0),  # conversions wrap modulo 2**32
        ("2147483648 | 0", -2147483648.0),
        ("1e3 + .5 + 2. + 1.5E-1", 1002.65),
        ("notA", -1.0),  # names match by longest prefix, case-insensitively
        ("aorb", 0.0),
    ],
)
def test_calc_values(expression: str, expected: float) -> None:
    result = compile_calc(expression).evaluate({})
    if math.isnan(expected):
        assert math.isnan(result), result
    else:
        assert result == pytest.approx(expected), result


@pytest.mark.parametrize(
    ("expression", "offset", "message"),
    [
        ("", 0, "Incomplete expression"),
        ("A+", 2, "Incomplete expression"),
        ("(A", 2, "Parenthesis still open"),
        ("A)", 1, "Close parenthesis found without open"),
        ("A,B", 1, "Comma without enclosing parentheses"),
        ("(A,B)", 2, "Comma without enclosing function"),
        ("A?B", 3, "Unbalanced conditional"),
        ("A:B", 1, "Unbalanced conditional"),
        ("A:=1", 1, "Assignment"),
        ("A;B", 1, "Assignment"),
        ("AB", 1, "operator expected"),
        ("A $ B", 2, "unknown operator/operand"),
        ("M", 0, "unknown operator/operand"),  # only A..L
        ("*A", 0, "operand expected"),
        ("MAX()", 4, "operand expected"),
        ("MAX(1,2", 7, "')' or ',' expected"),
        ("MAX 1", 4, "'(' expected after MAX"),
        ("FMOD(1)", 0, "FMOD takes two arguments"),
        ("VAL", 0, "VAL"),
        ("RNDM", 0, "RNDM"),
        ("0x100000000", 0, "Badly formed numeric literal"),
    ],
)
def test_calc_errors(expression: str, offset: int, message: str) -> None:
    with pytest.raises(CalcError) as info:
        compile_calc(expression)
    assert info.value.offset == offset
    assert message in info.value.message
    assert isinstance(info.value, ValueError)


def test_calc_inputs_used_and_value_forms() -> None:
    calc = compile_calc("a + C*2 > l")
    assert calc.inputs_used == {"A", "C", "L"}
    assert calc.evaluate({"A": 1, "C": 2, "L": 4}) == 1.0
    assert calc.evaluate([1, 0, 2]) == 1.0  # a sequence A, B, C ...; the rest are 0
    assert calc.evaluate([1, 0, 2, *[0] * 8, 9]) == 0.0
    assert calc.is_true([5])
    assert calc_is_true(1.0) and not calc_is_true(0.0) and not calc_is_true(math.nan)


# Random expressions, written in EPICS syntax and, independently, as numpy
# float64 (C double) arithmetic; fully parenthesised, so this checks meaning.

LETTERS = "ABCDEFGHIJKL"
ARITHMETIC = ["+", "-", "*", "/", "%", "^"]
COMPARISON = {
    "=": "==",
    "==": "==",
    "#": "!=",
    "!=": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}
LOGIC = ["&&", "||"]
BINARY = ARITHMETIC + list(COMPARISON) + LOGIC
FUNCTIONS = {"ABS": "np.abs", "SQRT": "np.sqrt", "FLOOR": "np.floor", "CEIL": "np.ceil"}

leaves = st.one_of(
    st.tuples(st.just("var"), st.sampled_from(LETTERS), st.booleans()),
    st.tuples(st.just("num"), st.integers(0, 20).map(float)),
    st.tuples(st.just("num"), st.floats(0, 100, allow_nan=False, allow_infinity=False)),
)


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    binary = st.tuples(st.just("bin"), st.sampled_from(BINARY), children, children)
    return st.one_of(
        binary,
        binary,
        binary,
        st.tuples(st.just("neg"), children),
        st.tuples(st.just("not"), children),
        st.tuples(st.just("cond"), children, children, children),
        st.tuples(st.just("fn"), st.sampled_from(sorted(FUNCTIONS)), children),
        st.tuples(
            st.just("fold"),
            st.sampled_from(["MIN", "MAX"]),
            st.lists(children, min_size=1, max_size=3),
        ),
    )


expressions = st.recursive(leaves, _extend, max_leaves=10)
inputs = st.lists(
    st.one_of(
        st.sampled_from([0.0, 1.0, -1.0, 2.0, 0.5]),
        st.integers(-4, 4).map(float),
        st.floats(-1e3, 1e3, allow_nan=False),
    ),
    min_size=12,
    max_size=12,
)


def epics(node: Any) -> str:
    kind = node[0]
    if kind == "var":
        return node[1].lower() if node[2] else node[1]
    if kind == "num":
        return repr(node[1])
    if kind == "bin":
        return f"({epics(node[2])} {node[1]} {epics(node[3])})"
    if kind == "neg":
        return f"(-{epics(node[1])})"
    if kind == "not":
        return f"(!{epics(node[1])})"
    if kind == "cond":
        return f"({epics(node[1])} ? {epics(node[2])} : {epics(node[3])})"
    if kind == "fn":
        return f"{node[1]}({epics(node[2])})"
    return f"{node[1]}({', '.join(epics(child) for child in node[2])})"


def python(node: Any) -> str:
    kind = node[0]
    if kind == "var":
        return f"v[{LETTERS.index(node[1])}]"
    if kind == "num":
        return f"F({node[1]!r})"
    if kind == "bin":
        op, lhs, rhs = node[1], python(node[2]), python(node[3])
        if op == "%":
            return f"c_mod({lhs}, {rhs})"
        if op == "^":
            return f"np.power({lhs}, {rhs})"
        if op in COMPARISON:
            return f"F({lhs} {COMPARISON[op]} {rhs})"
        if op in LOGIC:
            return f"F(bool({lhs}) {'and' if op == '&&' else 'or'} bool({rhs}))"
        return f"({lhs} {op} {rhs})"
    if kind == "neg":
        return f"(-{python(node[1])})"
    if kind == "not":
        return f"F(not {python(node[1])})"
    if kind == "cond":
        return f"({python(node[2])} if {python(node[1])} != 0 else {python(node[3])})"
    if kind == "fn":
        return f"{FUNCTIONS[node[1]]}({python(node[2])})"
    return f"c_fold({node[1]!r}, [{', '.join(python(child) for child in node[2])}])"


def c_int(x: np.float64) -> int:
    """(epicsInt32) x for caioc: truncate, wrap modulo 2**32, NaN and infinities are 0."""
    if not np.isfinite(x):
        return 0
    return int(np.int64(np.trunc(x) % 2**32).astype(np.uint32).astype(np.int32))


def c_mod(a: np.float64, b: np.float64) -> np.float64:
    divisor = c_int(b)
    return np.float64("nan") if divisor == 0 else np.float64(math.fmod(c_int(a), divisor))


def c_fold(name: str, args: list[np.float64]) -> np.float64:
    """calcPerform.c's MIN/MAX loop: fold from the last argument, NaN wins."""
    result = args[-1]
    for x in reversed(args[:-1]):
        keep = (x < result if name == "MAX" else x > result) or np.isnan(result)
        result = result if keep else x
    return result


def same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=1e-12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions, inputs)
def test_calc_matches_c_double_arithmetic(node: Any, values: list[float]) -> None:
    text = epics(node)
    result = compile_calc(text).evaluate(values)
    namespace = {"np": np, "F": np.float64, "c_mod": c_mod, "c_fold": c_fold}
    with np.errstate(all="ignore"):
        expected = eval(python(node), namespace, {"v": [np.float64(x) for x in values]})
    assert same(result, float(expected)), (text, result, expected)


# Minimal parentheses from postfix.c's priorities must mean the same as full ones.
PRIORITY = {op: 4 if op in "+-" else 5 for op in ARITHMETIC}
PRIORITY.update({"^": 6, "&&": 2, "||": 1, **dict.fromkeys(COMPARISON, 3)})


def minimal(node: Any) -> tuple[str, int]:
    """Render with as few parentheses as the priorities allow; returns (text, priority)."""
    kind = node[0]
    if kind == "bin":
        priority = PRIORITY[node[1]]
        lhs, lhs_priority = minimal(node[2])
        rhs, rhs_priority = minimal(node[3])
        lhs = lhs if lhs_priority >= priority else f"({lhs})"
        rhs = rhs if rhs_priority > priority else f"({rhs})"  # left-associative
        return f"{lhs} {node[1]} {rhs}", priority
    if kind in ("neg", "not"):
        operand, operand_priority = minimal(node[1])
        operand = operand if operand_priority >= 7 else f"({operand})"
        return f"{'-' if kind == 'neg' else '!'} {operand}", 7
    if kind == "cond":
        condition, condition_priority = minimal(node[1])
        condition = condition if condition_priority > 0 else f"({condition})"
        then, _ = minimal(node[2])
        otherwise, _ = minimal(node[3])
        return f"{condition} ? {then} : {otherwise}", 0
    if kind == "fn":
        return f"{node[1]}({minimal(node[2])[0]})", 8
    if kind == "fold":
        return f"{node[1]}({', '.join(minimal(child)[0] for child in node[2])})", 8
    return epics(node), 8


@settings(max_examples=300, deadline=None)
@given(expressions, inputs)
def test_calc_precedence_matches_postfix_priorities(node: Any, values: list[float]) -> None:
    text, _ = minimal(node)
    assert same(compile_calc(text).evaluate(values), compile_calc(epics(node)).evaluate(values)), (
        text
    )


@pytest.mark.parametrize("first", BINARY)
@pytest.mark.parametrize("second", BINARY)
def test_calc_binary_operator_pairs(first: str, second: str) -> None:
    """``A op1 B op2 C`` groups by postfix.c's priorities, left to right when equal."""
    flat = compile_calc(f"A {first} B {second} C")
    if PRIORITY[first] >= PRIORITY[second]:
        grouped = compile_calc(f"(A {first} B) {second} C")
    else:
        grouped = compile_calc(f"A {first} (B {second} C)")
    for values in itertools.product([0.0, 1.0, 2.0, -3.0, 0.5], repeat=3):
        assert same(flat.evaluate(values), grouped.evaluate(values)), values
    for unary in ("-", "!"):  # unary operators bind tightest
        flat = compile_calc(f"{unary}A {first} B")
        grouped = compile_calc(f"({unary}A) {first} B")
        for values in itertools.product([0.0, 1.0, -2.0, 0.5], repeat=2):
            assert same(flat.evaluate(values), grouped.evaluate(values)), values

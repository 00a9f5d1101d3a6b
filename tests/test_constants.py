"""Wire constants against epics-base itself: its headers and its libraries."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from caioc.ca import (
    CA_MAJOR_PROTOCOL_REVISION,
    ECA,
    REPEATER_PORT,
    SERVER_PORT,
    AccessRights,
    AlarmSeverity,
    AlarmStatus,
    CommandId,
    ECASeverity,
    SubscriptionMask,
)

paths = pytest.importorskip("epicscorelibs.path", reason="epicscorelibs (softioc) not installed")
INCLUDE = Path(paths.include_path)


def defines(header: str) -> dict[str, str]:
    text = (INCLUDE / header).read_text()
    return dict(re.findall(r"^\s*#\s*define\s+(\w+)\s+(.+?)\s*(?:/\*.*)?$", text, re.MULTILINE))


@pytest.fixture(scope="module")
def libca() -> dict[str, Any]:
    pytest.importorskip("epics.ca", reason="pyepics (libca) not installed")
    from epics_oracle import facts  # libca is read in a child process

    return facts(tuple(int(member) for member in ECA))


def test_every_eca_code_and_message_is_libcas(libca: dict[str, Any]) -> None:
    text = (INCLUDE / "caerr.h").read_text()
    severities = {
        "CA_K_WARNING": 0,
        "CA_K_SUCCESS": 1,
        "CA_K_ERROR": 2,
        "CA_K_INFO": 3,
        "CA_K_FATAL": 6,
    }
    found = re.findall(r"#define ECA_(\w+)\s+DEFMSG\((\w+),\s*(\d+)\)", text)
    assert len(found) == len(ECA)
    for name, severity, number in found:
        member = ECA.ARRAY16KCLIENT if name == "16KARRAYCLIENT" else ECA[name]
        assert int(member) == (int(number) << 3) | severities[severity], name
        assert member.severity == ECASeverity(severities[severity])
        # the text peers print for this code (epics-base 7's wording; 3.x
        # had three typos since fixed)
        assert member.message == libca["ca_message"][str(int(member))], name
    assert ECA.NORMAL.successful and not ECA.PUTFAIL.successful


def test_command_numbers_match_caproto_h() -> None:
    # caProto.h names most commands CA_PROTO_*, the repeater's two without it
    table = {
        name.removeprefix("CA_PROTO_"): int(value.rstrip("u"))
        for name, value in defines("caProto.h").items()
        if re.fullmatch(r"\d+u?", value)
    }
    for command in CommandId:
        assert table[command.name] == command.value, command


def test_ports_rights_and_masks_match_the_headers() -> None:
    proto = defines("caProto.h")
    assert int(proto["CA_MAJOR_PROTOCOL_REVISION"]) == CA_MAJOR_PROTOCOL_REVISION
    base = 5000 + int(re.search(r"\+\s*(\d+)", proto["CA_PORT_BASE"]).group(1))  # type: ignore[union-attr]
    assert base + 2 * CA_MAJOR_PROTOCOL_REVISION == SERVER_PORT
    assert REPEATER_PORT == SERVER_PORT + 1
    assert proto["CA_PROTO_ACCESS_RIGHT_READ"] == "(1u<<0u)" and AccessRights.READ == 1
    assert proto["CA_PROTO_ACCESS_RIGHT_WRITE"] == "(1u<<1u)" and AccessRights.WRITE == 2
    masks = defines("caeventmask.h")
    for name in ("VALUE", "ALARM", "PROPERTY"):
        shift = int(re.search(r"1<<(\d+)", masks[f"DBE_{name}"]).group(1))  # type: ignore[union-attr]
        assert SubscriptionMask[name] == 1 << shift
    assert 1 << int(re.search(r"1<<(\d+)", masks["DBE_ARCHIVE"]).group(1)) == SubscriptionMask.LOG  # type: ignore[union-attr]


def test_alarm_names_are_libcoms(libca: dict[str, Any]) -> None:
    assert libca["epicsAlarmSeverityStrings"] == [s.name for s in AlarmSeverity]
    assert libca["epicsAlarmConditionStrings"] == [s.name for s in AlarmStatus]

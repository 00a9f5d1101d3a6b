"""caioc's server against the C client library (libca through pyepics).

EPICS itself is the oracle: each test starts our server in one process and
drives it from libca in another, on loopback, and checks what libca got.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from peers import SERVE_PVDB, ca_environment, free_port, process_until_ready, run_pyepics

pytest.importorskip("epics", reason="pyepics (libca) not installed")

IOC = (
    """
import numpy
from caioc.server._data import (
    ChannelDouble, ChannelInteger, ChannelEnum, ChannelString, ChannelChar)

pvdb = {
    "T:AO": ChannelDouble(value=3.25, units="mm", precision=3,
                          upper_disp_limit=10.0, lower_disp_limit=-10.0,
                          upper_alarm_limit=9.0, upper_warning_limit=8.0,
                          lower_warning_limit=-8.0, lower_alarm_limit=-9.0,
                          upper_ctrl_limit=100.0, lower_ctrl_limit=-100.0),
    "T:LO": ChannelInteger(value=7, units="cts"),
    "T:MB": ChannelEnum(value=1, enum_strings=["Off", "On", "Fault"]),
    "T:SO": ChannelString(value="hello"),
    "T:WF": ChannelDouble(value=numpy.arange(10.0), max_length=10),
    "T:RO": ChannelDouble(value=1.0, read_only=True),
    "T:BIG": ChannelDouble(value=numpy.arange(300_000.0), max_length=300_000),
    "T:HUGE": ChannelDouble(value=numpy.arange(2_100_000.0)),  # 16.8 MB
}

"""
    + SERVE_PVDB
)


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, str]]:
    environment = ca_environment(free_port(), free_port())
    with process_until_ready(IOC, environment):
        yield environment


def test_get_native_time_and_ctrl(env: dict[str, str]) -> None:
    result = run_pyepics(
        """
        pv = epics.PV("T:AO", form="ctrl")
        assert pv.wait_for_connection(timeout=5)
        ctrl = pv.get_ctrlvars()
        result = {
            "value": epics.caget("T:AO", timeout=5),
            "as_string": epics.caget("T:AO", as_string=True, timeout=5),
            "units": ctrl["units"], "precision": ctrl["precision"],
            "upper_ctrl_limit": ctrl["upper_ctrl_limit"],
            "upper_alarm_limit": ctrl["upper_alarm_limit"],
            "lo": epics.caget("T:LO", timeout=5),
            "enum": epics.caget("T:MB", as_string=True, timeout=5),
            "string": epics.caget("T:SO", timeout=5),
            "wf": list(epics.caget("T:WF", timeout=5)),
            "severity": epics.PV("T:AO", form="time").get_with_metadata(timeout=5)["severity"],
        }
        """,
        env,
    )
    assert result["value"] == 3.25
    assert result["as_string"] == "3.250"  # PREC 3, as the C server formats it
    assert result["units"] == "mm" and result["precision"] == 3
    assert result["upper_ctrl_limit"] == 100.0 and result["upper_alarm_limit"] == 9.0
    assert result["lo"] == 7
    assert result["enum"] == "On"
    assert result["string"] == "hello"
    assert result["wf"] == [float(i) for i in range(10)]
    assert result["severity"] == 0


def test_put_with_completion_and_read_back(env: dict[str, str]) -> None:
    result = run_pyepics(
        """
        status = epics.caput("T:LO", 42, wait=True, timeout=5)
        string_put = epics.caput("T:AO", "1.5", wait=True, timeout=5)
        enum_put = epics.caput("T:MB", "Fault", wait=True, timeout=5)
        result = {
            "status": status, "lo": epics.caget("T:LO", timeout=5),
            "string_put": string_put, "ao": epics.caget("T:AO", timeout=5),
            "enum_put": enum_put, "mb": epics.caget("T:MB", timeout=5),
        }
        """,
        env,
    )
    assert result["status"] == 1 and result["lo"] == 42
    assert result["string_put"] == 1 and result["ao"] == 1.5
    assert result["enum_put"] == 1 and result["mb"] == 2


def test_read_only_put_is_refused_with_the_eca_code(env: dict[str, str]) -> None:
    result = run_pyepics(
        """
        chid = epics.ca.create_channel("T:RO")
        assert epics.ca.connect_channel(chid, timeout=5)
        result = {
            "write_access": epics.ca.write_access(chid),
            "read_access": epics.ca.read_access(chid),
            "value": epics.caget("T:RO", timeout=5),
        }
        """,
        env,
    )
    assert result == {"write_access": False, "read_access": True, "value": 1.0}


def test_monitor_receives_every_put(env: dict[str, str]) -> None:
    result = run_pyepics(
        """
        seen = []
        pv = epics.PV("T:LO", callback=lambda value=None, **kw: seen.append(value))
        assert pv.wait_for_connection(timeout=5)
        until(lambda: seen, "the first update")
        for value in range(100, 110):
            epics.caput("T:LO", value, wait=True, timeout=5)
        until(lambda: seen[-1:] == [109], "the last put's update")
        result = seen
        """,
        env,
    )
    assert result[-1] == 109
    # a client that keeps up gets every update, in order
    assert result[-10:] == list(range(100, 110))


def test_large_array_with_extended_header(env: dict[str, str]) -> None:
    result = run_pyepics(
        """
        value = epics.caget("T:BIG", timeout=10)
        result = {"n": len(value), "first": float(value[0]), "last": float(value[-1])}
        """,
        env,
    )
    assert result == {"n": 300_000, "first": 0.0, "last": 299_999.0}


def test_sixteen_megabyte_array(env: dict[str, str]) -> None:
    result = run_pyepics(
        """
        value = epics.caget("T:HUGE", timeout=30)
        result = {"n": len(value), "last": float(value[-1]), "sum_ok": bool(
            abs(float(value.sum()) - 2_100_000 * 2_099_999 / 2) < 1.0)}
        """,
        env,
        timeout=120,
    )
    assert result == {"n": 2_100_000, "last": 2_099_999.0, "sum_ok": True}


def test_unknown_pv_is_not_found(env: dict[str, str]) -> None:
    result = run_pyepics(
        """
        pv = epics.PV("T:NOPE")
        result = {"connected": pv.wait_for_connection(timeout=1.0)}
        """,
        env,
    )
    assert result == {"connected": False}


def test_batched_gets_as_libca_sends_them(env: dict[str, str]) -> None:
    """ca_array_get for many channels, then one ca_pend_io: the server answers
    the run of READ_NOTIFY requests together (read_notify_run), uniform or mixed."""
    result = run_pyepics(
        """
        import ctypes
        from epics import ca
        libca = ca.initialize_libca()
        chids = {}
        for name in ("T:RO", "T:WF"):
            chid = ctypes.c_void_p()
            libca.ca_create_channel(name.encode(), None, None, 0, ctypes.byref(chid))
            chids[name] = chid
        assert libca.ca_pend_io(ctypes.c_double(5.0)) == 1
        DBR_DOUBLE = 6
        # uniform: 40 scalar reads, one reply size
        uniform = (ctypes.c_double * 40)(*[float("nan")] * 40)
        for i in range(40):
            chid = chids["T:RO" if i % 2 == 0 else "T:WF"]
            libca.ca_array_get(DBR_DOUBLE, 1, chid, ctypes.byref(uniform, 8 * i))
        assert libca.ca_pend_io(ctypes.c_double(5.0)) == 1
        # mixed: scalars and three-element reads in one run
        mixed = (ctypes.c_double * 80)(*[float("nan")] * 80)
        for i in range(20):
            libca.ca_array_get(DBR_DOUBLE, 1, chids["T:RO"], ctypes.byref(mixed, 32 * i))
            libca.ca_array_get(DBR_DOUBLE, 3, chids["T:WF"], ctypes.byref(mixed, 32 * i + 8))
        assert libca.ca_pend_io(ctypes.c_double(5.0)) == 1
        result = {"uniform": list(uniform), "mixed": list(mixed)}
        """,
        env,
    )
    assert result["uniform"] == [1.0, 0.0] * 20
    assert result["mixed"] == [1.0, 0.0, 1.0, 2.0] * 20

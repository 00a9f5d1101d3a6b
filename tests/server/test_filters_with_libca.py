"""Field modifiers and channel filters: caioc's server and softioc's rsrv side by side.

The same libca (pyepics) client scripts run against both servers, which
serve the same records; agreement with the C IOC is the oracle.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from peers import ca_environment, free_port, process_until_ready, run_pyepics, run_pyepics_each

pytest.importorskip("epics", reason="pyepics (libca) not installed")
pytestmark = pytest.mark.peers

LONG = "y" * 50 + "END"

SOFTIOC = """
import ctypes, tempfile, numpy
from softioc import asyncio_dispatcher, builder, softioc, imports

lib = imports.dbCore
lib.dbStateCreate.restype = ctypes.c_void_p
lib.dbStateCreate.argtypes = [ctypes.c_char_p]
lib.dbStateSet.argtypes = lib.dbStateClear.argtypes = [ctypes.c_void_p]
state = lib.dbStateCreate(b"st")

def set_state(record, value):
    (lib.dbStateSet if value else lib.dbStateClear)(state)
    return True

builder.SetDeviceName("TEST")
builder.aOut("AO", initial_value=3.25, EGU="mm", PREC=3)
builder.WaveformOut("WF", initial_value=numpy.arange(10.0))
builder.WaveformOut("WF2", initial_value=numpy.arange(10.0))
builder.WaveformOut("SWF", initial_value=numpy.arange(5.0), length=10)
builder.stringOut("SO", initial_value="hello")
builder.longOut("STATE", initial_value=0, validate=set_state)
builder.LoadDatabase()
db = tempfile.NamedTemporaryFile("w", suffix=".db", delete=False)
db.write('record(lso, "TEST:LSO") { field(SIZV, "100") }\\n')
db.close()
softioc.dbLoadDatabase(db.name)
softioc.iocInit(asyncio_dispatcher.AsyncioDispatcher(), enable_pva=False)
print("READY", flush=True)
softioc.non_interactive_ioc()
"""

CAIOC = """
import asyncio, numpy
from caioc.server import Server, ServerConfig
from caioc.server._data import ChannelChar, ChannelDouble, ChannelInteger, ChannelString

async def set_state(channel, value):
    (server.states.set if value else server.states.clear)("st")

pvdb = {
    "TEST:AO": ChannelDouble(value=3.25, units="mm", precision=3),
    "TEST:WF": ChannelDouble(value=numpy.arange(10.0)),
    "TEST:WF2": ChannelDouble(value=numpy.arange(10.0)),
    "TEST:SWF": ChannelDouble(value=numpy.arange(5.0), max_length=10),
    "TEST:SO": ChannelString(value="hello"),
    "TEST:STATE": ChannelInteger(value=0, put_hook=set_state),
    # an lso's VAL$ is a CHAR array of SIZV elements; here a CHAR channel
    "TEST:LSO": ChannelChar(value=numpy.zeros(100, numpy.uint8)),
}
server = Server(pvdb, ServerConfig.from_environment())
server.dotless_modifiers = True  # the caioc extension, compared below
server.states.create("st")

async def main():
    await server.start()
    print("READY", server.tcp_port, flush=True)
    await asyncio.Future()

asyncio.run(main())
"""

#: The long string both servers get through TEST:LSO.$ before the reads.
SETUP = f"""
import numpy
text = numpy.frombuffer(b"{LONG}\\0", dtype=numpy.uint8)
assert epics.caput("TEST:LSO.$", text, wait=True, timeout=5) == 1
"""


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, dict[str, str]]]:
    pytest.importorskip("softioc", reason="softioc (the C IOC) not installed")
    envs = {
        "caioc": ca_environment(free_port(), free_port()),
        "softioc": ca_environment(free_port(), free_port()),
    }
    with (
        process_until_ready(CAIOC, envs["caioc"]),
        process_until_ready(SOFTIOC, envs["softioc"]),
    ):
        for env in envs.values():
            run_pyepics(SETUP + "result = None", env)
        yield envs


both = run_pyepics_each


READS = """
import time
names = {names!r}
result = {{}}
chids = {{name: epics.ca.create_channel(name, connect=False, auto_cb=False) for name in names}}
deadline = time.monotonic() + 2  # the searches run together: one wait for the missing
for name, chid in chids.items():
    if not epics.ca.connect_channel(chid, timeout=max(0.01, deadline - time.monotonic())):
        result[name] = "not found"
        continue
    value = epics.ca.get(chid, timeout=5)
    value = value.tolist() if hasattr(value, "tolist") else value
    result[name] = [epics.ca.field_type(chid), epics.ca.element_count(chid), value]
"""


def test_array_filter_reads_agree(servers: dict[str, dict[str, str]]) -> None:
    names = [
        "TEST:WF.[1:3]",
        "TEST:WF.VAL[1:3]",
        'TEST:WF.{"arr":{"s":1,"e":5,"i":2}}',
        'TEST:WF.{"arr":{s:1,e:2}}',
        "TEST:WF.[-3:]",
        "TEST:WF.[2]",
        "TEST:WF.[2:-1:5]",
        "TEST:WF.[20:]",
        'TEST:WF.[1:3]{"arr":{"s":1}}',
        "TEST:SWF.[1:8]",
        "TEST:SWF.[-2:]",
        "TEST:AO.[1:3]",
        "TEST:WF.",
        "TEST:WF.[]",
        "TEST:WF.[2:3 ]",
        'TEST:WF.{"arr":{"s":1,"x":2}}',
        'TEST:WF.{"foo":{}}',
    ]
    results = both(READS.format(names=names), servers)
    assert results["caioc"] == results["softioc"]
    got = results["softioc"]
    assert got["TEST:WF.[1:3]"] == [6, 3, [1.0, 2.0, 3.0]]
    assert got['TEST:WF.{"arr":{"s":1,"e":5,"i":2}}'] == [6, 3, [1.0, 3.0, 5.0]]
    assert got["TEST:SWF.[1:8]"] == [6, 8, [1.0, 2.0, 3.0, 4.0]]
    assert got["TEST:WF.[]"] == "not found"


def test_long_string_reads_agree(servers: dict[str, dict[str, str]]) -> None:
    names = [
        "TEST:SO.$",
        "TEST:SO.VAL$",
        "TEST:SO.$[1:2]",
        'TEST:SO.${"arr":{"s":1}}',
        "TEST:LSO.$",
        "TEST:LSO.VAL$",
        "TEST:LSO.$[2:4]",
        "TEST:AO.$",
        "TEST:WF.VAL$",
    ]
    results = both(READS.format(names=names), servers)
    assert results["caioc"] == results["softioc"]
    got = results["softioc"]
    assert got["TEST:SO.$"] == [4, 40, list(b"hello\0")]
    assert got["TEST:LSO.$"] == [4, 100, list(LONG.encode() + b"\0")]
    assert got["TEST:AO.$"] == "not found"


def test_dotless_shorthand_is_a_caioc_extension(servers: dict[str, dict[str, str]]) -> None:
    results = both(READS.format(names=["TEST:WF[1:3]", "TEST:SO$"]), servers)
    assert results["softioc"] == {"TEST:WF[1:3]": "not found", "TEST:SO$": "not found"}
    assert results["caioc"] == {
        "TEST:WF[1:3]": [6, 3, [1.0, 2.0, 3.0]],
        "TEST:SO$": [4, 40, list(b"hello\0")],
    }


def test_puts_through_modifiers_agree(servers: dict[str, dict[str, str]]) -> None:
    code = """
    import numpy
    def plain(value):
        return value.tolist() if hasattr(value, "tolist") else value
    result = {
        "arr_put": epics.caput("TEST:WF2.[1:3]", [100.0, 200.0], wait=True, timeout=5),
        "wf2": plain(epics.caget("TEST:WF2", timeout=5)),
        "sliced": plain(epics.caget("TEST:WF2.[1:3]", timeout=5)),
        "string_put": epics.caput("TEST:SO.$", "goodbye world", wait=True, timeout=5),
        # softioc has been seen to answer the next get with the old value
        # now and then: read until the put shows, then compare what it made.
        "so": read_until(
            lambda: epics.caget("TEST:SO", timeout=5), lambda v: v != "hello", "the put to SO"
        ),
        "as_string": plain(epics.caget("TEST:SO.$", as_string=True, timeout=5)),
        "long_put": epics.caput("TEST:SO.$", "x" * 60, wait=True, timeout=5),
        "truncated": read_until(
            lambda: epics.caget("TEST:SO", timeout=5),
            lambda v: v != "goodbye world",
            "the long put to SO",
        ),
    }
    epics.caput("TEST:SO", "hello", wait=True, timeout=5)
    """
    results = both(code, servers)
    assert results["caioc"] == results["softioc"]
    assert results["softioc"] == {
        "arr_put": 1,
        "wf2": [100.0, 200.0],  # the put went to the whole array
        "sliced": [200.0],
        "string_put": 1,
        "so": "goodbye world",
        "as_string": "goodbye world",
        "long_put": 1,
        "truncated": "x" * 39,
    }


MONITORS = """
import math, time
channels = {
    "plain": "TEST:AO",
    "dbnd": 'TEST:AO.{"dbnd":{"d":0.5}}',
    "dbnd0": 'TEST:AO.{"dbnd":{}}',
    "rel": 'TEST:AO.{"dbnd":{"rel":10}}',
    "dec": 'TEST:AO.{"dec":{"n":3}}',
    "arr": "TEST:WF.[1:2]",
    **{m: 'TEST:AO.{"sync":{"m":"%s","s":"st"}}' % m
       for m in ("before", "first", "last", "after", "while", "unless")},
}
got = {k: [] for k in channels}
def keep(key):
    def callback(value=None, **kw):
        got[key].append(value.tolist() if hasattr(value, "tolist") else value)
    return callback
pvs = [epics.PV(name, callback=keep(key)) for key, name in channels.items()]
for pv in pvs:
    assert pv.wait_for_connection(5), pv.pvname
def settle(key, n):
    until(lambda: len(got[key]) >= n, f"{n} updates of {key}")
settle("plain", 1)
settle("arr", 1)
steps = [3.3, 3.5, 3.8, 4.0, 4.2, "set", 5, 6, 7, "clear", 8, 9, "set", 10, "clear",
         11, 1e-3, 0, 0.2, -5, -5.2, -5.4, -6]
for step in steps:
    if isinstance(step, str):
        assert epics.caput("TEST:STATE", int(step == "set"), wait=True, timeout=5) == 1
        continue
    n = len(got["plain"])
    assert epics.caput("TEST:AO", step, wait=True, timeout=5) == 1
    settle("plain", n + 1)
# A barrier: both servers send a client's updates in the order they were
# posted, and the updates each put causes before its completion, so once
# this later put's update is here, every filtered update of the puts above
# is too (callbacks run in arrival order).
assert epics.caput("TEST:WF", [7.0, 8.0, 9.0, 10.0], wait=True, timeout=5) == 1
settle("arr", 2)
del got["plain"]
result = {key: list(values) for key, values in got.items()}
epics.caput("TEST:AO", 3.25, wait=True, timeout=5)
epics.caput("TEST:WF", list(range(10)), wait=True, timeout=5)
"""


def test_monitor_filters_agree(servers: dict[str, dict[str, str]]) -> None:
    results = both(MONITORS, servers)
    assert results["caioc"] == results["softioc"]
    got = results["softioc"]
    assert got["dbnd"] == [3.25, 3.8, 5, 6, 7, 8, 9, 10, 11, 0.001, -5, -6]
    assert got["dec"] == [3.25, 3.8, 5, 8, 11, 0.2, -5.4]
    assert got["while"] == [5, 6, 7, 10]
    assert got["before"] == [4.2, 9] and got["last"] == [7, 10]
    assert got["arr"] == [[1.0, 2.0], [8.0, 9.0]]


def test_timestamp_filter_agrees(servers: dict[str, dict[str, str]]) -> None:
    code = """
    import time
    from epics import dbr
    plain = epics.ca.create_channel("TEST:AO")
    stamped = epics.ca.create_channel('TEST:AO.{"ts":{}}')
    assert epics.ca.connect_channel(plain, 5) and epics.ca.connect_channel(stamped, 5)
    epics.caput("TEST:AO", 1.5, wait=True, timeout=5)
    old = epics.ca.get_with_metadata(plain, ftype=dbr.TIME_DOUBLE, timeout=5)["timestamp"]
    until(lambda: time.time() - old >= 0.05, "the clock to move well past the record's stamp")
    now = time.time()
    new = epics.ca.get_with_metadata(stamped, ftype=dbr.TIME_DOUBLE, timeout=5)["timestamp"]
    again = epics.ca.get_with_metadata(plain, ftype=dbr.TIME_DOUBLE, timeout=5)["timestamp"]
    # the record keeps its stamp; the filter stamps the read with the time of reading
    result = {"old": again == old and now - old >= 0.05, "new": now - 0.001 <= new < now + 0.5}
    epics.caput("TEST:AO", 3.25, wait=True, timeout=5)
    """
    results = both(code, servers)
    assert results["caioc"] == results["softioc"] == {"old": True, "new": True}

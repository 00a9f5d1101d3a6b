"""The threaded client and the pyepics-compatible layer, against the C server.

The same script lines a pyepics user writes, run on caioc: caget, caput,
PV objects with callbacks, against softioc (EPICS's own rsrv).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
from peers import ca_environment, free_port, process_until_ready

from caioc.client import ClientConfig, ThreadedContext
from caioc.client import pyepics_compat as epics

SOFTIOC = """
import numpy
from softioc import asyncio_dispatcher, builder, softioc
builder.SetDeviceName("P")
builder.aOut("AO", initial_value=3.25, EGU="mm", PREC=3)
builder.longOut("LO", initial_value=7)
builder.mbbOut("MB", "Off", "On", initial_value=1)
builder.WaveformOut("WF", initial_value=numpy.arange(5.0))
builder.LoadDatabase()
softioc.iocInit(asyncio_dispatcher.AsyncioDispatcher(), enable_pva=False)
print("READY", flush=True)
softioc.non_interactive_ioc()
"""


@pytest.fixture(scope="module")
def context() -> Iterator[ThreadedContext]:
    pytest.importorskip("softioc", reason="softioc (the C IOC) not installed")
    port = free_port()
    env = ca_environment(port, free_port())
    with process_until_ready(SOFTIOC, env):
        threaded = ThreadedContext(ClientConfig(search_addresses=[("127.0.0.1", port)]))
        try:
            yield threaded
        finally:
            threaded.close()


@pytest.fixture(autouse=True)
def use_context(context: ThreadedContext, monkeypatch: pytest.MonkeyPatch) -> None:
    import caioc.client.pyepics_compat as module

    monkeypatch.setattr(module, "shared_context", lambda: context)


def test_caget_caput() -> None:
    assert epics.caget("P:AO") == 3.25
    assert epics.caget("P:AO", as_string=True) == "3.250"
    assert epics.caget("P:MB", as_string=True) == "On"
    assert list(epics.caget("P:WF")) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert epics.caget("P:WF", as_numpy=False) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert epics.caput("P:LO", 11, wait=True) == 1
    assert epics.caget("P:LO") == 11
    assert epics.caget_many(["P:AO", "P:LO", "P:NOPE"], timeout=0.5) == [3.25, 11, None]
    assert epics.caget("P:NOPE", connection_timeout=0.3) is None


def test_pv_object_and_callbacks() -> None:
    pv = epics.PV("P:AO")
    assert pv.wait_for_connection(5)
    assert pv.get() == 3.25
    assert pv.units == "mm" and pv.precision == 3 and pv.type == "double"
    seen: list[float] = []
    event = threading.Event()

    def on_update(pvname: str, value: float, **kw: object) -> None:
        seen.append(value)
        if value == 5.5:
            event.set()

    pv.add_callback(on_update)
    assert pv.put(5.5, wait=True) == 1
    assert event.wait(5), seen
    assert seen[-1] == 5.5 and pv.get() == 5.5
    pv.disconnect()


def test_threaded_context_from_many_threads(context: ThreadedContext) -> None:
    results: list[float] = []

    def reader() -> None:
        results.append(context.read("P:WF").value[-1])

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [4.0] * 8
    assert isinstance(context.read("P:WF").value, np.ndarray)

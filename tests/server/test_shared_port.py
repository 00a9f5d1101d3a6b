"""Several IOCs on one host share the CA port, as epics-base servers do.

Each binds the UDP port with SO_REUSEADDR and listens on its interface's
broadcast address; the first takes the TCP port, the others a free one.
A client searching the broadcast address finds every one of them; here
two caioc IOCs and a real C IOC (softioc) run side by side.
"""

from __future__ import annotations

import contextlib

import pytest
from peers import ca_environment, free_port, process_until_ready, run_pyepics

pytest.importorskip("epics", reason="pyepics (libca) not installed")

CAIOC_IOC = """
import asyncio
from caioc.server import Server, ServerConfig
from caioc.server._data import ChannelInteger

async def main():
    server = Server({{"{name}": ChannelInteger(value={value})}}, ServerConfig.from_environment())
    await server.start()
    print("READY", server.tcp_port, flush=True)
    await asyncio.Future()

asyncio.run(main())
"""

SOFTIOC = """
from softioc import asyncio_dispatcher, builder, softioc
builder.SetDeviceName("C")
builder.longOut("LO", initial_value=3)
builder.LoadDatabase()
softioc.iocInit(asyncio_dispatcher.AsyncioDispatcher(), enable_pva=False)
print("READY", flush=True)
softioc.non_interactive_ioc()
"""


def test_iocs_sharing_the_port_are_all_found() -> None:
    pytest.importorskip("softioc", reason="softioc (the C IOC) not installed")
    env = ca_environment(free_port(), free_port())
    # Search the loopback broadcast address: every IOC on the port hears it.
    env["EPICS_CA_ADDR_LIST"] = "127.255.255.255"
    # A listens on 127.0.0.1 (and so, like rsrv, on its broadcast address);
    # B and the C IOC on all interfaces, the default. Only loopback is used.
    any_interface = {k: v for k, v in env.items() if k != "EPICS_CAS_INTF_ADDR_LIST"}
    with contextlib.ExitStack() as stack:
        stack.enter_context(process_until_ready(CAIOC_IOC.format(name="A:LO", value=1), env))
        stack.enter_context(
            process_until_ready(CAIOC_IOC.format(name="B:LO", value=2), any_interface)
        )
        stack.enter_context(process_until_ready(SOFTIOC, any_interface))
        result = run_pyepics(
            """
            names = ["A:LO", "B:LO", "C:LO"]
            pvs = [epics.PV(name) for name in names]
            result = {
                name: [pv.wait_for_connection(timeout=5), pv.get(timeout=5), pv.host]
                for name, pv in zip(names, pvs)
            }
            """,
            env,
        )
    assert [result[name][:2] for name in ("A:LO", "B:LO", "C:LO")] == [
        [True, 1],
        [True, 2],
        [True, 3],
    ]
    # three servers, three TCP ports
    assert len({result[name][2] for name in result}) == 3

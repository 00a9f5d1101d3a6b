"""Load for the server: many circuits, each monitoring the same PVs; latencies out.

Run as ``python load_client.py SPEC`` (SPEC: JSON with ``port``, ``circuits``,
``names`` and ``seconds``). Every circuit subscribes (DBR_DOUBLE) to every
name; the soak server sets each PV to its ``time.monotonic()``, so an
update's latency is this process's clock at arrival minus the value (one
clock for all processes on Linux). Prints ``READY`` once every subscription
has had its first update, then after ``seconds`` of load ``RESULT {json}``
(updates, latency quantiles in seconds, fewest updates on one circuit) and
exits, which closes every circuit at once.
"""

from __future__ import annotations

import array
import asyncio
import json
import struct
import sys
import time
from typing import Any

from caioc.ca import NEED_DATA, ChannelType, EventAddResponse, Role, VersionRequest, VirtualCircuit

_DOUBLE = struct.Struct(">d")


class LoadCircuit(asyncio.Protocol):
    """One circuit of the load: subscribes, then records every update's latency."""

    def __init__(self, names: list[str], latencies: array.array[float]) -> None:
        self.core = VirtualCircuit(Role.CLIENT, max_payload=10**8)
        self.names = names
        self.latencies = latencies
        self.transport: asyncio.Transport | None = None
        self.channels = [self.core.create_channel(name) for name in names]
        self.subscribed = False
        self.first = 0
        self.updates = 0
        self.measuring = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(  # type: ignore[union-attr]
            self.core.send(VersionRequest(0), *(c.create() for c in self.channels))
        )

    def data_received(self, data: bytes) -> None:
        core = self.core
        core.receive_data(data)
        now = time.monotonic()
        unpack = _DOUBLE.unpack_from
        while (command := core.next_command()) is not NEED_DATA:
            if type(command) is EventAddResponse:
                if self.measuring:
                    self.latencies.append(now - unpack(command[6])[0])  # [6]: the payload
                    self.updates += 1
                else:
                    self.first += 1
        if not self.subscribed and all(c.sid is not None for c in self.channels):
            self.subscribed = True
            assert self.transport is not None
            self.transport.write(
                core.send(*(c.subscribe(ChannelType.DOUBLE, 1) for c in self.channels))
            )


async def main(spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    latencies: array.array[float] = array.array("d")
    circuits: list[LoadCircuit] = []
    for _ in range(int(spec["circuits"])):
        _, circuit = await loop.create_connection(
            lambda: LoadCircuit(spec["names"], latencies), "127.0.0.1", int(spec["port"])
        )
        circuits.append(circuit)
    wanted = len(spec["names"])
    deadline = loop.time() + 60.0
    while any(c.first < wanted for c in circuits):
        if loop.time() > deadline:
            raise SystemExit("not every subscription had its first update in 60 s")
        await asyncio.sleep(0.01)  # a bounded poll: the deadline above
    for circuit in circuits:
        circuit.measuring = True
    print("READY", flush=True)
    await asyncio.sleep(float(spec["seconds"]))  # the measuring window
    for circuit in circuits:
        circuit.measuring = False
    ordered = sorted(latencies)

    def quantile(q: float) -> float | None:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None

    result = {
        "updates": len(ordered),
        "median": quantile(0.5),
        "p90": quantile(0.9),
        "max": ordered[-1] if ordered else None,
        "fewest_on_a_circuit": min(c.updates for c in circuits),
    }
    print("RESULT", json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))

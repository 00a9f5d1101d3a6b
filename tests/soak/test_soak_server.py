"""Soak and load runs of the server in its own process (marked slow: tens of seconds each).

Each run does harm to the server — idle and trickling connections, a client
killed mid-subscription, a client that stops reading, a load far beyond
what it can send — and then checks that a well-behaved client (the C
client, libca through pyepics) is still served, and that the server's
circuits, subscriptions, threads, file descriptors, memory and CPU come
back to where they were. The bounds are the server issue's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import socket
import struct
import sys
import time

import pytest
from peers import SCRIPT_WAITS, process_until_ready
from soak_support import (
    HERE,
    Child,
    CoreClient,
    SoakServer,
    idle_socket,
    pv_names,
    served,
    soak_server,
)
from waiting import run, until

from caioc.ca import ChannelType, VersionRequest
from caioc.server import ServerConfig

pytest.importorskip("epics", reason="pyepics (libca) not installed")
pytestmark = [pytest.mark.slow, pytest.mark.peers]

#: Seconds each soak lasts (the issue's figure).
SOAK_SECONDS = 20
#: A second of silence in the scenario itself (a byte a second, a window of CPU).
SECOND = 1.0


def baseline(server: SoakServer) -> dict[str, float]:
    """The server's figures once one client has come and gone (lazy set-up done)."""
    return server.stats()


async def settled(server: SoakServer, before: dict[str, float]) -> dict[str, float]:
    """Wait until no circuit, subscription, pending update, thread or socket is left."""
    await until(lambda: server.circuits == 0, "every circuit to close", 10.0)

    def clean() -> bool:
        now = server.stats()
        return (
            now["circuits"] == 0
            and now["subscriptions"] == 0
            and now["pending"] == 0
            and now["threads"] <= before["threads"]
            and now["fds"] <= before["fds"]
        )

    await until(clean, "subscriptions, threads and sockets to be released", 10.0)
    return server.stats()


async def cpu_share(server: SoakServer, seconds: float = SECOND) -> float:
    """The server's CPU over the next ``seconds``, as a share of one core."""
    before, start = server.cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)  # the measuring window
    return (server.cpu_seconds() - before) / (time.monotonic() - start)


# ---------------------------------------------------------------------------
# Idle and trickling connections

IDLE = 200
TRICKLING = 50
#: What a trickler sends, a byte a second: a VERSION, then the header of a
#: WRITE announcing 1 kB of payload that never comes.
TRICKLE = bytes(VersionRequest(0)) + struct.pack(">HHHHII", 4, 1024, 6, 128, 1, 1)
#: The issue's bound for holding all of them.
IDLE_MEMORY_KB = 20_000


def test_idle_and_trickling_connections_are_held_cheaply() -> None:
    async def scenario() -> None:
        with soak_server(pvs=10) as server:
            assert await served(server.env, "SOAK:0000") == 0.0
            before = await settled(server, baseline(server))
            idle = [idle_socket(server.port) for _ in range(IDLE)]
            tricklers = [idle_socket(server.port) for _ in range(TRICKLING)]
            try:
                await until(
                    lambda: server.circuits == IDLE + TRICKLING, "every connection accepted"
                )
                newcomer: asyncio.Task[float] | None = None
                for second in range(SOAK_SECONDS):
                    for sock in tricklers:
                        sock.send(TRICKLE[second : second + 1])
                    if second == SOAK_SECONDS // 2:
                        newcomer = asyncio.create_task(served(server.env, "SOAK:0001"))
                    await asyncio.sleep(SECOND)  # the trickle's pace
                assert newcomer is not None and await newcomer == 0.0
                await until(lambda: server.circuits == IDLE + TRICKLING, "the newcomer to go")
                during = server.stats()
                assert during["circuits"] == IDLE + TRICKLING
                grown = during["rss_kb"] - before["rss_kb"]
                print(f"{IDLE + TRICKLING} idle/trickling connections: +{grown} kB RSS")
                assert grown < IDLE_MEMORY_KB, f"{IDLE + TRICKLING} connections cost {grown} kB"
                assert await cpu_share(server) < 0.05  # held, not polled
            finally:
                for sock in idle + tricklers:
                    sock.close()
            after = await settled(server, before)
            assert after["rss_kb"] - before["rss_kb"] < IDLE_MEMORY_KB
            assert await cpu_share(server) < 0.05
            assert await served(server.env, "SOAK:0002") == 0.0

    run(scenario, timeout=120)


# ---------------------------------------------------------------------------
# Idle timeout and connection cap (ServerConfig options still to come)

_OPTIONS = {f.name for f in dataclasses.fields(ServerConfig)}


@pytest.mark.skipif(
    "idle_timeout" not in _OPTIONS,
    reason="ServerConfig has no idle_timeout yet (circuits silent that long get closed)",
)
def test_idle_timeout_closes_silent_and_trickling_circuits() -> None:
    async def scenario() -> None:
        with soak_server(pvs=10, idle_timeout=2.0) as server:
            before = baseline(server)
            client = await CoreClient.connect(server.port)
            (channel,) = await client.open(["SOAK:0000"])
            idle = [idle_socket(server.port) for _ in range(20)]
            tricklers = [idle_socket(server.port) for _ in range(20)]
            try:
                await until(lambda: server.circuits == 41, "every connection accepted")
                started = time.monotonic()
                second = 0
                # The busy client keeps asking (a read every half second);
                # the others say nothing, or a byte a second.
                while server.circuits > 1 and time.monotonic() - started < 10:
                    client.send(channel.read(ChannelType.DOUBLE))
                    for sock in tricklers:
                        sock.send(TRICKLE[second : second + 1])
                    second += 1
                    await asyncio.sleep(0.5)  # the scenario's pace
                assert server.circuits == 1, "silent or trickling circuits outlived the timeout"
                assert not client.closed.is_set(), "a talking client was closed as idle"
            finally:
                client.close()
                for sock in idle + tricklers:
                    sock.close()
            await settled(server, before)
            assert await served(server.env, "SOAK:0001") == 0.0

    run(scenario, timeout=60)


@pytest.mark.skipif(
    "max_circuits" not in _OPTIONS,
    reason="ServerConfig has no max_circuits yet (a cap on simultaneous circuits)",
)
def test_connection_cap_refuses_the_excess_and_recovers() -> None:
    cap = 50

    async def scenario() -> None:
        with soak_server(pvs=10, max_circuits=cap) as server:
            before = baseline(server)
            held = [idle_socket(server.port) for _ in range(cap)]
            await until(lambda: server.circuits == cap, "the cap's worth of circuits")
            excess = [idle_socket(server.port) for _ in range(20)]
            try:
                # Over the cap a connection is closed at once, never queued.
                for sock in excess:
                    assert closed_by_server(sock), "a connection over the cap was kept"
                await until(lambda: server.circuits == cap, "only the cap's worth left")
                held.pop().close()
                await until(lambda: server.circuits == cap - 1, "a place to come free")
                assert await served(server.env, "SOAK:0000") == 0.0
            finally:
                for sock in held + excess:
                    sock.close()
            await settled(server, before)

    run(scenario, timeout=60)


def closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the server hangs up on ``sock`` within ``timeout`` (bytes before are read)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


# ---------------------------------------------------------------------------
# A client killed mid-subscription

SUBSCRIBER = (
    SCRIPT_WAITS
    + """
import threading, epics
counts = {}
def seen(pvname=None, **kwargs):
    counts[pvname] = counts.get(pvname, 0) + 1
pvs = [epics.PV(f"SOAK:{i:04d}", callback=seen) for i in range(10)]
until(lambda: len(counts) == 10 and min(counts.values()) >= 5, "5 updates of each PV", 30)
print("READY", flush=True)
threading.Event().wait()  # subscribed until the test kills it
"""
)

#: The issue's bound from SIGKILL to the circuit gone.
GONE_WITHIN = 0.1


def test_killed_subscriber_circuit_goes_within_a_tenth_of_a_second() -> None:
    async def scenario() -> None:
        with soak_server(pvs=10) as server:
            assert await served(server.env, "SOAK:0000") == 0.0
            before = await settled(server, baseline(server))
            server.command("UPDATE 100", "UPDATING")
            with process_until_ready(SUBSCRIBER, server.env) as subscriber:
                await until(lambda: server.circuits == 1, "the subscriber's circuit")
                assert server.stats()["subscriptions"] == 10
                killed = time.monotonic()
                subscriber.send_signal(signal.SIGKILL)
                await until(lambda: server.circuits == 0, "the killed client's circuit to go")
            gone = max(when for when, sign, _ in server.circuit_events if sign == "-")
            print(f"circuit gone {1e3 * (gone - killed):.1f} ms after SIGKILL")
            assert gone - killed < GONE_WITHIN, f"the circuit went {gone - killed:.3f} s after"
            await settled(server, before)
            value = await served(server.env, "SOAK:0003")
            assert 0 < value <= time.monotonic()  # a fresh update's stamp

    run(scenario, timeout=120)


# ---------------------------------------------------------------------------
# A client with 1000 subscriptions that stops reading

#: The RSS the server may gain while the client is silent: a leak of a few
#: bytes per merged update (a million of them) would be far more.
FLAT_KB = 5_000


def test_client_that_stops_reading_costs_flat_memory_and_gets_final_values() -> None:
    async def scenario() -> None:
        with soak_server(pvs=100) as server:
            assert await served(server.env, "SOAK:0000") == 0.0
            before = await settled(server, baseline(server))
            client = await CoreClient.connect(server.port)
            channels = await client.open(pv_names(100))
            names: dict[int, str] = {}
            for channel in channels:
                for kind in range(10):  # 1000 subscriptions: two forms per PV
                    data_type = ChannelType.TIME_DOUBLE if kind % 2 else ChannelType.DOUBLE
                    names[client.subscribe(channel, data_type)] = channel.name
            await until(lambda: len(client.latest) == 1000, "1000 first updates")
            server.command("UPDATE 50", "UPDATING")
            await until(lambda: client.updates > 20_000, "updates to flow")
            client.pause()
            silent_since = time.monotonic()
            await until(
                lambda: server.stats()["paused"] == 1,
                "the server to find the client's socket full",
                SOAK_SECONDS,
            )
            start = server.stats()
            # The rest of the 20 s the client stays silent: the scenario itself.
            await asyncio.sleep(max(0.0, silent_since + SOAK_SECONDS - time.monotonic()))
            end = server.stats()
            assert end["circuits"] == 1 and end["paused"] == 1
            assert end["pending"] <= 1000, "updates piled up instead of merging"
            grown = end["rss_kb"] - start["rss_kb"]
            print(f"silent client: RSS {start['rss_kb']} -> {end['rss_kb']} kB")
            assert grown < FLAT_KB, f"the server grew {grown} kB while the client was silent"
            last = json.loads(server.command("STOP", "STOPPED "))["last"]
            client.resume()
            await until(
                lambda: all(client.latest[s] == last[name] for s, name in names.items()),
                "every subscription's final value",
                SOAK_SECONDS,
            )
            client.close()
            after = await settled(server, before)
            assert after["rss_kb"] - before["rss_kb"] < 2 * FLAT_KB
            assert await served(server.env, "SOAK:0001") == last["SOAK:0001"]

    run(scenario, timeout=120)


# ---------------------------------------------------------------------------
# Load: 200 circuits x 10 monitors at 100 Hz

LOAD_PROCESSES = 4
LOAD_CIRCUITS = 200
#: The issue's bounds: median latency, and back to idle after the clients leave.
MEDIAN_LATENCY = 0.1
IDLE_AGAIN_WITHIN = 5.0
#: CPU above the updater's own (no subscriber) that still counts as idle.
IDLE_MARGIN = 0.05


def test_200_circuits_of_10_monitors_at_100hz() -> None:
    async def scenario() -> None:
        with soak_server(pvs=10) as server:
            assert await served(server.env, "SOAK:0000") == 0.0
            before = await settled(server, baseline(server))
            server.command("UPDATE 100", "UPDATING")
            idle = await cpu_share(server, 2 * SECOND)  # the updater alone
            spec = {
                "port": server.port,
                "circuits": LOAD_CIRCUITS // LOAD_PROCESSES,
                "names": pv_names(10),
                "seconds": SOAK_SECONDS,
            }
            argv = [sys.executable, str(HERE / "load_client.py"), json.dumps(spec)]
            loads = [Child(f"load {i}", argv, server.env) for i in range(LOAD_PROCESSES)]
            try:
                for load in loads:
                    await asyncio.to_thread(load.expect, "READY", 120.0)
                assert server.circuits == LOAD_CIRCUITS
                # Under the load, a newcomer is still answered.
                await asyncio.sleep(SOAK_SECONDS / 2)  # half-way through the load
                value = await served(server.env, "SOAK:0005")
                assert 0 < value <= time.monotonic()
                assert server.alive()
                results = [
                    json.loads(await asyncio.to_thread(load.expect, "RESULT ", 2 * SOAK_SECONDS))
                    for load in loads
                ]
            finally:
                for load in loads:
                    load.close()
            await until(lambda: server.circuits == 0, "the load's circuits to go", 10.0)
            left = max(when for when, sign, _ in server.circuit_events if sign == "-")
            for result in results:
                assert result["updates"] > 0 and result["fewest_on_a_circuit"] > 0
            median = max(r["median"] for r in results)  # each load process's median
            print(f"load: {results}")
            assert median < MEDIAN_LATENCY, f"median latency {median:.3f} s: {results}"
            # Idle again within 5 s of the last client leaving.
            while (busy := await cpu_share(server, 0.5)) > idle + IDLE_MARGIN:
                assert time.monotonic() - left < IDLE_AGAIN_WITHIN, (
                    f"still {busy:.0%} of a core busy {IDLE_AGAIN_WITHIN} s after (idle {idle:.0%})"
                )
            assert time.monotonic() - left < IDLE_AGAIN_WITHIN + 0.5
            server.command("STOP", "STOPPED")
            await settled(server, before)

    run(scenario, timeout=240)

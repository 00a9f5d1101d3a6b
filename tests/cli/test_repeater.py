"""caioc-repeater: registrations, beacons and liveness, with libca and rsrv as peers.

The repeater runs in the test's event loop so its client list can be
inspected; peers (libca through pyepics, softioc's rsrv) run in
subprocesses, raw UDP clients in-process. Nothing waits by sleeping: every
wait is for a datagram, a log line or a change of the repeater's state.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import textwrap
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from peers import ROOT, SCRIPT_WAITS, ca_environment, free_port, server_config

from caioc.ca import (
    Command,
    RepeaterConfirmResponse,
    RepeaterRegisterRequest,
    Role,
    RsrvIsUpResponse,
    VersionResponse,
    parse_datagram,
)
from caioc.cli.repeater import NOOP, Repeater, is_local_address

TIMEOUT = 10.0


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 30))


class RawClient(asyncio.DatagramProtocol):
    """A bare UDP socket on 127.0.0.1 that registers and collects datagrams."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.address = (str(host), int(port))
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, port: int = 0) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", port))
        loop = asyncio.get_running_loop()
        _, client = await loop.create_datagram_endpoint(lambda: cls(sock), sock=sock)
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        self.received.put_nowait(data)

    def send(self, data: bytes, port: int) -> None:
        # Straight to the socket: asyncio's sendto() drops empty datagrams.
        self.sock.sendto(data, ("127.0.0.1", port))

    async def expect(self, wanted: Callable[[list[Command]], bool]) -> list[Command]:
        """The commands of the first datagram for which ``wanted`` holds."""

        async def first() -> list[Command]:
            while True:
                commands = parse_datagram(await self.received.get(), Role.SERVER)
                if wanted(commands):
                    return commands

        return await asyncio.wait_for(first(), TIMEOUT)

    async def registered_with(self, repeater: Repeater, legacy: bool = True) -> None:
        """Register (empty datagram, or REPEATER_REGISTER) and wait for the confirmation."""
        message = b"" if legacy else bytes(RepeaterRegisterRequest("127.0.0.1"))
        self.send(message, repeater.port)
        (confirm,) = await self.expect(lambda c: type(c[0]) is RepeaterConfirmResponse)
        assert confirm == RepeaterConfirmResponse("127.0.0.1")

    def close(self) -> None:
        """Close the socket now (the transport alone would close it a loop cycle later)."""
        assert self.transport is not None
        self.transport.close()
        self.sock.close()


async def started(**options: Any) -> Repeater:
    repeater = Repeater(free_port(), **options)
    assert await repeater.start()
    return repeater


def is_beacon(commands: list[Command]) -> bool:
    return any(type(c) is RsrvIsUpResponse for c in commands)


# -- raw clients ---------------------------------------------------------------


def test_registrations_are_confirmed_and_the_others_poked() -> None:
    async def main() -> None:
        repeater = await started()
        first, second = await RawClient.open(), await RawClient.open()
        await first.registered_with(repeater, legacy=True)
        await second.registered_with(repeater, legacy=False)
        # The first client gets caRepeater's no-op: a VERSION header of zeros.
        (noop,) = await first.expect(lambda c: type(c[0]) is VersionResponse)
        assert bytes(noop) == NOOP
        assert set(repeater.clients) == {first.address[1], second.address[1]}
        client = repeater.clients[first.address[1]]
        assert (client.address, client.registrations, client.confirmations) == (
            first.address,
            1,
            1,
        )
        # Registering again is confirmed again, without a second entry.
        await first.registered_with(repeater)
        assert len(repeater.clients) == 2 and client.confirmations == 2
        # libca alternates between the loopback and an interface address: the
        # same port is the same client, and it is not sent the others' no-op.
        repeater.handle(b"", ("127.0.0.2", first.address[1]))
        assert len(repeater.clients) == 2 and client.confirmations == 3
        await first.expect(lambda c: type(c[0]) is RepeaterConfirmResponse)
        beacon = RsrvIsUpResponse(5064, 9, "127.0.0.3")
        repeater.handle(bytes(beacon), ("127.0.0.3", 5064))
        assert await first.expect(lambda c: True) == [beacon]
        for raw in (first, second):
            raw.close()
        repeater.close()

    run(main())


def test_beacons_of_a_caioc_server_reach_every_client() -> None:
    from caioc.server import Server
    from caioc.server._data import ChannelDouble

    async def main() -> None:
        repeater = await started()
        clients = [await RawClient.open() for _ in range(2)]
        for raw in clients:
            await raw.registered_with(repeater)
        config = server_config(
            free_port(), ("127.0.0.1", repeater.port), repeater_port=repeater.port
        )
        server = Server({"R:X": ChannelDouble(value=1.0)}, config)
        await server.start()
        try:
            for raw in clients:
                (beacon,) = await raw.expect(is_beacon)
                assert isinstance(beacon, RsrvIsUpResponse)
                assert beacon.server_port == server.tcp_port
                # The server left the address 0; the repeater fills in the source.
                assert beacon.address == "127.0.0.1"
        finally:
            await server.stop()
            for raw in clients:
                raw.close()
            repeater.close()
        assert repeater.forwarded >= 1

    run(main())


def test_dead_clients_are_dropped() -> None:
    async def main() -> None:
        repeater = await started(verify_interval=3600)
        a, b, c = [await RawClient.open() for _ in range(3)]
        await a.registered_with(repeater)
        await b.registered_with(repeater)
        # 1. A new registration makes the repeater check everyone's port.
        a.close()
        await c.registered_with(repeater)
        assert a.address[1] not in repeater.clients
        assert set(repeater.clients) == {b.address[1], c.address[1]}
        # 2. A forward that fails (ICMP port unreachable) gets a client checked.
        b.close()
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        beacon = bytes(RsrvIsUpResponse(5064, 1, "127.0.0.1"))
        try:
            for sent in (1, 2):
                server.sendto(beacon, ("127.0.0.1", repeater.port))

                def forwarded(r: Repeater, n: int = sent) -> bool:
                    return r.forwarded >= n

                await repeater.wait_until(forwarded, TIMEOUT)
            # The first send to b's closed port drew the ICMP error, the second failed.
            assert set(repeater.clients) == {c.address[1]}
            await c.expect(is_beacon)
        finally:
            server.close()
            c.close()
            repeater.close()

    run(main())


def test_a_new_client_on_a_dead_clients_port_is_confirmed() -> None:
    async def main() -> None:
        repeater = await started(verify_interval=3600)
        old = await RawClient.open()
        await old.registered_with(repeater)
        old.close()
        # A beacon sent to the closed port leaves an ICMP error on the
        # repeater's socket to it ...
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.sendto(bytes(RsrvIsUpResponse(5064, 1, 0)), ("127.0.0.1", repeater.port))
        await repeater.wait_until(lambda r: r.forwarded == 1, TIMEOUT)
        sender.close()
        # ... which must not cost the next process on that port its confirmation.
        new = await RawClient.open(old.address[1])
        await new.registered_with(repeater)
        assert repeater.clients[new.address[1]].registrations == 2
        new.close()
        repeater.close()

    run(main())


def test_dead_clients_are_dropped_when_nothing_happens() -> None:
    async def main() -> None:
        repeater = await started(verify_interval=0.05)
        raw = await RawClient.open()
        await raw.registered_with(repeater)
        raw.close()
        await repeater.wait_until(lambda r: not r.clients, TIMEOUT)
        repeater.close()

    run(main())


def test_the_number_of_clients_is_capped() -> None:
    async def main() -> None:
        repeater = await started(max_clients=2)
        a, b, c = [await RawClient.open() for _ in range(3)]
        await a.registered_with(repeater)
        await b.registered_with(repeater)
        c.send(b"", repeater.port)
        await repeater.wait_until(lambda r: r.refused == 1, TIMEOUT)
        assert c.address[1] not in repeater.clients
        # Once a client is gone there is room again.
        a.close()
        await c.registered_with(repeater)
        assert set(repeater.clients) == {b.address[1], c.address[1]}
        for raw in (b, c):
            raw.close()
        repeater.close()

    run(main())


def test_only_local_clients_and_garbage_is_dropped() -> None:
    async def main() -> None:
        repeater = await started()
        assert is_local_address("127.0.0.1") and is_local_address("127.3.2.1")
        assert not is_local_address("192.0.2.1")  # TEST-NET-1, never ours
        assert not is_local_address("not an address")
        repeater.handle(b"", ("192.0.2.1", 5065))
        assert repeater.refused == 1 and not repeater.clients
        raw = await RawClient.open()
        await raw.registered_with(repeater)
        garbage = [
            b"\x00",
            b"\x00\x0d\x00",  # a third of a header
            bytes(range(40)),  # a header announcing more than the datagram holds
            b"\xff" * 16,  # no such command
            b"\x00\x0d\xff\xff" + bytes(12),  # an extended header cut short
            os.urandom(1000),
        ]
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for data in garbage:
                sender.sendto(data, ("127.0.0.1", repeater.port))
            sender.sendto(bytes(RsrvIsUpResponse(5064, 7, 0)), ("127.0.0.1", repeater.port))
            # Nothing but the beacon reaches the client, and the repeater runs on.
            (beacon,) = await raw.expect(lambda c: True)
            assert beacon == RsrvIsUpResponse(5064, 7, "127.0.0.1")
            await repeater.wait_until(lambda r: r.dropped == len(garbage), TIMEOUT)
        finally:
            sender.close()
            raw.close()
            repeater.close()

    run(main())


# -- the command ----------------------------------------------------------------


def repeater_env(port: int) -> dict[str, str]:
    env = ca_environment(free_port(), port)
    env["PYTHONPATH"] = str(ROOT)
    return env


async def start_process(
    *argv: str, env: dict[str, str], ready: str | None = None
) -> asyncio.subprocess.Process:
    """Start ``argv``; with ``ready``, wait for a line (stdout+stderr) containing it."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    if ready is not None:
        await read_until(process, ready)
    return process


async def read_until(process: asyncio.subprocess.Process, text: str) -> str:
    """Lines of the process's output up to the first that contains ``text``."""
    assert process.stdout is not None
    seen: list[str] = []

    async def lines() -> str:
        assert process.stdout is not None
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"no {text!r} before the output ended:\n" + "".join(seen))
            seen.append(line)
            if text in line:
                return "".join(seen)

    return await asyncio.wait_for(lines(), 20)


def test_a_second_repeater_exits_quietly() -> None:
    async def main() -> None:
        repeater = await started()
        assert not await Repeater(repeater.port).start()
        process = await start_process(
            sys.executable, "-m", "caioc.cli.repeater", env=repeater_env(repeater.port)
        )
        output, _ = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0
        assert output == b""
        repeater.close()

    run(main())


def test_the_command_serves_and_logs_with_v() -> None:
    async def main() -> None:
        port = free_port()
        argv = (sys.executable, "-m", "caioc.cli.repeater", "-v")
        process = await start_process(*argv, env=repeater_env(port), ready="listening")
        raw = await RawClient.open()
        try:
            raw.send(b"", port)
            (confirm,) = await raw.expect(lambda c: True)
            assert confirm == RepeaterConfirmResponse("127.0.0.1")
            await read_until(process, f"registered client 127.0.0.1:{raw.address[1]}")
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 20)
            assert process.returncode == 0
        finally:
            raw.close()
            if process.returncode is None:
                process.kill()
                await process.wait()

    run(main())


# -- the C peers -----------------------------------------------------------------

SOFTIOC = """
from softioc import asyncio_dispatcher, builder, softioc
builder.SetDeviceName("RPT")
builder.longOut("LO", initial_value=3)
builder.LoadDatabase()
softioc.iocInit(asyncio_dispatcher.AsyncioDispatcher(), enable_pva=False)
print("READY", flush=True)
softioc.non_interactive_ioc()
"""

# libca registers 10 s after its UDP side starts (repeaterSubscribeTimer), so
# this test takes that long; the C client stays up until its stdin closes,
# then prints libca's own view of the registration.
PYEPICS_CLIENT = (
    SCRIPT_WAITS
    + """
import ctypes, os, sys, tempfile, epics, epics.ca
pv = epics.PV("RPT:LO")
assert pv.wait_for_connection(timeout=10), "no connection to the C IOC"
print("READY", pv.get(timeout=5), flush=True)
sys.stdin.read()
context = ctypes.c_void_p(epics.ca.current_context())
libc = ctypes.CDLL(None)

def status():
    # libca prints its status on the C stdout: caught in a file
    with tempfile.TemporaryFile() as caught:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(caught.fileno(), 1)
        try:
            epics.ca.libca.ca_context_status(context, ctypes.c_uint(10))
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        caught.seek(0)
        return caught.read().decode(errors="replace")

# The repeater has sent its confirmation; libca's UDP thread takes it in
# its own time, so its account is read until it says so (or 10 s).
try:
    text = read_until(status, lambda text: "registered=1" in text, "libca's registration")
except AssertionError:
    text = status()
print(text, flush=True)
epics.ca.finalize_libca()
"""
)


@pytest.mark.peers
def test_libca_registers_and_gets_rsrv_beacons() -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    pytest.importorskip("softioc", reason="softioc (the C IOC) not installed")

    async def main() -> None:
        repeater = await started()
        env = repeater_env(repeater.port)
        env["EPICS_CAS_BEACON_ADDR_LIST"] = f"127.0.0.1:{repeater.port}"
        raw = await RawClient.open()
        await raw.registered_with(repeater)
        # Both at once: libca's 10 s start while the IOC boots.
        ioc = await start_process(sys.executable, "-c", textwrap.dedent(SOFTIOC), env=env)
        client = await start_process(sys.executable, "-c", textwrap.dedent(PYEPICS_CLIENT), env=env)
        try:
            await asyncio.gather(read_until(ioc, "READY"), read_until(client, "READY 3"))
            # rsrv's beacons (address 0) reach the raw client, address filled in.
            (beacon,) = await raw.expect(is_beacon)
            assert isinstance(beacon, RsrvIsUpResponse) and beacon.address == "127.0.0.1"

            def libca_confirmed(r: Repeater) -> bool:
                return any(c.confirmations and c.address != raw.address for c in r.clients.values())

            await repeater.wait_until(libca_confirmed, 20)
            assert client.stdin is not None
            client.stdin.close()
            output, _ = await asyncio.wait_for(client.communicate(), 20)
        finally:
            for process in (client, ioc):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            raw.close()
            repeater.close()
        text = output.decode()
        # libca's own account: it got the confirmation and stopped retrying.
        assert "registered=1" in text, text
        assert "unable to contact CA repeater" not in text
        assert client.returncode == 0, text

    run(main())

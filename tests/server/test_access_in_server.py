"""Access security in the server: rules by user and host, pushed when they change."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from peers import server_config
from test_server_robustness import RawClient
from waiting import run

from caioc.ca import (
    ECA,
    AccessRights,
    AccessRightsResponse,
    ClientNameRequest,
    HostNameRequest,
    VersionRequest,
)
from caioc.server import ChannelDouble, ChannelInteger, Server
from caioc.server._access import AccessSecurity

ACF = """
UAG(operators) { alice }
HAG(control) { console }
ASG(DEFAULT) {
    RULE(1, READ)
}
ASG(guarded) {
    INPA("mode")
    RULE(1, READ)
    RULE(1, WRITE) { UAG(operators) }
    RULE(1, WRITE) { HAG(control) CALC("A=1") }
}
"""


async def open_as(port: int, user: str, host: str, name: str) -> tuple[RawClient, Any]:
    client = await RawClient.connect(port)
    channel = client.core.create_channel(name)
    client.send(VersionRequest(0), HostNameRequest(host), ClientNameRequest(user), channel.create())
    await client.receive(lambda: channel.sid is not None)
    return client, channel


def test_rights_follow_the_rules_and_changes_are_pushed(tmp_path: Path) -> None:
    acf = tmp_path / "rules.acf"
    acf.write_text(ACF)

    async def scenario() -> None:
        valve = ChannelDouble(value=0.0)
        valve.access_group = "guarded"
        mode = ChannelInteger(value=0)
        security = AccessSecurity.from_file(acf)
        server = Server({"valve": valve, "mode": mode}, server_config(), access_security=security)
        await server.start()
        try:
            alice, alice_valve = await open_as(server.tcp_port, "alice", "laptop", "valve")
            bob, bob_valve = await open_as(server.tcp_port, "bob", "console", "valve")
            bob2, bob_mode = await open_as(server.tcp_port, "bob", "console", "mode")
            assert alice_valve.access_rights == AccessRights.READ_WRITE
            assert bob_valve.access_rights == AccessRights.READ  # CALC is false: A=0
            assert bob_mode.access_rights == AccessRights.READ  # DEFAULT: read only
            # the input PV moves the CALC: bob at the console may now write
            await mode.set(1)
            await bob.receive(lambda: bob_valve.access_rights == AccessRights.READ_WRITE)
            # a new file takes alice out of the operators: pushed to her
            acf.write_text(ACF.replace("{ alice }", "{ carol }"))
            security.reload()
            await alice.receive(lambda: alice_valve.access_rights == AccessRights.READ)
            pushed = [c for c in alice.received if isinstance(c, AccessRightsResponse)]
            assert pushed[-1].access_rights == AccessRights.READ
            # and a put without the right is refused
            alice.send(alice_valve.write(5.0))
            await alice.receive(lambda: any(c.command == 19 for c in alice.received))
            (completion,) = [c for c in alice.received if c.command == 19]
            assert completion.status == ECA.NOWTACCESS
            assert valve.value == 0.0
            for client in (alice, bob, bob2):
                client.close()
        finally:
            await server.stop()

    run(scenario)


def test_a_reloaded_file_follows_its_new_inputs_at_once(tmp_path: Path) -> None:
    """An input PV a new version of the file names feeds its CALC with the PV's value now.

    Without following the new inputs, ``B`` (or ``A`` moved to another PV)
    would stay invalid until its PV next changed, here never.
    """
    acf = tmp_path / "rules.acf"
    acf.write_text(ACF)

    async def scenario() -> None:
        valve = ChannelDouble(value=0.0)
        valve.access_group = "guarded"
        mode, interlock = ChannelInteger(value=0), ChannelInteger(value=1)
        security = AccessSecurity.from_file(acf)
        pvdb = {"valve": valve, "mode": mode, "interlock": interlock}
        server = Server(pvdb, server_config(), access_security=security)
        await server.start()
        try:
            bob, bob_valve = await open_as(server.tcp_port, "bob", "console", "valve")
            assert bob_valve.access_rights == AccessRights.READ  # A = mode = 0
            # the same input letter, fed by a PV that was no input before
            acf.write_text(ACF.replace('INPA("mode")', 'INPA("interlock")'))
            security.reload()
            await bob.receive(lambda: bob_valve.access_rights == AccessRights.READ_WRITE)
            # back to mode: its value (0) holds at once, and interlock no longer counts
            acf.write_text(ACF)
            security.reload()
            await bob.receive(lambda: bob_valve.access_rights == AccessRights.READ)
            await interlock.set(0)
            await interlock.set(1)
            await mode.set(1)  # still followed after two reloads
            await bob.receive(lambda: bob_valve.access_rights == AccessRights.READ_WRITE)
            bob.close()
        finally:
            await server.stop()

    run(scenario)


def test_puts_under_a_trapwrite_rule_are_logged_with_who_and_what(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TRAPWRITE (EPICS's caPutLog hook): each completed put is one INFO record."""
    rules = """
    UAG(logged) { alice }
    ASG(DEFAULT) {
        RULE(1, WRITE, TRAPWRITE) { UAG(logged) }
        RULE(1, WRITE)
    }
    """

    async def scenario() -> None:
        pvdb = {"valve": ChannelDouble(value=1.5), "wave": ChannelDouble(value=np.zeros(100))}
        security = AccessSecurity.from_text(rules)
        server = Server(pvdb, server_config(), access_security=security)
        await server.start()
        try:
            alice, alice_valve = await open_as(server.tcp_port, "alice", "console", "valve")
            alice2, alice_wave = await open_as(server.tcp_port, "alice", "console", "wave")
            bob, bob_valve = await open_as(server.tcp_port, "bob", "laptop", "valve")
            for client, channel, value in (
                (alice, alice_valve, 2.5),
                (alice2, alice_wave, np.arange(100.0)),
                (bob, bob_valve, 3.5),  # no TRAPWRITE for bob: not logged
                (alice, alice_valve, 4.5),
            ):
                client.send(channel.write(value))
                got = client.received
                await client.receive(lambda got=got: any(c.command == 19 for c in got))
                got.clear()
            for client in (alice, alice2, bob):
                client.close()
        finally:
            await server.stop()

    with caplog.at_level(logging.INFO, logger="caioc.server.putlog"):
        run(scenario)
    lines = [r.getMessage() for r in caplog.records if r.name == "caioc.server.putlog"]
    assert lines[0] == "alice@console put valve = 2.5 (was 1.5)"
    assert lines[1].startswith("alice@console put wave = [ 0.  1.  2. ... 97. 98. 99.] (was [0.")
    assert lines[2] == "alice@console put valve = 4.5 (was 3.5)"  # bob's put is not there
    assert len(lines) == 3


@pytest.mark.parametrize("interval", [0.05, None])
def test_the_server_checks_the_file_every_poll_interval(tmp_path: Path, interval: Any) -> None:
    """A rewritten file reaches clients within a poll interval; with None, only by reload()."""
    acf = tmp_path / "rules.acf"
    acf.write_text(ACF)

    async def scenario() -> None:
        valve = ChannelDouble(value=0.0)
        valve.access_group = "guarded"
        security = AccessSecurity.from_file(acf, poll_interval=interval)
        assert security.watched is (interval is not None)
        server = Server({"valve": valve}, server_config(), access_security=security)
        await server.start()
        try:
            alice, alice_valve = await open_as(server.tcp_port, "alice", "laptop", "valve")
            assert alice_valve.access_rights == AccessRights.READ_WRITE
            acf.write_text(ACF.replace("{ alice }", "{ carol }"))
            if interval is None:
                await asyncio.sleep(0.3)  # deliberate: no poll may take the change meanwhile
                assert security.rights("guarded", 0, "alice", "laptop") == AccessRights.READ_WRITE
                security.reload()
            # well within the default interval (5 s): the poll_interval is what took it
            await asyncio.wait_for(
                alice.receive(lambda: alice_valve.access_rights == AccessRights.READ), 2.0
            )
            alice.close()
        finally:
            await server.stop()

    run(scenario)


def test_a_negative_poll_interval_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        AccessSecurity(poll_interval=-1.0)
    assert AccessSecurity(poll_interval=0).poll_interval is None
    assert not AccessSecurity.from_text(ACF).watched  # no file to watch

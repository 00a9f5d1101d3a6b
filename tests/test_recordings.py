"""The core against bytes that nobody here wrote.

``tests/data/*.json`` hold traffic recorded on loopback between the C
client library (libca, through pyepics) and a real C IOC (softioc's rsrv),
made by ``tests/tools/record_ca.py``. Every stream and datagram must parse
into the commands the scenario implies, re-encode byte for byte, pass the
circuit and broadcaster state machines in both roles when replayed in the
order it was recorded, and decode to the values libca itself reported.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caioc.ca import (
    NEED_DATA,
    Broadcaster,
    Command,
    CommandId,
    CreateChanRequest,
    ErrorResponse,
    EventAddRequest,
    EventAddResponse,
    EventCancelRequest,
    EventCancelResponse,
    ReadNotifyRequest,
    ReadNotifyResponse,
    Role,
    StreamParser,
    VirtualCircuit,
    WriteNotifyResponse,
    parse_datagram,
)

DATA = Path(__file__).parent / "data"
RECORDINGS = sorted(DATA.glob("*.json"))
LIMIT = 100_000_000  # the recordings were made with EPICS_CA_MAX_ARRAY_BYTES=1e8


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())  # type: ignore[no-any-return]


def tcp_chunks(recording: dict[str, Any]) -> dict[tuple[int, str], list[bytes]]:
    """Received chunks per (connection, direction), in order."""
    chunks: dict[tuple[int, str], list[bytes]] = defaultdict(list)
    for record in recording["records"]:
        if record["channel"] == "ca_tcp":
            chunks[record["conn"], record["direction"]].append(bytes.fromhex(record["data"]))
    return chunks


def parse_stream(chunks: list[bytes], sender: Role) -> list[Command]:
    parser = StreamParser(sender, LIMIT)
    out: list[Command] = []
    for chunk in chunks:
        parser.receive_data(chunk)
        out.extend(parser.commands())
    assert parser.buffered == 0, "the recorded stream ends mid-message"
    return out


def stream_commands(name: str, direction: str) -> list[Command]:
    sender = Role.CLIENT if direction == "client_to_server" else Role.SERVER
    out: list[Command] = []
    for (_, dir_), chunks in sorted(tcp_chunks(load(name)).items()):
        if dir_ == direction:
            out.extend(parse_stream(chunks, sender))
    return out


def test_there_are_recordings() -> None:
    assert len(RECORDINGS) >= 8


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_tcp_streams_parse_and_reencode_byte_for_byte(path: Path) -> None:
    recording = json.loads(path.read_text())
    for (_, direction), chunks in tcp_chunks(recording).items():
        sender = Role.CLIENT if direction == "client_to_server" else Role.SERVER
        original = b"".join(chunks)
        # as recorded, whole, and one byte at a time for the small streams
        feeds = [chunks, [original]]
        if len(original) < 20_000:
            feeds.append([original[i : i + 1] for i in range(len(original))])
        for feed in feeds:
            commands = parse_stream(feed, sender)
            assert b"".join(bytes(c) for c in commands) == original
            assert all(c.REQUEST is (sender is Role.CLIENT) for c in commands)


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_datagrams_parse_and_reencode_byte_for_byte(path: Path) -> None:
    recording = json.loads(path.read_text())
    client = Broadcaster(Role.CLIENT)
    server = Broadcaster(Role.SERVER)
    repeater = Broadcaster(Role.REPEATER)
    seen = 0
    for record in recording["records"]:
        if record["transport"] != "udp":
            continue
        data = bytes.fromhex(record["data"])
        if record["channel"] == "repeater":
            # libca registers with an empty datagram, the pre-4.x way.
            (command,) = repeater.recv(data)
            assert command.command == CommandId.REPEATER_REGISTER
            seen += 1
            continue
        sender = Role.CLIENT if record["direction"] == "client_to_server" else Role.SERVER
        commands = parse_datagram(data, sender, LIMIT)
        assert b"".join(bytes(c) for c in commands) == data
        # the state machines accept the datagram at both ends
        receiver, origin = (server, client) if sender is Role.CLIENT else (client, server)
        assert receiver.recv(data) == commands
        assert origin.send(*commands) == data
        seen += 1
    assert seen or not any(r["transport"] == "udp" for r in recording["records"])


def test_search_and_connect_commands() -> None:
    recording = load("a_search_connect")
    connected = [s["pv"] for s in recording["steps"] if s["op"] == "connect"]
    searched: list[str] = []
    answered: set[int] = set()
    for record in recording["records"]:
        if record["channel"] != "ca_udp":
            continue
        sender = Role.CLIENT if record["direction"] == "client_to_server" else Role.SERVER
        commands = parse_datagram(bytes.fromhex(record["data"]), sender)
        # libca starts each datagram with VERSION carrying a sequence number
        assert commands[0].command == CommandId.VERSION
        for command in commands[1:]:
            assert command.command == CommandId.SEARCH
            if sender is Role.CLIENT:
                searched.append(command.name)  # type: ignore[attr-defined]
            else:
                answered.add(command.cid)  # type: ignore[attr-defined]
                assert command.ip == "255.255.255.255"  # "use the sender's address"
                assert command.version == 13  # type: ignore[attr-defined]
    assert set(searched) == set(connected)
    assert len(answered) == len(set(connected))

    requests = stream_commands("a_search_connect", "client_to_server")
    kinds = Counter(type(c).__name__ for c in requests)
    assert kinds["VersionRequest"] == 1
    assert kinds["ClientNameRequest"] == kinds["HostNameRequest"] == 1
    created = [c.name for c in requests if isinstance(c, CreateChanRequest)]
    assert sorted(created) == sorted(set(connected))
    host = next(c for c in requests if c.command == CommandId.HOST_NAME)
    assert host.name  # type: ignore[attr-defined]

    responses = stream_commands("a_search_connect", "server_to_client")
    assert type(responses[0]).__name__ == "VersionResponse"
    natives = {
        s["pv"]: (s["result"]["native_type"], s["result"]["count"])
        for s in recording["steps"]
        if s["op"] == "connect"
    }
    by_cid = {c.cid: c.name for c in requests if isinstance(c, CreateChanRequest)}
    for command in responses:
        if command.command == CommandId.CREATE_CHAN:
            name = by_cid[command.cid]  # type: ignore[attr-defined]
            assert (command.data_type, command.data_count) == natives[name]  # type: ignore[attr-defined]


def _same(reported: Any, decoded: Any) -> bool:
    if isinstance(reported, str) and reported == "nan":
        return math.isnan(float(decoded))
    if isinstance(decoded, bytes):
        return reported == decoded.split(b"\0", 1)[0].decode()
    if isinstance(reported, float) or isinstance(decoded, (float, np.floating)):
        return math.isclose(float(reported), float(decoded), rel_tol=1e-6, abs_tol=1e-30)
    return bool(reported == decoded)


def check_against_libca(
    result: dict[str, Any], response: EventAddResponse | ReadNotifyResponse
) -> None:
    assert response.data_type == result["dbr_type"]
    assert response.data_count == result["count"]
    metadata, values = response.decode()
    expected_values = result["value"]
    assert len(values) == len(expected_values)
    for reported, decoded in zip(expected_values, values, strict=True):
        assert _same(reported, decoded), (reported, decoded)
    fields = {
        "secPastEpoch": "secondsSinceEpoch",
        "nsec": "nanoseconds",
    }
    for key, reported in result.items():
        if key in ("dbr_type", "count", "eca_status", "value", "pv"):
            continue
        field = fields.get(key, key)
        assert metadata is not None, key
        decoded = metadata[field]
        if key == "strs":
            states = [bytes(s).split(b"\0", 1)[0].decode() for s in decoded]
            assert states[: len(reported)] == reported
        else:
            assert _same(reported, decoded.item() if hasattr(decoded, "item") else decoded), (
                key,
                reported,
                decoded,
            )


@pytest.mark.parametrize("name", ["b_get_dbr_types", "e_large_array", "c_put"])
def test_read_responses_decode_to_what_libca_reported(name: str) -> None:
    recording = load(name)
    gets = [s for s in recording["steps"] if s["op"] == "get"]
    requests = [
        c for c in stream_commands(name, "client_to_server") if isinstance(c, ReadNotifyRequest)
    ]
    responses = {
        c.ioid: c
        for c in stream_commands(name, "server_to_client")
        if isinstance(c, ReadNotifyResponse)
    }
    assert len(requests) == len(gets)
    for step, request in zip(gets, requests, strict=True):
        assert request.data_type == step["dbr_type"]
        assert request.data_count == step["count"]
        response = responses[request.ioid]
        assert response.status == step["result"]["eca_status"]
        check_against_libca(step["result"], response)
    covered = {step["dbr_type"] for step in gets}
    if name == "b_get_dbr_types":
        # every DBR class of every native type came back from the C server
        assert set(range(35)) <= covered


def test_large_arrays_use_the_extended_header() -> None:
    big = [
        c
        for c in stream_commands("e_large_array", "server_to_client")
        if isinstance(c, ReadNotifyResponse) and c.payload_size > 0xFFFF
    ]
    assert big
    for response in big:
        assert bytes(response)[2:4] == b"\xff\xff"
        assert len(response.header) == 24
        values = response.data
        assert values.base is not None  # a view of the received bytes, not a copy
    writes = [
        c for c in stream_commands("e_large_array", "client_to_server") if c.payload_size > 0xFFFF
    ]
    assert writes and writes[0].command == CommandId.WRITE_NOTIFY


def test_puts_and_their_completions() -> None:
    recording = load("c_put")
    puts = [s for s in recording["steps"] if s["op"] == "put"]
    requests = [
        c
        for c in stream_commands("c_put", "client_to_server")
        if c.command in (CommandId.WRITE, CommandId.WRITE_NOTIFY)
    ]
    assert len(requests) == len(puts)
    for step, request in zip(puts, requests, strict=True):
        assert CommandId(request.command).name == step["message"]
        assert request.data_type == step["dbr_type"]  # type: ignore[attr-defined]
        values = request.data  # type: ignore[attr-defined]
        expected = step["value"] if isinstance(step["value"], list) else [step["value"]]
        assert len(values) == len(expected)
        for reported, decoded in zip(expected, values, strict=True):
            assert _same(reported, decoded), (reported, decoded)
    responses = stream_commands("c_put", "server_to_client")
    completions = {c.ioid: c for c in responses if isinstance(c, WriteNotifyResponse)}
    errors = [c for c in responses if isinstance(c, ErrorResponse)]
    for step, request in zip(puts, requests, strict=True):
        if step["message"] == "WRITE_NOTIFY":
            status = completions[request.ioid].status  # type: ignore[attr-defined]
            assert status == step["result"]["eca_status"]
    # the plain WRITE of a bad enum string comes back as ERROR with the header
    assert errors
    original = errors[0].original_header
    assert original[0] == CommandId.WRITE
    assert errors[0].error_message


def test_monitor_updates_and_cancel_confirmations() -> None:
    recording = load("d_monitor")
    subscribes = [s for s in recording["steps"] if s["op"] == "subscribe"]
    requests = stream_commands("d_monitor", "client_to_server")
    adds = [c for c in requests if isinstance(c, EventAddRequest)]
    cancels = [c for c in requests if isinstance(c, EventCancelRequest)]
    assert [(a.data_type, int(a.mask)) for a in adds] == [
        (s["dbr_type"], s["mask"]) for s in subscribes
    ]
    assert {c.subscriptionid for c in cancels} == {a.subscriptionid for a in adds}
    updates = [
        c
        for c in stream_commands("d_monitor", "server_to_client")
        if isinstance(c, EventAddResponse)
    ]
    confirmations = [u for u in updates if u.payload_size == 0]
    assert len(confirmations) == len(cancels)
    delivered = next(s for s in recording["steps"] if s["op"] == "events")["result"]
    data_updates = [u for u in updates if u.payload_size]
    # every update libca delivered decodes to the value libca reported
    by_id: dict[int, list[EventAddResponse]] = defaultdict(list)
    for update in data_updates:
        by_id[update.subscriptionid].append(update)
    subscription_of = {a.subscriptionid: s["pv"] for a, s in zip(adds, subscribes, strict=True)}
    per_pv: dict[str, list[EventAddResponse]] = defaultdict(list)
    for subscriptionid, items in by_id.items():
        per_pv[subscription_of[subscriptionid]].extend(items)
    for pv, items in per_pv.items():
        seen = [e for e in delivered if e["pv"] == pv]
        assert len(seen) == len(items)
        for event, update in zip(seen, items, strict=True):
            check_against_libca(event, update)


class _Replay:
    """Both ends of a recorded circuit, fed in recorded order."""

    def __init__(self) -> None:
        self.client = VirtualCircuit(Role.CLIENT, max_payload=LIMIT)
        self.server = VirtualCircuit(Role.SERVER, max_payload=LIMIT)
        self.client_parser = StreamParser(Role.CLIENT, LIMIT)
        self.server_parser = StreamParser(Role.SERVER, LIMIT)
        self.cancel_confirmations = 0

    def client_sent(self, chunk: bytes) -> None:
        self.client_parser.receive_data(chunk)
        for command in self.client_parser.commands():
            if isinstance(command, CreateChanRequest):
                self.client.create_channel(command.name, command.cid)
            assert self.client.send(command) == bytes(command)
        self.server.receive_data(chunk)
        while self.server.next_command() is not NEED_DATA:
            pass

    def server_sent(self, chunk: bytes) -> None:
        self.server_parser.receive_data(chunk)
        for command in self.server_parser.commands():
            assert self.server.send(command) == bytes(command)
        self.client.receive_data(chunk)
        while (command := self.client.next_command()) is not NEED_DATA:
            if isinstance(command, EventCancelResponse):
                self.cancel_confirmations += 1


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_replay_through_both_circuit_state_machines(path: Path) -> None:
    recording = json.loads(path.read_text())
    replays: dict[int, _Replay] = defaultdict(_Replay)
    records = [r for r in recording["records"] if r["channel"] == "ca_tcp"]
    for record in sorted(records, key=lambda r: r["t"]):
        replay = replays[record["conn"]]
        chunk = bytes.fromhex(record["data"])
        if record["direction"] == "client_to_server":
            replay.client_sent(chunk)
        else:
            replay.server_sent(chunk)
    for replay in replays.values():
        # both ends agree on what is still open
        assert set(replay.client.channels) == set(replay.server.channels)
        assert replay.client.pending_ioids == replay.server.pending_ioids
        assert replay.client.their_version == replay.server.their_version == 13
    if path.stem == "d_monitor":
        assert sum(r.cancel_confirmations for r in replays.values()) == 4


def test_beacons() -> None:
    recording = load("g_beacons_echo_repeater")
    beacons = [
        parse_datagram(bytes.fromhex(r["data"]), Role.SERVER)
        for r in recording["records"]
        if r["channel"] == "beacon"
    ]
    assert len(beacons) >= 3
    ids = []
    for (beacon,) in beacons:
        assert beacon.command == CommandId.RSRV_IS_UP
        assert beacon.version == 13  # type: ignore[attr-defined]
        ids.append(beacon.beacon_id)  # type: ignore[attr-defined]
        port = int(recording["endpoints"]["server_tcp_udp"].rsplit(":", 1)[1])
        assert beacon.server_port == port  # type: ignore[attr-defined]
    # the beacon counter (CA_V410) never goes back and moves on by one per
    # round of beacons (rsrv may send one round to several addresses)
    assert ids == sorted(ids) and ids[-1] > ids[0]
    assert all(b - a in (0, 1) for a, b in itertools.pairwise(ids))
    kinds = Counter(
        c.command for c in stream_commands("g_beacons_echo_repeater", "client_to_server")
    )
    assert kinds[CommandId.ECHO] >= 1

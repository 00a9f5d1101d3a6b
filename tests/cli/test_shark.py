"""caioc-shark against captures built here from the recordings in tests/data.

Each recording's TCP chunks and datagrams are written into synthetic
packets with real headers (IPv4 and TCP/UDP checksums, sequence numbers, a
three-way handshake and FINs), some of them split, sent out of order and
retransmitted; caioc-shark must list exactly the commands that parsing the
recording directly with StreamParser/parse_datagram gives, in order.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from peers import ROOT

from caioc.ca import Broadcaster, Role, StreamParser, parse_datagram
from caioc.cli import shark

DATA = ROOT / "tests" / "data"
RECORDINGS = sorted(DATA.glob("*.json"))
LIMIT = 100_000_000
EPOCH = 1_700_000_000.0
CLIENT, SERVER = "127.0.0.1", "127.0.0.2"
TCP_PORT = 38175  # the server's TCP port in the recordings' search replies
MSS = 32768

# -- building captures ------------------------------------------------------------


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src: str, dst: str, protocol: int, body: bytes, ident: int = 1) -> bytes:
    addresses = bytes(map(int, src.split("."))) + bytes(map(int, dst.split(".")))
    header = (
        struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(body), ident & 0xFFFF, 0x4000, 64, protocol, 0)
        + addresses
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + body


def _pseudo(src: str, dst: str, protocol: int, length: int) -> bytes:
    return (
        bytes(map(int, src.split(".")))
        + bytes(map(int, dst.split(".")))
        + struct.pack("!BBH", 0, protocol, length)
    )


def tcp_packet(
    src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int, flags: int, payload: bytes
) -> bytes:
    header = struct.pack(
        "!HHIIBBHHH", src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0
    )
    total = checksum(_pseudo(src[0], dst[0], 6, len(header) + len(payload)) + header + payload)
    header = header[:16] + struct.pack("!H", total) + header[18:]
    return ipv4(src[0], dst[0], 6, header + payload)


def udp_packet(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    header = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0)
    total = checksum(_pseudo(src[0], dst[0], 17, 8 + len(payload)) + header + payload) or 0xFFFF
    return ipv4(src[0], dst[0], 17, header[:6] + struct.pack("!H", total) + payload)


FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

#: link type -> how an IPv4 packet is framed in it
LINKS: dict[int, Callable[[bytes], bytes]] = {
    # Ethernet, padded to the 60-byte minimum like a real frame
    1: lambda ip: (bytes(6) + bytes.fromhex("020000000001") + b"\x08\x00" + ip).ljust(60, b"\0"),
    # Ethernet with an 802.1Q tag
    -1: lambda ip: bytes(12) + b"\x81\x00\x00\x05" + b"\x08\x00" + ip,
    113: lambda ip: struct.pack("!HHH8sH", 0, 772, 6, bytes(8), 0x0800) + ip,
    276: lambda ip: struct.pack("!HHIHBB8s", 0x0800, 0, 1, 772, 0, 6, bytes(8)) + ip,
    101: lambda ip: ip,
    0: lambda ip: struct.pack("<I", 2) + ip,
    108: lambda ip: struct.pack("!I", 2) + ip,
}


def pcap(
    packets: list[tuple[float, bytes]],
    link: int = 1,
    order: str = "<",
    nanoseconds: bool = False,
    snaplen: int = 262144,
) -> bytes:
    """A classic libpcap file of IPv4 ``packets`` framed for ``link``."""
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, abs(link))]
    for time, ip in packets:
        frame = LINKS[link](ip)
        seconds = int(time)
        fraction = round((time - seconds) * (1e9 if nanoseconds else 1e6))
        kept = frame[:snaplen]
        out.append(struct.pack(order + "IIII", seconds, fraction, len(kept), len(frame)) + kept)
    return b"".join(out)


def pcapng(packets: list[tuple[float, bytes]]) -> bytes:
    """The same as a pcapng file: Ethernet, nanosecond stamps (if_tsresol 9)."""

    def block(kind: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    options = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)
    out.append(block(1, struct.pack("<HHI", 1, 0, 0) + options))
    out.append(block(5, b"ignored statistics"))
    for time, ip in packets:
        frame = LINKS[1](ip)
        stamp = round(time * 1e9)
        out.append(
            block(
                6,
                struct.pack("<IIIII", 0, stamp >> 32, stamp & 0xFFFFFFFF, len(frame), len(frame))
                + frame,
            )
        )
    return b"".join(out)


# -- a recording as packets, and the commands it holds --------------------------------


@dataclass
class Flow:
    """One direction of a TCP connection being written into packets."""

    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    chunks: int = 0
    previous: bytes = b""


@dataclass
class Capture:
    packets: list[tuple[float, bytes]] = field(default_factory=list)
    #: the record each packet carries (-1: handshake and FIN)
    packet_records: list[int] = field(default_factory=list)
    #: (src, dst, repr) of every command, in the order caioc-shark must print them
    expected: list[tuple[str, str, str]] = field(default_factory=list)
    #: the record each expected command came in
    command_records: list[int] = field(default_factory=list)

    def expected_from(self, records: Callable[[int], bool]) -> list[tuple[str, str, str]]:
        return [e for e, r in zip(self.expected, self.command_records, strict=True) if records(r)]


def endpoint(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def segments(flow: Flow, chunk: bytes, mangle: bool) -> Iterator[tuple[int, bytes]]:
    """(seq, payload) of the packets that carry ``chunk``, possibly mangled."""
    flow.chunks += 1
    start = flow.seq
    pieces = [chunk[i : i + MSS] for i in range(0, len(chunk), MSS)]
    if mangle and flow.chunks % 4 == 1 and len(chunk) >= 2:
        # Split (inside the first header), second half first, then the whole
        # chunk again: out of order, and a retransmission.
        cut = min(5, len(chunk) - 1)
        yield start + cut, chunk[cut : cut + MSS]
        yield start, chunk[:cut]
        for i, piece in enumerate(pieces):
            yield start + i * MSS, piece
    elif mangle and flow.chunks % 4 == 3 and flow.previous:
        # A retransmission overlapping the previous chunk's last bytes.
        overlap = flow.previous[-3:]
        yield start - len(overlap), overlap + pieces[0]
        for i, piece in enumerate(pieces[1:], 1):
            yield start + i * MSS, piece
    else:
        for i, piece in enumerate(pieces):
            yield start + i * MSS, piece
    flow.seq = start + len(chunk)
    flow.previous = chunk


def build(
    recording: dict[str, Any], mangle: bool = True, wire: dict[int, bytes] | None = None
) -> Capture:
    """``recording`` as packets; ``wire`` sends other bytes for some TCP records."""
    capture = Capture()
    current = -1
    flows: dict[tuple[int, str], Flow] = {}
    parsers: dict[tuple[int, str], StreamParser] = {}
    udp_ports: dict[int, int] = {}

    def add(time: float, ip: bytes, origin: int | None = None) -> None:
        capture.packets.append((EPOCH + time, ip))
        capture.packet_records.append(current if origin is None else origin)

    def expect(src: tuple[str, int], dst: tuple[str, int], commands: list[Any]) -> None:
        capture.expected += [(endpoint(src), endpoint(dst), repr(c)) for c in commands]
        capture.command_records += [current] * len(commands)

    for current, record in enumerate(recording["records"]):
        data = bytes.fromhex(record["data"])
        time, conn, direction = record["t"], record["conn"], record["direction"]
        from_client = direction != "server_to_client"
        channel = record["channel"]
        if channel == "ca_tcp":
            if conn not in {c for c, _ in flows}:
                client = (CLIENT, 40000 + conn)
                server = (SERVER, TCP_PORT)
                up = flows[conn, "client_to_server"] = Flow(client, server, 1000 * conn)
                down = flows[conn, "server_to_client"] = Flow(server, client, 7_000_000 + conn)
                add(time - 3e-6, tcp_packet(client, server, up.seq, 0, SYN, b""), -1)
                add(
                    time - 2e-6,
                    tcp_packet(server, client, down.seq, up.seq + 1, SYN | ACK, b""),
                    -1,
                )
                add(time - 1e-6, tcp_packet(client, server, up.seq + 1, down.seq + 1, ACK, b""), -1)
                up.seq += 1
                down.seq += 1
                for key in ((conn, "client_to_server"), (conn, "server_to_client")):
                    sender = Role.CLIENT if key[1] == "client_to_server" else Role.SERVER
                    parsers[key] = StreamParser(sender, LIMIT)
            flow = flows[conn, direction]
            back = flows[conn, "server_to_client" if from_client else "client_to_server"]
            sent = (wire or {}).get(current, data)
            for seq, payload in segments(flow, sent, mangle):
                add(time, tcp_packet(flow.src, flow.dst, seq, back.seq, PSH | ACK, payload))
            parser = parsers[conn, direction]
            parser.receive_data(data)
            expect(flow.src, flow.dst, parser.commands())
        elif channel == "ca_udp":
            port = udp_ports.setdefault(conn, 50000 + conn)
            client, server = (CLIENT, port), (SERVER, 5064)
            src, dst = (client, server) if from_client else (server, client)
            add(time, udp_packet(src, dst, data))
            expect(src, dst, parse_datagram(data, Role.CLIENT if from_client else Role.SERVER))
        elif channel == "beacon":
            src, dst = (SERVER, 33333), (CLIENT, 5065)
            add(time, udp_packet(src, dst, data))
            expect(src, dst, parse_datagram(data, Role.SERVER))
        elif channel == "repeater":
            src, dst = (CLIENT, 50001), (CLIENT, 5065)
            add(time, udp_packet(src, dst, data))
            expect(src, dst, Broadcaster(Role.REPEATER).recv(data))
    last = max(t for t, _ in capture.packets) - EPOCH if capture.packets else 0.0
    for (_, direction), flow in flows.items():
        if direction == "client_to_server":
            add(last + 1e-3, tcp_packet(flow.src, flow.dst, flow.seq, 0, FIN | ACK, b""), -1)
    for (_, direction), flow in flows.items():
        if direction == "server_to_client":
            add(last + 2e-3, tcp_packet(flow.src, flow.dst, flow.seq, 0, FIN | ACK, b""), -1)
    for parser in parsers.values():
        assert parser.buffered == 0
    return capture


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return,unused-ignore]


def run_shark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, *options: str
) -> tuple[int, list[dict[str, Any]]]:
    path = tmp_path / "capture.pcap"
    path.write_bytes(data)
    status = shark.main(["--format", "json", *options, str(path)])
    lines = capsys.readouterr().out.splitlines()
    return status, [json.loads(line) for line in lines]


def commands(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(r["src"], r["dst"], r["repr"]) for r in records if "repr" in r]


def errors(records: list[dict[str, Any]]) -> list[str]:
    return [r["error"] for r in records if "error" in r]


# -- tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_every_recorded_command_is_listed_in_order(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = build(load(path))
    status, records = run_shark(tmp_path, capsys, pcap(capture.packets))
    assert status == 0
    assert errors(records) == []
    assert commands(records) == capture.expected
    assert len(capture.expected) > 10


@pytest.mark.parametrize("link", sorted(LINKS))
def test_link_types_byte_orders_and_pcapng(
    link: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = build(load(DATA / "g_beacons_echo_repeater.json"))
    variants = [pcap(capture.packets, link), pcap(capture.packets, link, ">", nanoseconds=True)]
    if link == 1:
        variants.append(pcapng(capture.packets))
    for data in variants:
        status, records = run_shark(tmp_path, capsys, data)
        assert (status, errors(records)) == (0, [])
        assert commands(records) == capture.expected
        first = next(r for r in records if "repr" in r)
        assert first["time"] == pytest.approx(capture.packets[0][0], abs=1e-6)


def test_text_output_and_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = build(load(DATA / "b_get_dbr_types.json"), mangle=False)
    path = tmp_path / "b.pcap"
    path.write_bytes(pcap(capture.packets))
    assert shark.main(["--time", "epoch", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(capture.expected)
    for line, (src, dst, text) in zip(lines, capture.expected, strict=True):
        stamp, rest = line.split(" ", 1)
        assert float(stamp) >= EPOCH
        assert rest == f"{src} -> {dst} {text}"
    assert any("ReadNotifyRequest(data_type=" in line for line in lines)
    # --values decodes what reads return (TEST:SO is "hello")
    _, records = run_shark(tmp_path, capsys, pcap(capture.packets), "--values")
    values = [r.get("value") for r in records if r.get("command") == "ReadNotifyResponse"]
    assert "hello" in values
    assert {r["sender"] for r in records} == {"client", "server"}
    # In text, values stay on the command's line, long arrays abbreviated.
    large = build(load(DATA / "e_large_array.json"), mangle=False)
    path.write_bytes(pcap(large.packets))
    assert shark.main(["--values", "--time", "relative", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(large.expected)
    assert any(
        line.endswith("value=[0.0, 0.25, 0.5, ..., 2499.25, 2499.5, 2499.75] (10000 items) {}")
        for line in lines
    )


def test_a_truncated_capture_reports_and_keeps_what_it_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = build(load(DATA / "a_search_connect.json"))
    whole = pcap(capture.packets)
    head = pcap(capture.packets[: len(capture.packets) // 2])
    _, reference = run_shark(tmp_path, capsys, head)
    assert commands(reference)  # half a recording holds commands
    for cut, where in ((20, "in record"), (7, "in the header of record")):
        status, records = run_shark(tmp_path, capsys, whole[: len(head) + cut])
        assert status == 1
        (problem,) = [r for r in records if r["transport"] == "capture"]
        assert problem["error"].startswith("capture truncated " + where)
        # every whole packet before the cut is decoded as if the file ended there
        assert [r for r in records if r is not problem] == reference
    status, records = run_shark(tmp_path, capsys, b"GIF89a not a capture")
    assert (status, errors(records)) == (1, ["not a pcap or pcapng capture (starts 47494638)"])


def test_bytes_lost_to_the_snap_length_and_a_stream_cut_inside_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = build(load(DATA / "e_large_array.json"), mangle=False)
    # A snap length of 2000 bytes cuts the large arrays: the stream says how
    # many bytes it lost and carries on at the next whole message.
    status, records = run_shark(tmp_path, capsys, pcap(capture.packets, snaplen=2000))
    assert status == 0
    problems = errors(records)
    assert problems and all(
        "bytes of the stream are missing from the capture" in e for e in problems
    )
    listed = commands(records)
    assert 0 < len(listed) < len(capture.expected)
    remaining = iter(capture.expected)
    assert all(command in remaining for command in listed)  # in order, nothing invented
    # The capture ends after the first packet of an 80040-byte message.
    first_piece = next(i for i, (_, ip) in enumerate(capture.packets) if len(ip) > MSS)
    status, records = run_shark(tmp_path, capsys, pcap(capture.packets[: first_piece + 1]))
    assert status == 0
    assert errors(records) == [f"the stream ends inside a message ({MSS} bytes)"]


def test_garbage_is_an_error_line_for_its_stream_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = build(load(DATA / "a_search_connect.json"))
    packets = list(capture.packets)
    # Garbage in a connection of its own on the server port, and a bad datagram.
    bad_client, bad_server = ("127.0.0.9", 41000), (SERVER, 5064)
    garbage = bytes(range(200, 256)) * 3
    packets.insert(5, (EPOCH, tcp_packet(bad_client, bad_server, 10, 0, SYN, b"")))
    packets.insert(6, (EPOCH, tcp_packet(bad_client, bad_server, 11, 0, PSH | ACK, garbage)))
    packets.insert(7, (EPOCH, udp_packet(bad_client, bad_server, b"\x00\x06\x00")))
    status, records = run_shark(tmp_path, capsys, pcap(packets))
    assert status == 0
    assert commands(records) == capture.expected
    problems = [(r["src"], r["error"]) for r in records if "error" in r]
    assert [src for src, _ in problems] == ["127.0.0.9:41000"] * 2
    assert "unknown command 51401" in problems[0][1]
    assert "ends 3 bytes into a header" in problems[1][1]


def test_garbage_inside_a_stream_then_it_resynchronises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = load(DATA / "b_get_dbr_types.json")
    # One server chunk in the middle becomes garbage of the same length.
    index = [
        i
        for i, r in enumerate(recording["records"])
        if (r["channel"], r["direction"]) == ("ca_tcp", "server_to_client")
    ][20]
    size = len(recording["records"][index]["data"]) // 2
    capture = build(recording, wire={index: b"\xee" * size})
    status, records = run_shark(tmp_path, capsys, pcap(capture.packets))
    assert status == 0
    (problem,) = errors(records)
    assert "unknown command 61166" in problem and "next message boundary" in problem
    # All but that chunk's commands: the next chunk starts a message again.
    assert commands(records) == capture.expected_from(lambda r: r != index)


def test_a_capture_joined_mid_stream_on_unknown_ports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = build(load(DATA / "c_put.json"), mangle=False)
    tcp_records = {
        r for r, (_, ip) in zip(capture.packet_records, capture.packets, strict=True) if ip[9] == 6
    }
    # Without the searches nothing names the server's port, and without the
    # handshake nothing says who connected: the VERSION that starts the
    # stream and the commands after it tell.
    data = [
        (p, r)
        for p, r in zip(capture.packets, capture.packet_records, strict=True)
        if r in tcp_records
    ]
    data = [(p, r) for p, r in data if r >= 0]
    status, records = run_shark(tmp_path, capsys, pcap([p for p, _ in data]))
    assert (status, errors(records)) == (0, [])
    assert commands(records) == capture.expected_from(lambda r: r in tcp_records)
    # Joining later, inside a client message: its chunk is skipped.
    k = next(
        i for i, ((_, ip), r) in enumerate(data) if i > 5 and ip[20:22] == b"\x9c\x41"
    )  # a packet from the client port 40001
    (time, ip), record = data[k]
    payload = ip[40:]
    late = tcp_packet(
        (CLIENT, 40001),
        (SERVER, TCP_PORT),
        int.from_bytes(ip[24:28], "big") + 5,
        0,
        ACK,
        payload[5:],
    )
    joined = [(time, late)] + [p for p, _ in data[k + 1 :]]
    status, records = run_shark(tmp_path, capsys, pcap(joined), "--server-port", str(TCP_PORT))
    assert status == 0
    assert errors(records) == [f"skipped {len(payload) - 5} bytes to reach a message boundary"]
    assert commands(records) == capture.expected_from(lambda r: r > record and r in tcp_records)


def test_stdin_and_the_module_entry_point(tmp_path: Path) -> None:
    capture = build(load(DATA / "d_monitor.json"))
    result = subprocess.run(
        [sys.executable, "-m", "caioc.cli.shark", "--format", "json"],
        input=pcap(capture.packets),
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert commands(records) == capture.expected


def test_reassembler_orders_and_reports_holes() -> None:
    from caioc.cli._pcap import Reassembler

    stream = Reassembler(max_pending=10)
    assert stream.add(0xFFFFFFF0, b"", syn=True) == []
    base = 0xFFFFFFF1  # wraps past 2**32
    assert stream.add(base + 4, b"efgh") == []
    assert stream.add(base, b"abcd") == [b"abcd", b"efgh"]
    assert stream.add(base + 2, b"cdefghij") == [b"ij"]  # overlap: only the new bytes
    assert stream.add(base, b"abcd") == []  # retransmission
    # More than max_pending out of order: the hole is given up.
    assert stream.add((base + 20) & 0xFFFFFFFF, b"0123456789ab") == [10, b"0123456789ab"]
    assert stream.add((base + 40) & 0xFFFFFFFF, b"xy", time=5.0) == []
    assert stream.waiting and stream.expire(5.9) == []
    assert stream.expire(6.1) == [8, b"xy"]  # waited more than a second
    assert not stream.waiting
    assert stream.add((base + 50) & 0xFFFFFFFF, b"z", time=7.0) == []
    assert stream.flush() == [8, b"z"]


def test_corrupted_captures_never_crash_it() -> None:
    import io
    import random

    rng = random.Random(2024)
    sources = []
    for name in ("a_search_connect", "e_large_array", "g_beacons_echo_repeater"):
        packets = build(load(DATA / f"{name}.json")).packets
        sources += [pcap(packets), pcapng(packets), pcap(packets, 113, ">")]
    for _ in range(150):
        data = bytearray(rng.choice(sources))
        start = rng.randrange(24, len(data))
        if rng.random() < 0.3:
            del data[start:]
        else:
            size = rng.randint(1, 64)
            data[start : start + size] = rng.randbytes(size)
        out = io.StringIO()
        printer = shark.Printer(out, rng.choice(["text", "json"]), values=True)
        status = shark.decode_capture(io.BytesIO(bytes(data)), shark.Shark(printer), printer)
        assert status in (0, 1)
        assert "internal error" not in out.getvalue()


def test_a_hole_is_given_up_after_a_second_of_capture_time() -> None:
    from caioc.ca import CreateChanRequest, EchoRequest, RsrvIsUpResponse, VersionRequest
    from caioc.cli._pcap import Segment

    events: list[shark.Event] = []
    decoder = shark.Shark(events.append)
    client, server = ("127.0.0.1", 45000), ("127.0.0.1", 5064)

    def tcp(time: float, seq: int, data: bytes, flags: int = PSH | ACK) -> Segment:
        return Segment(EPOCH + time, "tcp", *client, *server, data, seq, flags)

    beacon = bytes(RsrvIsUpResponse(5064, 1, 0))
    chunks = [
        bytes(VersionRequest(0, 13)) + bytes(CreateChanRequest("A", 1)),
        bytes(CreateChanRequest("LOST", 2)),  # never captured
        bytes(CreateChanRequest("C", 3)) + bytes(EchoRequest()),
    ]
    decoder.feed(tcp(0.0, 99, b"", SYN))
    decoder.feed(tcp(0.0, 100, chunks[0]))
    decoder.feed(tcp(0.2, 100 + len(chunks[0]) + len(chunks[1]), chunks[2]))
    for time in (0.5, 1.3):
        decoder.feed(Segment(EPOCH + time, "udp", "127.0.0.2", 40000, "127.0.0.1", 5065, beacon))
    seen = [
        (round(e.time - EPOCH, 1) if e.time else None, e.error or type(e.command).__name__)
        for e in events
    ]
    assert seen == [
        (0.0, "VersionRequest"),
        (0.0, "CreateChanRequest"),
        (0.5, "RsrvIsUpResponse"),
        # a second after the bytes behind the hole came, the hole is given up
        (1.3, f"{len(chunks[1])} bytes of the stream are missing from the capture"),
        (1.3, "CreateChanRequest"),
        (1.3, "EchoRequest"),
        (1.3, "RsrvIsUpResponse"),
    ]

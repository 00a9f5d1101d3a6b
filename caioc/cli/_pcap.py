"""Packet captures without dependencies: pcap/pcapng files and the IPv4,
TCP and UDP headers in them.

:func:`read_packets` reads a classic libpcap capture (either byte order,
microsecond or nanosecond stamps) or a pcapng one from a binary stream,
a record at a time, so ``tcpdump -w - | caioc-shark`` works live.
:func:`decode_packet` takes one frame of a supported link type (Ethernet
with VLAN tags, Linux cooked v1/v2, raw IP, BSD loopback) down to a
:class:`Segment`: addresses, ports, TCP sequence number and flags, payload.
Everything else (IPv6, ARP, ICMP, IPv4 fragments) is skipped.
:class:`Reassembler` puts one direction of a TCP connection back in order.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "ACK",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_WAIT",
    "FIN",
    "LINK_TYPES",
    "RST",
    "SYN",
    "CaptureError",
    "Frame",
    "PacketError",
    "Reassembler",
    "Segment",
    "decode_packet",
    "read_packets",
]

# TCP flags
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

#: Link types understood (LINKTYPE_* numbers of tcpdump.org).
LINK_TYPES = {
    0: "BSD loopback",
    1: "Ethernet",
    12: "raw IP",
    14: "raw IP",
    101: "raw IP",
    108: "OpenBSD loopback",
    113: "Linux cooked",
    228: "raw IPv4",
    276: "Linux cooked v2",
}
#: No frame this large is real; a bigger length means a corrupt capture.
MAX_FRAME = 1 << 24
#: Out-of-order bytes held per TCP direction before the hole is declared lost.
DEFAULT_MAX_PENDING = 4 << 20
#: Seconds (of capture time) bytes wait behind a hole before it is declared lost;
#: a lost segment is retransmitted within a fraction of a second.
DEFAULT_MAX_WAIT = 1.0
_MASK = 0xFFFFFFFF

_ETHERTYPE_IPV4 = 0x0800
_VLAN_TAGS = frozenset({0x8100, 0x88A8, 0x9100})
_PROTO_TCP, _PROTO_UDP = 6, 17
_AF_INET = 2

_PCAP_MAGICS = {
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_IPV4 = struct.Struct(">BBHHHBBH4s4s")
_TCP = struct.Struct(">HHIIBBHHH")
_UDP = struct.Struct(">HHHH")
_U16 = struct.Struct(">H")


class CaptureError(Exception):
    """The input is not a capture this module reads, or it is corrupt."""


class PacketError(Exception):
    """One IPv4 packet whose headers do not hold together."""


@dataclass(frozen=True)
class Frame:
    """One captured frame, as the capture file holds it."""

    time: float
    link_type: int
    data: bytes
    #: The frame's length on the wire (more than ``len(data)`` if cut by the snap length).
    wire_length: int


@dataclass(frozen=True)
class Segment:
    """A TCP segment or UDP datagram out of one frame."""

    time: float
    transport: str  # "tcp" or "udp"
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    seq: int = 0
    flags: int = 0
    #: Payload bytes that were on the wire but not in the capture.
    missing: int = 0

    @property
    def source(self) -> tuple[str, int]:
        """(address, port) of the sender."""
        return self.src, self.sport

    @property
    def destination(self) -> tuple[str, int]:
        """(address, port) of the receiver."""
        return self.dst, self.dport


# -- files -------------------------------------------------------------------


def _read(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes; fewer only at the end of the stream."""
    data = stream.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = stream.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def read_packets(stream: BinaryIO) -> Iterator[Frame]:
    """The frames of a pcap or pcapng capture, in file order.

    Raises :class:`CaptureError` if the stream is not a capture, or when it
    turns out truncated or corrupt (after yielding every frame before).
    """
    magic = _read(stream, 4)
    if len(magic) < 4:
        raise CaptureError("empty input: not a packet capture" if not magic else "truncated")
    if magic in _PCAP_MAGICS:
        yield from _read_pcap(stream, magic)
    elif magic == _PCAPNG_SHB:
        yield from _read_pcapng(stream)
    else:
        raise CaptureError(f"not a pcap or pcapng capture (starts {magic.hex()})")


def _read_pcap(stream: BinaryIO, magic: bytes) -> Iterator[Frame]:
    order, unit = _PCAP_MAGICS[magic]
    header = _read(stream, 20)
    if len(header) < 20:
        raise CaptureError("truncated pcap file header")
    major, _, _, _, _, network = struct.unpack(order + "HHiIII", header)
    if major != 2:
        raise CaptureError(f"pcap version {major} is not 2")
    link_type = network & 0xFFFF
    _check_link_type(link_type)
    record = struct.Struct(order + "IIII")
    number = 0
    while True:
        head = _read(stream, record.size)
        if not head:
            return
        number += 1
        if len(head) < record.size:
            raise CaptureError(f"capture truncated in the header of record {number}")
        seconds, fraction, included, wire = record.unpack(head)
        if included > MAX_FRAME:
            raise CaptureError(f"record {number} claims {included} bytes: corrupt capture")
        data = _read(stream, included)
        if len(data) < included:
            raise CaptureError(
                f"capture truncated in record {number} ({len(data)} of {included} bytes)"
            )
        yield Frame(seconds + fraction * unit, link_type, data, max(wire, included))


def _check_link_type(link_type: int) -> None:
    if link_type not in LINK_TYPES:
        raise CaptureError(f"link type {link_type} is not supported")


def _read_pcapng(stream: BinaryIO) -> Iterator[Frame]:
    """pcapng: section headers, interface descriptions and packet blocks."""
    order = "<"
    # Per interface: (link type, seconds per tick, offset in seconds, snap length).
    interfaces: list[tuple[int, float, float, int]] = []
    block_type = _PCAPNG_SHB
    number = 0
    while True:
        number += 1
        if block_type == _PCAPNG_SHB:
            head = _read(stream, 8)
            if len(head) < 8:
                raise CaptureError("truncated pcapng section header")
            byte_order = head[4:8]
            if byte_order == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif byte_order == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                raise CaptureError("pcapng section header with a bad byte-order magic")
            (length,) = struct.unpack(order + "I", head[:4])
            body = _block_body(stream, length, 12, number)
            interfaces = []
        else:
            raw_length = _read(stream, 4)
            if len(raw_length) < 4:
                raise CaptureError(f"capture truncated in the header of block {number}")
            (length,) = struct.unpack(order + "I", raw_length)
            body = _block_body(stream, length, 8, number)
            kind = struct.unpack(order + "I", block_type)[0]
            frame = _pcapng_block(kind, body, order, interfaces)
            if frame is not None:
                yield frame
        block_type = _read(stream, 4)
        if not block_type:
            return
        if len(block_type) < 4:
            raise CaptureError(f"capture truncated in the header of block {number + 1}")


def _block_body(stream: BinaryIO, length: int, already: int, number: int) -> bytes:
    if length < already + 4 or length % 4 or length > MAX_FRAME:
        raise CaptureError(f"pcapng block {number} has a bad length ({length}): corrupt capture")
    rest = _read(stream, length - already)
    if len(rest) < length - already:
        raise CaptureError(f"capture truncated in block {number}")
    return rest[:-4]  # without the trailing length


def _pcapng_block(
    kind: int, body: bytes, order: str, interfaces: list[tuple[int, float, float, int]]
) -> Frame | None:
    if kind == 1:  # interface description
        if len(body) < 8:
            raise CaptureError("short pcapng interface description")
        link_type, _, snaplen = struct.unpack_from(order + "HHI", body)
        unit, offset = 1e-6, 0.0
        for code, value in _options(body[8:], order):
            if code == 9 and value:  # if_tsresol
                power = value[0] & 0x7F
                unit = 2.0**-power if value[0] & 0x80 else 10.0**-power
            elif code == 14 and len(value) >= 8:  # if_tsoffset
                offset = float(struct.unpack_from(order + "q", value)[0])
        interfaces.append((link_type, unit, offset, snaplen))
        return None
    if kind in (6, 2):  # enhanced packet; obsolete packet
        if kind == 6:
            if len(body) < 20:
                raise CaptureError("short pcapng packet block")
            interface, high, low, included, wire = struct.unpack_from(order + "IIIII", body)
            data = body[20 : 20 + included]
        else:
            if len(body) < 20:
                raise CaptureError("short pcapng packet block")
            interface, _, high, low, included, wire = struct.unpack_from(order + "HHIIII", body)
            data = body[20 : 20 + included]
        if interface >= len(interfaces):
            raise CaptureError(f"pcapng packet on undescribed interface {interface}")
        link_type, unit, offset, _ = interfaces[interface]
        if link_type not in LINK_TYPES:
            return None
        stamp = ((high << 32) | low) * unit + offset
        return Frame(stamp, link_type, data, max(wire, len(data)))
    if kind == 3 and interfaces:  # simple packet: no stamp
        (wire,) = struct.unpack_from(order + "I", body)
        link_type, _, _, snaplen = interfaces[0]
        data = body[4 : 4 + min(wire, snaplen or wire)]
        if link_type not in LINK_TYPES:
            return None
        return Frame(0.0, link_type, data, max(wire, len(data)))
    return None  # statistics, name resolution, custom ...: nothing for us


def _options(data: bytes, order: str) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 4 <= len(data):
        code, length = struct.unpack_from(order + "HH", data, offset)
        if code == 0:
            return
        yield code, data[offset + 4 : offset + 4 + length]
        offset += 4 + (length + 3) // 4 * 4


# -- frames --------------------------------------------------------------------


def _network_layer(link_type: int, data: bytes) -> bytes | None:
    """The IPv4 packet in a frame, or None if it holds something else."""
    if link_type == 1:
        offset = 12
        while len(data) >= offset + 2:
            (ethertype,) = _U16.unpack_from(data, offset)
            if ethertype in _VLAN_TAGS:
                offset += 4
                continue
            return data[offset + 2 :] if ethertype == _ETHERTYPE_IPV4 else None
        return None
    if link_type == 113:
        return data[16:] if data[14:16] == b"\x08\x00" else None
    if link_type == 276:
        return data[20:] if data[0:2] == b"\x08\x00" else None
    if link_type == 0:  # AF_ in the capturing host's order
        family = data[:4]
        return data[4:] if family in (b"\x02\x00\x00\x00", b"\x00\x00\x00\x02") else None
    if link_type == 108:
        return data[4:] if data[:4] == b"\x00\x00\x00\x02" else None
    # raw IP
    return data if data[:1] and data[0] >> 4 == 4 else None


def decode_packet(frame: Frame) -> Segment | None:
    """The TCP segment or UDP datagram in ``frame``; None for anything else.

    Raises :class:`PacketError` for an IPv4 packet whose headers are
    inconsistent. A frame cut short by the snap length gives a segment
    whose ``missing`` counts the payload bytes lost.
    """
    packet = _network_layer(frame.link_type, frame.data)
    if packet is None or len(packet) < _IPV4.size:
        return None
    lost = frame.wire_length - len(frame.data)
    (
        version_ihl,
        _,
        total,
        _,
        fragment,
        _,
        protocol,
        _,
        source,
        destination,
    ) = _IPV4.unpack_from(packet)
    if version_ihl >> 4 != 4 or protocol not in (_PROTO_TCP, _PROTO_UDP):
        return None
    header = (version_ihl & 0x0F) * 4
    if header < 20:
        raise PacketError(f"IPv4 header length {header}")
    if fragment & 0x3FFF:  # more fragments, or an offset: not reassembled here
        return None
    if total == 0:  # segmentation offload: the length was never filled in
        total = len(packet) + lost
    if total < header:
        raise PacketError(f"IPv4 total length {total} is shorter than its header")
    missing = max(0, total - len(packet))
    packet = packet[:total]  # drop Ethernet padding
    src = ".".join(map(str, source))
    dst = ".".join(map(str, destination))
    body = packet[header:]
    if protocol == _PROTO_TCP:
        if len(body) < _TCP.size:
            raise PacketError(f"TCP header cut short ({len(body)} bytes captured)")
        sport, dport, seq, _, offset_byte, flags, _, _, _ = _TCP.unpack_from(body)
        offset = (offset_byte >> 4) * 4
        if offset < 20 or (offset > len(body) and not missing):
            raise PacketError(f"TCP data offset {offset} in a {len(body)}-byte segment")
        return Segment(
            frame.time, "tcp", src, sport, dst, dport, body[offset:], seq, flags, missing
        )
    if len(body) < _UDP.size:
        raise PacketError(f"UDP header cut short ({len(body)} bytes captured)")
    sport, dport, length, _ = _UDP.unpack_from(body)
    if length < _UDP.size or length > len(body) + missing:
        raise PacketError(f"UDP length {length} in a {len(body) + missing}-byte packet")
    payload = body[_UDP.size : length]
    return Segment(
        frame.time, "udp", src, sport, dst, dport, payload, missing=length - 8 - len(payload)
    )


# -- TCP streams ---------------------------------------------------------------


def _distance(seq: int, base: int) -> int:
    """``seq - base`` in 32-bit sequence space, signed."""
    return ((seq - base + (1 << 31)) & _MASK) - (1 << 31)


class Reassembler:
    """One direction of a TCP connection, back in sequence order.

    :meth:`add` returns what became contiguous: ``bytes`` chunks, and ints
    for holes (bytes that never arrived, or that the capture cut off).
    Bytes after a hole are held until the hole is filled (a retransmission),
    but no longer than ``max_wait`` seconds of capture time and no more than
    ``max_pending`` bytes: then the hole is given up as lost.
    """

    def __init__(
        self, max_pending: int = DEFAULT_MAX_PENDING, max_wait: float = DEFAULT_MAX_WAIT
    ) -> None:
        self.max_pending = max_pending
        self.max_wait = max_wait
        self.next_seq: int | None = None
        #: True when the stream's start (the SYN) was seen; its sequence number.
        self.from_start = False
        self.isn: int | None = None
        self._pending: dict[int, tuple[bytes, int]] = {}
        self._pending_bytes = 0
        #: Capture time since when bytes wait behind the current hole.
        self._waiting_since = 0.0

    def add(
        self,
        seq: int,
        payload: bytes,
        syn: bool = False,
        missing: int = 0,
        time: float = 0.0,
    ) -> list[bytes | int]:
        """Take one segment seen at ``time``; return the chunks (and holes) now in order."""
        out = self.expire(time)
        if syn:
            if self.next_seq is None:
                self.isn, self.from_start = seq, True
                self.next_seq = (seq + 1) & _MASK
            seq = (seq + 1) & _MASK  # the SYN takes one sequence number
        if self.next_seq is None:
            self.next_seq = seq
        if not payload and not missing:
            return out
        if _distance(seq, self.next_seq) + len(payload) + missing <= 0:
            return out  # all of it delivered before: a retransmission
        held = self._pending.get(seq)
        if held is None or len(held[0]) + held[1] < len(payload) + missing:
            if held is not None:
                self._pending_bytes -= len(held[0])
            elif not self._pending:
                self._waiting_since = time
            self._pending[seq] = (payload, missing)
            self._pending_bytes += len(payload)
        self._drain(out)
        while self._pending and (
            self._pending_bytes > self.max_pending or len(self._pending) > 4096
        ):
            self._skip_hole(out, time)
        return out

    @property
    def waiting(self) -> bool:
        """Whether bytes wait behind a hole."""
        return bool(self._pending)

    def expire(self, time: float) -> list[bytes | int]:
        """Give up holes that bytes have waited behind for too long by ``time``."""
        out: list[bytes | int] = []
        while self._pending and time - self._waiting_since > self.max_wait:
            self._skip_hole(out, time)
        return out

    def flush(self) -> list[bytes | int]:
        """Whatever is still held, with the holes before it (end of the capture)."""
        out: list[bytes | int] = []
        while self._pending:
            self._skip_hole(out, self._waiting_since)
        return out

    def _drain(self, out: list[bytes | int]) -> None:
        progress = True
        while progress and self._pending:
            progress = False
            assert self.next_seq is not None
            for seq in list(self._pending):
                start = _distance(seq, self.next_seq)
                if start > 0:
                    continue
                payload, missing = self._pending.pop(seq)
                self._pending_bytes -= len(payload)
                end = start + len(payload) + missing
                if end <= 0:
                    continue  # a retransmission of delivered bytes
                skip = -start
                if skip < len(payload):
                    out.append(payload[skip:])
                if missing:
                    out.append(min(missing, end))
                self.next_seq = (self.next_seq + end) & _MASK
                progress = True

    def _skip_hole(self, out: list[bytes | int], time: float) -> None:
        assert self.next_seq is not None
        base = self.next_seq
        nearest = min(self._pending, key=lambda seq: _distance(seq, base))
        out.append(_distance(nearest, base))
        self.next_seq = nearest
        self._drain(out)
        self._waiting_since = time  # for the next hole, if any

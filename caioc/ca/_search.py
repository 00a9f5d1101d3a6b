"""Whole search datagrams at once: the batch form of VERSION + SEARCH.

A client connecting a thousand channels sends dozens of datagrams of a
VERSION and up to ~30 SEARCH requests each; a server answers each with a
VERSION and a SEARCH response per name it serves. Building and parsing
them one command object at a time costs a class call, a tuple and a
payload view per name. These functions do the same work in one loop per
datagram, with the same validation and the same bytes:

* :func:`search_datagram` is ``VersionRequest`` + ``SearchRequest`` per
  name, joined;
* :func:`search_response_datagram` is ``VersionResponse`` +
  ``SearchResponse`` per cid, joined;
* :func:`read_searches` is ``parse_datagram(data, Role.CLIENT)`` with each
  SEARCH given as ``(name, cid, reply, version)`` instead of an object: it
  accepts and refuses exactly the datagrams ``parse_datagram`` does, with
  the same errors (it hands anything unusual to ``parse_datagram``).

The command objects stay the general API; these are for the I/O layers'
search paths (the server's UDP handler, a client's search storm).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ._commands import SearchRequest, SearchResponse, VersionRequest, VersionResponse
from ._constants import CA_MINOR_PROTOCOL_REVISION, DEFAULT_MAX_ARRAY_BYTES, Role, SearchReply
from ._framing import max_payload_for, parse_datagram
from ._wire import _NUL_PAD, ADDRESS_FROM_SENDER, HEADER, Command

__all__ = ["read_searches", "search_datagram", "search_response_datagram"]

_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from
_pack_search_response = struct.Struct(">HHHHIIH6x").pack
_UINT32 = 0xFFFFFFFF

#: One SEARCH request as :func:`read_searches` gives it.
Search = tuple[str, int, int, int]  # name, cid, reply, version


def search_datagram(
    searches: Iterable[tuple[str, int]],
    version: int = CA_MINOR_PROTOCOL_REVISION,
    reply: int = SearchReply.DONT_REPLY,
    priority: int = 0,
    sequence_id: int = 0,
) -> bytes:
    """A VERSION then a SEARCH per ``(name, cid)``, as one datagram's bytes.

    The same bytes as joining ``VersionRequest(priority, version,
    sequence_id)`` and ``SearchRequest(name, cid, version, reply)`` for each
    search, and the same :class:`LocalProtocolError` for a bad one. It does
    not split: libca keeps a datagram within 1024 bytes
    (:data:`caioc.ca._broadcaster.MAX_SEARCH_DATAGRAM`), which is the
    caller's to respect.
    """
    first = VersionRequest(priority, version, sequence_id)
    parts = [bytes(first)]
    if (reply != 5 and reply != 10) or not 0 <= version <= 0xFFFF:
        for name, cid in searches:  # each raises, as SearchRequest does
            parts.append(bytes(SearchRequest(name, cid, version, reply)))
        return b"".join(parts)
    reply = int(reply)
    append = parts.append
    pad = _NUL_PAD
    pack = _pack_header
    for name, cid in searches:
        if type(name) is str and type(cid) is int and 0 <= cid <= _UINT32 and "\0" not in name:
            raw = name.encode("utf-8", "surrogateescape")
            length = len(raw)
            if 0 < length < 1000:
                tail = pad[length & 7]
                append(pack(6, length + len(tail), reply, version, cid, cid))
                append(raw)
                append(tail)
                continue
        append(bytes(SearchRequest(name, cid, version, reply)))  # the general rules
    return b"".join(parts)


def search_response_datagram(
    port: int,
    cids: Iterable[int],
    ip: str | int = ADDRESS_FROM_SENDER,
    version: int = CA_MINOR_PROTOCOL_REVISION,
    priority: int = 0,
    sequence_id: int = 0,
) -> bytes:
    """A VERSION then a SEARCH response per cid, as one datagram's bytes.

    The same bytes as joining ``VersionResponse(priority, version,
    sequence_id)`` and ``SearchResponse(port, ip, cid, version)`` for each
    cid (a server echoes the search's VERSION priority and sequence number),
    and the same :class:`LocalProtocolError` for a bad one (port, ip and
    version are checked once, even when there is no cid).
    """
    parts = [bytes(VersionResponse(priority, version, sequence_id))]
    check = SearchResponse(port, ip, 0, version)  # validates port, ip, version once
    if version != CA_MINOR_PROTOCOL_REVISION or type(version) is not int:
        parts += [bytes(SearchResponse(port, ip, cid, version)) for cid in cids]
        return b"".join(parts)
    port, address = check[2], check[4]
    append = parts.append
    pack = _pack_search_response
    for cid in cids:
        if type(cid) is int and 0 <= cid <= _UINT32:
            append(pack(6, 8, port, 0, address, cid, version))
        else:
            append(bytes(SearchResponse(port, ip, cid, version)))  # raises
    return b"".join(parts)


def read_searches(
    data: bytes | bytearray | memoryview, max_payload: int = DEFAULT_MAX_ARRAY_BYTES
) -> tuple[list[Search], list[Command]]:
    """The searches of a datagram a client sent, and its other commands.

    Returns ``(searches, others)``: each SEARCH as ``(name, cid, reply,
    version)`` (``SearchRequest``'s ``name``, ``cid``, ``reply`` and
    ``version``), in order, and every other command (the VERSION that opens
    a libca datagram ...) as the object ``parse_datagram`` gives. Raises
    :class:`RemoteProtocolError` exactly where ``parse_datagram(data,
    Role.CLIENT, max_payload)`` does.
    """
    if type(data) is not bytes:
        data = bytes(data)
    total = len(data)
    limit = max_payload_for(max_payload)
    searches: list[Search] = []
    others: list[Command] = []
    append = searches.append
    unpack = _unpack_header
    find = data.find
    offset = 0
    while offset < total:
        if total - offset < 16:
            break  # truncated: parse_datagram says where
        command, size, data_type, data_count, p1, p2 = unpack(data, offset)
        start = offset + 16
        end = start + size
        if size == 0xFFFF or data_count == 0xFFFF or end > total or size > limit:
            break  # an extended or odd header, or too long: the general path
        if command == 6:
            nul = find(b"\0", start, end)
            name = data[start : nul if nul >= 0 else end].decode("utf-8", "surrogateescape")
            append((name, p1, data_type, data_count))
        elif command == 0 and size == 0:
            others.append(VersionRequest.from_wire(0, data_type, data_count, p1, p2, b""))
        else:
            break  # anything else: the general path
        offset = end
    else:
        return searches, others
    # Something the loop above does not handle: parse it all the general way.
    searches = []
    others = []
    for parsed in parse_datagram(data, Role.CLIENT, max_payload):
        if type(parsed) is SearchRequest:
            searches.append((parsed.name, parsed[4], parsed[2], parsed[3]))
        else:
            others.append(parsed)
    return searches, others

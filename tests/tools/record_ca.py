#!/usr/bin/env python
"""Record real Channel Access traffic between libca (pyepics) and rsrv (softioc).

The server (softioc's rsrv) listens on 127.0.0.2:P, TCP and UDP.  A recording relay takes
127.0.0.1:P (TCP) and 127.0.0.1:U (UDP).  The client's EPICS_CA_ADDR_LIST is 127.0.0.1:U; the
relay forwards search datagrams to 127.0.0.2:P and the replies back.  rsrv's search reply says
"TCP port P, at the source address of this datagram" (address field 0xFFFFFFFF), so libca
connects to 127.0.0.1:P, the relay, which forwards to the server.  No byte is modified in
transit; the run fails if a search reply names an explicit address (the client would bypass
the relay).  Beacons go to a listener; libca's REPEATER_REGISTER datagrams go to a listener
on the client's repeater port (no caRepeater runs, nothing answers).

Run:  python tests/tools/record_ca.py --out tests/data      (format: tests/data/README.md)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

SERVER_HOST, RELAY_HOST = "127.0.0.2", "127.0.0.1"
BIG_N = 10_000  # doubles: 80 000 bytes > 0xFFFF, so the extended header is used
CHAR_TEXT = "".join(
    f"line {i:03d}: the quick brown fox jumps over the lazy dog. " for i in range(8)
)
SCENARIOS = {
    "a_search_connect": "search for and create channels to PVs of every native type",
    "b_get_dbr_types": "READ_NOTIFY of every DBR class (plain, STS, TIME, GR, CTRL) of every "
    "native type, plus a few converting requests",
    "c_put": "WRITE (ca_array_put) and WRITE_NOTIFY (ca_array_put_callback), including puts "
    "the server rejects (bad enum string)",
    "d_monitor": "EVENT_ADD subscriptions receiving updates caused by puts, then EVENT_CANCEL",
    "e_large_array": "get/put of a 10000-double waveform (payload > 0xFFFF bytes: extended "
    "header) and of a CHAR waveform holding a long string",
    "f_missing_pv_clear": "search for a PV nobody serves (never answered) and CLEAR_CHANNEL",
    "g_beacons_echo_repeater": "server start-up beacons (RSRV_IS_UP), libca's REPEATER_REGISTER "
    "datagrams and ECHO on an idle circuit (EPICS_CA_CONN_TMO=2)",
    "h_flow_control": "a subscriber whose callback is slower than the updates (client "
    "EPICS_CA_MAX_ARRAY_BYTES=16384): libca sends EVENTS_OFF, then EVENTS_ON once caught up",
}
EXPECT = {  # what each recording must show (else the scenario is re-run, at most 3 times)
    "a_search_connect": {"ca_udp:6", "ca_tcp:18", "ca_tcp:20", "ca_tcp:21", "ca_tcp:22"},
    "b_get_dbr_types": {"ca_tcp:15"},
    "c_put": {"ca_tcp:4", "ca_tcp:19", "ca_tcp:11"},
    "d_monitor": {"ca_tcp:1", "ca_tcp:2"},
    "e_large_array": {"ca_tcp:15", "ca_tcp:19", "ca_tcp:ext"},
    "f_missing_pv_clear": {"ca_tcp:12"},
    "g_beacons_echo_repeater": {"beacon:13", "ca_tcp:23", "repeater:empty"},
    "h_flow_control": {"ca_tcp:8", "ca_tcp:9"},
}
RUN_ORDER = ["g_beacons_echo_repeater", *sorted(set(SCENARIOS) - {"g_beacons_echo_repeater"})]
NATIVE_PVS = ["TEST:SO", "TEST:SHWF", "TEST:FLWF", "TEST:MB", "TEST:CHARWF", "TEST:LO", "TEST:AO"]
LIMITS = (
    "upper_disp_limit",
    "lower_disp_limit",
    "upper_alarm_limit",
    "upper_warning_limit",
    "lower_warning_limit",
    "lower_alarm_limit",
    "upper_ctrl_limit",
    "lower_ctrl_limit",
)
DTYPES = ["S40", "=i2", "=f4", "=u2", "=u1", "=i4", "=f8"]  # by native DBR type, host order


class Failure(Exception):
    pass


# ------------------------------------------------------------------------------ server role
def run_server() -> None:
    import numpy as np
    from softioc import asyncio_dispatcher, builder, softioc

    alarms = dict(LLSV="MAJOR", LSV="MINOR", HSV="MINOR", HHSV="MAJOR")
    builder.SetDeviceName("TEST")
    builder.aOut(
        "AO",
        initial_value=3.25,
        EGU="mm",
        PREC=3,
        DRVL=-100.0,
        DRVH=100.0,
        LOPR=-10.0,
        HOPR=10.0,
        LOLO=-9.0,
        LOW=-8.0,
        HIGH=8.0,
        HIHI=9.0,
        **alarms,
    )
    builder.longOut(
        "LO",
        initial_value=7,
        EGU="cts",
        DRVL=-1000,
        DRVH=1000,
        LOPR=-100,
        HOPR=100,
        LOLO=-90,
        LOW=-80,
        HIGH=80,
        HIHI=90,
        **alarms,
    )
    builder.mbbOut("MB", "Off", "On", ("Fault", "MAJOR"), initial_value=1)
    builder.stringOut("SO", initial_value="hello")
    builder.WaveformOut("WF", initial_value=np.arange(10.0), EGU="V", PREC=2, LOPR=0, HOPR=10)
    builder.WaveformOut("SHWF", initial_value=np.array([1, -2, 300, -32768, 32767], np.int16))
    builder.WaveformOut(
        "FLWF", initial_value=np.array([0.5, -1.25, 3e10, 1e-3], np.float32), EGU="A", PREC=4
    )
    builder.WaveformOut(
        "CHARWF",
        FTVL="CHAR",
        length=1024,
        initial_value=np.frombuffer(CHAR_TEXT.encode() + b"\0", np.uint8),
    )
    builder.WaveformOut("BIG", initial_value=np.arange(BIG_N) * 0.25)
    builder.LoadDatabase()
    softioc.iocInit(asyncio_dispatcher.AsyncioDispatcher(), enable_pva=False)
    print("READY", flush=True)
    softioc.non_interactive_ioc()


# ------------------------------------------------------------------------------ client role
def jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, bytes):
        return x.decode("latin-1")
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)  # "nan", "inf", "-inf"
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def meta_struct(dbr_type: int) -> type[ctypes.Structure]:
    """Fields of libca's dbr_<class>_<type> struct (db_access.h) before the value."""
    c = ctypes
    native, cls = dbr_type % 7, dbr_type // 7  # 0 plain, 1 STS, 2 TIME, 3 GR, 4 CTRL
    fields: list[tuple[str, Any]] = []
    if cls >= 1:
        fields += [("status", c.c_short), ("severity", c.c_short)]
    if cls == 2:
        fields += [("secPastEpoch", c.c_uint32), ("nsec", c.c_uint32)]
    if cls >= 3 and native == 3:
        fields += [("no_str", c.c_short), ("strs", (c.c_char * 26) * 16)]
    elif cls >= 3 and native != 0:
        if native in (2, 6):
            fields += [("precision", c.c_short), ("RISC_pad0", c.c_short)]
        lim = {1: c.c_short, 2: c.c_float, 4: c.c_uint8, 5: c.c_int32, 6: c.c_double}[native]
        fields += [("units", c.c_char * 8)] + [(n, lim) for n in LIMITS[: 6 if cls == 3 else 8]]
    return type(f"dbr{dbr_type}", (c.Structure,), {"_fields_": fields})


class Args(ctypes.Structure):  # struct event_handler_args (cadef.h)
    _fields_ = [
        ("usr", ctypes.c_void_p),
        ("chid", ctypes.c_void_p),
        ("type", ctypes.c_long),
        ("count", ctypes.c_long),
        ("dbr", ctypes.c_void_p),
        ("status", ctypes.c_int),
    ]


HANDLER = ctypes.CFUNCTYPE(None, Args)


def run_client(scenario: str, steps_path: str) -> None:
    import epics
    import numpy as np
    from epics import ca

    lib = ca.initialize_libca()
    tab = {
        n: (ctypes.c_ushort * 39).in_dll(lib, n)
        for n in ("dbr_size", "dbr_value_size", "dbr_value_offset")
    }
    steps: list[dict[str, Any]] = []
    chids: dict[str, Any] = {}
    names: dict[int, str] = {}
    got: dict[str, Any] = {}
    done = threading.Event()
    events: list[dict[str, Any]] = []
    ev_lock = threading.Lock()
    slow = {"delay": 0.0}

    def step(op: str, **kw: Any) -> None:
        steps.append({"op": op, **{k: jsonable(v) for k, v in kw.items()}})

    def decode(args: Args) -> dict[str, Any]:
        """libca's view of a reply: callback args plus the dbr struct, field by field."""
        t, n = args.type, args.count
        res: dict[str, Any] = {"dbr_type": t, "count": n, "eca_status": args.status}
        if not args.dbr or t > 34:
            return res
        size = tab["dbr_size"][t] + max(n - 1, 0) * tab["dbr_value_size"][t]
        raw = ctypes.string_at(args.dbr, size)
        meta = meta_struct(t).from_buffer_copy(raw.ljust(ctypes.sizeof(meta_struct(t)), b"\0"))
        for field in meta._fields_:
            name, v = field[0], getattr(meta, field[0])
            if name == "strs":
                res[name] = [bytes(s).split(b"\0")[0] for s in v[: meta.no_str]]
            elif not name.startswith("RISC"):
                res[name] = v.split(b"\0")[0] if isinstance(v, bytes) else v
        values = np.frombuffer(raw, DTYPES[t % 7], n, tab["dbr_value_offset"][t])
        res["value"] = [v.split(b"\0")[0] for v in values] if t % 7 == 0 else values
        return {k: jsonable(v) for k, v in res.items()}

    @HANDLER
    def on_reply(args: Args) -> None:
        got.update(decode(args))
        done.set()

    @HANDLER
    def on_event(args: Args) -> None:
        ev = {"pv": names.get(args.chid or 0), **decode(args)}
        with ev_lock:
            events.append(ev)
        time.sleep(slow["delay"])

    def wait_reply(what: str) -> dict[str, Any]:
        lib.ca_flush_io()
        if not done.wait(10.0):
            raise Failure(f"{what}: no reply within 10 s")
        return dict(got)

    def connect(pv: str, timeout: float = 5.0) -> None:
        chid = chids[pv] = ca.create_channel(pv, connect=False, auto_cb=False)
        names[chid.value] = pv
        info: dict[str, Any] = {"connected": bool(ca.connect_channel(chid, timeout=timeout))}
        if info["connected"]:
            info.update(
                native_type=ca.field_type(chid),
                count=ca.element_count(chid),
                read_access=bool(ca.read_access(chid)),
                write_access=bool(ca.write_access(chid)),
                host=ca.host_name(chid),
            )
        step("connect", pv=pv, result=info)

    def get(pv: str, dbr_type: int, count: int = 0) -> None:
        got.clear()
        done.clear()
        ret = lib.ca_array_get_callback(
            ctypes.c_long(dbr_type), ctypes.c_ulong(count), chids[pv], on_reply, None
        )
        if ret != 1:
            raise Failure(f"ca_array_get_callback {pv} {dbr_type}: ECA {ret}")
        step("get", pv=pv, dbr_type=dbr_type, count=count, result=wait_reply(f"get {pv}"))

    def put(pv: str, value: Any, wait: bool, dbr_type: int | None = None) -> None:
        t = ca.field_type(chids[pv]) if dbr_type is None else dbr_type
        if t == 0:
            vals = [value] if isinstance(value, str) else list(value)
            data = b"".join(v.encode()[:39].ljust(40, b"\0") for v in vals)
        elif t == 4 and isinstance(value, str):
            data = value.encode() + b"\0"
        else:
            data = np.asarray(value, DTYPES[t]).ravel().tobytes()
        count = len(data) // tab["dbr_value_size"][t]
        buf = ctypes.create_string_buffer(data, len(data))
        args = (ctypes.c_long(t), ctypes.c_ulong(count), chids[pv], buf)
        if wait:
            got.clear()
            done.clear()
            ret = lib.ca_array_put_callback(*args, on_reply, None)
            result = (
                {"eca_status": wait_reply(f"put {pv}")["eca_status"]}
                if ret == 1
                else {"eca_return": ret}
            )
        else:
            result = {"eca_return": lib.ca_array_put(*args)}
            lib.ca_flush_io()
        step(
            "put",
            pv=pv,
            value=value,
            dbr_type=t,
            count=count,
            message="WRITE_NOTIFY" if wait else "WRITE",
            result=result,
        )

    def subscribe(pv: str, dbr_type: int, mask: int = 5, count: int = 0) -> ctypes.c_void_p:
        evid = ctypes.c_void_p()
        ret = lib.ca_create_subscription(
            ctypes.c_long(dbr_type),
            ctypes.c_ulong(count),
            chids[pv],
            ctypes.c_long(mask),
            on_event,
            None,
            ctypes.byref(evid),
        )
        if ret != 1:
            raise Failure(f"ca_create_subscription {pv}: ECA {ret}")
        lib.ca_flush_io()
        step("subscribe", pv=pv, dbr_type=dbr_type, count=count, mask=mask)
        return evid

    def wait_events(n: int, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while len(events) < n:
            if time.monotonic() > end:
                raise Failure(f"expected {n} monitor events, got {len(events)}")
            time.sleep(0.02)

    def unsubscribe(pv: str, evid: ctypes.c_void_p) -> None:
        lib.ca_clear_subscription(evid)
        lib.ca_flush_io()
        step("unsubscribe", pv=pv)

    if scenario == "a_search_connect":
        for pv in ["TEST:AO", "TEST:LO", "TEST:MB", "TEST:SO", "TEST:WF", *NATIVE_PVS[1:5]]:
            connect(pv)
    elif scenario == "b_get_dbr_types":
        for native, pv in enumerate(NATIVE_PVS):
            connect(pv)
            for cls in range(5):  # plain, STS, TIME, GR, CTRL
                get(pv, native + 7 * cls)
        connect("TEST:WF")
        for pv, t, n in [
            ("TEST:AO", 0, 0),
            ("TEST:AO", 19, 0),
            ("TEST:MB", 0, 0),
            ("TEST:LO", 34, 0),
            ("TEST:WF", 34, 0),
            ("TEST:WF", 20, 4),
            ("TEST:SHWF", 6, 0),
        ]:
            get(pv, t, n)
    elif scenario == "c_put":
        for pv in ["TEST:AO", "TEST:LO", "TEST:SO", "TEST:MB", "TEST:WF"]:
            connect(pv)
        put("TEST:AO", 4.5, wait=False)
        time.sleep(0.3)
        get("TEST:AO", 6)
        put("TEST:LO", 42, wait=True)
        get("TEST:LO", 5)
        put("TEST:SO", "world", wait=True)
        put("TEST:MB", 0, wait=True)
        put("TEST:MB", "On", wait=True, dbr_type=0)
        put("TEST:WF", np.arange(10.0) * -1.5, wait=True)
        put("TEST:AO", "7.125", wait=True, dbr_type=0)
        put("TEST:MB", "Bogus", wait=True, dbr_type=0)  # rejected: WRITE_NOTIFY reply status
        put("TEST:MB", "Bogus", wait=False, dbr_type=0)  # rejected: CA_PROTO_ERROR
        time.sleep(0.5)
        for pv, t in [("TEST:AO", 20), ("TEST:SO", 0), ("TEST:MB", 3), ("TEST:WF", 6)]:
            get(pv, t)
    elif scenario == "d_monitor":
        subs = []
        for pv, t in [("TEST:AO", 20), ("TEST:LO", 33), ("TEST:WF", 6), ("TEST:MB", 17)]:
            connect(pv)
            subs.append((pv, subscribe(pv, t)))
            wait_events(len(subs))
        for n, (pv, value) in enumerate(
            [
                ("TEST:AO", 1.5),
                ("TEST:AO", 8.5),
                ("TEST:AO", 9.5),
                ("TEST:LO", -85),
                ("TEST:WF", np.arange(10.0) + 0.5),
                ("TEST:MB", 2),
            ]
        ):
            put(pv, value, wait=True)
            wait_events(len(subs) + n + 1)
        for pv, evid in subs:
            unsubscribe(pv, evid)
        time.sleep(0.3)
        put("TEST:AO", 2.0, wait=True)  # no event any more
        time.sleep(0.3)
        step("events", result=events)
    elif scenario == "e_large_array":
        connect("TEST:BIG")
        connect("TEST:CHARWF")
        get("TEST:BIG", 6)
        put("TEST:BIG", np.arange(BIG_N) * -0.5, wait=True)
        get("TEST:BIG", 20)
        get("TEST:BIG", 6, count=5)
        get("TEST:CHARWF", 4)
        get("TEST:CHARWF", 0)
        put("TEST:CHARWF", "short text", wait=True)
        get("TEST:CHARWF", 18)
        get("TEST:CHARWF", 4, count=1024)
    elif scenario == "f_missing_pv_clear":
        connect("TEST:NOPE", timeout=2.0)
        connect("TEST:AO")
        connect("TEST:LO")
        get("TEST:AO", 6)
        for pv in ["TEST:AO", "TEST:NOPE"]:
            ca.clear_channel(chids.pop(pv))
            step("clear_channel", pv=pv)
        time.sleep(0.5)
        get("TEST:LO", 5)
        ca.clear_channel(chids.pop("TEST:LO"))
        step("clear_channel", pv="TEST:LO")
        time.sleep(0.5)
    elif scenario == "g_beacons_echo_repeater":
        connect("TEST:AO")
        time.sleep(12.0)  # libca's first REPEATER_REGISTER comes 10 s after its UDP socket
        step("sleep", seconds=12.0)
        get("TEST:AO", 6)
    elif scenario == "h_flow_control":
        # libca (EPICS_CA_MAX_ARRAY_BYTES=16384 here) asks for EVENTS_OFF once its receive
        # thread finds bytes pending after 10 rounds in a row.  The callback runs in that
        # thread and is a little slower than the updates caused by a stream of WRITEs.
        connect("TEST:AO")
        slow["delay"] = 0.0125
        evid = subscribe("TEST:AO", 6)
        wait_events(1)
        for i in range(150):
            put("TEST:AO", -50.0 + i * 0.5, wait=False)
            time.sleep(0.01)
        time.sleep(2.0)
        slow["delay"] = 0.0
        unsubscribe("TEST:AO", evid)
        time.sleep(0.3)
        step("events", result=events)
    else:
        raise Failure(f"unknown scenario {scenario}")

    versions = {"pyepics": epics.__version__, "libca": ca.version(), "libca_path": ca.find_libca()}
    ca.finalize_libca()
    step("finalize_libca")
    Path(steps_path).write_text(json.dumps({"steps": steps, "versions": versions}))


# ------------------------------------------------------------------------------ relay
class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open_conns = 0
        self.begin()

    def begin(self) -> None:
        with self.lock:
            self.records: list[dict[str, Any]] = []
            self.t0 = time.monotonic()
            self.conns: dict[Any, int] = {}

    def conn(self, transport: str, key: Any) -> int:
        """Connection number: 1, 2, ... per transport within one recording."""
        with self.lock:
            n = sum(k[0] == transport for k in self.conns) + 1
            return self.conns.setdefault((transport, key), n)

    def add(self, channel: str, conn: int, direction: str, data: bytes, **extra: Any) -> None:
        with self.lock:
            self.records.append(
                {
                    "channel": channel,
                    "transport": "tcp" if channel == "ca_tcp" else "udp",
                    "conn": conn,
                    "direction": direction,
                    "t": round(time.monotonic() - self.t0, 6),
                    "data": data.hex(),
                    **extra,
                }
            )


def spawn(target: Callable[..., None], *args: Any) -> None:
    threading.Thread(target=target, args=args, daemon=True).start()


def pump(
    rec: Recorder,
    conn: int,
    direction: str,
    src: socket.socket,
    dst: socket.socket,
    done: threading.Event,
) -> None:
    try:
        while data := src.recv(262144):
            rec.add("ca_tcp", conn, direction, data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        done.set()


def tcp_relay(rec: Recorder, listener: socket.socket, port: int) -> None:
    def handle(client: socket.socket) -> None:
        conn = rec.conn("tcp", client)
        a, b = threading.Event(), threading.Event()
        try:
            with socket.create_connection((SERVER_HOST, port), timeout=5.0) as upstream:
                upstream.settimeout(None)
                spawn(pump, rec, conn, "client_to_server", client, upstream, a)
                spawn(pump, rec, conn, "server_to_client", upstream, client, b)
                a.wait()
                b.wait()
        finally:
            client.close()
            with rec.lock:
                rec.open_conns -= 1

    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        with rec.lock:
            rec.open_conns += 1
        spawn(handle, client)


def walk(buf: bytes) -> Iterator[tuple[int, tuple[int, ...]]]:
    """(offset, header) of each CA message in buf; only used to label and sanity-check."""
    off = 0
    while off + 16 <= len(buf):
        hdr = struct.unpack_from(">HHHHII", buf, off)
        size, skip = hdr[1], 16
        if size == 0xFFFF and hdr[3] == 0 and off + 24 <= len(buf):
            size, skip = struct.unpack_from(">I", buf, off + 16)[0], 24
        yield off, hdr
        off += skip + size


def udp_relay(
    rec: Recorder,
    front: socket.socket,
    server_port: int,
    beacon: socket.socket,
    repeater: socket.socket,
    errors: list[str],
) -> None:
    upstream: dict[tuple[str, int], socket.socket] = {}
    client_of: dict[socket.socket, tuple[str, int]] = {}
    while True:
        try:
            ready, _, _ = select.select([front, beacon, repeater, *client_of], [], [], 0.5)
        except (OSError, ValueError):
            return
        for s in ready:
            data, addr = s.recvfrom(65536)
            if s is beacon:
                rec.add("beacon", 0, "server_to_client", data, src=f"{addr[0]}:{addr[1]}")
            elif s is repeater:
                rec.add("repeater", 0, "client_to_repeater", data, src=f"{addr[0]}:{addr[1]}")
            elif s is front:
                if addr not in upstream:
                    up = upstream[addr] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    up.bind((RELAY_HOST, 0))
                    client_of[up] = addr
                rec.add("ca_udp", rec.conn("udp", addr), "client_to_server", data)
                upstream[addr].sendto(data, (SERVER_HOST, server_port))
            else:
                caddr = client_of[s]
                rec.add("ca_udp", rec.conn("udp", caddr), "server_to_client", data)
                for _, (cmd, _, _, _, p1, _) in walk(data):
                    if cmd == 6 and p1 != 0xFFFFFFFF:
                        errors.append(f"search reply names address {p1:#x}: relay bypassed")
                front.sendto(data, caddr)


# ------------------------------------------------------------------------------ orchestration
def free_port() -> int:
    """A port free for TCP and UDP on both loopback addresses used."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((RELAY_HOST, 0))
            port = s.getsockname()[1]
        try:
            for host in (RELAY_HOST, SERVER_HOST):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as t:
                        t.bind((host, port))
            return port
        except OSError:
            continue
    raise Failure("no free port found")


def udp_socket(port: int, host: str = RELAY_HOST) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    return s


def observed(records: list[dict[str, Any]]) -> set[str]:
    """Tokens "<channel>:<command>" seen, "ca_tcp:ext" for an extended header, "repeater:empty"."""
    bufs: list[tuple[str, bytes]] = []
    tcp: dict[tuple[int, str], bytearray] = {}
    for r in records:
        data = bytes.fromhex(r["data"])
        if r["transport"] == "tcp":
            tcp.setdefault((r["conn"], r["direction"]), bytearray()).extend(data)
        else:
            bufs.append((r["channel"], data))
    bufs += [("ca_tcp", bytes(b)) for b in tcp.values()]
    seen = {f"{ch}:empty" for ch, buf in bufs if not buf}
    for ch, buf in bufs:
        for _, (cmd, size, _, count, _, _) in walk(buf):
            seen.add(f"{ch}:{cmd}")
            if size == 0xFFFF and count == 0:
                seen.add(f"{ch}:ext")
    return seen


class Session:
    """Relay sockets and threads, the softioc process, and one client process per scenario."""

    def __init__(self, work: Path, libca: str = "epicscorelibs") -> None:
        self.work, self.rec = work, Recorder()
        self.errors: list[str] = []
        port, relay_udp, beacon_port, rep_port, server_rep_port = (free_port() for _ in range(5))
        self.listener = socket.create_server((RELAY_HOST, port))
        front, beacon = udp_socket(relay_udp), udp_socket(beacon_port)
        # libca sends REPEATER_REGISTER alternately to 127.0.0.1 and to the host's first
        # non-loopback address, hence 0.0.0.0.  A socket there also tells libca that a repeater
        # runs, so it spawns no caRepeater; likewise for the IOC's own CA client (dbCa).
        repeater, server_rep = udp_socket(rep_port, "0.0.0.0"), udp_socket(server_rep_port)
        self.sockets = [self.listener, front, beacon, repeater, server_rep]
        spawn(tcp_relay, self.rec, self.listener, port)
        spawn(udp_relay, self.rec, front, port, beacon, repeater, self.errors)
        base = {
            **os.environ,
            "EPICS_CA_AUTO_ADDR_LIST": "NO",
            "PYTHONUNBUFFERED": "1",
            "EPICS_CA_MAX_ARRAY_BYTES": "100000000",
            "EPICS_CA_SERVER_PORT": str(port),
        }
        self.server_env = {
            **base,
            "EPICS_CA_ADDR_LIST": RELAY_HOST,
            "EPICS_CAS_INTF_ADDR_LIST": SERVER_HOST,
            "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
            "EPICS_CAS_BEACON_ADDR_LIST": f"{RELAY_HOST}:{beacon_port}",
            "EPICS_CA_REPEATER_PORT": str(server_rep_port),
        }
        self.client_env = {
            **base,
            "EPICS_CA_ADDR_LIST": f"{RELAY_HOST}:{relay_udp}",
            "EPICS_CA_REPEATER_PORT": str(rep_port),
        }
        self.client_env.pop("PYEPICS_LIBCA", None)
        if libca == "epicscorelibs":  # the same EPICS base as the server's; else pyepics' own
            from epicscorelibs.path import get_lib

            self.client_env["PYEPICS_LIBCA"] = get_lib("ca")
        self.endpoints = {
            "server_tcp_udp": f"{SERVER_HOST}:{port}",
            "relay_tcp": f"{RELAY_HOST}:{port}",
            "relay_udp": f"{RELAY_HOST}:{relay_udp}",
            "beacon_listener": f"{RELAY_HOST}:{beacon_port}",
            "repeater_listener": f"0.0.0.0:{rep_port}",
        }
        self.me = [sys.executable, str(Path(__file__).resolve())]
        self.server: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    def start_server(self) -> None:
        self.server = proc = subprocess.Popen(
            [*self.me, "--role", "server"],
            env=self.server_env,
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        ready = threading.Event()

        def watch() -> None:
            for line in proc.stdout or []:
                self.log.append(line)
                if line.strip() == "READY":
                    ready.set()

        spawn(watch)
        if not ready.wait(30.0):
            raise Failure("softioc did not print READY within 30 s:\n" + "".join(self.log[-30:]))

    def record(self, scenario: str) -> dict[str, Any]:
        self.rec.begin()
        if self.server is None:  # the first recording starts before the server: start-up beacons
            self.start_server()
        env = {**self.client_env, "EPICS_CA_CONN_TMO": "2.0" if scenario[0] == "g" else "30.0"}
        if scenario[0] == "h":
            env["EPICS_CA_MAX_ARRAY_BYTES"] = "16384"
        steps_file = self.work / f"{scenario}.steps.json"
        cmd = [*self.me, "--role", "client", "--scenario", scenario, "--steps", str(steps_file)]
        try:
            proc = subprocess.run(
                cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90.0
            )
        except subprocess.TimeoutExpired as exc:
            raise Failure(f"client scenario {scenario} timed out after 90 s") from exc
        if proc.returncode != 0 or not steps_file.exists():
            raise Failure(
                f"client scenario {scenario} failed (rc {proc.returncode}):\n" + proc.stderr[-3000:]
            )
        client = json.loads(steps_file.read_text())
        end = time.monotonic() + 5.0
        while self.rec.open_conns and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.2)
        if self.errors:
            raise Failure("; ".join(self.errors))
        with self.rec.lock:
            records = list(self.rec.records)
        v = client["versions"]
        return {
            "format": "caioc-ca-recording/1",
            "scenario": scenario,
            "description": SCENARIOS[scenario],
            "peers": {
                "client": f"pyepics {v['pyepics']} / libca {v['libca']} "
                f"({'/'.join(Path(v['libca_path']).parts[-3:])})",
                "server": f"softioc {metadata.version('softioc')} (rsrv) / epicscorelibs "
                f"{metadata.version('epicscorelibs')}",
            },
            "endpoints": self.endpoints,
            "client_env": {k: env[k] for k in ("EPICS_CA_CONN_TMO", "EPICS_CA_MAX_ARRAY_BYTES")},
            "notes": [
                "Every data field holds bytes exactly as a C peer sent them; none modified.",
                "TCP records are recv() chunks: concatenate per (conn, direction) first.",
                "UDP records are whole datagrams (a repeater record may be empty).",
                "Steps are what libca reported to the client, see tests/data/README.md.",
            ],
            "steps": client["steps"],
            "records": records,
        }

    def close(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait(timeout=10.0)
        for s in self.sockets:
            s.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/data", help="output directory")
    ap.add_argument("--scenarios", default=",".join(RUN_ORDER), help="comma-separated subset")
    ap.add_argument(
        "--libca",
        choices=["epicscorelibs", "bundled"],
        default="epicscorelibs",
        help="client libca: epicscorelibs' (EPICS 7) or pyepics' bundled (3.16)",
    )
    ap.add_argument(
        "--role", choices=["main", "server", "client"], default="main", help=argparse.SUPPRESS
    )
    ap.add_argument("--scenario", help=argparse.SUPPRESS)
    ap.add_argument("--steps", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "server":
        run_server()
        return 0
    if args.role == "client":
        run_client(args.scenario, args.steps)
        return 0
    wanted = args.scenarios.split(",")
    if set(wanted) - set(SCENARIOS):
        print(f"record_ca: unknown scenarios {set(wanted) - set(SCENARIOS)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        session = Session(Path(work), args.libca)
        try:
            for scenario in [s for s in RUN_ORDER if s in wanted]:
                for attempt in range(1, 4):
                    doc = session.record(scenario)
                    seen = observed(doc["records"])
                    if not (missing := EXPECT[scenario] - seen):
                        break
                    print(f"{scenario}: attempt {attempt} lacks {sorted(missing)}", flush=True)
                else:
                    raise Failure(f"{scenario}: {sorted(missing)} not seen in 3 attempts")
                path = out / f"{scenario}.json"
                path.write_text(json.dumps(doc, indent=1) + "\n")
                print(
                    f"{path}: {len(doc['records'])} records, {path.stat().st_size} bytes; "
                    f"{' '.join(sorted(seen))}",
                    flush=True,
                )
            return 0
        except Failure as exc:
            print(f"record_ca: FAILED: {exc}", file=sys.stderr)
            return 1
        finally:
            session.close()


if __name__ == "__main__":
    sys.exit(main())

"""SerialPort through real pyserial, against an instrument simulated on a pty."""

from __future__ import annotations

import asyncio
import os
import re
import select
import termios
import time
from collections.abc import Iterator

import pytest

from caioc.ca import AlarmStatus
from caioc.hw import (
    BadReply,
    BusTimeout,
    DeviceClosed,
    DeviceUnplugged,
    PartialReply,
    SerialPort,
)
from caioc.hw.sim import SimulatedInstrument

from .conftest import BOUND

REPLY_TIMEOUT = 0.2
INTER_BYTE_TIMEOUT = 0.05


def make_instrument() -> SimulatedInstrument:
    sim = SimulatedInstrument(read_terminator="\n", write_terminator="\r\n", unknown="ERR")
    sim.state.update(volts=1.5, count=0)
    sim.on(r"\*IDN\?", "ACME,PSU-1,0042,1.0")
    sim.on(r"VOLT\?", lambda match, sim: f"{sim.state['volts']:.3f}")
    sim.on(r"ECHO (.*)", lambda match, sim: match[1])

    @sim.on(r"VOLT (?P<value>[-+.\d]+)")
    def set_volts(match: re.Match[str], sim: SimulatedInstrument) -> None:
        sim.state["volts"] = float(match["value"])

    @sim.on(r"COUNT\?")
    def count(match: re.Match[str], sim: SimulatedInstrument) -> str:
        sim.state["count"] += 1
        return str(sim.state["count"])

    return sim


def wait_until_the_tty_has_input(path: str) -> None:
    """Block (bounded) until bytes wait in the tty's input queue, without taking them."""
    descriptor = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        readable, _, _ = select.select([descriptor], [], [], BOUND)
    finally:
        os.close(descriptor)
    assert readable, "the late reply never reached the tty"


@pytest.fixture
def instrument() -> Iterator[SimulatedInstrument]:
    with make_instrument() as sim:
        yield sim


@pytest.fixture
def port(instrument: SimulatedInstrument) -> Iterator[SerialPort]:
    with SerialPort(
        instrument.path,
        baudrate=115200,
        read_terminator="\r\n",
        reply_timeout=REPLY_TIMEOUT,
        inter_byte_timeout=INTER_BYTE_TIMEOUT,
    ) as port:
        yield port


def test_query_and_stateful_replies(port: SerialPort, instrument: SimulatedInstrument) -> None:
    assert not port.connected  # opened on first use, not in the constructor
    assert port.query("*IDN?") == "ACME,PSU-1,0042,1.0"
    assert port.connected
    port.write_line("VOLT 2.25")
    assert port.query("VOLT?") == "2.250"
    assert instrument.state["volts"] == 2.25
    assert port.query("NONSENSE") == "ERR"
    assert instrument.wait_for_commands(4) == ["*IDN?", "VOLT 2.25", "VOLT?", "NONSENSE"]
    assert port.query_bytes(b"ECHO raw\n") == b"raw"


def test_framing_options_reach_the_real_tty(
    port: SerialPort, instrument: SimulatedInstrument
) -> None:
    port.open()
    descriptor = os.open(instrument.path, os.O_RDWR | os.O_NOCTTY)
    try:
        attributes = termios.tcgetattr(descriptor)
    finally:
        os.close(descriptor)
    assert attributes[5] == termios.B115200  # output speed
    assert attributes[2] & termios.CSIZE == termios.CS8
    assert not attributes[2] & termios.PARENB


def test_expect_checks_the_reply(port: SerialPort) -> None:
    assert port.query("VOLT?", expect=r"[-+]?\d+\.\d{3}") == "1.500"
    with pytest.raises(BadReply, match="does not match") as caught:
        port.query("*IDN?", expect=re.compile(r"\d+"))
    assert caught.value.data == b"ACME,PSU-1,0042,1.0"
    assert caught.value.kind is AlarmStatus.CALC


def test_no_reply_is_a_timeout(port: SerialPort, instrument: SimulatedInstrument) -> None:
    instrument.faults.no_reply_next()
    started = time.monotonic()
    with pytest.raises(BusTimeout, match="no reply") as caught:
        port.query("*IDN?")
    assert time.monotonic() - started >= REPLY_TIMEOUT
    assert caught.value.kind is AlarmStatus.TIMEOUT
    assert port.query("*IDN?") == "ACME,PSU-1,0042,1.0"


def test_partial_reply(port: SerialPort, instrument: SimulatedInstrument) -> None:
    instrument.faults.partial_reply_next(keep=5)
    with pytest.raises(PartialReply) as caught:
        port.query("*IDN?")
    assert caught.value.data == b"ACME,"
    assert caught.value.kind is AlarmStatus.READ
    assert port.query("VOLT?") == "1.500"


def test_garbled_reply(port: SerialPort, instrument: SimulatedInstrument) -> None:
    instrument.faults.garble_next()
    with pytest.raises(BadReply, match="not ascii") as caught:
        port.query("*IDN?")
    assert caught.value.data == bytes(b | 0x80 for b in b"ACME,PSU-1,0042,1.0")
    instrument.faults.garble_next(garbler=lambda data: data.replace(b"5", b"S"))
    with pytest.raises(BadReply):
        port.query("VOLT?", expect=r"\d+\.\d+")
    assert port.query("VOLT?") == "1.500"


def test_a_late_reply_is_not_taken_for_the_next_answer(
    port: SerialPort, instrument: SimulatedInstrument
) -> None:
    instrument.faults.reply_delay = REPLY_TIMEOUT * 1.5
    with pytest.raises(BusTimeout):
        port.query("COUNT?")
    instrument.wait_for_sent(1, timeout=BOUND)
    wait_until_the_tty_has_input(instrument.path)  # the late "1" is waiting there
    instrument.faults.clear()
    assert port.query("COUNT?") == "2"


def test_unplug_and_replug(port: SerialPort, instrument: SimulatedInstrument) -> None:
    assert port.query("*IDN?") == "ACME,PSU-1,0042,1.0"
    instrument.unplug()
    assert not instrument.plugged
    with pytest.raises(DeviceUnplugged) as caught:
        port.query("*IDN?")
    assert caught.value.kind is AlarmStatus.COMM
    assert not port.connected
    with pytest.raises(DeviceUnplugged, match="cannot open"):
        port.query("*IDN?")  # still gone: fails fast, no timeout
    instrument.replug()
    assert port.query("*IDN?") == "ACME,PSU-1,0042,1.0"
    # Unplugged and back while the port sat idle: the first query after
    # recovers on the fresh pty instead of failing on the stale one.
    instrument.unplug()
    instrument.replug()
    assert port.query("VOLT?") == "1.500"


def test_unsolicited_lines(port: SerialPort, instrument: SimulatedInstrument) -> None:
    port.open()
    instrument.send("ALARM HIGH")
    assert port.read_line() == "ALARM HIGH"
    with pytest.raises(BusTimeout):
        port.read_line(timeout=0.05)


def test_async_queries_are_serialised_and_do_not_block_the_loop(
    port: SerialPort, instrument: SimulatedInstrument
) -> None:
    async def main() -> None:
        replies = await asyncio.gather(*(port.query_async(f"ECHO {n}") for n in range(20)))
        assert replies == [str(n) for n in range(20)]

        instrument.faults.reply_delay = 0.1
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        ticking = asyncio.create_task(ticker())
        assert await port.query_async("VOLT?") == "1.500"
        ticking.cancel()
        assert ticks > 5  # the loop kept running while the reply was awaited
        instrument.faults.clear()

        await port.write_line_async("VOLT 3")
        instrument.send("HELLO")
        assert await port.read_line_async() == "HELLO"
        assert await port.query_async("VOLT?", expect=r"3\.000") == "3.000"
        instrument.faults.no_reply_next()
        with pytest.raises(BusTimeout):
            await port.query_async("VOLT?")
        await port.open_async()

    asyncio.run(main())


def test_threads_and_coroutines_share_one_queue(
    port: SerialPort, instrument: SimulatedInstrument
) -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        from_threads = [loop.run_in_executor(None, port.query, f"ECHO t{n}") for n in range(10)]
        from_tasks = [port.query_async(f"ECHO a{n}") for n in range(10)]
        return list(await asyncio.gather(*from_threads, *from_tasks))

    replies = asyncio.run(main())
    assert replies == [f"t{n}" for n in range(10)] + [f"a{n}" for n in range(10)]


def test_close_is_idempotent_and_use_after_close_raises(instrument: SimulatedInstrument) -> None:
    port = SerialPort(instrument.path, read_terminator="\r\n", reply_timeout=REPLY_TIMEOUT)
    assert port.query("VOLT?") == "1.500"
    port.close()
    port.close()
    assert port.closed and not port.connected
    for use in (lambda: port.query("VOLT?"), lambda: port.write_line("X"), port.read_line):
        with pytest.raises(DeviceClosed):
            use()
    with pytest.raises(DeviceClosed):
        asyncio.run(port.query_async("VOLT?"))


def test_a_missing_port_is_unplugged_not_a_crash() -> None:
    port = SerialPort("/dev/ttyDOES-NOT-EXIST", reply_timeout=REPLY_TIMEOUT)
    with port, pytest.raises(DeviceUnplugged):
        port.open()


def test_any_pyserial_url_works() -> None:
    # loop:// echoes what is written: a query reads its own command back.
    with SerialPort("loop://", reply_timeout=REPLY_TIMEOUT, baudrate=19200) as port:
        assert port.query("PING") == "PING"


def test_an_endless_reply_is_cut_off(instrument: SimulatedInstrument) -> None:
    instrument.on(r"FLOOD", lambda match, sim: "x" * 300)
    with SerialPort(
        instrument.path,
        read_terminator="\r\n",
        reply_timeout=REPLY_TIMEOUT,
        max_reply_bytes=100,
    ) as port:
        with pytest.raises(BadReply, match="no terminator"):
            port.query("FLOOD")
        assert port.query("VOLT?") == "1.500"


def test_terminators_must_be_usable() -> None:
    with pytest.raises(ValueError):
        SerialPort("loop://", read_terminator="")


def test_a_usb_id_finds_its_port_at_every_open(
    monkeypatch: pytest.MonkeyPatch, instrument: SimulatedInstrument
) -> None:
    """``usb:VID:PID`` is looked up each time the port opens: a replug may move it."""
    from types import SimpleNamespace

    from serial.tools import list_ports  # type: ignore[import-untyped]

    present: list[SimpleNamespace] = []
    monkeypatch.setattr(list_ports, "comports", lambda: list(present))
    adapter = SimpleNamespace(vid=0x0403, pid=0x6001, serial_number="A5", device=instrument.path)
    with SerialPort("usb:0403:6001:A5", read_terminator="\r\n", reply_timeout=0.5) as port:
        with pytest.raises(DeviceUnplugged, match="0403:6001"):
            port.open()  # not plugged in yet: retried by its owner, never a crash
        present.append(adapter)
        assert port.query("*IDN?") == "ACME,PSU-1,0042,1.0"
        # unplugged, then back under another name: found again by its id
        instrument.unplug()
        with pytest.raises(DeviceUnplugged):
            port.query("*IDN?")
        present.clear()
        with make_instrument() as moved:
            present.append(SimpleNamespace(**{**vars(adapter), "device": moved.path}))
            assert port.query("*IDN?") == "ACME,PSU-1,0042,1.0"

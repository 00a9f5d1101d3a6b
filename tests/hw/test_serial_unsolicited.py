"""Unsolicited serial lines: listeners, bounded queues, framing, I/O-interrupt readings.

Everything runs through real pyserial on a pty, against the simulated
instrument, as a driver's own serial path does.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator

import pytest
from waiting import run, until

from caioc.ca import AlarmSeverity, AlarmStatus
from caioc.hw import Device, SerialPort
from caioc.hw.serial import LineBinding, SerialLine, line_reading
from caioc.hw.sim import SimulatedInstrument

from .conftest import BOUND

REPLY_TIMEOUT = 0.5


def make_instrument() -> SimulatedInstrument:
    sim = SimulatedInstrument(read_terminator="\n", write_terminator="\r\n", unknown="ERR")
    sim.state.update(count=0, celsius=23.5)

    @sim.on(r"COUNT\?")
    def count(match: re.Match[str], sim: SimulatedInstrument) -> str:
        sim.state["count"] += 1
        return str(sim.state["count"])

    @sim.on(r"MEAS\?")
    def measure_after_an_alarm(match: re.Match[str], sim: SimulatedInstrument) -> str:
        # An event line goes out just as the query arrives, before its reply.
        sim.send("ALARM OVERTEMP")
        return "1.5"

    return sim


class Collector:
    """A listener that keeps what it hears, for waiting on from the test thread."""

    def __init__(self) -> None:
        self.lines: list[SerialLine] = []
        self._changed = threading.Condition()

    def __call__(self, line: SerialLine) -> None:
        with self._changed:
            self.lines.append(line)
            self._changed.notify_all()

    def wait_for(self, count: int) -> list[str]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.lines) >= count, BOUND), (
                f"{len(self.lines)} of {count} lines heard"
            )
            return [line.text for line in self.lines]

    @property
    def texts(self) -> list[str]:
        with self._changed:
            return [line.text for line in self.lines]


@pytest.fixture
def instrument() -> Iterator[SimulatedInstrument]:
    with make_instrument() as sim:
        yield sim


def open_port(instrument: SimulatedInstrument, **options: object) -> SerialPort:
    settings: dict[str, object] = {
        "read_terminator": "\r\n",
        "reply_timeout": REPLY_TIMEOUT,
        "inter_byte_timeout": 0.05,
    }
    settings.update(options)
    return SerialPort(instrument.path, **settings)  # type: ignore[arg-type]


def test_lines_between_queries_reach_the_listener(instrument: SimulatedInstrument) -> None:
    heard = Collector()
    with open_port(instrument) as port:
        stop = port.listen(heard)
        port.open()  # lines sent before the port opens are lost, as on a real line
        assert port.listening
        before = time.time()
        instrument.send("ALARM HIGH")  # nobody asked: no query is waiting
        assert heard.wait_for(1) == ["ALARM HIGH"]
        assert before <= heard.lines[0].timestamp <= time.time()
        assert port.query("COUNT?") == "1"  # queries still work while listening
        instrument.send("ALARM LOW")
        assert heard.wait_for(2) == ["ALARM HIGH", "ALARM LOW"]
        assert port.unsolicited_lines == 2
        assert port.stats.connected  # listening opened the port
        stop()
        stop()  # idempotent
        assert not port.listening
        assert port.query("COUNT?") == "2"


def test_queries_get_their_own_replies_under_a_stream(instrument: SimulatedInstrument) -> None:
    heard = Collector()
    stream = instrument.every(0.002, lambda sim: f"T={sim.state['celsius']:.2f}")
    with open_port(instrument, unsolicited=r"T=") as port:
        port.listen(heard)
        port.open()
        heard.wait_for(3)  # the stream is flowing
        replies = [port.query("COUNT?") for _ in range(60)]
        assert replies == [str(n) for n in range(1, 61)]
        stream.stop()
        assert stream.sent > 3
        assert set(heard.texts) == {"T=23.50"}  # no reply was taken for a stream line


def test_the_pattern_tells_an_event_line_from_the_reply(instrument: SimulatedInstrument) -> None:
    heard = Collector()
    with open_port(instrument, unsolicited=r"ALARM ") as port:
        port.listen(heard)
        port.open()
        assert port.query("MEAS?") == "1.5"
        assert heard.wait_for(1) == ["ALARM OVERTEMP"]


def test_without_a_pattern_the_first_line_after_a_query_is_its_reply(
    instrument: SimulatedInstrument,
) -> None:
    # The documented rule: nothing else can tell them apart.
    with open_port(instrument) as port:
        assert port.query("MEAS?") == "ALARM OVERTEMP"


def test_a_line_in_flight_is_finished_before_a_query_is_sent(
    instrument: SimulatedInstrument,
) -> None:
    heard = Collector()
    with open_port(instrument, inter_byte_timeout=1.0) as port:
        port.listen(heard)
        port.open()
        instrument.send_raw(b"ALARM HI")  # half a line has arrived ...
        timer = threading.Timer(0.05, instrument.send_raw, [b"GH\r\n"])
        timer.start()  # ... and the rest follows while the query waits
        try:
            assert port.query("COUNT?") == "1"
        finally:
            timer.join()
        assert heard.wait_for(1) == ["ALARM HIGH"]


def test_a_cut_line_is_dropped_and_counted(instrument: SimulatedInstrument) -> None:
    heard = Collector()
    with open_port(instrument) as port:
        port.listen(heard)
        port.open()
        instrument.send_raw(b"T=2")  # the instrument stops mid-line
        deadline = time.monotonic() + BOUND
        while port.cut_lines < 1:
            assert time.monotonic() < deadline, "the cut line was never dropped"
            time.sleep(0.005)
        instrument.send("T=3")
        assert heard.wait_for(1) == ["T=3"]  # not "T=2T=3"
        assert port.query("COUNT?") == "1"


def test_a_flood_is_bounded_and_the_newest_lines_kept(instrument: SimulatedInstrument) -> None:
    async def body() -> None:
        with open_port(instrument) as port:
            async with port.lines(maxlen=10) as lines:
                await port.open_async()
                for number in range(300):
                    instrument.send(f"L{number}")
                await until(lambda: port.unsolicited_lines == 300, "the flood to arrive")
                assert len(lines) == 10
                assert lines.dropped == 290
                kept = [lines.get_nowait() for _ in range(10)]
                assert [line.text for line in kept if line] == [f"L{n}" for n in range(290, 300)]
                assert lines.get_nowait() is None
                assert await port.query_async("COUNT?") == "1"

    run(body, timeout=BOUND * 2)


def test_a_line_queue_iterates_until_closed(instrument: SimulatedInstrument) -> None:
    async def body() -> None:
        with open_port(instrument) as port:
            lines = port.lines()
            await port.open_async()
            instrument.send("A")
            instrument.send("B")
            received = []
            async for line in lines:
                received.append(line.text)
                if len(received) == 2:
                    lines.close()
            assert received == ["A", "B"]
            assert not port.listening

    run(body, timeout=BOUND * 2)


def test_listening_survives_an_unplug(instrument: SimulatedInstrument) -> None:
    heard = Collector()
    with open_port(instrument) as port:
        port.listen(heard)
        port.open()
        instrument.send("BEFORE")
        heard.wait_for(1)
        instrument.unplug()
        deadline = time.monotonic() + BOUND
        while port.stats.connected:
            assert time.monotonic() < deadline, "the unplug was never noticed"
            time.sleep(0.005)
        instrument.replug()
        while not port.stats.connected:
            assert time.monotonic() < deadline, "the port never reopened"
            time.sleep(0.005)
        instrument.send("AFTER")
        assert heard.wait_for(2) == ["BEFORE", "AFTER"]


def test_a_listening_port_closes_promptly(instrument: SimulatedInstrument) -> None:
    heard = Collector()
    port = open_port(instrument)
    port.listen(heard)
    port.open()
    instrument.send("X")
    heard.wait_for(1)
    port.close()
    assert port.closed
    assert not port.worker.thread.is_alive()


def test_a_broken_listener_does_not_stop_the_others(instrument: SimulatedInstrument) -> None:
    heard = Collector()

    def broken(line: SerialLine) -> None:
        raise RuntimeError("listener bug")

    with open_port(instrument) as port:
        port.listen(broken)
        port.listen(heard)
        port.open()
        port.open()
        instrument.send("ONE")
        instrument.send("TWO")
        assert heard.wait_for(2) == ["ONE", "TWO"]


# -- I/O-interrupt readings -------------------------------------------------------------


class StreamingThermometer(Device):
    """Streams T=<celsius> lines and sometimes ALARM <text> lines."""

    temperature = line_reading(r"T=(\S+)", units="degC", precision=2, stale_after=0.3)
    alarm = line_reading(r"ALARM (.*)", "")
    count = line_reading(r"N=(\d+)", 0)

    @alarm.parser  # type: ignore[no-redef]
    def alarm(self, match: re.Match[str]) -> str:
        return match.group(1).lower()

    def __init__(self, path: str) -> None:
        self.path = path
        self.port: SerialPort | None = None
        self.binding: LineBinding | None = None
        super().__init__("thermo:")

    async def open(self) -> None:
        self.port = SerialPort(self.path, read_terminator="\r\n", inter_byte_timeout=0.05)
        self.binding = LineBinding(self, self.port)
        await self.binding.start()

    async def close(self) -> None:
        if self.binding is not None:
            await self.binding.stop()
        if self.port is not None:
            await asyncio.to_thread(self.port.close)


def test_line_readings_follow_the_stream(instrument: SimulatedInstrument) -> None:
    async def body() -> None:
        device = StreamingThermometer(instrument.path)
        assert device.temperature.alarm_status == AlarmStatus.UDF  # nothing heard yet
        await device.startup()
        try:
            before = time.time()
            instrument.send("T=21.25")
            await until(lambda: device.temperature.value == 21.25, "the first line")
            assert device.temperature.alarm_severity == AlarmSeverity.NO_ALARM
            assert before <= device.temperature.timestamp <= time.time()
            instrument.send("ALARM Over Temperature")
            instrument.send("N=7")
            await until(lambda: device.count.value == 7, "the count line")
            assert device.alarm.value == "over temperature"
            instrument.send("T=garbage")  # matches, but is no number: CALC
            await until(
                lambda: device.temperature.alarm_status == AlarmStatus.CALC, "the CALC alarm"
            )
            assert device.temperature.value == 21.25  # the last good value stays
            instrument.send("HELLO")  # nobody's line
            instrument.send("T=22.5")
            await until(lambda: device.temperature.value == 22.5, "recovery")
            assert device.temperature.alarm_severity == AlarmSeverity.NO_ALARM
            assert device.binding is not None and device.binding.unmatched == 1
            # The stream stops: after stale_after the reading says so.
            await until(
                lambda: device.temperature.alarm_status == AlarmStatus.TIMEOUT, "the stale alarm"
            )
        finally:
            await device.shutdown()
        assert device.port is not None and device.port.closed

    run(body, timeout=BOUND * 2)


def test_a_line_reading_has_no_period() -> None:
    with pytest.raises(ValueError, match="never polled"):
        line_reading(r"T=(.*)", period=1.0)


def test_a_stream_nobody_reads_still_unplugs_promptly() -> None:
    """A full pty must not hold the simulator's thread (it did, at exit)."""
    import fcntl
    import os
    import struct
    import termios

    instrument = SimulatedInstrument(read_terminator="\n", write_terminator="\r\n")
    instrument.start()
    writer = threading.Thread(target=instrument.send, args=("x" * 100_000,), daemon=True)
    try:
        writer.start()  # far more than a pty holds: the write must wait for room
        probe = os.open(instrument.path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            deadline = time.monotonic() + BOUND
            waiting = 0
            while waiting < 1000 and time.monotonic() < deadline:
                size = fcntl.ioctl(probe, termios.FIONREAD, b"\0\0\0\0")
                waiting = struct.unpack("i", size)[0]
                time.sleep(0.01)
            assert waiting >= 1000, "the write never filled the pty"
        finally:
            os.close(probe)
        assert writer.is_alive()  # stuck for room, as a line nobody reads
    finally:
        instrument.stop()  # raises if the simulator's thread did not stop
    writer.join(BOUND)
    assert not writer.is_alive() and not instrument.plugged

"""A stand-in for libgpiod v2's Python module (``gpiod``), built on caioc's simulated pins.

It follows the documented API of the bindings (gpiod >= 2.1): ``Chip``
(``get_info``, ``get_line_info``, ``line_offset_from_id``,
``request_lines``, ``close``, context manager), ``ChipInfo``, ``LineInfo``,
``LineSettings``, ``LineRequest`` (``get_value``, ``set_value``,
``reconfigure_lines``, ``fd``, ``wait_edge_events``, ``read_edge_events``,
``release``), ``EdgeEvent`` with ``EdgeEvent.Type``, the enums of
``gpiod.line`` and ``is_gpiochip_device``. Underneath, every chip is a
:class:`~caioc.hw.sim.SimulatedGPIO`, so levels, pulls and edges really
flow: the test drives a simulated button and the backend under test reads
the edge from the request's file descriptor, as it would from the kernel.

Like the kernel: a line can be requested once (EBUSY otherwise), edges are
of the *logical* value (``active_low`` inverts), and events carry
``CLOCK_MONOTONIC`` nanoseconds (the simulation's clock). Unlike the
kernel, the debounce period drops edges closer than it to the last one
reported instead of waiting for the line to settle; either way a bouncing
contact gives one event per press.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import errno
import itertools
import os
import sys
import threading
import types
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caioc.hw import Direction as SimDirection
from caioc.hw import Edge as SimEdge
from caioc.hw import EdgeEvent as SimEdgeEvent
from caioc.hw import Pull as SimPull
from caioc.hw import VirtualClock
from caioc.hw.sim import SimulatedGPIO, SimulatedPin


class LineDirection(enum.Enum):
    AS_IS = 1
    INPUT = 2
    OUTPUT = 3


class Value(enum.Enum):
    INACTIVE = 0
    ACTIVE = 1

    def __bool__(self) -> bool:
        return self is Value.ACTIVE


class Bias(enum.Enum):
    AS_IS = 1
    UNKNOWN = 2
    DISABLED = 3
    PULL_UP = 4
    PULL_DOWN = 5


class LineEdge(enum.Enum):
    NONE = 1
    RISING = 2
    FALLING = 3
    BOTH = 4


class Drive(enum.Enum):
    PUSH_PULL = 1
    OPEN_DRAIN = 2
    OPEN_SOURCE = 3


class EventClock(enum.Enum):
    MONOTONIC = 1
    REALTIME = 2
    HTE = 3


@dataclass
class LineSettings:
    direction: LineDirection = LineDirection.AS_IS
    edge_detection: LineEdge = LineEdge.NONE
    bias: Bias = Bias.AS_IS
    drive: Drive = Drive.PUSH_PULL
    active_low: bool = False
    debounce_period: datetime.timedelta = field(default_factory=datetime.timedelta)
    event_clock: EventClock = EventClock.MONOTONIC
    output_value: Value = Value.INACTIVE


@dataclass(frozen=True)
class ChipInfo:
    name: str
    label: str
    num_lines: int


@dataclass(frozen=True)
class LineInfo:
    offset: int
    name: str | None
    used: bool
    consumer: str | None
    direction: LineDirection
    active_low: bool
    bias: Bias
    drive: Drive
    edge_detection: LineEdge
    event_clock: EventClock
    debounced: bool
    debounce_period: datetime.timedelta


@dataclass(frozen=True)
class EdgeEvent:
    class Type(enum.Enum):
        RISING_EDGE = 1
        FALLING_EDGE = 2

    event_type: EdgeEvent.Type
    timestamp_ns: int
    line_offset: int
    global_seqno: int
    line_seqno: int


class RequestReleasedError(Exception):
    pass


class ChipClosedError(Exception):
    pass


_PULLS = {Bias.DISABLED: SimPull.NONE, Bias.PULL_UP: SimPull.UP, Bias.PULL_DOWN: SimPull.DOWN}


@dataclass
class FakeChip:
    """One simulated chip: its device path, label, line names and simulated lines."""

    path: str
    name: str
    label: str
    sim: SimulatedGPIO
    num_lines: int
    line_names: list[str]
    requests: dict[int, tuple[LineRequest, LineSettings]] = field(default_factory=dict)
    seqno: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def pin(self, offset: int) -> SimulatedPin:
        return self.sim.pin(offset)


class FakeGpiod:
    """A world of simulated chips and the ``gpiod`` module that sees them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.chips: dict[str, FakeChip] = {}
        self.module = self._make_module()

    def add_chip(
        self,
        number: int,
        label: str,
        *,
        num_lines: int = 54,
        line_names: list[str] | None = None,
        clock: VirtualClock | None = None,
    ) -> SimulatedGPIO:
        """A chip at ``<directory>/gpiochip<number>``; returns its simulated lines."""
        path = self.directory / f"gpiochip{number}"
        path.touch()
        names = line_names or [f"GPIO{offset}" for offset in range(num_lines)]
        sim = SimulatedGPIO(clock=clock, pin_numbers=range(num_lines))
        self.chips[str(path)] = FakeChip(
            str(path), f"gpiochip{number}", label, sim, num_lines, names
        )
        return sim

    @property
    def pattern(self) -> str:
        return str(self.directory / "gpiochip*")

    def install(self, monkeypatch: Any) -> types.ModuleType:
        monkeypatch.setitem(sys.modules, "gpiod", self.module)
        monkeypatch.setitem(sys.modules, "gpiod.line", self.module.line)
        return self.module

    def _make_module(self) -> types.ModuleType:
        world = self
        line = types.ModuleType("gpiod.line")
        line.Direction = LineDirection  # type: ignore[attr-defined]
        line.Value = Value  # type: ignore[attr-defined]
        line.Bias = Bias  # type: ignore[attr-defined]
        line.Edge = LineEdge  # type: ignore[attr-defined]
        line.Drive = Drive  # type: ignore[attr-defined]
        line.Clock = EventClock  # type: ignore[attr-defined]
        module = types.ModuleType("gpiod")
        module.line = line  # type: ignore[attr-defined]
        module.api_version = "2.1.0"  # type: ignore[attr-defined]
        module.ChipInfo = ChipInfo  # type: ignore[attr-defined]
        module.LineInfo = LineInfo  # type: ignore[attr-defined]
        module.LineSettings = LineSettings  # type: ignore[attr-defined]
        module.EdgeEvent = EdgeEvent  # type: ignore[attr-defined]
        module.LineRequest = LineRequest  # type: ignore[attr-defined]
        module.RequestReleasedError = RequestReleasedError  # type: ignore[attr-defined]
        module.ChipClosedError = ChipClosedError  # type: ignore[attr-defined]
        module.Chip = type("Chip", (Chip,), {"world": world})  # type: ignore[attr-defined]

        def is_gpiochip_device(path: str) -> bool:
            return str(path) in world.chips

        def request_lines(path: str, *args: Any, **kwargs: Any) -> LineRequest:
            return module.Chip(path).request_lines(*args, **kwargs)  # type: ignore[attr-defined,no-any-return]

        module.is_gpiochip_device = is_gpiochip_device  # type: ignore[attr-defined]
        module.request_lines = request_lines  # type: ignore[attr-defined]
        return module


class Chip:
    """``gpiod.Chip``: an open GPIO chip."""

    world: FakeGpiod

    def __init__(self, path: str) -> None:
        chip = self.world.chips.get(str(path))
        if chip is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        self._chip: FakeChip | None = chip

    def __enter__(self) -> Chip:
        self._check()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _check(self) -> FakeChip:
        if self._chip is None:
            raise ChipClosedError()
        return self._chip

    def close(self) -> None:
        self._check()
        self._chip = None

    @property
    def path(self) -> str:
        return self._check().path

    def get_info(self) -> ChipInfo:
        chip = self._check()
        return ChipInfo(chip.name, chip.label, chip.num_lines)

    def line_offset_from_id(self, id: int | str) -> int:
        chip = self._check()
        if isinstance(id, int):
            if not 0 <= id < chip.num_lines:
                raise ValueError(f"line offset {id} out of range")
            return id
        if id in chip.line_names:
            return chip.line_names.index(id)
        if id.isdigit():
            return self.line_offset_from_id(int(id))
        raise FileNotFoundError(errno.ENOENT, f"line {id!r} not found")

    def get_line_info(self, line: int | str) -> LineInfo:
        chip = self._check()
        offset = self.line_offset_from_id(line)
        held = chip.requests.get(offset)
        settings = held[1] if held else LineSettings()
        pin = chip.pin(offset)
        return LineInfo(
            offset,
            chip.line_names[offset],
            held is not None,
            held[0].consumer if held else None,
            LineDirection.OUTPUT if pin.direction is SimDirection.OUTPUT else LineDirection.INPUT,
            settings.active_low,
            settings.bias,
            settings.drive,
            settings.edge_detection,
            settings.event_clock,
            settings.debounce_period > datetime.timedelta(0),
            settings.debounce_period,
        )

    def request_lines(
        self,
        config: dict[Any, LineSettings | None],
        consumer: str | None = None,
        event_buffer_size: int | None = None,
        output_values: dict[Any, Value] | None = None,
    ) -> LineRequest:
        chip = self._check()
        settings: dict[int, LineSettings] = {}
        for lines, line_settings in config.items():
            for line in lines if isinstance(lines, tuple) else (lines,):
                offset = self.line_offset_from_id(line)
                if offset in settings:
                    raise ValueError(f"line must be configured exactly once - {offset} repeats")
                settings[offset] = line_settings or LineSettings()
        for line, value in (output_values or {}).items():
            settings[self.line_offset_from_id(line)].output_value = value
        for offset in settings:
            if offset in chip.requests:
                raise OSError(errno.EBUSY, "Device or resource busy")
        return LineRequest(chip, settings, consumer)


class LineRequest:
    """``gpiod.LineRequest``: lines held for exclusive use, with their edge-event queue."""

    def __init__(self, chip: FakeChip, settings: dict[int, LineSettings], consumer: str | None):
        self._chip: FakeChip | None = chip
        self.consumer = consumer
        self.chip_name = chip.name
        self.offsets = list(settings)
        self.lines = list(settings)
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self._events: deque[EdgeEvent] = deque()
        self._lock = threading.Lock()
        self._line_seqno: dict[int, int] = {}
        for offset, line_settings in settings.items():
            chip.requests[offset] = (self, line_settings)
            self._apply(offset, line_settings)

    def __enter__(self) -> LineRequest:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def _check(self) -> FakeChip:
        if self._chip is None:
            raise RequestReleasedError()
        return self._chip

    @property
    def fd(self) -> int:
        self._check()
        return self._read_fd

    def _offset(self, line: int | str) -> int:
        chip = self._check()
        offset = chip.line_names.index(line) if isinstance(line, str) else line
        if offset not in self.offsets:
            raise ValueError(f"line {line!r} is not part of this request")
        return offset

    def _settings(self, offset: int) -> LineSettings:
        return self._check().requests[offset][1]

    def _apply(self, offset: int, settings: LineSettings) -> None:
        chip = self._check()
        pin = chip.pin(offset)
        pin.when_changed = None
        pin.edges = SimEdge.NONE
        if settings.bias in _PULLS:
            pin.pull = _PULLS[settings.bias]
        if settings.direction is LineDirection.OUTPUT:
            pin.output_with_value(bool(settings.output_value) ^ settings.active_low)
            return
        if settings.direction is LineDirection.INPUT:
            pin.direction = SimDirection.INPUT
        if settings.edge_detection is not LineEdge.NONE:
            debounce = settings.debounce_period.total_seconds()
            pin.bounce = debounce or None
            pin.edges = SimEdge.BOTH
            pin.when_changed = lambda event: self._edge(offset, event)

    def _edge(self, offset: int, event: SimEdgeEvent) -> None:
        if self._chip is None:
            return
        settings = self._settings(offset)
        level = event.level ^ settings.active_low
        wanted = settings.edge_detection
        if (wanted is LineEdge.RISING and not level) or (wanted is LineEdge.FALLING and level):
            return
        with self._lock:
            self._line_seqno[offset] = self._line_seqno.get(offset, 0) + 1
            self._events.append(
                EdgeEvent(
                    EdgeEvent.Type.RISING_EDGE if level else EdgeEvent.Type.FALLING_EDGE,
                    round(event.timestamp * 1e9),
                    offset,
                    next(self._chip.seqno),
                    self._line_seqno[offset],
                )
            )
        os.write(self._write_fd, b"\0")

    def get_value(self, line: int | str) -> Value:
        offset = self._offset(line)
        level = self._check().pin(offset).value ^ self._settings(offset).active_low
        return Value.ACTIVE if level else Value.INACTIVE

    def get_values(self, lines: list[int | str] | None = None) -> list[Value]:
        return [self.get_value(line) for line in (lines or self.offsets)]

    def set_value(self, line: int | str, value: Value) -> None:
        offset = self._offset(line)
        settings = self._settings(offset)
        if settings.direction is not LineDirection.OUTPUT:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        self._check().pin(offset).value = bool(value) ^ settings.active_low

    def set_values(self, values: dict[int | str, Value]) -> None:
        for line, value in values.items():
            self.set_value(line, value)

    def reconfigure_lines(self, config: dict[Any, LineSettings | None]) -> None:
        chip = self._check()
        for lines, settings in config.items():
            for line in lines if isinstance(lines, tuple) else (lines,):
                offset = self._offset(line)
                chip.requests[offset] = (self, settings or LineSettings())
                self._apply(offset, chip.requests[offset][1])

    def wait_edge_events(self, timeout: datetime.timedelta | float | None = None) -> bool:
        import select

        self._check()
        seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else timeout
        ready, _, _ = select.select([self._read_fd], [], [], seconds)
        return bool(ready)

    def read_edge_events(self, max_events: int | None = None) -> list[EdgeEvent]:
        self._check()
        with self._lock:
            count = len(self._events) if max_events is None else min(max_events, len(self._events))
            events = [self._events.popleft() for _ in range(count)]
        with contextlib.suppress(BlockingIOError):
            os.read(self._read_fd, max(count, 1))
        return events

    def release(self) -> None:
        chip = self._check()
        for offset in self.offsets:
            pin = chip.pin(offset)
            pin.when_changed = None
            pin.edges = SimEdge.NONE
            pin.direction = SimDirection.INPUT  # the line is nobody's now
            del chip.requests[offset]
        self._chip = None
        os.close(self._read_fd)
        os.close(self._write_fd)

    @property
    def released(self) -> bool:
        return self._chip is None

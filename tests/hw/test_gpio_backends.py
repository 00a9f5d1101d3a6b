"""The hardware GPIO backends (gpiod, lgpio, RPi.GPIO), each on a fake of its library.

The fakes (``fake_gpiod``, ``fake_lgpio``, ``fake_rpigpio``) follow each
library's documented API and sit on caioc's simulated pins, so a level
driven on a simulated line really travels through the library calls the
backend makes: request fds and edge-event reads for gpiod, alert callbacks
for lgpio, event-detect callbacks for RPi.GPIO.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from waiting import run, until

from caioc.hw import (
    BackendUnavailable,
    DeviceClosed,
    Direction,
    Edge,
    EdgeEvent,
    GPIOBackend,
    PinError,
    Pull,
    VirtualClock,
    gpio_support,
    load_backend,
)
from caioc.hw.sim import SimulatedGPIO

from .conftest import BOUND
from .fake_gpiod import FakeGpiod
from .fake_lgpio import FakeLgpio
from .fake_rpigpio import FakeRPiGPIO

KINDS = ["gpiod", "lgpio", "rpigpio"]


@dataclass
class Rig:
    """A backend under test, the simulated lines under its fake library, and the fake."""

    kind: str
    backend: GPIOBackend
    sim: SimulatedGPIO
    world: Any

    def library_debounce(self, number: int) -> float | None:
        """The debounce time the backend handed to the library, seconds."""
        if self.kind == "gpiod":
            chip = next(iter(c for c in self.world.chips.values() if c.label == "pinctrl-rp1"))
            period: datetime.timedelta = chip.requests[number][1].debounce_period
            return period.total_seconds() or None
        if self.kind == "lgpio":
            micros = [h.debounce_us.get(number) for h in self.world.handles.values()]
            found = [m for m in micros if m]
            return found[0] / 1e6 if found else None
        detecting = self.world.detecting.get(number)
        return detecting[1] / 1000 if detecting and detecting[1] else None

    def held(self, number: int) -> bool:
        """Whether the library still has the line claimed."""
        if self.kind == "gpiod":
            return any(number in chip.requests for chip in self.world.chips.values())
        if self.kind == "lgpio":
            return any(number in h.claims for h in self.world.handles.values())
        return number in self.world.setup_as


def make_rig(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: VirtualClock | None = None
) -> Rig:
    world: Any
    if kind == "rpigpio":
        world = FakeRPiGPIO(clock=clock)
        world.install(monkeypatch)
        sim = world.sim
    else:
        world = FakeGpiod(tmp_path) if kind == "gpiod" else FakeLgpio(tmp_path)
        # A Pi 5 as the kernel shows it: the header's lines are on the RP1
        # chip, which is not the first gpiochip.
        world.add_chip(0, "gpio-brcmstb@107d508500", num_lines=32, clock=clock)
        names = [f"GPIO{n}" for n in range(54)]
        names[0:2] = ["ID_SDA", "ID_SCL"]
        sim = world.add_chip(4, "pinctrl-rp1", line_names=names, clock=clock)
        world.install(monkeypatch)
        monkeypatch.setattr(gpio_support, "CHIP_GLOB", world.pattern)
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    return Rig(kind, load_backend(kind, **options), sim, world)


@pytest.fixture(params=KINDS)
def rig(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Rig]:
    made = make_rig(request.param, tmp_path, monkeypatch)
    yield made
    made.backend.close()
    if hasattr(made.world, "close"):
        made.world.close()


@pytest.fixture(params=KINDS)
def virtual_rig(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Rig, VirtualClock]]:
    clock = VirtualClock(stall_timeout=BOUND)
    made = make_rig(request.param, tmp_path, monkeypatch, clock)
    yield made, clock
    made.backend.close()
    if hasattr(made.world, "close"):
        made.world.close()


# Finding the chip.


@pytest.mark.parametrize("kind", ["gpiod", "lgpio"])
def test_the_chip_is_found_by_its_label_not_its_number(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(kind, tmp_path, monkeypatch)
    with rig.backend as backend:
        assert backend.chip_label == "pinctrl-rp1"  # type: ignore[attr-defined]
        assert list(backend.pin_numbers) == list(range(54))
        backend.pin(17).output_with_value(1)
        assert rig.sim.pin(17).level == 1  # the RP1 chip's line, not gpiochip0's
    # a chip asked for by label that is not there: the error says what is
    with pytest.raises(BackendUnavailable, match=r"pinctrl-bcm2711.*gpio-brcmstb.*pinctrl-rp1"):
        load_backend(kind, label="pinctrl-bcm2711")
    if hasattr(rig.world, "close"):
        rig.world.close()


def test_chips_are_tried_in_number_order(tmp_path: Path) -> None:
    for name in ("gpiochip10", "gpiochip2", "gpiochip0"):
        (tmp_path / name).touch()
    paths = gpio_support.chip_paths(str(tmp_path / "gpiochip*"))
    assert [Path(p).name for p in paths] == ["gpiochip0", "gpiochip2", "gpiochip10"]


@pytest.mark.parametrize("kind", ["gpiod", "lgpio"])
def test_pins_by_line_name(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = make_rig(kind, tmp_path, monkeypatch)
    with rig.backend as backend:
        assert backend.pin("ID_SCL").number == 1
        assert backend.pin("GPIO17").number == 17
        with pytest.raises(PinError, match="no pin called 'NOPE'"):
            backend.pin("NOPE")
    if hasattr(rig.world, "close"):
        rig.world.close()


def test_rpigpio_on_a_pi_5_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeRPiGPIO(on_pi_5=True)
    world.install(monkeypatch)
    try:
        with pytest.raises(BackendUnavailable, match="SOC peripheral base"):
            load_backend("rpigpio")
    finally:
        world.close()


def test_rpigpio_refuses_board_numbering_chosen_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeRPiGPIO()
    world.install(monkeypatch)
    world.module.setmode(world.module.BOARD)
    try:
        with pytest.raises(BackendUnavailable, match="BOARD"):
            load_backend("rpigpio")
    finally:
        world.close()


# Inputs, outputs, pulls.


def test_inputs_read_their_pull_and_what_drives_them(rig: Rig) -> None:
    pin = rig.backend.pin(17)
    line = rig.sim.pin(17)
    pin.input_with_pull(Pull.UP)
    assert pin.direction is Direction.INPUT and pin.pull is Pull.UP
    assert line.pull is Pull.UP and pin.value == 1
    line.drive(0)  # a button to ground
    assert pin.value == 0
    line.release()
    pin.pull = Pull.DOWN
    assert line.pull is Pull.DOWN and pin.value == 0


def test_outputs_drive_the_line(rig: Rig) -> None:
    pin = rig.backend.pin(27)
    line = rig.sim.pin(27)
    pin.output_with_value(1)
    assert line.direction is Direction.OUTPUT and line.level == 1 and pin.value == 1
    pin.value = 0
    assert line.level == 0 and pin.value == 0
    # from a line held high straight to driving it high, never through low
    other = rig.backend.pin(22)
    rig.sim.pin(22).drive(1)
    before = len(rig.sim.pin(22).history)
    other.output_with_value(1)
    rig.sim.pin(22).release()
    assert rig.sim.pin(22).level == 1
    assert len(rig.sim.pin(22).history) == before  # no change at all
    with pytest.raises(PinError, match="output"):
        pin.edges = Edge.BOTH


# Edges.


def test_edges_are_delivered_to_asyncio(rig: Rig) -> None:
    pin = rig.backend.pin(5)
    line = rig.sim.pin(5)
    pin.input_with_pull(Pull.UP)
    pin.edges = Edge.BOTH

    async def scenario() -> None:
        events: list[EdgeEvent] = []

        async def listen() -> None:
            async for event in pin.edge_events():
                events.append(event)
                if len(events) == 2:
                    return

        task = asyncio.ensure_future(listen())
        await asyncio.sleep(0)  # subscribed
        line.drive(0)
        await until(lambda: len(events) == 1, "the press")
        line.release()
        await asyncio.wait_for(task, BOUND)
        assert [(e.pin, e.level) for e in events] == [(5, 0), (5, 1)]
        assert events[0].timestamp <= events[1].timestamp
        if rig.kind != "rpigpio":  # the library's own timestamps, from the line
            assert [e.timestamp for e in events] == [t for t, _ in list(line.history)[-2:]]
        # one edge kind only
        pin.edges = Edge.FALLING
        edge = asyncio.ensure_future(pin.wait_for_edge_async(BOUND))
        await asyncio.sleep(0)  # one loop step: the wait is armed
        line.drive(0)
        falling = await edge
        assert falling is not None and falling.edge is Edge.FALLING

    run(scenario)


def test_edges_with_callbacks_and_blocking_waits(rig: Rig) -> None:
    pin = rig.backend.pin(6)
    line = rig.sim.pin(6)
    pin.input_with_pull(Pull.DOWN)
    seen: list[int] = []
    pin.when_changed = lambda event: seen.append(event.level)
    line.drive(1)

    async def wait() -> None:
        await until(lambda: seen == [1], "the callback")

    run(wait)
    pin.when_changed = None
    pin.edges = Edge.NONE
    line.release()
    assert seen == [1]  # edges off: nothing more
    assert pin.pull is Pull.DOWN and pin.value == 0


def test_bounce_filters_chatter_and_reaches_the_library(
    virtual_rig: tuple[Rig, VirtualClock],
) -> None:
    rig, clock = virtual_rig
    pin = rig.backend.pin(13)
    line = rig.sim.pin(13)
    pin.input_with_pull(Pull.UP)
    seen: list[tuple[int, float]] = []
    pin.when_changed = lambda event: seen.append((event.level, event.timestamp))
    pin.bounce = 0.02
    assert rig.library_debounce(13) == pytest.approx(0.02)

    async def scenario() -> None:
        # a press that chatters for 3 ms
        for level in (0, 1, 0, 1, 0):
            line.drive(level)
            clock.advance(0.0005)
        await until(lambda: len(seen) >= 1, "the press")
        clock.advance(0.05)
        line.release()  # released 50 ms later
        await until(lambda: len(seen) >= 2, "the release")
        assert [level for level, _ in seen] == [0, 1]
        pin.bounce = None
        assert rig.library_debounce(13) is None
        line.drive(0)
        line.drive(1)
        await until(lambda: len(seen) >= 4, "unfiltered edges")
        # Edges arrive in order, so these two are the sentinel: no chatter
        # edge got through the filter before them. (Their levels are not
        # compared: RPi.GPIO's callbacks read the level late, both may see 1.)
        assert len(seen) == 4 and [level for level, _ in seen[:2]] == [0, 1]

    run(scenario)


# PWM.


def test_pwm(rig: Rig) -> None:
    pin = rig.backend.pin(18)
    line = rig.sim.pin(18)
    pin.frequency = 200.0
    pin.duty_cycle = 0.25
    assert pin.direction is Direction.OUTPUT
    assert pin.frequency == 200.0 and pin.duty_cycle == 0.25
    if rig.kind == "gpiod":
        # software PWM: a thread switches the line, both levels show up
        async def switching() -> None:
            start = len(line.history)
            await until(
                lambda: {lvl for _, lvl in list(line.history)[start:]} == {0, 1}, "switching"
            )

        run(switching)
    else:  # the library's PWM got the settings (duty cycle in percent there)
        assert line.frequency == 200.0 and line.duty_cycle == pytest.approx(0.25)
    pin.duty_cycle = 1.0
    if rig.kind == "gpiod":

        async def held_high() -> None:
            await until(lambda: line.level == 1, "the line held high")

        run(held_high)
    else:
        assert line.duty_cycle == pytest.approx(1.0)
    pin.frequency = None
    assert pin.frequency is None and pin.duty_cycle == 0.0
    if rig.kind != "gpiod":
        assert line.frequency is None
    history = len(line.history)
    pin.value = 0
    assert line.level == 0
    assert len(line.history) <= history + 1  # stopped: no more switching


# Closing.


def test_close_releases_the_lines(rig: Rig) -> None:
    button, relay = rig.backend.pin(17), rig.backend.pin(27)
    button.input_with_pull(Pull.UP)
    button.edges = Edge.BOTH
    relay.output_with_value(1)
    assert rig.held(17) and rig.held(27)
    button.close()
    button.close()  # idempotent
    assert not rig.held(17) and rig.held(27)
    with pytest.raises(DeviceClosed):
        _ = button.value
    rig.sim.pin(17).drive(0)  # nobody listens any more: no error
    rig.backend.close()
    assert not rig.held(27)
    assert rig.sim.pin(27).direction is Direction.INPUT
    with pytest.raises(DeviceClosed):
        rig.backend.pin(27)

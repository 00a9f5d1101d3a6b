"""GPIO: pin names, backend selection, the contract, and the simulated backend."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from caioc.hw import (
    BackendUnavailable,
    DeviceClosed,
    Direction,
    Edge,
    EdgeEvent,
    GPIOBackend,
    Pin,
    PinError,
    Pull,
    UnsupportedOperation,
    VirtualClock,
    load_backend,
    parse_pin,
)
from caioc.hw import gpio as gpio_module
from caioc.hw.sim import SimulatedGPIO

from .conftest import BOUND

Starter = Callable[..., concurrent.futures.Future[Any]]


@pytest.fixture
def gpio(clock: VirtualClock) -> Iterator[SimulatedGPIO]:
    with SimulatedGPIO(clock=clock) as backend:
        yield backend


# Names and selection.


@pytest.mark.parametrize("spec", [17, "17", "GPIO17", "gpio17", "BCM17", " GPIO17 "])
def test_pins_are_named_by_bcm_number(spec: int | str) -> None:
    assert parse_pin(spec) == 17


@pytest.mark.parametrize("spec", ["pin17", "GPIO", "", -1, 1.5, True, "P1-11"])
def test_bad_pin_names_are_pin_errors(spec: Any) -> None:
    with pytest.raises(PinError):
        parse_pin(spec)


def test_unknown_pin_numbers_are_refused(gpio: SimulatedGPIO) -> None:
    with pytest.raises(PinError):
        gpio.pin(54)
    assert SimulatedGPIO(pin_numbers=range(28)).pin("GPIO27").number == 27


def test_backend_by_name_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAIOC_GPIO_BACKEND", raising=False)
    assert isinstance(load_backend("sim"), SimulatedGPIO)
    monkeypatch.setenv("CAIOC_GPIO_BACKEND", "SIM")
    clock = VirtualClock()
    backend = load_backend(clock=clock)
    assert isinstance(backend, SimulatedGPIO) and backend.clock is clock
    monkeypatch.setenv("CAIOC_GPIO_BACKEND", "bogus")
    with pytest.raises(BackendUnavailable, match="unknown GPIO backend 'bogus'"):
        load_backend()


@pytest.mark.parametrize(
    ("name", "library", "extra"),
    [("gpiod", "gpiod", "gpiod"), ("lgpio", "lgpio", "lgpio"), ("rpigpio", "RPi.GPIO", "rpi")],
)
def test_a_missing_library_names_the_pip_extra(
    name: str, library: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # importing it raises ImportError
    with pytest.raises(BackendUnavailable, match=rf"pip install caioc\[{extra}\]") as caught:
        load_backend(name)
    assert isinstance(caught.value, ImportError)


def test_hardware_libraries_are_imported_only_when_chosen() -> None:
    load_backend("sim")
    for library in ("gpiod", "lgpio", "RPi.GPIO", "RPi"):
        assert library not in sys.modules


def test_no_gpio_hardware_means_the_simulation_and_a_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CAIOC_GPIO_BACKEND", raising=False)
    monkeypatch.setattr(gpio_module.glob, "glob", lambda pattern: [])
    with caplog.at_level(logging.INFO, logger="caioc.hw"):
        backend = load_backend()
    assert isinstance(backend, SimulatedGPIO)
    assert "no GPIO hardware" in caplog.text and "simulated" in caplog.text


def test_hardware_without_a_library_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(gpio_module.glob, "glob", lambda pattern: ["/dev/gpiochip0"])
    monkeypatch.setattr(gpio_module, "_library_present", lambda name: False)
    with caplog.at_level(logging.WARNING, logger="caioc.hw"):
        assert gpio_module.detect_backend() == "sim"
    assert "pip install caioc[gpiod]" in caplog.text
    monkeypatch.setattr(gpio_module, "_library_present", lambda name: name == "lgpio")
    assert gpio_module.detect_backend() == "lgpio"


# The contract: a backend that overrides only what it must.


class MinimalPin(Pin):
    def __init__(self, backend: GPIOBackend, number: int) -> None:
        super().__init__(backend, number)
        self._direction = Direction.INPUT
        self._level = 0

    def _get_direction(self) -> Direction:
        return self._direction

    def _set_direction(self, direction: Direction) -> None:
        self._direction = direction

    def _get_value(self) -> int:
        return self._level

    def _set_value(self, value: int) -> None:
        self._level = value


class MinimalBackend(GPIOBackend):
    name = "minimal"

    def _make_pin(self, number: int) -> Pin:
        return MinimalPin(self, number)


def test_a_backend_with_only_the_required_methods_works_and_refuses_the_rest() -> None:
    with MinimalBackend() as backend:
        pin = backend.pin("GPIO4")
        assert backend.pin(4) is pin  # one object per line
        pin.output_with_value(True)
        assert pin.value == 1
        assert pin.pull is Pull.NONE and pin.frequency is None and pin.duty_cycle == 0.0
        pin.pull = Pull.NONE
        for action in (
            lambda: setattr(pin, "pull", Pull.UP),
            lambda: setattr(pin, "edges", Edge.BOTH),
            lambda: setattr(pin, "frequency", 100.0),
            lambda: setattr(pin, "duty_cycle", 0.5),
        ):
            with pytest.raises(UnsupportedOperation):
                action()
    assert pin.closed
    with pytest.raises(DeviceClosed):
        backend.pin(5)


# The simulated backend.


def test_pulls_and_floating_inputs(gpio: SimulatedGPIO) -> None:
    pin = gpio.pin(17)
    assert pin.direction is Direction.INPUT and pin.value == 0
    pin.pull = Pull.UP
    assert pin.value == 1
    pin.pull = Pull.NONE
    assert pin.value == 1  # floating: stays where it was
    pin.input_with_pull(Pull.DOWN)
    assert pin.value == 0 and pin.pull is Pull.DOWN


def test_outputs_drive_wired_inputs(gpio: SimulatedGPIO) -> None:
    led, sense = gpio.pin("GPIO5"), gpio.pin("GPIO6")
    gpio.wire(5, 6)
    led.output_with_value(1)
    assert sense.value == 1
    led.value = False
    assert sense.value == 0
    with pytest.raises(PinError, match="is an input"):
        sense.value = 1
    gpio.unwire(5, 6)
    sense.pull = Pull.UP
    assert sense.value == 1


def test_a_new_pin_takes_the_level_of_its_line(gpio: SimulatedGPIO) -> None:
    gpio.wire(20, 21)
    gpio.pin(20).output_with_value(1)
    assert gpio.pin(21).value == 1


def test_contention_low_wins(gpio: SimulatedGPIO) -> None:
    a, b, c = gpio.pin(1), gpio.pin(2), gpio.pin(3)
    gpio.wire(1, 2)
    gpio.wire(2, 3)  # one line through three pins
    a.output_with_value(1)
    assert c.value == 1
    b.output_with_value(0)
    assert a.value == 0 and c.value == 0
    c.drive(1)
    assert c.value == 0


def test_edges_reach_callbacks_with_virtual_timestamps(
    gpio: SimulatedGPIO, clock: VirtualClock
) -> None:
    button = gpio.pin(27)
    events: list[EdgeEvent] = []
    button.pull = Pull.UP
    button.when_changed = events.append  # turns on BOTH edges
    assert button.edges is Edge.BOTH
    clock.advance(1.0)
    button.drive(0)
    clock.advance(0.25)
    button.release()
    assert events == [EdgeEvent(27, 0, 1.0), EdgeEvent(27, 1, 1.25)]
    assert [event.edge for event in events] == [Edge.FALLING, Edge.RISING]
    assert list(button.history) == [(0.0, 0), (0.0, 1), (1.0, 0), (1.25, 1)]

    button.edges = Edge.FALLING
    button.drive(0)
    button.release()
    assert [event.level for event in events] == [0, 1, 0]
    button.edges = Edge.RISING
    button.drive(0)
    button.release()
    assert [event.level for event in events] == [0, 1, 0, 1]
    button.when_changed = None
    button.drive(0)
    assert len(events) == 4


def test_bounce_drops_edges_too_close_together(gpio: SimulatedGPIO, clock: VirtualClock) -> None:
    pin = gpio.pin(22)
    events: list[EdgeEvent] = []
    pin.when_changed = events.append
    pin.bounce = 0.01
    pin.drive(1)
    clock.advance(0.002)
    pin.drive(0)  # bounce: dropped
    clock.advance(0.02)
    pin.drive(1)
    assert [(e.level, e.timestamp) for e in events] == [(1, 0.0), (1, 0.022)]
    with pytest.raises(PinError):
        pin.bounce = -1


def test_a_broken_callback_does_not_stop_edges(
    gpio: SimulatedGPIO, caplog: pytest.LogCaptureFixture
) -> None:
    pin = gpio.pin(9)

    def broken(event: EdgeEvent) -> None:
        raise RuntimeError("bug in user code")

    pin.when_changed = broken
    with caplog.at_level(logging.ERROR, logger="caioc.hw"):
        pin.drive(1)
    assert "callback failed" in caplog.text
    assert pin.value == 1


def test_outputs_keep_history_but_report_no_edges(gpio: SimulatedGPIO, clock: VirtualClock) -> None:
    led = gpio.pin(12)
    events: list[EdgeEvent] = []
    led.when_changed = events.append
    led.direction = Direction.OUTPUT
    for level in (1, 0, 1):
        clock.advance(0.5)
        led.value = level
    assert list(led.history)[1:] == [(0.5, 1), (1.0, 0), (1.5, 1)]
    assert events == []


def test_stuck_line(gpio: SimulatedGPIO) -> None:
    relay, sense = gpio.pin(23), gpio.pin(24)
    gpio.wire(23, 24)
    relay.output_with_value(0)
    relay.stick(1)
    assert relay.stuck == 1 and relay.value == 1 and sense.value == 1
    relay.value = 0
    assert sense.value == 1  # the drive does not get through
    relay.unstick()
    assert relay.stuck is None and sense.value == 0


def test_pwm_settings_and_history(gpio: SimulatedGPIO, clock: VirtualClock) -> None:
    fan = gpio.pin(18)
    fan.duty_cycle = 0.25  # starts PWM at the default frequency
    assert fan.direction is Direction.OUTPUT
    assert fan.frequency == SimulatedGPIO.default_pwm_frequency
    clock.advance(1.0)
    fan.frequency = 25_000
    fan.duty_cycle = 0.75
    clock.advance(1.0)
    fan.frequency = None
    assert fan.duty_cycle == 0.0
    assert list(fan.pwm_history) == [
        (0.0, 100.0, 0.25),
        (1.0, 25_000, 0.25),
        (1.0, 25_000, 0.75),
        (2.0, None, 0.0),
    ]
    with pytest.raises(PinError):
        fan.duty_cycle = 1.5
    with pytest.raises(PinError):
        fan.frequency = 0


def test_wait_for_edge_from_a_thread(
    gpio: SimulatedGPIO, clock: VirtualClock, background: Starter
) -> None:
    pin = gpio.pin(16)
    with pytest.raises(PinError, match="set edges"):
        pin.wait_for_edge(1.0)
    pin.edges = Edge.RISING
    waiting = background(pin.wait_for_edge, 1.0)
    clock.wait_for_waiters(1)
    clock.advance(0.5)
    pin.drive(1)
    assert waiting.result(timeout=BOUND) == EdgeEvent(16, 1, 0.5)

    waiting = background(pin.wait_for_edge, 1.0)
    clock.wait_for_waiters(1)
    clock.advance(1.0)
    assert waiting.result(timeout=BOUND) is None  # timed out on the virtual clock


def test_pulse_on_the_virtual_clock(gpio: SimulatedGPIO, clock: VirtualClock) -> None:
    pin = gpio.pin(26)
    pin.pull = Pull.DOWN
    events: list[EdgeEvent] = []
    pin.when_changed = events.append
    pin.pulse(0.1)
    assert pin.value == 1
    clock.advance(0.1)
    assert pin.value == 0
    assert [(e.level, e.timestamp) for e in events] == [(1, 0.0), (0, 0.1)]
    with pytest.raises(TypeError):
        SimulatedGPIO().pin(26).pulse(0.1)


def test_awaiting_edges(gpio: SimulatedGPIO, clock: VirtualClock) -> None:
    pin = gpio.pin(13)
    pin.edges = Edge.BOTH

    async def main() -> None:
        waiting = asyncio.create_task(pin.wait_for_edge_async(1.0))
        await clock.wait_for_waiters_async(1)
        pin.drive(1)
        assert await asyncio.wait_for(waiting, BOUND) == EdgeEvent(13, 1, 0.0)

        waiting = asyncio.create_task(pin.wait_for_edge_async(1.0))
        await clock.wait_for_waiters_async(1)
        clock.advance(1.0)
        assert await asyncio.wait_for(waiting, BOUND) is None

        seen: list[int] = []

        async def collect() -> None:
            async for event in pin.edge_events():
                seen.append(event.level)
                if len(seen) == 3:
                    return

        collecting = asyncio.create_task(collect())
        await asyncio.sleep(0)  # one loop step: the task subscribes, then awaits
        for level in (0, 1, 0):
            pin.drive(level)  # queued even while the consumer is not waiting
        await asyncio.wait_for(collecting, BOUND)
        assert seen == [0, 1, 0]

        async def until_closed() -> list[int]:
            return [event.level async for event in pin.edge_events()]

        listening = asyncio.create_task(until_closed())
        await asyncio.sleep(0)  # one loop step: the task subscribes
        pin.drive(1)
        pin.close()
        assert await asyncio.wait_for(listening, BOUND) == [1]

    asyncio.run(main())


def test_close_is_idempotent_and_use_after_close_raises(gpio: SimulatedGPIO) -> None:
    with gpio.pin(4) as pin:
        pin.output_with_value(1)
    assert pin.closed
    pin.close()
    for action in (
        lambda: pin.value,
        lambda: setattr(pin, "value", 1),
        lambda: pin.direction,
        lambda: setattr(pin, "when_changed", print),
        lambda: pin.wait_for_edge(0),
        pin.__enter__,
    ):
        with pytest.raises(DeviceClosed):
            action()
    fresh = gpio.pin(4)  # the line is free again, released as an input
    assert fresh is not pin and fresh.direction is Direction.INPUT
    gpio.close()
    assert fresh.closed


# Names beyond BCM numbers, parts, and lines that outlive pins.


def test_other_names_go_to_the_pin_resolver_then_the_line_names(gpio: SimulatedGPIO) -> None:
    with pytest.raises(PinError, match="no pin called 'J8:11'"):
        gpio.pin("J8:11")  # no resolver: only BCM numbers

    def header(name: str) -> int:
        if name == "J8:11":
            return 17
        raise ValueError(name)

    gpio.pin_resolver = header
    assert gpio.pin("J8:11").number == 17 and gpio.pin("GPIO17") is gpio.pin("J8:11")
    with pytest.raises(PinError, match="header position"):
        gpio.pin("J8:99")


def test_the_line_outlives_its_pin_objects(gpio: SimulatedGPIO) -> None:
    pin = gpio.pin(5)
    pin.drive(0)  # a button held down
    pin.pull = Pull.UP
    pin.close()
    again = gpio.pin(5)
    assert again is not pin and again.level == 0  # still held
    pin.release()  # the old handle still plays the outside world
    again.pull = Pull.UP
    assert again.level == 1
    assert [level for _, level in again.history] == [0, 1] and again.history is pin.history


def test_an_output_set_in_one_step_does_not_glitch(gpio: SimulatedGPIO) -> None:
    pin = gpio.pin(6)
    pin.input_with_pull(Pull.UP)
    pin.output_with_value(1)
    assert pin.direction is Direction.OUTPUT and pin.level == 1
    assert [level for _, level in pin.history] == [0, 1]  # never driven low


def test_parts_are_attached_by_calling_their_connect(gpio: SimulatedGPIO) -> None:
    class Jumper:
        def connect(self, backend: SimulatedGPIO) -> None:
            backend.wire(20, 21)

    part = Jumper()
    assert gpio.attach(part) is part
    gpio.pin(20).output_with_value(1)
    assert gpio.pin(21).level == 1

"""A stand-in for the ``lgpio`` Python module, built on caioc's simulated pins.

It follows lgpio's documented Python API: ``gpiochip_open``/``_close``,
``gpio_get_chip_info`` (status, lines, name, label), ``gpio_get_line_info``
(status, offset, flags, name, user), ``gpio_claim_input``/``_output``/
``_alert``, ``gpio_free``, ``gpio_read``/``_write``,
``gpio_set_debounce_micros``, ``callback`` (``func(chip, gpio, level,
timestamp_ns)`` on a thread of the library's own, ``.cancel()``),
``tx_pwm`` (frequency, duty cycle in percent; 0 Hz stops) and the
``lgpio.error`` raised for failures, as lgpio does by default. Chips are
:class:`~caioc.hw.sim.SimulatedGPIO` objects, so a test drives a simulated
button and the backend under test gets the alert through the callback.

Like lgpio, a claimed GPIO must be freed before it is claimed again
("GPIO busy"); the debounce drops edges closer than it to the last one
reported (lgpio instead waits for the level to settle).
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caioc.hw import Direction, Edge, EdgeEvent, Pull, VirtualClock
from caioc.hw.sim import SimulatedGPIO

SET_ACTIVE_LOW = 4
SET_OPEN_DRAIN = 8
SET_OPEN_SOURCE = 16
SET_PULL_UP = 32
SET_PULL_DOWN = 64
SET_PULL_NONE = 128
RISING_EDGE = 1
FALLING_EDGE = 2
BOTH_EDGES = 3
TIMEOUT = 2


class error(Exception):
    """lgpio.error: what lgpio raises when a call fails."""


@dataclass
class Claim:
    """How a GPIO is claimed: 'input', 'output' or 'alert', with flags."""

    mode: str
    flags: int
    edges: int = 0


@dataclass
class FakeChip:
    number: int
    label: str
    sim: SimulatedGPIO
    num_lines: int
    line_names: list[str]


@dataclass
class Handle:
    chip: FakeChip
    claims: dict[int, Claim] = field(default_factory=dict)
    callbacks: dict[int, list[Callback]] = field(default_factory=dict)
    pwm: dict[int, tuple[float, float]] = field(default_factory=dict)
    debounce_us: dict[int, int] = field(default_factory=dict)


class Callback:
    """What ``lgpio.callback`` returns."""

    def __init__(self, world: FakeLgpio, handle: int, gpio: int, edge: int, func: Any) -> None:
        self.world, self.handle, self.gpio, self.edge, self.func = world, handle, gpio, edge, func

    def cancel(self) -> None:
        callbacks = self.world.handles[self.handle].callbacks.get(self.gpio, [])
        if self in callbacks:
            callbacks.remove(self)


class FakeLgpio:
    """A world of simulated chips and the ``lgpio`` module that sees them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.chips: dict[int, FakeChip] = {}
        self.handles: dict[int, Handle] = {}
        self._numbers = itertools.count(1)
        self._alerts: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._alert_thread = threading.Thread(target=self._deliver, daemon=True)
        self._alert_thread.start()
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
        (self.directory / f"gpiochip{number}").touch()
        names = line_names or [f"GPIO{offset}" for offset in range(num_lines)]
        sim = SimulatedGPIO(clock=clock, pin_numbers=range(num_lines))
        self.chips[number] = FakeChip(number, label, sim, num_lines, names)
        return sim

    @property
    def pattern(self) -> str:
        return str(self.directory / "gpiochip*")

    def install(self, monkeypatch: Any) -> types.ModuleType:
        monkeypatch.setitem(sys.modules, "lgpio", self.module)
        return self.module

    def close(self) -> None:
        self._alerts.put(None)
        self._alert_thread.join(5)

    def _deliver(self) -> None:
        while (work := self._alerts.get()) is not None:
            work()

    # The module's functions.

    def _handle(self, handle: int) -> Handle:
        if handle not in self.handles:
            raise error("unknown handle")
        return self.handles[handle]

    def _line(self, handle: int, gpio: int) -> Handle:
        state = self._handle(handle)
        if not 0 <= gpio < state.chip.num_lines:
            raise error("bad GPIO number")
        return state

    def gpiochip_open(self, gpiochip: int) -> int:
        if gpiochip not in self.chips:
            raise error("can not open gpiochip")
        number = next(self._numbers)
        self.handles[number] = Handle(self.chips[gpiochip])
        return number

    def gpiochip_close(self, handle: int) -> int:
        state = self._handle(handle)
        for gpio in list(state.claims):
            self.gpio_free(handle, gpio)
        del self.handles[handle]
        return 0

    def gpio_get_chip_info(self, handle: int) -> tuple[int, int, str, str]:
        chip = self._handle(handle).chip
        return 0, chip.num_lines, f"gpiochip{chip.number}", chip.label

    def gpio_get_line_info(self, handle: int, gpio: int) -> tuple[int, int, int, str, str]:
        state = self._line(handle, gpio)
        user = "lg" if any(gpio in h.claims for h in self.handles.values()) else ""
        return 0, gpio, 0, state.chip.line_names[gpio], user

    def _claim(self, handle: int, gpio: int, claim: Claim) -> Any:
        state = self._line(handle, gpio)
        for other in self.handles.values():
            if other.chip is state.chip and gpio in other.claims:
                raise error("GPIO busy")
        pin = state.chip.sim.pin(gpio)
        if claim.flags & SET_PULL_UP:
            pin.pull = Pull.UP
        elif claim.flags & SET_PULL_DOWN:
            pin.pull = Pull.DOWN
        elif claim.flags & SET_PULL_NONE:
            pin.pull = Pull.NONE
        state.claims[gpio] = claim
        return pin

    def gpio_claim_input(self, handle: int, gpio: int, lFlags: int = 0) -> int:
        pin = self._claim(handle, gpio, Claim("input", lFlags))
        pin.direction = Direction.INPUT
        return 0

    def gpio_claim_output(
        self,
        handle: int,
        gpio: int,
        level: int = 0,
        lFlags: int = 0,
    ) -> int:
        pin = self._claim(handle, gpio, Claim("output", lFlags))
        pin.output_with_value(bool(level) ^ bool(lFlags & SET_ACTIVE_LOW))
        return 0

    def gpio_claim_alert(
        self,
        handle: int,
        gpio: int,
        eFlags: int,
        lFlags: int = 0,
        notify_handle: int | None = None,
    ) -> int:
        pin = self._claim(handle, gpio, Claim("alert", lFlags, eFlags))
        pin.direction = Direction.INPUT
        pin.edges = Edge.BOTH
        pin.when_changed = lambda event: self._alert(handle, gpio, event)
        return 0

    def gpio_free(self, handle: int, gpio: int) -> int:
        state = self._line(handle, gpio)
        if state.claims.pop(gpio, None) is None:
            raise error("GPIO not allocated")
        pin = state.chip.sim.pin(gpio)
        pin.when_changed = None
        pin.edges = Edge.NONE
        if gpio in state.pwm:
            del state.pwm[gpio]
            pin.frequency = None
        pin.direction = Direction.INPUT
        return 0

    def gpio_read(self, handle: int, gpio: int) -> int:
        state = self._line(handle, gpio)
        claim = state.claims.get(gpio)
        if claim is None:
            raise error("GPIO not allocated")
        return state.chip.sim.pin(gpio).value ^ bool(claim.flags & SET_ACTIVE_LOW)

    def gpio_write(self, handle: int, gpio: int, level: int) -> int:
        state = self._line(handle, gpio)
        claim = state.claims.get(gpio)
        if claim is None or claim.mode != "output":
            raise error("GPIO not set as an output")
        state.chip.sim.pin(gpio).value = bool(level) ^ bool(claim.flags & SET_ACTIVE_LOW)
        return 0

    def gpio_set_debounce_micros(self, handle: int, gpio: int, debounce_micros: int) -> int:
        state = self._line(handle, gpio)
        state.debounce_us[gpio] = debounce_micros
        state.chip.sim.pin(gpio).bounce = debounce_micros / 1e6 or None
        return 0

    def callback(
        self, handle: int, gpio: int, edge: int = RISING_EDGE, func: Any = None
    ) -> Callback:
        state = self._line(handle, gpio)
        callback = Callback(self, handle, gpio, edge, func)
        state.callbacks.setdefault(gpio, []).append(callback)
        return callback

    def _alert(self, handle: int, gpio: int, event: EdgeEvent) -> None:
        state = self.handles.get(handle)
        if state is None or gpio not in state.claims:
            return
        claim = state.claims[gpio]
        level = event.level ^ bool(claim.flags & SET_ACTIVE_LOW)
        if not claim.edges & (RISING_EDGE if level else FALLING_EDGE):
            return
        for callback in list(state.callbacks.get(gpio, [])):
            if callback.edge & (RISING_EDGE if level else FALLING_EDGE) and callback.func:
                func, chip = callback.func, state.chip.number
                stamp = round(event.timestamp * 1e9)
                self._alerts.put(lambda f=func, c=chip, s=stamp, v=level: f(c, gpio, v, s))

    def tx_pwm(
        self,
        handle: int,
        gpio: int,
        pwm_frequency: float,
        pwm_duty_cycle: float,
        pulse_offset: int = 0,
        pulse_cycles: int = 0,
    ) -> int:
        state = self._line(handle, gpio)
        claim = state.claims.get(gpio)
        if claim is None or claim.mode != "output":
            raise error("GPIO not set as an output")
        if not 0 <= pwm_duty_cycle <= 100 or (pwm_frequency and not 0.1 <= pwm_frequency <= 10000):
            raise error("bad PWM parameter")
        pin = state.chip.sim.pin(gpio)
        if pwm_frequency == 0:
            state.pwm.pop(gpio, None)
            pin.frequency = None
        else:
            state.pwm[gpio] = (pwm_frequency, pwm_duty_cycle)
            pin.frequency = pwm_frequency
            pin.duty_cycle = pwm_duty_cycle / 100.0
        return 0

    def _make_module(self) -> types.ModuleType:
        module = types.ModuleType("lgpio")
        for name, value in globals().items():
            if name.isupper():
                setattr(module, name, value)
        module.error = error  # type: ignore[attr-defined]
        for name in (
            "gpiochip_open",
            "gpiochip_close",
            "gpio_get_chip_info",
            "gpio_get_line_info",
            "gpio_claim_input",
            "gpio_claim_output",
            "gpio_claim_alert",
            "gpio_free",
            "gpio_read",
            "gpio_write",
            "gpio_set_debounce_micros",
            "callback",
            "tx_pwm",
        ):
            setattr(module, name, getattr(self, name))
        return module

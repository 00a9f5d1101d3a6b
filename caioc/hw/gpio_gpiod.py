"""The gpiod backend: libgpiod v2's Python bindings (``pip install caioc[gpiod]``).

Works on every Raspberry Pi, the Pi 5 included, through the kernel's GPIO
character device. What it does with the library:

* the chip is found by its label (:func:`~caioc.hw.gpio_support.find_chip`:
  ``pinctrl-rp1``, ``pinctrl-bcm2711``, ``pinctrl-bcm2835``) unless a path
  or a label is given; pin numbers are the chip's line offsets, which on
  these chips are the BCM numbers; line names (``"ID_SDA"``) are looked up
  on the chip;
* each pin is one line request (``Chip.request_lines``) whose
  ``LineSettings`` (direction, bias, edge detection, debounce period,
  output value) are changed with ``reconfigure_lines``; closing the pin
  releases the request, which gives the line back;
* edge events are read from the request's file descriptor by one watcher
  thread per backend (see :mod:`caioc.hw.gpio_support`) and reported with
  the kernel's timestamp (``CLOCK_MONOTONIC``, the clock of
  :func:`time.monotonic`);
* ``bounce`` also sets the kernel's debounce period, so a chattering
  contact wakes nobody up;
* PWM is **software PWM**: gpiod has none, so a thread switches the line
  (:class:`~caioc.hw.gpio_support.SoftwarePWM`). Good for LEDs and heaters;
  for servos use the lgpio backend or the kernel's PWM driver.
"""

from __future__ import annotations

import datetime
import importlib
from collections.abc import Iterable
from typing import Any

from ._clock import REAL_CLOCK, Clock
from ._errors import PinError
from .gpio import Direction, Edge, GPIOBackend, Pin, Pull
from .gpio_support import CHIP_LABELS, EdgeWatcher, SoftwarePWM, find_chip

__all__ = ["GpiodBackend", "GpiodPin"]


def _library() -> Any:
    # Imported here, not at module level: caioc imports without gpiod.
    return importlib.import_module("gpiod")


class GpiodPin(Pin):
    """One line of a :class:`GpiodBackend`, held by its own line request."""

    backend: GpiodBackend

    def __init__(self, backend: GpiodBackend, number: int) -> None:
        super().__init__(backend, number)
        self._direction = Direction.INPUT
        self._pull = Pull.NONE
        self._edge_setting = Edge.NONE
        self._debounce: float | None = None
        self._output = 0
        self._pwm: SoftwarePWM | None = None
        self._frequency: float | None = None
        self._duty_cycle = 0.0
        self._watched = False
        self._request: Any = backend._chip.request_lines(
            config={number: self._settings()}, consumer=backend.consumer
        )

    def _settings(self) -> Any:
        """The gpiod ``LineSettings`` for what this pin is set to now."""
        gpiod = self.backend._gpiod
        line = gpiod.line
        options: dict[str, Any] = {
            "bias": {
                Pull.NONE: line.Bias.DISABLED,
                Pull.UP: line.Bias.PULL_UP,
                Pull.DOWN: line.Bias.PULL_DOWN,
            }[self._pull],
        }
        if self._direction is Direction.OUTPUT:
            options["direction"] = line.Direction.OUTPUT
            options["output_value"] = line.Value.ACTIVE if self._output else line.Value.INACTIVE
        else:
            options["direction"] = line.Direction.INPUT
            options["edge_detection"] = {
                Edge.NONE: line.Edge.NONE,
                Edge.RISING: line.Edge.RISING,
                Edge.FALLING: line.Edge.FALLING,
                Edge.BOTH: line.Edge.BOTH,
            }[self._edge_setting]
            if self._debounce:
                options["debounce_period"] = datetime.timedelta(seconds=self._debounce)
        return gpiod.LineSettings(**options)

    def _reconfigure(self) -> None:
        self._request.reconfigure_lines(config={self.number: self._settings()})
        self._watch(self._direction is Direction.INPUT and self._edge_setting is not Edge.NONE)

    def _watch(self, on: bool) -> None:
        if on and not self._watched:
            self.backend._watcher.add(self._request.fd, self._read_events)
        elif not on and self._watched:
            self.backend._watcher.remove(self._request.fd)
        self._watched = on

    def _read_events(self) -> None:
        """Hand every queued edge event of this line to the base class (watcher thread)."""
        rising = self.backend._gpiod.EdgeEvent.Type.RISING_EDGE
        for event in self._request.read_edge_events():
            self._edge_detected(1 if event.event_type == rising else 0, event.timestamp_ns / 1e9)

    # The contract.

    def _get_direction(self) -> Direction:
        return self._direction

    def _set_direction(self, direction: Direction) -> None:
        if direction is self._direction:
            return
        if direction is Direction.INPUT:
            self._stop_pwm()
        self._direction = direction
        self._reconfigure()

    def _get_value(self) -> int:
        active = self.backend._gpiod.line.Value.ACTIVE
        return 1 if self._request.get_value(self.number) == active else 0

    def _set_value(self, value: int) -> None:
        self._stop_pwm()
        self._output = value
        self._write(value)

    def _write(self, value: int) -> None:
        line = self.backend._gpiod.line
        self._request.set_value(self.number, line.Value.ACTIVE if value else line.Value.INACTIVE)

    def output_with_value(self, value: int | bool) -> None:
        """Make the pin an output at *value* in one reconfiguration (no glitch)."""
        self._check()
        self._stop_pwm()
        self._output = 1 if value else 0
        self._direction = Direction.OUTPUT
        self._reconfigure()

    def _get_pull(self) -> Pull:
        return self._pull

    def _set_pull(self, pull: Pull) -> None:
        self._pull = pull
        self._reconfigure()

    def _set_edges(self, edges: Edge) -> None:
        if edges is not Edge.NONE and self._direction is not Direction.INPUT:
            raise PinError(f"{self.name} is an output; only inputs report edges")
        self._edge_setting = edges
        self._reconfigure()

    def _set_bounce(self, seconds: float | None) -> None:
        self._debounce = seconds
        if self._direction is Direction.INPUT:
            self._reconfigure()

    def _get_frequency(self) -> float | None:
        return self._frequency

    def _set_frequency(self, hz: float | None) -> None:
        if hz is None:
            self._stop_pwm()
            self._write(self._output)
            return
        if self._direction is not Direction.OUTPUT:
            self.output_with_value(0)
        self._frequency = hz
        self._start_pwm()

    def _get_duty_cycle(self) -> float:
        return self._duty_cycle

    def _set_duty_cycle(self, fraction: float) -> None:
        self._duty_cycle = fraction
        if self._frequency is None:
            self._set_frequency(self.backend.default_pwm_frequency)
        else:
            self._start_pwm()

    def _start_pwm(self) -> None:
        assert self._frequency is not None
        if self._pwm is None:
            self._pwm = SoftwarePWM(self._write, self.name)
        self._pwm.configure(self._frequency, self._duty_cycle)

    def _stop_pwm(self) -> None:
        if self._pwm is not None:
            self._pwm.stop()
            self._pwm = None
        self._frequency = None
        self._duty_cycle = 0.0

    def _close(self) -> None:
        self._stop_pwm()
        self._watch(False)
        self._request.release()


class GpiodBackend(GPIOBackend):
    """GPIO through libgpiod v2.

    *chip* is a path (``/dev/gpiochip0``); without one the chip is found by
    *label* (one label or several, in order of preference; default: every
    Raspberry Pi's, :data:`~caioc.hw.gpio_support.CHIP_LABELS`). *consumer*
    is the name the kernel shows as the lines' user (``gpioinfo``).
    """

    name = "gpiod"
    default_pwm_frequency = 100.0
    """The frequency PWM starts at when only a duty cycle is set (Hz)."""

    def __init__(
        self,
        *,
        chip: str | None = None,
        label: str | Iterable[str] | None = None,
        consumer: str = "caioc",
        clock: Clock | None = None,
    ) -> None:
        super().__init__()
        self._gpiod = _library()
        self.clock = clock or REAL_CLOCK
        self.consumer = consumer
        if chip is None:
            labels = CHIP_LABELS if label is None else [label] if isinstance(label, str) else label
            chip = find_chip(self._label_of, labels)
        self._chip: Any = self._gpiod.Chip(chip)
        info = self._chip.get_info()
        self.chip_path: str = chip
        self.chip_label: str = info.label
        self.pin_numbers = range(info.num_lines)
        self._watcher = EdgeWatcher(f"gpiod-{info.name}")

    def __repr__(self) -> str:
        return f"<GpiodBackend {self.chip_path} ({self.chip_label}) pins={sorted(self._pins)}>"

    def _label_of(self, path: str) -> str | None:
        if not self._gpiod.is_gpiochip_device(path):
            return None
        with self._gpiod.Chip(path) as chip:
            return str(chip.get_info().label)

    def _make_pin(self, number: int) -> GpiodPin:
        return GpiodPin(self, number)

    def _line_number(self, name: str) -> int | None:
        try:
            return int(self._chip.line_offset_from_id(name))
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Release every line, stop the watcher thread, close the chip; idempotent."""
        already = self._closed
        super().close()
        if not already:
            self._watcher.close()
            self._chip.close()

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
from collections.abc import Iterable
from typing import Any

from ._clock import Clock
from .gpio import Direction, Edge, Pull
from .gpio_support import (
    ConfiguredPin,
    EdgeWatcher,
    HardwareBackend,
    SoftwarePWM,
    find_chip,
    import_library,
    wanted_labels,
)

__all__ = ["GpiodBackend", "GpiodPin"]


class GpiodPin(ConfiguredPin):
    """One line of a :class:`GpiodBackend`, held by its own line request."""

    backend: GpiodBackend

    def __init__(self, backend: GpiodBackend, number: int) -> None:
        super().__init__(backend, number)
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

    def _apply(self) -> None:
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

    # The contract, with what ConfiguredPin leaves to a backend.

    def _get_value(self) -> int:
        active = self.backend._gpiod.line.Value.ACTIVE
        return 1 if self._request.get_value(self.number) == active else 0

    def _write(self, value: int) -> None:
        line = self.backend._gpiod.line
        self._request.set_value(self.number, line.Value.ACTIVE if value else line.Value.INACTIVE)

    def _update_pwm(self) -> None:
        assert self._frequency is not None
        if self._pwm is None:
            self._pwm = SoftwarePWM(self._write, self.name)
        self._pwm.configure(self._frequency, self._duty_cycle)

    def _close(self) -> None:
        self._stop_pwm()
        self._watch(False)
        self._request.release()


class GpiodBackend(HardwareBackend):
    """GPIO through libgpiod v2.

    *chip* is a path (``/dev/gpiochip0``); without one the chip is found by
    *label* (one label or several, in order of preference; default: every
    Raspberry Pi's, :data:`~caioc.hw.gpio_support.CHIP_LABELS`). *consumer*
    is the name the kernel shows as the lines' user (``gpioinfo``).
    """

    name = "gpiod"

    def __init__(
        self,
        *,
        chip: str | None = None,
        label: str | Iterable[str] | None = None,
        consumer: str = "caioc",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(clock)
        self._gpiod = import_library("gpiod")
        self.consumer = consumer
        if chip is None:
            chip = find_chip(self._label_of, wanted_labels(label))
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

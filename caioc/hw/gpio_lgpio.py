"""The lgpio backend: the lg library's Python module (``pip install caioc[lgpio]``).

lgpio also drives the kernel's GPIO character device, so it works on every
Raspberry Pi, the Pi 5 included. What it does with the library:

* the chip is opened by number (``gpiochip_open(n)``), the number being
  found by the chip's label (``gpio_get_chip_info``) unless given; line
  names come from ``gpio_get_line_info``;
* a pin is claimed as an input (``gpio_claim_input`` with the pull flags),
  an output (``gpio_claim_output``) or, while edges are wanted, for alerts
  (``gpio_claim_alert``); a change of mode frees the line (``gpio_free``)
  and claims it again;
* edges arrive through ``lgpio.callback`` on lgpio's own alert thread, with
  lgpio's nanosecond timestamps mapped onto the monotonic clock; ``bounce``
  also sets lgpio's debounce (``gpio_set_debounce_micros``);
* PWM is lgpio's ``tx_pwm``: software-timed by lgpio's own thread, with the
  duty cycle in percent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from ._clock import Clock
from ._errors import PinError
from .gpio import Direction, Edge, Pull
from .gpio_support import ConfiguredPin, HardwareBackend, find_chip, import_library, wanted_labels

__all__ = ["LgpioBackend", "LgpioPin"]

#: The level lgpio reports for a watchdog timeout rather than an edge.
_WATCHDOG = 2


class LgpioPin(ConfiguredPin):
    """One GPIO claimed through lgpio."""

    backend: LgpioBackend

    def __init__(self, backend: LgpioBackend, number: int) -> None:
        super().__init__(backend, number)
        self._lgpio = backend._lgpio
        self._handle = backend._handle
        self._callback: Any = None
        self._claimed = False
        self._apply()

    def _flags(self) -> int:
        lgpio = self._lgpio
        return {
            Pull.NONE: lgpio.SET_PULL_NONE,
            Pull.UP: lgpio.SET_PULL_UP,
            Pull.DOWN: lgpio.SET_PULL_DOWN,
        }[self._pull]

    def _apply(self) -> None:
        """(Re)claim the line as what this pin is set to now."""
        lgpio = self._lgpio
        self._release()
        if self._direction is Direction.OUTPUT:
            lgpio.gpio_claim_output(self._handle, self.number, self._output, self._flags())
        elif self._edge_setting is not Edge.NONE:
            lgpio.gpio_claim_alert(self._handle, self.number, lgpio.BOTH_EDGES, self._flags(), None)
            lgpio.gpio_set_debounce_micros(
                self._handle, self.number, round((self._debounce or 0.0) * 1e6)
            )
            self._callback = lgpio.callback(
                self._handle, self.number, lgpio.BOTH_EDGES, self._alert
            )
        else:
            lgpio.gpio_claim_input(self._handle, self.number, self._flags())
        self._claimed = True

    def _release(self) -> None:
        if self._callback is not None:
            self._callback.cancel()
            self._callback = None
        if self._claimed:
            self._lgpio.gpio_free(self._handle, self.number)
            self._claimed = False

    def _alert(self, chip: int, gpio: int, level: int, timestamp: int) -> None:
        """lgpio's callback, on its alert thread."""
        if level == _WATCHDOG:
            return
        self._edge_detected(level, self.backend._to_clock(timestamp))

    # The contract, with what ConfiguredPin leaves to a backend.

    def _get_value(self) -> int:
        return 1 if self._lgpio.gpio_read(self._handle, self.number) else 0

    def _write(self, value: int) -> None:
        self._lgpio.gpio_write(self._handle, self.number, value)

    def _set_bounce(self, seconds: float | None) -> None:
        self._debounce = seconds
        if self._callback is not None:
            self._lgpio.gpio_set_debounce_micros(
                self._handle, self.number, round((seconds or 0.0) * 1e6)
            )

    def _update_pwm(self) -> None:
        assert self._frequency is not None
        self._lgpio.tx_pwm(self._handle, self.number, self._frequency, self._duty_cycle * 100.0)

    def _stop_pwm(self) -> None:
        if self._frequency is not None:
            self._lgpio.tx_pwm(self._handle, self.number, 0, 0)
        self._frequency = None
        self._duty_cycle = 0.0

    def _close(self) -> None:
        self._stop_pwm()
        self._release()


class LgpioBackend(HardwareBackend):
    """GPIO through lgpio.

    *chip* is a gpiochip number; without one the chip is found by *label*
    (default: every Raspberry Pi's, :data:`~caioc.hw.gpio_support.CHIP_LABELS`).
    """

    name = "lgpio"

    def __init__(
        self,
        *,
        chip: int | None = None,
        label: str | Iterable[str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(clock)
        self._lgpio = import_library("lgpio")
        if chip is None:
            chip = self._number_of(find_chip(self._label_of, wanted_labels(label)))
        self._handle: int = self._lgpio.gpiochip_open(chip)
        _, lines, _, chip_label = self._lgpio.gpio_get_chip_info(self._handle)
        self.chip_number = chip
        self.chip_label: str = chip_label
        self.pin_numbers = range(lines)

    def __repr__(self) -> str:
        chip = f"gpiochip{self.chip_number} ({self.chip_label})"
        return f"<LgpioBackend {chip} pins={sorted(self._pins)}>"

    @staticmethod
    def _number_of(path: str) -> int:
        match = re.search(r"gpiochip(\d+)$", path)
        if match is None:
            raise PinError(f"{path} is not a gpiochip device")
        return int(match.group(1))

    def _label_of(self, path: str) -> str | None:
        try:
            number = self._number_of(path)
        except PinError:
            return None
        handle = self._lgpio.gpiochip_open(number)
        try:
            return str(self._lgpio.gpio_get_chip_info(handle)[3])
        finally:
            self._lgpio.gpiochip_close(handle)

    def _to_clock(self, timestamp_ns: int) -> float:
        """An lgpio timestamp on the monotonic clock, whichever clock lgpio used."""
        seconds = timestamp_ns / 1e9
        wall, monotonic = time.time(), time.monotonic()
        if abs(seconds - wall) < abs(seconds - monotonic):
            return seconds - wall + monotonic
        return seconds

    def _make_pin(self, number: int) -> LgpioPin:
        return LgpioPin(self, number)

    def _line_number(self, name: str) -> int | None:
        for offset in self.pin_numbers:
            if self._lgpio.gpio_get_line_info(self._handle, offset)[3] == name:
                return offset
        return None

    def close(self) -> None:
        """Free every line and close the chip; idempotent."""
        already = self._closed
        super().close()
        if not already:
            self._lgpio.gpiochip_close(self._handle)

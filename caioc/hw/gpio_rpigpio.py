"""The RPi.GPIO backend (``pip install caioc[rpi]``): legacy, Pi 4 and older.

RPi.GPIO drives the SoC's registers through ``/dev/gpiomem``. It raises on
import off a Raspberry Pi and does not work on a Pi 5 (whose GPIOs are on
the RP1 chip); prefer the gpiod backend there and everywhere new. What it
does with the library:

* ``setmode(BCM)`` once, so pin numbers are BCM numbers (refused if the
  process already chose BOARD numbering);
* ``setup(n, IN, pull_up_down=...)`` and ``setup(n, OUT, initial=...)``;
* edges through ``add_event_detect(n, BOTH, callback=..., bouncetime=ms)``
  on RPi.GPIO's own thread. RPi.GPIO's callback gets only the channel, so
  the level is read back with ``input(n)`` in the callback and the edge is
  stamped with the time the callback ran: a pulse shorter than the
  callback's latency may be reported with the level after it;
* PWM is RPi.GPIO's ``PWM`` object (software-timed by its own thread),
  duty cycle in percent;
* closing a pin calls ``cleanup(n)``, which returns it to an input.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._clock import REAL_CLOCK, Clock
from ._errors import BackendUnavailable, PinError
from .gpio import Direction, Edge, GPIOBackend, Pin, Pull

__all__ = ["RPiGPIOBackend", "RPiGPIOPin"]


def _library() -> Any:
    # Imported here, not at module level: RPi.GPIO raises on import off a Pi.
    return importlib.import_module("RPi.GPIO")


class RPiGPIOPin(Pin):
    """One channel of RPi.GPIO, in BCM numbering."""

    backend: RPiGPIOBackend

    def __init__(self, backend: RPiGPIOBackend, number: int) -> None:
        super().__init__(backend, number)
        self._gpio = backend._gpio
        self._direction = Direction.INPUT
        self._pull = Pull.NONE
        self._edge_setting = Edge.NONE
        self._pwm: Any = None
        self._frequency: float | None = None
        self._duty_cycle = 0.0
        self._output = 0
        self._setup()

    def _setup(self) -> None:
        gpio = self._gpio
        self._stop_detection()
        if self._direction is Direction.OUTPUT:
            gpio.setup(self.number, gpio.OUT, initial=gpio.HIGH if self._output else gpio.LOW)
            return
        pull = {Pull.NONE: gpio.PUD_OFF, Pull.UP: gpio.PUD_UP, Pull.DOWN: gpio.PUD_DOWN}
        gpio.setup(self.number, gpio.IN, pull_up_down=pull[self._pull])
        self._start_detection()

    def _start_detection(self) -> None:
        if self._edge_setting is Edge.NONE:
            return
        gpio = self._gpio
        edge = {Edge.RISING: gpio.RISING, Edge.FALLING: gpio.FALLING, Edge.BOTH: gpio.BOTH}
        options: dict[str, Any] = {"callback": self._event}
        if self.bounce:  # RPi.GPIO wants whole milliseconds, at least one
            options["bouncetime"] = max(1, round(self.bounce * 1000))
        gpio.add_event_detect(self.number, edge[self._edge_setting], **options)

    def _stop_detection(self) -> None:
        self._gpio.remove_event_detect(self.number)

    def _event(self, channel: int) -> None:
        """RPi.GPIO's callback, on its event thread: read the level now."""
        if self.closed:
            return
        level = self._gpio.input(channel)
        self._edge_detected(1 if level else 0, self.backend.clock.monotonic())

    # The contract.

    def _get_direction(self) -> Direction:
        return self._direction

    def _set_direction(self, direction: Direction) -> None:
        if direction is self._direction:
            return
        if direction is Direction.INPUT:
            self._stop_pwm()
        self._direction = direction
        self._setup()

    def _get_value(self) -> int:
        return 1 if self._gpio.input(self.number) else 0

    def _set_value(self, value: int) -> None:
        self._stop_pwm()
        self._output = value
        self._gpio.output(self.number, value)

    def output_with_value(self, value: int | bool) -> None:
        """Make the pin an output at *value* in one ``setup`` (no glitch)."""
        self._check()
        self._stop_pwm()
        self._output = 1 if value else 0
        self._direction = Direction.OUTPUT
        self._setup()

    def _get_pull(self) -> Pull:
        return self._pull

    def _set_pull(self, pull: Pull) -> None:
        self._pull = pull
        if self._direction is Direction.INPUT:
            self._setup()

    def _set_edges(self, edges: Edge) -> None:
        if edges is not Edge.NONE and self._direction is not Direction.INPUT:
            raise PinError(f"{self.name} is an output; only inputs report edges")
        self._stop_detection()
        self._edge_setting = edges
        self._start_detection()

    def _set_bounce(self, seconds: float | None) -> None:
        # RPi.GPIO takes the bounce time only with add_event_detect: start again.
        if self._edge_setting is not Edge.NONE:
            self._stop_detection()
            self._bounce = seconds
            self._start_detection()

    def _get_frequency(self) -> float | None:
        return self._frequency

    def _set_frequency(self, hz: float | None) -> None:
        if hz is None:
            self._stop_pwm()
            self._gpio.output(self.number, self._output)
            return
        if self._direction is not Direction.OUTPUT:
            self.output_with_value(0)
        if self._pwm is None:
            self._pwm = self._gpio.PWM(self.number, hz)
            self._pwm.start(self._duty_cycle * 100.0)
        else:
            self._pwm.ChangeFrequency(hz)
        self._frequency = hz

    def _get_duty_cycle(self) -> float:
        return self._duty_cycle

    def _set_duty_cycle(self, fraction: float) -> None:
        self._duty_cycle = fraction
        if self._pwm is None:
            self._set_frequency(self.backend.default_pwm_frequency)
        else:
            self._pwm.ChangeDutyCycle(fraction * 100.0)

    def _stop_pwm(self) -> None:
        if self._pwm is not None:
            self._pwm.stop()
            self._pwm = None
        self._frequency = None
        self._duty_cycle = 0.0

    def _close(self) -> None:
        self._stop_pwm()
        self._stop_detection()
        self._gpio.cleanup(self.number)


class RPiGPIOBackend(GPIOBackend):
    """GPIO through RPi.GPIO, numbered by BCM; see the module docstring."""

    name = "rpigpio"
    pin_numbers = range(28)
    """The header's GPIOs: RPi.GPIO's BCM mode reaches GPIO0 to GPIO27."""
    default_pwm_frequency = 100.0
    """The frequency PWM starts at when only a duty cycle is set (Hz)."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        super().__init__()
        self._gpio = _library()
        self.clock = clock or REAL_CLOCK
        mode = self._gpio.getmode()
        if mode not in (None, self._gpio.BCM):
            raise BackendUnavailable(
                "RPi.GPIO is already in BOARD numbering in this process; caioc needs BCM"
            )
        self._gpio.setwarnings(False)  # lines left configured by an earlier run are expected
        try:
            self._gpio.setmode(self._gpio.BCM)
        except RuntimeError as error:  # e.g. a Pi 5: "Cannot determine SOC peripheral base"
            raise BackendUnavailable(f"RPi.GPIO cannot run here: {error}") from error

    def _make_pin(self, number: int) -> RPiGPIOPin:
        return RPiGPIOPin(self, number)

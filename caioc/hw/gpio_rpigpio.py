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

from typing import Any

from ._clock import Clock
from ._errors import BackendUnavailable
from .gpio import Direction, Edge, Pull
from .gpio_support import ConfiguredPin, HardwareBackend, import_library

__all__ = ["RPiGPIOBackend", "RPiGPIOPin"]


class RPiGPIOPin(ConfiguredPin):
    """One channel of RPi.GPIO, in BCM numbering."""

    backend: RPiGPIOBackend

    def __init__(self, backend: RPiGPIOBackend, number: int) -> None:
        super().__init__(backend, number)
        self._gpio = backend._gpio
        self._apply()

    def _apply(self) -> None:
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

    # The contract, with what ConfiguredPin leaves to a backend.

    def _get_value(self) -> int:
        return 1 if self._gpio.input(self.number) else 0

    def _write(self, value: int) -> None:
        self._gpio.output(self.number, value)

    def _set_pull(self, pull: Pull) -> None:
        self._pull = pull
        if self._direction is Direction.INPUT:
            self._apply()

    def _set_edges(self, edges: Edge) -> None:
        self._check_edges(edges)
        self._stop_detection()
        self._edge_setting = edges
        self._start_detection()

    def _set_bounce(self, seconds: float | None) -> None:
        # RPi.GPIO takes the bounce time only with add_event_detect: start again.
        if self._edge_setting is not Edge.NONE:
            self._stop_detection()
            self._bounce = seconds
            self._start_detection()

    def _run_pwm(self, hz: float) -> None:
        if self._pwm is None:
            self._pwm = self._gpio.PWM(self.number, hz)
            self._pwm.start(self._duty_cycle * 100.0)
        else:
            self._pwm.ChangeFrequency(hz)
        self._frequency = hz

    def _update_pwm(self) -> None:
        self._pwm.ChangeDutyCycle(self._duty_cycle * 100.0)

    def _close(self) -> None:
        self._stop_pwm()
        self._stop_detection()
        self._gpio.cleanup(self.number)


class RPiGPIOBackend(HardwareBackend):
    """GPIO through RPi.GPIO, numbered by BCM; see the module docstring."""

    name = "rpigpio"
    pin_numbers = range(28)
    """The header's GPIOs: RPi.GPIO's BCM mode reaches GPIO0 to GPIO27."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self._gpio = import_library("RPi.GPIO")
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

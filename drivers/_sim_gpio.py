"""Simulated parts on GPIO lines: a push button, a relay or LED, a PWM load.

Each part is plugged into a :class:`~caioc.hw.sim.SimulatedGPIO` with
``gpio.attach(part)`` (board files with ``--sim`` do this with what each
GPIO driver's simulator returns) and then plays the world outside the
chip: the button drives its line, the relay and the load watch theirs.
"""

from __future__ import annotations

from typing import Any

from caioc.hw import Direction
from caioc.hw.sim import SimulatedGPIO, SimulatedPin

__all__ = ["SimulatedButton", "SimulatedLoad", "SimulatedRelay"]


class _Part:
    """A part wired to one pin, named as the board file names it."""

    def __init__(self, pin: int | str) -> None:
        self.pin = pin
        self._gpio: SimulatedGPIO | None = None

    def connect(self, gpio: SimulatedGPIO) -> None:
        """Wire this part to its pin on *gpio*."""
        self._gpio = gpio
        gpio.pin(self.pin)  # a pin that does not exist fails here, not later

    @property
    def line(self) -> SimulatedPin:
        """The simulated line this part is wired to, as the chip sees it now.

        Looked up each time: the device may have closed and reopened its pin.
        """
        if self._gpio is None:
            raise RuntimeError(f"{type(self).__name__} on {self.pin!r} is not attached to a GPIO")
        return self._gpio.pin(self.pin)


class SimulatedButton(_Part):
    """A push button (or limit switch) between the pin and ground, or 3.3 V.

    *active_low*: the button pulls the line low when pressed (wired to
    ground, with a pull-up); otherwise it drives it high. *pull*: with a
    pull resistor ("up"/"down") a released button lets go of the line;
    without one ("none") the part's own resistor holds the idle level.
    """

    def __init__(self, pin: int | str, *, active_low: bool = True, pull: str = "up") -> None:
        super().__init__(pin)
        self.active_low = active_low
        self.pull = pull
        self.presses = 0

    def connect(self, gpio: SimulatedGPIO) -> None:
        """Wire the button; it starts released."""
        super().connect(gpio)
        self.release()

    @property
    def pressed_level(self) -> int:
        """The level of the line while the button is pressed."""
        return 0 if self.active_low else 1

    def press(self) -> None:
        """Press the button (one clean edge)."""
        self.presses += 1
        self.line.drive(self.pressed_level)

    def release(self) -> None:
        """Let go of the button."""
        if self.pull in ("up", "down"):
            self.line.release()
        else:
            self.line.drive(1 - self.pressed_level)

    def chatter(self, bounces: int = 3) -> None:
        """Press with a bouncing contact: the line flips *bounces* times before settling."""
        self.presses += 1
        for _ in range(bounces):
            self.line.drive(self.pressed_level)
            self.line.drive(1 - self.pressed_level)
        self.line.drive(self.pressed_level)

    @property
    def pressed(self) -> bool:
        """Whether the line is at the pressed level now."""
        return self.line.level == self.pressed_level


class SimulatedRelay(_Part):
    """A relay coil, or an LED, driven by the pin (through a transistor).

    *active_low*: the coil is energised when the pin is low.
    """

    def __init__(self, pin: int | str, *, active_low: bool = False) -> None:
        super().__init__(pin)
        self.active_low = active_low

    @property
    def energised(self) -> bool:
        """Whether the coil is energised (the LED lit) now."""
        line = self.line
        return line.direction is Direction.OUTPUT and bool(line.level) != self.active_low

    def switch_history(self) -> list[tuple[float, bool]]:
        """(time, energised) for every change of the line, oldest first."""
        return [(when, bool(level) != self.active_low) for when, level in self.line.history]


class SimulatedLoad(_Part):
    """A PWM load (an LED, a heater, a fan) on the pin: its power follows the duty cycle."""

    @property
    def power(self) -> float:
        """The fraction of full power the load gets now, 0 to 1."""
        line = self.line
        if line.direction is not Direction.OUTPUT:
            return 0.0
        frequency = line.frequency
        if frequency is None:
            return float(line.level)
        return line.duty_cycle

    @property
    def frequency(self) -> float | None:
        """The PWM frequency on the pin (Hz), None when it is not switching."""
        return self.line.frequency


def simulate_button(*, address: int | str | None, **options: Any) -> SimulatedButton:
    """The simulated part behind a ``digital_input``: a push button on its pin."""
    return SimulatedButton(
        _pin(address),
        active_low=bool(options.get("active_low", True)),
        pull=options.get("pull", "up"),
    )


def simulate_relay(*, address: int | str | None, **options: Any) -> SimulatedRelay:
    """The simulated part behind a ``digital_output``: a relay coil or an LED."""
    return SimulatedRelay(_pin(address), active_low=bool(options.get("active_low", False)))


def simulate_load(*, address: int | str | None, **options: Any) -> SimulatedLoad:
    """The simulated part behind a ``pwm_output``: an LED or heater."""
    return SimulatedLoad(_pin(address))


def _pin(address: int | str | None) -> int | str:
    if address is None:
        raise ValueError("a GPIO device needs address = its pin (17, 'GPIO17', 'J8:11' ...)")
    return address

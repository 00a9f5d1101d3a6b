"""A stand-in for ``RPi.GPIO``, built on caioc's simulated pins.

It follows RPi.GPIO's documented API: ``setmode``/``getmode`` (BCM, BOARD),
``setwarnings``, ``setup(channel, IN|OUT, pull_up_down=..., initial=...)``,
``input``, ``output``, ``add_event_detect(channel, RISING|FALLING|BOTH,
callback=..., bouncetime=ms)`` with callbacks ``callback(channel)`` on a
thread of the library's own, ``remove_event_detect``, ``event_detected``,
``cleanup``, and the ``PWM(channel, frequency)`` object (``start``,
``ChangeFrequency``, ``ChangeDutyCycle`` in percent, ``stop``). Its errors
are RPi.GPIO's: RuntimeError for a channel not set up or edge detection on
an output, ValueError for a bad channel. Underneath is one
:class:`~caioc.hw.sim.SimulatedGPIO` (GPIO0 to GPIO27 by BCM number).

``on_pi_5=True`` makes ``setmode`` fail as RPi.GPIO does on a Pi 5.
"""

from __future__ import annotations

import queue
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from caioc.hw import Direction, Edge, EdgeEvent, Pull, VirtualClock
from caioc.hw.sim import SimulatedGPIO

BOARD = 10
BCM = 11
OUT = 0
IN = 1
LOW = 0
HIGH = 1
PUD_OFF = 20
PUD_DOWN = 21
PUD_UP = 22
RISING = 31
FALLING = 32
BOTH = 33
#: RPi.GPIO's header position -> BCM number for the channels the fake accepts in BOARD mode.
_BOARD_TO_BCM = {11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 22: 25, 29: 5, 31: 6, 37: 26}


class FakeRPiGPIO:
    """One simulated Pi 4 GPIO block and the ``RPi.GPIO`` module that sees it."""

    def __init__(self, *, clock: VirtualClock | None = None, on_pi_5: bool = False) -> None:
        self.sim = SimulatedGPIO(clock=clock, pin_numbers=range(28))
        self.on_pi_5 = on_pi_5
        self.mode: int | None = None
        self.setup_as: dict[int, int] = {}
        self.detecting: dict[int, tuple[int, int | None, list[Callable[[int], None]]]] = {}
        self.events: set[int] = set()
        self.pwms: dict[int, PWM] = {}
        self.cleaned: list[int] = []
        self._callbacks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._deliver, daemon=True)
        self._thread.start()
        self.module, self.package = self._make_module()

    def install(self, monkeypatch: Any) -> types.ModuleType:
        monkeypatch.setitem(sys.modules, "RPi", self.package)
        monkeypatch.setitem(sys.modules, "RPi.GPIO", self.module)
        return self.module

    def close(self) -> None:
        self._callbacks.put(None)
        self._thread.join(5)

    def _deliver(self) -> None:
        while (work := self._callbacks.get()) is not None:
            work()

    def _bcm(self, channel: int) -> int:
        if self.mode is None:
            raise RuntimeError(
                "Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) or "
                "GPIO.setmode(GPIO.BCM)"
            )
        if self.mode == BOARD:
            if channel not in _BOARD_TO_BCM:
                raise ValueError("The channel sent is invalid on a Raspberry Pi")
            return _BOARD_TO_BCM[channel]
        if not 0 <= channel <= 27:
            raise ValueError("The channel sent is invalid on a Raspberry Pi")
        return channel

    # The module's functions.

    def setmode(self, mode: int) -> None:
        if self.on_pi_5:
            raise RuntimeError("Cannot determine SOC peripheral base address")
        if self.mode is not None and mode != self.mode:
            raise ValueError("A different mode has already been set!")
        self.mode = mode

    def getmode(self) -> int | None:
        return self.mode

    def setwarnings(self, flag: bool) -> None:
        pass

    def setup(
        self, channel: int, direction: int, pull_up_down: int = PUD_OFF, initial: int = -1
    ) -> None:
        number = self._bcm(channel)
        if number in self.detecting:
            raise RuntimeError("edge detection is set on this channel; remove it first")
        pin = self.sim.pin(number)
        if direction == OUT:
            if pull_up_down != PUD_OFF:
                raise ValueError("pull_up_down parameter is not valid for outputs")
            pin.output_with_value(initial == HIGH)
        elif direction == IN:
            pin.direction = Direction.INPUT
            pin.pull = {PUD_OFF: Pull.NONE, PUD_UP: Pull.UP, PUD_DOWN: Pull.DOWN}[pull_up_down]
        else:
            raise ValueError("An invalid direction was passed to setup()")
        self.setup_as[number] = direction

    def input(self, channel: int) -> int:
        number = self._bcm(channel)
        if number not in self.setup_as:
            raise RuntimeError("You must setup() the GPIO channel first")
        return self.sim.pin(number).value

    def output(self, channel: int, value: int) -> None:
        number = self._bcm(channel)
        if self.setup_as.get(number) != OUT:
            raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
        self.sim.pin(number).value = bool(value)

    def add_event_detect(
        self,
        channel: int,
        edge: int,
        callback: Callable[[int], None] | None = None,
        bouncetime: int | None = None,
    ) -> None:
        number = self._bcm(channel)
        if self.setup_as.get(number) != IN:
            raise RuntimeError("You must setup() the GPIO channel as an input first")
        if number in self.detecting:
            raise RuntimeError("Conflicting edge detection already enabled for this GPIO channel")
        if edge not in (RISING, FALLING, BOTH):
            raise ValueError("The edge must be set to RISING, FALLING or BOTH")
        if bouncetime is not None and bouncetime <= 0:
            raise ValueError("Bouncetime must be greater than 0")
        self.detecting[number] = (edge, bouncetime, [callback] if callback else [])
        pin = self.sim.pin(number)
        pin.bounce = bouncetime / 1000 if bouncetime else None
        pin.edges = {RISING: Edge.RISING, FALLING: Edge.FALLING, BOTH: Edge.BOTH}[edge]
        pin.when_changed = lambda event: self._event(channel, number, event)

    def _event(self, channel: int, number: int, event: EdgeEvent) -> None:
        detecting = self.detecting.get(number)
        if detecting is None:
            return
        self.events.add(number)
        for callback in list(detecting[2]):
            self._callbacks.put(lambda c=callback: c(channel))

    def add_event_callback(self, channel: int, callback: Callable[[int], None]) -> None:
        number = self._bcm(channel)
        if number not in self.detecting:
            raise RuntimeError("Add event detection using add_event_detect first")
        self.detecting[number][2].append(callback)

    def remove_event_detect(self, channel: int) -> None:
        self._stop_detection(self._bcm(channel))

    def _stop_detection(self, number: int) -> None:
        if self.detecting.pop(number, None) is not None:
            pin = self.sim.pin(number)
            pin.when_changed = None
            pin.edges = Edge.NONE
            pin.bounce = None

    def event_detected(self, channel: int) -> bool:
        number = self._bcm(channel)
        found = number in self.events
        self.events.discard(number)
        return found

    def cleanup(self, channel: int | None = None) -> None:
        numbers = list(self.setup_as) if channel is None else [self._bcm(channel)]
        for number in numbers:
            self._stop_detection(number)
            if number in self.setup_as:
                del self.setup_as[number]
                pin = self.sim.pin(number)
                pin.direction = Direction.INPUT
                pin.pull = Pull.NONE
                self.cleaned.append(number)

    def _make_module(self) -> tuple[types.ModuleType, types.ModuleType]:
        module = types.ModuleType("RPi.GPIO")
        for name, value in globals().items():
            if name.isupper() and not name.startswith("_"):
                setattr(module, name, value)
        for name in (
            "setmode",
            "getmode",
            "setwarnings",
            "setup",
            "input",
            "output",
            "add_event_detect",
            "add_event_callback",
            "remove_event_detect",
            "event_detected",
            "cleanup",
        ):
            setattr(module, name, getattr(self, name))
        world = self
        module.PWM = lambda channel, frequency: PWM(world, channel, frequency)  # type: ignore[attr-defined]
        module.RPI_INFO = {"P1_REVISION": 3, "TYPE": "Pi 4 Model B"}  # type: ignore[attr-defined]
        module.VERSION = "0.7.1"  # type: ignore[attr-defined]
        package = types.ModuleType("RPi")
        package.GPIO = module  # type: ignore[attr-defined]
        package.__path__ = []  # a package, so "import RPi.GPIO" finds the submodule
        return module, package


class PWM:
    """``RPi.GPIO.PWM``: software PWM on one output channel."""

    def __init__(self, world: FakeRPiGPIO, channel: int, frequency: float) -> None:
        number = world._bcm(channel)
        if world.setup_as.get(number) != OUT:
            raise RuntimeError("You must setup() the GPIO channel as an output first")
        if number in world.pwms:
            raise RuntimeError("A PWM object already exists for this GPIO channel")
        if frequency <= 0.0:
            raise ValueError("frequency must be greater than 0.0")
        self.world, self.number, self.frequency = world, number, frequency
        self.duty_cycle: float | None = None
        world.pwms[number] = self

    def start(self, dutycycle: float) -> None:
        self._check(dutycycle)
        self.duty_cycle = dutycycle
        pin = self.world.sim.pin(self.number)
        pin.frequency = self.frequency
        pin.duty_cycle = dutycycle / 100.0

    def ChangeDutyCycle(self, dutycycle: float) -> None:
        self._check(dutycycle)
        self.duty_cycle = dutycycle
        self.world.sim.pin(self.number).duty_cycle = dutycycle / 100.0

    def ChangeFrequency(self, frequency: float) -> None:
        if frequency <= 0.0:
            raise ValueError("frequency must be greater than 0.0")
        self.frequency = frequency
        self.world.sim.pin(self.number).frequency = frequency

    def stop(self) -> None:
        self.duty_cycle = None
        self.world.sim.pin(self.number).frequency = None
        self.world.pwms.pop(self.number, None)

    @staticmethod
    def _check(dutycycle: float) -> None:
        if not 0.0 <= dutycycle <= 100.0:
            raise ValueError("dutycycle must have a value from 0.0 to 100.0")

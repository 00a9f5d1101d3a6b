"""The simulated GPIO backend: pins with pulls, edges, PWM, wiring and faults.

:class:`SimulatedGPIO` is the ``sim`` backend of :func:`caioc.hw.load_backend`
and the default on a machine without GPIO hardware. Each pin behaves like
a real line:

* an output drives its level; an input reads what drives it, or its pull
  resistor, or (floating, no pull) keeps its last level;
* pins joined with :meth:`SimulatedGPIO.wire` share one line: an output
  drives every input wired to it; when drivers disagree, low wins (as on
  an open-drain or wired-AND line);
* a test plays the outside world with :meth:`SimulatedPin.drive` (a
  button, a sensor's interrupt line) and :meth:`SimulatedPin.release`;
* :meth:`SimulatedPin.stick` makes the line read a fixed level whatever
  drives it (a short to ground or to 3.3 V);
* every level change is kept in :attr:`SimulatedPin.history` with its time
  on the backend clock, and reported as an edge on inputs that ask;
* :meth:`SimulatedGPIO.attach` plugs in a simulated part (a button, a
  relay: anything with ``connect(gpio)``), as board files do with ``--sim``;
* PWM is simulated by its settings (frequency, duty cycle, kept in
  :attr:`SimulatedPin.pwm_history`), not as a waveform: wired inputs see the
  pin's plain output value.

Edges are reported synchronously, on the thread that caused them, after
the line's state is updated.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import Protocol, TypeVar

from .._clock import REAL_CLOCK, Clock
from ..gpio import Direction, Edge, GPIOBackend, Pin, Pull

__all__ = ["SimulatedGPIO", "SimulatedPart", "SimulatedPin"]


class SimulatedPart(Protocol):
    """Something :meth:`SimulatedGPIO.attach` can plug in."""

    def connect(self, gpio: SimulatedGPIO) -> None:
        """Take the pin(s) this part is wired to from *gpio*."""
        ...


PartT = TypeVar("PartT", bound=SimulatedPart)


class _Line:
    """The world outside the chip on one line: what drives it, and its level.

    It outlives the :class:`SimulatedPin` objects opened on the line, as a
    wire outlives a program: a button still held when a pin is closed and
    opened again is still held, and the level and history carry on.
    """

    def __init__(self, now: float) -> None:
        self.driven: int | None = None
        self.stuck: int | None = None
        self.level = 0
        self.history: deque[tuple[float, int]] = deque([(now, 0)], 10_000)


class SimulatedPin(Pin):
    """A pin of :class:`SimulatedGPIO`; the test-side controls are public.

    The test side (:meth:`drive`, :meth:`release`, :meth:`stick`,
    :attr:`level`, :attr:`history`) acts on the line itself, so it keeps
    working on a pin object that has been closed.
    """

    backend: SimulatedGPIO

    def __init__(self, backend: SimulatedGPIO, number: int) -> None:
        super().__init__(backend, number)
        self._direction = Direction.INPUT
        self._output = 0
        self._pull = Pull.NONE
        self._line = backend._line(number)
        self._frequency: float | None = None
        self._duty_cycle = 0.0
        self.pwm_history: deque[tuple[float, float | None, float]] = deque(maxlen=10_000)
        """(timestamp, frequency, duty cycle) for every PWM setting."""

    @property
    def level(self) -> int:
        """The level the line is at now."""
        return self._line.level

    @property
    def history(self) -> deque[tuple[float, int]]:
        """(timestamp, level) for every level change of the line, oldest first."""
        return self._line.history

    # The contract.

    def _get_direction(self) -> Direction:
        return self._direction

    def _set_direction(self, direction: Direction) -> None:
        with self.backend._state_lock:
            self._direction = direction
        self.backend._settle()

    def _get_value(self) -> int:
        return self.level

    def _set_value(self, value: int) -> None:
        with self.backend._state_lock:
            self._output = value
        self.backend._settle()

    def output_with_value(self, value: int | bool) -> None:
        """Make the pin an output at *value* in one step, as real lines can (no glitch)."""
        self._check()
        with self.backend._state_lock:
            self._output = 1 if value else 0
            self._direction = Direction.OUTPUT
        self.backend._settle()

    def _get_pull(self) -> Pull:
        return self._pull

    def _set_pull(self, pull: Pull) -> None:
        with self.backend._state_lock:
            self._pull = pull
        self.backend._settle()

    def _set_edges(self, edges: Edge) -> None:
        pass  # every simulated pin can report edges

    def _get_frequency(self) -> float | None:
        return self._frequency

    def _set_frequency(self, hz: float | None) -> None:
        if hz is not None and self._direction is not Direction.OUTPUT:
            self.direction = Direction.OUTPUT
        self._frequency = hz
        if hz is None:
            self._duty_cycle = 0.0
        self._record_pwm()

    def _get_duty_cycle(self) -> float:
        return self._duty_cycle

    def _set_duty_cycle(self, fraction: float) -> None:
        if self._frequency is None:
            self._frequency = self.backend.default_pwm_frequency
            self.direction = Direction.OUTPUT
        self._duty_cycle = fraction
        self._record_pwm()

    def _close(self) -> None:
        with self.backend._state_lock:
            self._frequency = None
            self._direction = Direction.INPUT
            self._pull = Pull.NONE
        self.backend._settle()

    def _record_pwm(self) -> None:
        self.pwm_history.append((self.backend.clock.monotonic(), self._frequency, self._duty_cycle))

    # The test side: the world outside the chip.

    def drive(self, level: int | bool) -> None:
        """Drive the line from outside (a button, another chip) to *level*."""
        with self.backend._state_lock:
            self._line.driven = 1 if level else 0
        self.backend._settle()

    def release(self) -> None:
        """Stop driving the line from outside."""
        with self.backend._state_lock:
            self._line.driven = None
        self.backend._settle()

    def stick(self, level: int | bool) -> None:
        """Fault: the line reads *level* whatever drives it, until :meth:`unstick`."""
        with self.backend._state_lock:
            self._line.stuck = 1 if level else 0
        self.backend._settle()

    def unstick(self) -> None:
        """Clear the stuck-line fault."""
        with self.backend._state_lock:
            self._line.stuck = None
        self.backend._settle()

    def pulse(self, width: float, level: int | bool = 1) -> None:
        """Drive *level* for *width* seconds on a virtual clock, then release.

        Only with a :class:`~caioc.hw.VirtualClock`: the release is a timer
        on it, so nothing happens until the test advances the clock.
        """
        clock = self.backend.clock
        call_later = getattr(clock, "call_later", None)
        if call_later is None:
            raise TypeError("pulse() needs a VirtualClock; drive() and release() otherwise")
        self.drive(level)
        # The release, and the edge callbacks it causes, run on the thread
        # that advances the clock, before advance() returns.
        call_later(width, self.release)

    @property
    def stuck(self) -> int | None:
        """The level the line is stuck at, or None."""
        return self._line.stuck


class SimulatedGPIO(GPIOBackend):
    """The simulated backend: pins GPIO0 to GPIO53 unless *pin_numbers* says otherwise.

    *clock* timestamps history and edges and measures ``wait_for_edge``
    timeouts; give a :class:`~caioc.hw.VirtualClock` in tests.
    """

    name = "sim"
    default_pwm_frequency = 100.0
    """The frequency PWM starts at when only a duty cycle is set (Hz)."""

    def __init__(
        self, *, clock: Clock | None = None, pin_numbers: Iterable[int] = range(54)
    ) -> None:
        super().__init__()
        self.clock = clock or REAL_CLOCK
        self.pin_numbers = frozenset(pin_numbers)
        self._state_lock = threading.RLock()
        self._lines: dict[int, _Line] = {}
        self._wires: dict[int, set[int]] = {}
        self._dispatch_lock = threading.RLock()  # callbacks may set pins

    def pin(self, spec: int | str) -> SimulatedPin:
        """The simulated pin named *spec* (see :meth:`GPIOBackend.pin`)."""
        pin = super().pin(spec)
        assert isinstance(pin, SimulatedPin)
        self._settle()  # a new pin takes the level of whatever it is wired to
        return pin

    def _make_pin(self, number: int) -> SimulatedPin:
        return SimulatedPin(self, number)

    def _line(self, number: int) -> _Line:
        with self._state_lock:
            line = self._lines.get(number)
            if line is None:
                line = self._lines[number] = _Line(self.clock.monotonic())
            return line

    def attach(self, part: PartT) -> PartT:
        """Plug in a simulated part (a button, a relay ...): calls ``part.connect(self)``.

        Board files with ``--sim`` attach what each GPIO driver's simulator
        returns; the part takes its pin from this backend and plays the
        world outside it (drives it, or watches what the device drives).
        """
        part.connect(self)
        return part

    def wire(self, first: int | str, second: int | str) -> None:
        """Connect two pins' lines, as a jumper wire would."""
        a, b = self.number(first), self.number(second)
        with self._state_lock:
            self._wires.setdefault(a, set()).add(b)
            self._wires.setdefault(b, set()).add(a)
        self._settle()

    def unwire(self, first: int | str, second: int | str) -> None:
        """Remove the wire between two pins."""
        a, b = self.number(first), self.number(second)
        with self._state_lock:
            self._wires.get(a, set()).discard(b)
            self._wires.get(b, set()).discard(a)
        self._settle()

    def _net(self, number: int) -> set[int]:
        """Every pin number on the same line as *number*."""
        seen = {number}
        todo = [number]
        while todo:
            for other in self._wires.get(todo.pop(), ()):
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        return seen

    def _settle(self) -> None:
        """Recompute every line's level; report the edges that result."""
        changed: list[tuple[SimulatedPin, int, float]] = []
        with self._state_lock:
            now = self.clock.monotonic()
            done: set[int] = set()
            for number in list(self._lines):
                if number in done:
                    continue
                net = self._net(number)
                done |= net
                lines = [self._line(n) for n in sorted(net)]
                pins = [p for n in net if isinstance(p := self._pins.get(n), SimulatedPin)]
                level = self._resolve(lines, pins)
                for n, line in zip(sorted(net), lines, strict=True):
                    if line.level != level:
                        line.level = level
                        line.history.append((now, level))
                        pin = self._pins.get(n)
                        if isinstance(pin, SimulatedPin) and pin._direction is Direction.INPUT:
                            changed.append((pin, level, now))
        # Callbacks run outside the lock (they may set other pins), one
        # settle at a time so edges keep their order.
        with self._dispatch_lock:
            for member, level, when in changed:
                member._edge_detected(level, when)

    @staticmethod
    def _resolve(lines: list[_Line], pins: list[SimulatedPin]) -> int:
        """The level of a net from its lines and open pins: stuck, driven, pulled, or kept."""
        stuck = [line.stuck for line in lines if line.stuck is not None]
        if stuck:
            return min(stuck)
        drivers = [p._output for p in pins if p._direction is Direction.OUTPUT]
        drivers += [line.driven for line in lines if line.driven is not None]
        if drivers:
            return min(drivers)  # low wins, as on a wired-AND line
        pulls = {p._pull for p in pins}
        if Pull.DOWN in pulls:
            return 0
        if Pull.UP in pulls:
            return 1
        return lines[0].level if lines else 0  # floating: stays where it was

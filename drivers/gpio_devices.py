"""GPIO devices: digital inputs, digital outputs and PWM outputs on one pin each.

All three take ``bus`` (a GPIO backend, see :func:`caioc.hw.load_backend`;
board files open it for ``bus = "gpio"``) and ``pin``/``address``: a BCM
number (``17``, ``"GPIO17"``), a header position (``"J8:11"``,
``"BOARD11"``, where the backend has a pin resolver) or a line name.

``digital_input`` — buttons, limit switches, door contacts
    ``state`` (enum, ``states`` names it, default Off/On) is an
    I/O-interrupt PV: it is not polled but posted on every edge the pin
    reports, with the edge's own timestamp (``Device.post(..., timestamp=)``);
    ``edge_count`` counts those edges. Options: ``pull`` ("up", "down",
    "none"), ``debounce`` (seconds: edges closer than this to the last one
    are dropped, and the library's or kernel's debounce is set where there
    is one; one debounce time after an edge the line is read again, so a tap
    shorter than the debounce still ends in the right state), ``active_low``
    (the input is On when the line is low: a button to ground with a
    pull-up, the default).

``digital_output`` — relays, LEDs, enables
    ``state`` (enum setting, Off/On by default): a put drives the pin.
    ``active_low`` for boards that switch on a low level (most relay
    modules), ``initial`` the state at start, ``safe_state`` the state
    driven when the IOC stops (before the line is released).

``pwm_output`` — dimmed LEDs, heaters, fans
    ``frequency`` (Hz) and ``duty_cycle`` (%) settings; puts are clamped to
    ``min_frequency``..``max_frequency`` and 0..100 % (the PVs' DRVL/DRVH
    say so to clients). On stop PWM stops and the line is driven to
    ``safe_state`` ("Off": low, "On": high) before it is released. With the
    gpiod backend PWM is software-timed (see :mod:`caioc.hw.gpio_gpiod`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

from caioc.hw import Device, Edge, EdgeEvent, GPIOBackend, Pin, Pull, load_backend, reading, setting

from ._registry import DriverInfo, register
from ._sim_gpio import simulate_button, simulate_load, simulate_relay

__all__ = [
    "DigitalInput",
    "DigitalOutput",
    "PWMOutput",
    "make_digital_input",
    "make_digital_output",
    "make_pwm_output",
]

BusSpec = GPIOBackend | str | None
"""A GPIO backend, a backend's name, or None for :func:`caioc.hw.load_backend`'s choice."""


def _backend(bus: BusSpec) -> GPIOBackend:
    if isinstance(bus, GPIOBackend):
        return bus
    return load_backend(bus)


def _states(states: Sequence[str]) -> list[str]:
    states = list(states)
    if len(states) != 2:
        raise ValueError(f"states names the two states (off, on), not {states!r}")
    return states


def _is_on(value: Any, states: Sequence[str]) -> bool:
    """An enum put as an index or a state string, as True for the second state."""
    if isinstance(value, str):
        if value not in states:
            raise ValueError(f"{value!r} is not one of {list(states)}")
        return value == states[1]
    return bool(int(value))


class _GPIODevice(Device):
    """A device on one GPIO pin."""

    def __init__(self, prefix: str, *, bus: BusSpec, pin: int | str | None) -> None:
        if pin is None:
            raise ValueError("a GPIO device needs its pin (address = 17, 'GPIO17', 'J8:11' ...)")
        self.backend = _backend(bus)
        self.pin_spec = pin
        self.pin: Pin | None = None
        super().__init__(prefix)

    def _posix(self, timestamp: float) -> float:
        """An edge time on the backend's clock as POSIX time, for the PV's timestamp."""
        return time.time() - (self.backend.clock.monotonic() - timestamp)

    def _release(self) -> None:
        pin, self.pin = self.pin, None
        if pin is not None:
            pin.close()


class DigitalInput(_GPIODevice):
    """A digital input whose PVs follow its edges (I/O interrupt); see the module doc."""

    state = reading(0, enum_strings=["Off", "On"], period=None, doc="The input (after active_low)")
    edge_count = reading(0, period=None, doc="Edges reported since start, after debounce")

    def __init__(
        self,
        prefix: str = "",
        *,
        bus: BusSpec,
        pin: int | str | None,
        pull: str = "up",
        debounce: float = 0.01,
        active_low: bool = True,
        states: Sequence[str] = ("Off", "On"),
    ) -> None:
        if debounce < 0:
            raise ValueError("debounce cannot be negative")
        self.pull = Pull(pull)
        self.debounce = debounce
        self.active_low = active_low
        self._count = 0
        self._events: asyncio.Queue[EdgeEvent] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._settling: asyncio.Task[None] | None = None
        self._pending = 0  # edges handed to the loop, not yet published
        self._pending_lock = threading.Lock()
        super().__init__(prefix, bus=bus, pin=pin)
        self.state.enum_strings = _states(states)

    async def open(self) -> None:
        """Make the pin an input with its pull and debounce, reporting both edges."""
        self._loop = asyncio.get_running_loop()
        pin = self.backend.pin(self.pin_spec)
        self.pin = pin
        pin.input_with_pull(self.pull)
        pin.bounce = self.debounce or None
        pin.edges = Edge.BOTH
        pin.when_changed = self._edge

    async def initialise(self) -> None:
        """Publish the level now, and the count so far."""
        await self.read_now("state")
        await self.post("edge_count", self._count)

    async def close(self) -> None:
        """Stop reporting edges and release the pin."""
        if self._settling is not None:
            self._settling.cancel()
            self._settling = None
        if self.pin is not None:
            self.pin.when_changed = None
        self._release()

    async def startup(self) -> None:
        """Connect, then start handing edges to the PVs."""
        await super().startup()
        self._loops.append(asyncio.get_running_loop().create_task(self._deliver()))

    def _edge(self, event: EdgeEvent) -> None:
        """The backend's callback, on any thread: queue the edge for the loop."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                with self._pending_lock:
                    self._pending += 1
                loop.call_soon_threadsafe(self._events.put_nowait, event)

    async def _deliver(self) -> None:
        while True:
            event = await self._events.get()
            with self._pending_lock:
                self._pending -= 1
            stamp = self._posix(event.timestamp)
            self._count += 1
            await self.post("state", self._logical(event.level), timestamp=stamp)
            await self.post("edge_count", self._count, timestamp=stamp)
            if self.debounce:
                if self._settling is not None:
                    self._settling.cancel()
                self._settling = asyncio.get_running_loop().create_task(self._settle())

    async def _settle(self) -> None:
        """Read the line once the debounce time is over, in case the last edge was dropped.

        The debounce drops edges too close to the one before, and a short
        tap can end inside that window: without this look the PV would stay
        Pressed after the button is let go.
        """
        await asyncio.sleep(self.debounce)
        pin = self.pin
        with self._pending_lock:
            pending = self._pending
        if pin is None or pin.closed or pending:
            return  # gone, or a newer edge is on its way and will say
        state = self._logical(pin.value)
        if state != self.state.value:
            await self.post("state", state)  # not an edge anyone reported: not counted

    def _logical(self, level: int) -> int:
        return int(bool(level) != self.active_low)

    @state.reader  # type: ignore[no-redef]
    async def state(self) -> int:
        assert self.pin is not None
        return self._logical(self.pin.value)


class DigitalOutput(_GPIODevice):
    """A digital output driven by a setting PV; see the module doc."""

    state = setting(0, enum_strings=["Off", "On"], doc="The output (before active_low)")

    def __init__(
        self,
        prefix: str = "",
        *,
        bus: BusSpec,
        pin: int | str | None,
        active_low: bool = False,
        initial: str | int = 0,
        safe_state: str | int = 0,
        states: Sequence[str] = ("Off", "On"),
    ) -> None:
        self.active_low = active_low
        self.states = _states(states)
        self.safe_on = _is_on(safe_state, self.states)
        super().__init__(prefix, bus=bus, pin=pin)
        self.state.enum_strings = self.states
        self.state.set_nowait(int(_is_on(initial, self.states)))

    def _level(self, on: bool) -> int:
        return int(on != self.active_low)

    async def open(self) -> None:
        """Make the pin an output at the state the PV holds (initial, or the last put)."""
        pin = self.backend.pin(self.pin_spec)
        self.pin = pin
        pin.output_with_value(self._level(bool(self.state.value)))

    async def close(self) -> None:
        """Drive the safe state, then release the pin."""
        if self.pin is not None:
            self.pin.value = self._level(self.safe_on)
        self._release()

    @state.writer  # type: ignore[no-redef]
    async def state(self, value: Any) -> None:
        assert self.pin is not None
        self.pin.value = self._level(_is_on(value, self.states))


class PWMOutput(_GPIODevice):
    """A PWM output with frequency and duty-cycle settings; see the module doc."""

    frequency = setting(100.0, units="Hz", precision=1, doc="PWM frequency")
    duty_cycle = setting(
        0.0,
        units="%",
        precision=1,
        lower_ctrl_limit=0.0,
        upper_ctrl_limit=100.0,
        lower_disp_limit=0.0,
        upper_disp_limit=100.0,
        doc="Fraction of each period the pin is high",
    )

    def __init__(
        self,
        prefix: str = "",
        *,
        bus: BusSpec,
        pin: int | str | None,
        frequency: float = 100.0,
        duty_cycle: float = 0.0,
        min_frequency: float = 1.0,
        max_frequency: float = 10_000.0,
        safe_state: str | int = 0,
    ) -> None:
        if not 0 < min_frequency <= max_frequency:
            raise ValueError("need 0 < min_frequency <= max_frequency")
        self.min_frequency, self.max_frequency = float(min_frequency), float(max_frequency)
        self.safe_on = _is_on(safe_state, ("Off", "On"))
        super().__init__(prefix, bus=bus, pin=pin)
        for limit in ("lower_ctrl_limit", "lower_disp_limit"):
            setattr(self.frequency, limit, self.min_frequency)
        for limit in ("upper_ctrl_limit", "upper_disp_limit"):
            setattr(self.frequency, limit, self.max_frequency)
        self.frequency.set_nowait(self._clamp_frequency(frequency))
        self.duty_cycle.set_nowait(self._clamp_duty(duty_cycle))

    def _clamp_frequency(self, hz: float) -> float:
        return min(max(float(hz), self.min_frequency), self.max_frequency)

    @staticmethod
    def _clamp_duty(percent: float) -> float:
        return min(max(float(percent), 0.0), 100.0)

    async def open(self) -> None:
        """Make the pin an output and start PWM at the PVs' settings."""
        pin = self.backend.pin(self.pin_spec)
        self.pin = pin
        pin.output_with_value(0)
        pin.frequency = float(self.frequency.value)
        pin.duty_cycle = float(self.duty_cycle.value) / 100.0

    async def close(self) -> None:
        """Stop PWM, drive the safe state, release the pin."""
        pin = self.pin
        if pin is not None:
            pin.frequency = None
            pin.value = int(self.safe_on)
        self._release()

    @frequency.writer  # type: ignore[no-redef]
    async def frequency(self, value: float) -> None:
        assert self.pin is not None
        self.pin.frequency = self._clamp_frequency(value)

    @duty_cycle.writer  # type: ignore[no-redef]
    async def duty_cycle(self, value: float) -> None:
        assert self.pin is not None
        self.pin.duty_cycle = self._clamp_duty(value) / 100.0


def make_digital_input(
    *, prefix: str, bus: BusSpec, address: int | str | None = None, **options: Any
) -> DigitalInput:
    """A :class:`DigitalInput` on pin *address* (options as the module doc says)."""
    return DigitalInput(prefix, bus=bus, pin=address, **options)


def make_digital_output(
    *, prefix: str, bus: BusSpec, address: int | str | None = None, **options: Any
) -> DigitalOutput:
    """A :class:`DigitalOutput` on pin *address*."""
    return DigitalOutput(prefix, bus=bus, pin=address, **options)


def make_pwm_output(
    *, prefix: str, bus: BusSpec, address: int | str | None = None, **options: Any
) -> PWMOutput:
    """A :class:`PWMOutput` on pin *address*."""
    return PWMOutput(prefix, bus=bus, pin=address, **options)


register(
    DriverInfo(
        name="digital_input",
        summary="Digital input (button, limit switch): I/O-interrupt state and edge count",
        bus="gpio",
        factory=make_digital_input,
        simulator=simulate_button,
        options={"pull": "up", "debounce": 0.01, "active_low": True, "states": ["Off", "On"]},
    )
)
register(
    DriverInfo(
        name="digital_output",
        summary="Digital output (relay, LED): Off/On setting, safe state on stop",
        bus="gpio",
        factory=make_digital_output,
        simulator=simulate_relay,
        options={
            "active_low": False,
            "initial": "Off",
            "safe_state": "Off",
            "states": ["Off", "On"],
        },
    )
)
register(
    DriverInfo(
        name="pwm_output",
        summary="PWM output (dimmed LED, heater): frequency (Hz) and duty cycle (%)",
        bus="gpio",
        factory=make_pwm_output,
        simulator=simulate_load,
        options={
            "frequency": 100.0,
            "duty_cycle": 0.0,
            "min_frequency": 1.0,
            "max_frequency": 10_000.0,
            "safe_state": "Off",
        },
    )
)

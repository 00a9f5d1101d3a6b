"""GPIO: the backend contract, the pin API built on it, and backend selection.

A *backend* (:class:`GPIOBackend`) gives out :class:`Pin` objects by BCM
number (``17``, ``"17"``, ``"GPIO17"``). Which backend runs is chosen by
configuration or the environment, never by editing code:
:func:`load_backend` takes a name, else ``$CAIOC_GPIO_BACKEND``, else
detects one. Names are ``sim`` (ships with caioc, needs nothing),
``gpiod`` (libgpiod v2, every Raspberry Pi including the Pi 5),
``lgpio`` and ``rpigpio`` (RPi.GPIO, legacy: Pi 4 and older). The library
behind a backend is imported only when that backend is chosen; if it is
missing, :class:`~caioc.hw.BackendUnavailable` names the pip extra that
installs it. On a machine without GPIO hardware the simulated backend is
chosen, and a log line says so.

The contract, after gpiozero's ``pins/__init__.py``
----------------------------------------------------

:class:`Pin` implements the public API (``direction``, ``value``, ``pull``,
``edges``, ``when_changed``, ``bounce``, ``frequency``, ``duty_cycle``,
``wait_for_edge``, ``close`` ...) on a few private methods. A backend's
pin class

*must* override:

* ``_get_direction()`` and ``_set_direction(direction)``
* ``_get_value()``: the level of the line, 0 or 1
* ``_set_value(value)``: drive an output (called only for outputs)

*may* override, where the hardware can:

* ``_get_pull()`` / ``_set_pull(pull)``: bias resistors (default: only
  ``Pull.NONE``; setting another raises :class:`~caioc.hw.UnsupportedOperation`)
* ``_set_edges(edges)``: start or stop edge detection (default: edges
  unsupported). A backend that detects edges calls
  ``self._edge_detected(level, timestamp)`` from any thread for each one;
  the base class applies ``bounce``, runs ``when_changed`` and wakes
  waiters.
* ``_set_frequency(hz)`` / ``_set_duty_cycle(fraction)``: PWM (default:
  unsupported). ``hz`` is ``None`` to stop PWM.
* ``_set_bounce(seconds)``: tell the hardware or library about the
  debounce time (default: nothing; the base class filters edges closer
  than ``bounce`` to the last reported one in software either way).
* ``_close()``: release the line (default: nothing).

:class:`GPIOBackend` subclasses *must* override ``_make_pin(number)`` and
set ``name``; they *may* override ``pin_numbers`` (the valid BCM numbers),
``clock`` (used for edge timestamps and timeouts), ``_line_number(name)``
(a pin named by its line name, such as ``"ID_SDA"``) and ``close()``.

Pin names
---------

:meth:`GPIOBackend.pin` reads BCM numbers itself (:func:`parse_pin`). Other
names go first to the backend's :attr:`~GPIOBackend.pin_resolver`, a hook
that board definitions fill in (``caioc.boards`` reads header positions:
``"BOARD11"``, ``"J8:11"``), so this module needs no board tables; then to
the backend's own line names (gpiod and lgpio ask the chip).

The hardware backends live in ``gpio_gpiod``, ``gpio_lgpio`` and
``gpio_rpigpio`` next to this module.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import glob
import importlib
import importlib.util
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from ._clock import REAL_CLOCK, Clock
from ._errors import BackendUnavailable, DeviceClosed, PinError, UnsupportedOperation

__all__ = [
    "BACKENDS",
    "BackendInfo",
    "Direction",
    "Edge",
    "EdgeEvent",
    "GPIOBackend",
    "Pin",
    "Pull",
    "detect_backend",
    "load_backend",
    "parse_pin",
]

_log = logging.getLogger("caioc.hw")

ENVIRONMENT_VARIABLE = "CAIOC_GPIO_BACKEND"


class Direction(enum.Enum):
    """Which way a pin works."""

    INPUT = "input"
    OUTPUT = "output"


class Pull(enum.Enum):
    """The bias resistor on an input."""

    NONE = "none"
    UP = "up"
    DOWN = "down"


class Edge(enum.Enum):
    """Which level changes an input reports."""

    NONE = "none"
    RISING = "rising"
    FALLING = "falling"
    BOTH = "both"


@dataclass(frozen=True)
class EdgeEvent:
    """One reported edge: the pin, the level after it, and when (backend clock)."""

    pin: int
    level: int
    timestamp: float

    @property
    def edge(self) -> Edge:
        """RISING if the line went high, FALLING if it went low."""
        return Edge.RISING if self.level else Edge.FALLING


_PIN_NAME = re.compile(r"(?:GPIO|BCM)?(\d+)", re.IGNORECASE)


def parse_pin(spec: int | str) -> int:
    """The BCM number of a pin named ``17``, ``"17"``, ``"GPIO17"`` or ``"BCM17"``."""
    if isinstance(spec, bool) or not isinstance(spec, int | str):
        raise PinError(f"a pin is named by a BCM number or 'GPIO<n>', not {spec!r}")
    if isinstance(spec, int):
        number = spec
    else:
        match = _PIN_NAME.fullmatch(spec.strip())
        if match is None:
            raise PinError(f"cannot read {spec!r} as a pin; use a BCM number or 'GPIO<n>'")
        number = int(match.group(1))
    if number < 0:
        raise PinError(f"no pin GPIO{number}")
    return number


EdgeCallback = Callable[[EdgeEvent], None]
PinT = TypeVar("PinT", bound="Pin")
BackendT = TypeVar("BackendT", bound="GPIOBackend")


class Pin:
    """One GPIO line of a backend; see the module docstring for the contract.

    Get pins from :meth:`GPIOBackend.pin`, not by calling the class.
    """

    def __init__(self, backend: GPIOBackend, number: int) -> None:
        self.backend = backend
        self.number = number
        self.name = f"GPIO{number}"
        self._closed = False
        self._edges = Edge.NONE
        self._when_changed: EdgeCallback | None = None
        self._bounce: float | None = None
        self._last_reported: float | None = None
        self._waiters: list[concurrent.futures.Future[EdgeEvent]] = []
        self._subscribers: list[Callable[[EdgeEvent | None], None]] = []
        self._waiters_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}{' closed' if self._closed else ''}>"

    def __enter__(self: PinT) -> PinT:
        self._check()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # The public API.

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def close(self) -> None:
        """Stop edge detection and PWM, release the line; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._when_changed = None
        self._close()
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, []
            subscribers = list(self._subscribers)
        for waiter in waiters:
            waiter.cancel()
        for feed in subscribers:
            feed(None)
        self.backend._forget(self)

    @property
    def direction(self) -> Direction:
        """INPUT or OUTPUT; setting it reconfigures the line."""
        self._check()
        return self._get_direction()

    @direction.setter
    def direction(self, direction: Direction) -> None:
        self._check()
        self._set_direction(Direction(direction))

    @property
    def value(self) -> int:
        """The level of the line, 0 or 1; set it to drive an output."""
        self._check()
        return self._get_value()

    @value.setter
    def value(self, value: int | bool) -> None:
        self._check()
        if self._get_direction() is not Direction.OUTPUT:
            raise PinError(f"{self.name} is an input; make it an output before driving it")
        self._set_value(1 if value else 0)

    def input_with_pull(self, pull: Pull) -> None:
        """Make the pin an input with *pull* (one step where the hardware allows)."""
        self.direction = Direction.INPUT
        self.pull = pull

    def output_with_value(self, value: int | bool) -> None:
        """Make the pin an output at *value* (one step where the hardware allows)."""
        self.direction = Direction.OUTPUT
        self.value = value

    @property
    def pull(self) -> Pull:
        """The input's bias resistor."""
        self._check()
        return self._get_pull()

    @pull.setter
    def pull(self, pull: Pull) -> None:
        self._check()
        self._set_pull(Pull(pull))

    @property
    def edges(self) -> Edge:
        """Which edges are reported to ``when_changed`` and the waiters."""
        return self._edges

    @edges.setter
    def edges(self, edges: Edge) -> None:
        self._check()
        edges = Edge(edges)
        self._set_edges(edges)
        self._edges = edges

    @property
    def when_changed(self) -> EdgeCallback | None:
        """Called with an :class:`EdgeEvent` for each reported edge, on any thread.

        Setting a callback while ``edges`` is NONE turns on BOTH edges.
        """
        return self._when_changed

    @when_changed.setter
    def when_changed(self, callback: EdgeCallback | None) -> None:
        self._check()
        if callback is not None and self._edges is Edge.NONE:
            self.edges = Edge.BOTH
        self._when_changed = callback

    @property
    def bounce(self) -> float | None:
        """Ignore edges closer than this many seconds to the last one (None: off)."""
        return self._bounce

    @bounce.setter
    def bounce(self, seconds: float | None) -> None:
        if seconds is not None and seconds < 0:
            raise PinError("bounce time cannot be negative")
        self._check()
        self._set_bounce(seconds)
        self._bounce = seconds

    @property
    def frequency(self) -> float | None:
        """PWM frequency in Hz, or None when PWM is off."""
        self._check()
        return self._get_frequency()

    @frequency.setter
    def frequency(self, hz: float | None) -> None:
        self._check()
        if hz is not None and hz <= 0:
            raise PinError("PWM frequency must be positive")
        self._set_frequency(hz)

    @property
    def duty_cycle(self) -> float:
        """PWM duty cycle, 0.0 to 1.0."""
        self._check()
        return self._get_duty_cycle()

    @duty_cycle.setter
    def duty_cycle(self, fraction: float) -> None:
        self._check()
        if not 0.0 <= fraction <= 1.0:
            raise PinError(f"duty cycle {fraction!r} is not between 0 and 1")
        self._set_duty_cycle(fraction)

    def wait_for_edge(self, timeout: float | None = None) -> EdgeEvent | None:
        """Block until the next reported edge; None after *timeout* (backend clock)."""
        waiter = self._add_waiter()
        self.backend.clock.wait(waiter, timeout)
        return self._take_waiter(waiter)

    async def wait_for_edge_async(self, timeout: float | None = None) -> EdgeEvent | None:
        """Await the next reported edge without blocking the loop; None after *timeout*."""
        waiter = self._add_waiter()
        try:
            await self.backend.clock.wait_async(waiter, timeout)
        finally:
            result = self._take_waiter(waiter)
        return result

    async def edge_events(self) -> AsyncIterator[EdgeEvent]:
        """Every edge reported from the first ``__anext__`` on; ends when the pin closes.

        Edges are queued, so none is lost while the consumer is busy.
        """
        self._check()
        if self._edges is Edge.NONE:
            raise PinError(f"{self.name}: set edges before waiting for one")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[EdgeEvent | None] = asyncio.Queue()

        def feed(event: EdgeEvent | None) -> None:
            # A closed loop raises RuntimeError: nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(events.put_nowait, event)

        with self._waiters_lock:
            self._subscribers.append(feed)
        try:
            while (event := await events.get()) is not None:
                yield event
        finally:
            with self._waiters_lock:
                self._subscribers.remove(feed)

    # For backends: report an edge seen on the line.

    def _edge_detected(self, level: int, timestamp: float) -> None:
        """Report that the line changed to *level* at *timestamp*; any thread."""
        wanted = self._edges
        if wanted is Edge.NONE or self._closed:
            return
        if (wanted is Edge.RISING and not level) or (wanted is Edge.FALLING and level):
            return
        if (
            self._bounce is not None
            and self._last_reported is not None
            and timestamp - self._last_reported < self._bounce
        ):
            return
        self._last_reported = timestamp
        event = EdgeEvent(self.number, 1 if level else 0, timestamp)
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, []
            subscribers = list(self._subscribers)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(event)
        for feed in subscribers:
            feed(event)
        callback = self._when_changed
        if callback is not None:
            try:
                callback(event)
            except Exception:  # one broken callback must not stop edge reporting
                _log.exception("%s: when_changed callback failed", self.name)

    def _add_waiter(self) -> concurrent.futures.Future[EdgeEvent]:
        self._check()
        if self._edges is Edge.NONE:
            raise PinError(f"{self.name}: set edges before waiting for one")
        waiter: concurrent.futures.Future[EdgeEvent] = concurrent.futures.Future()
        with self._waiters_lock:
            self._waiters.append(waiter)
        return waiter

    def _take_waiter(self, waiter: concurrent.futures.Future[EdgeEvent]) -> EdgeEvent | None:
        with self._waiters_lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        if waiter.done() and not waiter.cancelled():
            return waiter.result()
        return None

    def _check(self) -> None:
        if self._closed:
            raise DeviceClosed(f"{self.name} is closed", source=self.name)

    # What backends override (see the module docstring).

    def _get_direction(self) -> Direction:
        raise NotImplementedError

    def _set_direction(self, direction: Direction) -> None:
        raise NotImplementedError

    def _get_value(self) -> int:
        raise NotImplementedError

    def _set_value(self, value: int) -> None:
        raise NotImplementedError

    def _get_pull(self) -> Pull:
        return Pull.NONE

    def _set_pull(self, pull: Pull) -> None:
        if pull is not Pull.NONE:
            raise UnsupportedOperation(f"{self.name}: {self.backend.name} has no pull resistors")

    def _set_edges(self, edges: Edge) -> None:
        if edges is not Edge.NONE:
            raise UnsupportedOperation(f"{self.name}: {self.backend.name} cannot detect edges")

    def _get_frequency(self) -> float | None:
        return None

    def _set_frequency(self, hz: float | None) -> None:
        if hz is not None:
            raise UnsupportedOperation(f"{self.name}: {self.backend.name} has no PWM")

    def _get_duty_cycle(self) -> float:
        return 0.0

    def _set_duty_cycle(self, fraction: float) -> None:
        raise UnsupportedOperation(f"{self.name}: {self.backend.name} has no PWM")

    def _set_bounce(self, seconds: float | None) -> None:
        pass  # the software filter in _edge_detected does the work

    def _close(self) -> None:
        pass


PinResolver = Callable[[str], int]


class GPIOBackend:
    """A source of :class:`Pin` objects; see the module docstring for the contract."""

    name = "abstract"
    clock: Clock = REAL_CLOCK
    pin_numbers: Iterable[int] = range(54)
    """The valid BCM numbers (the BCM2835 family has GPIO0 to GPIO53)."""

    pin_resolver: PinResolver | None = None
    """Reads pin names :func:`parse_pin` does not (``"BOARD11"``, ``"J8:11"``).

    Board definitions set it (see :mod:`caioc.boards`); it returns a BCM
    number or raises ValueError.
    """

    def __init__(self) -> None:
        self._pins: dict[int, Pin] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pins={sorted(self._pins)}>"

    def __enter__(self: BackendT) -> BackendT:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def number(self, spec: int | str) -> int:
        """The BCM number (line offset) of the pin named *spec*.

        Tries :func:`parse_pin`, then :attr:`pin_resolver`, then the
        backend's line names; PinError if none knows the name.
        """
        try:
            return parse_pin(spec)
        except PinError:
            if not isinstance(spec, str):
                raise
        if self.pin_resolver is not None:
            try:
                return self.pin_resolver(spec)
            except ValueError:  # PinError is one too
                pass
        number = self._line_number(spec.strip())
        if number is None:
            raise PinError(
                f"{self.name}: no pin called {spec!r}; use a BCM number ('GPIO17'), "
                "a header position ('BOARD11', 'J8:11') or a line name"
            )
        return number

    def pin(self, spec: int | str) -> Pin:
        """The pin named *spec*, opened on first use and shared afterwards."""
        number = self.number(spec)
        if number not in self.pin_numbers:
            raise PinError(f"{self.name}: no pin GPIO{number}")
        with self._lock:
            if self._closed:
                raise DeviceClosed(f"GPIO backend {self.name} is closed", source=self.name)
            pin = self._pins.get(number)
            if pin is None:
                pin = self._pins[number] = self._make_pin(number)
            return pin

    def close(self) -> None:
        """Close every pin handed out; idempotent."""
        with self._lock:
            self._closed = True
            pins = list(self._pins.values())
        for pin in pins:
            pin.close()

    def _make_pin(self, number: int) -> Pin:
        raise NotImplementedError

    def _line_number(self, name: str) -> int | None:
        """The offset of the line called *name*, None if unknown (default: none are)."""
        return None

    def _forget(self, pin: Pin) -> None:
        with self._lock:
            if self._pins.get(pin.number) is pin:
                del self._pins[pin.number]


@dataclass(frozen=True)
class BackendInfo:
    """Where a backend lives and what it needs."""

    module: str
    """The caioc module holding the backend class."""
    attribute: str
    """The backend class's name in that module."""
    library: str | None
    """The import name of the library it wraps (None: needs none)."""
    extra: str | None
    """The caioc pip extra that installs the library."""


BACKENDS: dict[str, BackendInfo] = {
    "sim": BackendInfo("caioc.hw.sim.gpio", "SimulatedGPIO", None, None),
    "gpiod": BackendInfo("caioc.hw.gpio_gpiod", "GpiodBackend", "gpiod", "gpiod"),
    "lgpio": BackendInfo("caioc.hw.gpio_lgpio", "LgpioBackend", "lgpio", "lgpio"),
    "rpigpio": BackendInfo("caioc.hw.gpio_rpigpio", "RPiGPIOBackend", "RPi.GPIO", "rpi"),
}
"""Every backend by the name ``load_backend`` and ``$CAIOC_GPIO_BACKEND`` use."""


def _library_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # the parent package of a dotted name is missing
        return False


def detect_backend() -> str:
    """The backend to use here: a hardware one if the board and library exist, else sim.

    Looks for ``/dev/gpiochip*`` and for the libraries (without importing
    them); logs why it falls back to the simulation.
    """
    chips = sorted(glob.glob("/dev/gpiochip*"))
    if not chips:
        _log.info("no GPIO hardware here (no /dev/gpiochip*): using the simulated GPIO backend")
        return "sim"
    for name in ("gpiod", "lgpio", "rpigpio"):
        library = BACKENDS[name].library
        if library is not None and _library_present(library):
            return name
    _log.warning(
        "GPIO hardware found (%s) but no GPIO library is installed "
        "(pip install caioc[gpiod]): using the simulated GPIO backend",
        ", ".join(chips),
    )
    return "sim"


def load_backend(name: str | None = None, **options: object) -> GPIOBackend:
    """Create the GPIO backend *name*, else ``$CAIOC_GPIO_BACKEND``, else detected.

    *options* go to the backend's constructor (``clock=`` for the
    simulation, for example). Raises :class:`~caioc.hw.BackendUnavailable`
    for an unknown name or a missing library, naming the pip extra.
    """
    chosen = (name or os.environ.get(ENVIRONMENT_VARIABLE, "")).strip().lower()
    if not chosen:
        chosen = detect_backend()
    info = BACKENDS.get(chosen)
    if info is None:
        raise BackendUnavailable(
            f"unknown GPIO backend {chosen!r}; choose one of {', '.join(sorted(BACKENDS))}"
        )
    if info.library is not None:
        try:
            importlib.import_module(info.library)
        except ImportError as exc:
            raise BackendUnavailable(
                f"the {chosen} GPIO backend needs the {info.library} library: "
                f"pip install caioc[{info.extra}]"
            ) from exc
        except RuntimeError as exc:  # RPi.GPIO refuses to import off a Raspberry Pi
            raise BackendUnavailable(f"the {chosen} GPIO backend cannot start: {exc}") from exc
    try:
        module = importlib.import_module(info.module)
    except ModuleNotFoundError as exc:
        if exc.name != info.module:
            raise
        raise BackendUnavailable(
            f"the {chosen} GPIO backend is not part of this caioc release yet; "
            f"use {ENVIRONMENT_VARIABLE}=sim"
        ) from exc
    backend: GPIOBackend = getattr(module, info.attribute)(**options)
    _log.info("GPIO backend: %s", backend.name)
    return backend

"""Pieces the hardware GPIO backends share: finding the chip, watching fds, software PWM.

* :func:`find_chip` picks the GPIO chip with the header's lines by its
  *label* (``pinctrl-bcm2835``, ``pinctrl-bcm2711``, ``pinctrl-rp1`` on the
  Pi 5), never by its number: the number changes between kernels (the
  Pi 5's RP1 chip was ``gpiochip4`` before it became ``gpiochip0``).
* :class:`EdgeWatcher` is one thread per backend that waits on the file
  descriptors of edge-detecting line requests and reads their events as
  they come. A thread rather than ``loop.add_reader``: a backend is made
  before, and used outside, any event loop (board files, blocking
  ``wait_for_edge``), and :meth:`~caioc.hw.Pin.edge_events` hands each edge
  to the loop that asked with ``call_soon_threadsafe`` anyway.
* :class:`SoftwarePWM` drives a line from a thread, for libraries (gpiod)
  that have no PWM of their own. Its timing is only as good as the
  scheduler's: fine for dimming an LED or a slow heater, not for servos.
* :class:`ConfiguredPin` keeps what a pin is set to (direction, output
  level, pull, edges, debounce, PWM) and re-applies it through one
  ``_apply()`` that each backend writes for its library;
  :class:`HardwareBackend` is what the hardware backends share.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import logging
import os
import re
import selectors
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ._clock import REAL_CLOCK, Clock
from ._errors import BackendUnavailable, PinError
from .gpio import Direction, Edge, GPIOBackend, Pin, Pull

__all__ = [
    "CHIP_GLOB",
    "CHIP_LABELS",
    "ConfiguredPin",
    "EdgeWatcher",
    "HardwareBackend",
    "SoftwarePWM",
    "chip_paths",
    "find_chip",
    "import_library",
    "wanted_labels",
]

_log = logging.getLogger("caioc.hw")

CHIP_GLOB = "/dev/gpiochip*"
"""Where GPIO character devices appear."""

CHIP_LABELS = ("pinctrl-rp1", "pinctrl-bcm2711", "pinctrl-bcm2835")
"""Labels of the chips carrying a Raspberry Pi's header GPIOs (Pi 5, Pi 4, older)."""


def chip_paths(pattern: str | None = None) -> list[str]:
    """Every GPIO character device, in number order (gpiochip2 before gpiochip10)."""

    def number(path: str) -> tuple[int, str]:
        match = re.search(r"(\d+)$", path)
        return (int(match.group(1)) if match else -1, path)

    return sorted(glob.glob(pattern or CHIP_GLOB), key=number)


def wanted_labels(label: str | Iterable[str] | None) -> Iterable[str]:
    """The chip labels to look for: *label* (one or several), else :data:`CHIP_LABELS`."""
    return CHIP_LABELS if label is None else [label] if isinstance(label, str) else label


def import_library(name: str) -> Any:
    """The module *name*, imported when a backend is made.

    Not at module level: caioc imports without the library (and RPi.GPIO
    raises on import off a Raspberry Pi).
    """
    return importlib.import_module(name)


def find_chip(
    label_of: Callable[[str], str | None],
    labels: Iterable[str] = CHIP_LABELS,
    pattern: str | None = None,
) -> str:
    """The path of the first chip (in *labels* order) whose label is one of *labels*.

    *label_of(path)* returns a chip's label, or None when the path is not a
    chip that can be opened. Raises :class:`BackendUnavailable` listing the
    labels that were found.
    """
    wanted = list(labels)
    found: dict[str, str] = {}
    for path in chip_paths(pattern):
        try:
            label = label_of(path)
        except OSError as error:
            _log.debug("cannot open %s: %s", path, error)
            continue
        if label is not None:
            found.setdefault(label, path)
    for label in wanted:
        if label in found:
            return found[label]
    seen = ", ".join(f"{path} ({label})" for label, path in found.items()) or "none"
    raise BackendUnavailable(f"no GPIO chip labelled {' or '.join(wanted)}; chips here: {seen}")


class EdgeWatcher:
    """A thread that calls ``on_ready()`` whenever a watched fd becomes readable.

    :meth:`add` and :meth:`remove` may be called from any thread; the
    selector is only touched by the watcher thread, and :meth:`remove`
    returns once the fd is no longer watched, so the caller may then close
    it safely.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._changes: list[tuple[int, Callable[[], None] | None, threading.Event]] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, fd: int, on_ready: Callable[[], None]) -> None:
        """Call *on_ready* (on the watcher thread) each time *fd* is readable."""
        self._change(fd, on_ready)

    def remove(self, fd: int) -> None:
        """Stop watching *fd*; returns once the watcher has let go of it."""
        self._change(fd, None)

    def _change(self, fd: int, on_ready: Callable[[], None] | None) -> None:
        done = threading.Event()
        with self._lock:
            if self._closed:
                return
            self._changes.append((fd, on_ready, done))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"caioc-gpio-{self.name}", daemon=True
                )
                self._thread.start()
        os.write(self._wake_write, b"\0")
        if threading.current_thread() is not self._thread:
            done.wait(5.0)

    def close(self) -> None:
        """Stop the thread and release the selector; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        os.write(self._wake_write, b"\0")
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _apply_changes(self) -> None:
        with self._lock:
            changes, self._changes = self._changes, []
        for fd, on_ready, done in changes:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
            if on_ready is not None:
                self._selector.register(fd, selectors.EVENT_READ, on_ready)
            done.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
            for key, _ in self._selector.select():
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_read, 4096)
                    self._apply_changes()
                    continue
                try:
                    key.data()
                except Exception:  # one broken line must not stop the others
                    _log.exception("GPIO %s: reading edge events failed", self.name)


class SoftwarePWM:
    """PWM made by a thread switching a line; ``write(level)`` sets the line.

    Duty cycles of 0 and 1 hold the line low or high without switching.
    """

    def __init__(self, write: Callable[[int], None], name: str) -> None:
        self._write = write
        self.name = name
        self._condition = threading.Condition()
        self._frequency = 0.0
        self._duty_cycle = 0.0
        self._generation = 0
        self._stopped = False
        self._thread: threading.Thread | None = None

    def configure(self, frequency: float, duty_cycle: float) -> None:
        """Run at *frequency* Hz with the line high for *duty_cycle* of each period."""
        with self._condition:
            self._frequency, self._duty_cycle = frequency, duty_cycle
            self._generation += 1
            self._stopped = False
            self._condition.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"caioc-pwm-{self.name}", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        """Stop switching (the line stays where the last switch left it)."""
        with self._condition:
            self._stopped = True
            self._condition.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def _run(self) -> None:
        with self._condition:
            while not self._stopped:
                generation = self._generation

                def changed(generation: int = generation) -> bool:
                    return self._stopped or self._generation != generation

                duty, frequency = self._duty_cycle, self._frequency
                if duty <= 0.0 or duty >= 1.0:
                    self._write(1 if duty >= 1.0 else 0)
                    self._condition.wait_for(changed)
                    continue
                period = 1.0 / frequency
                self._write(1)
                if self._condition.wait_for(changed, duty * period):
                    continue
                self._write(0)
                self._condition.wait_for(changed, (1.0 - duty) * period)


class HardwareBackend(GPIOBackend):
    """What the hardware backends share: their clock and PWM's default frequency."""

    default_pwm_frequency = 100.0
    """The frequency PWM starts at when only a duty cycle is set (Hz)."""

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__()
        self.clock = clock or REAL_CLOCK


class ConfiguredPin(Pin):
    """A pin that keeps what it is set to and applies it all at once.

    A backend's pin class implements :meth:`_apply` (configure the line as
    these attributes say), :meth:`_write` (drive the output),
    :meth:`_update_pwm` and ``_get_value``, and overrides :meth:`_run_pwm`
    and :meth:`_stop_pwm` where its PWM is not an object in ``self._pwm``.
    The constructor does not apply: a subclass sets up its own state first,
    then calls ``self._apply()``.
    """

    backend: HardwareBackend

    def __init__(self, backend: HardwareBackend, number: int) -> None:
        super().__init__(backend, number)
        self._direction = Direction.INPUT
        self._pull = Pull.NONE
        self._edge_setting = Edge.NONE
        self._debounce: float | None = None
        self._output = 0
        self._frequency: float | None = None
        self._duty_cycle = 0.0
        self._pwm: Any = None

    def _apply(self) -> None:
        """Configure the line as this pin is set to now."""
        raise NotImplementedError

    def _write(self, value: int) -> None:
        """Drive the output line to *value*."""
        raise NotImplementedError

    def _run_pwm(self, hz: float) -> None:
        """Run PWM at *hz* with the current duty cycle (the pin is an output).

        By default: keep *hz* and let :meth:`_update_pwm` (re)start PWM.
        """
        self._frequency = hz
        self._update_pwm()

    def _update_pwm(self) -> None:
        """Pass the frequency and duty cycle to PWM, starting it if it is not running."""
        raise NotImplementedError

    def _stop_pwm(self) -> None:
        """Stop PWM, if it runs, and forget its frequency and duty cycle.

        By default PWM is an object in ``self._pwm`` with a ``stop()`` method.
        """
        if self._pwm is not None:
            self._pwm.stop()
            self._pwm = None
        self._frequency = None
        self._duty_cycle = 0.0

    def _check_edges(self, edges: Edge) -> None:
        if edges is not Edge.NONE and self._direction is not Direction.INPUT:
            raise PinError(f"{self.name} is an output; only inputs report edges")

    # The contract.

    def _get_direction(self) -> Direction:
        return self._direction

    def _set_direction(self, direction: Direction) -> None:
        if direction is self._direction:
            return
        if direction is Direction.INPUT:
            self._stop_pwm()
        self._direction = direction
        self._apply()

    def _set_value(self, value: int) -> None:
        self._stop_pwm()
        self._output = value
        self._write(value)

    def output_with_value(self, value: int | bool) -> None:
        """Make the pin an output at *value* in one step (no glitch)."""
        self._check()
        self._stop_pwm()
        self._output = 1 if value else 0
        self._direction = Direction.OUTPUT
        self._apply()

    def _get_pull(self) -> Pull:
        return self._pull

    def _set_pull(self, pull: Pull) -> None:
        self._pull = pull
        self._apply()

    def _set_edges(self, edges: Edge) -> None:
        self._check_edges(edges)
        self._edge_setting = edges
        self._apply()

    def _set_bounce(self, seconds: float | None) -> None:
        self._debounce = seconds
        if self._direction is Direction.INPUT:
            self._apply()

    def _get_frequency(self) -> float | None:
        return self._frequency

    def _set_frequency(self, hz: float | None) -> None:
        if hz is None:
            self._stop_pwm()
            self._write(self._output)
            return
        if self._direction is not Direction.OUTPUT:
            self.output_with_value(0)
        self._run_pwm(hz)

    def _get_duty_cycle(self) -> float:
        return self._duty_cycle

    def _set_duty_cycle(self, fraction: float) -> None:
        self._duty_cycle = fraction
        if self._frequency is None:
            self._set_frequency(self.backend.default_pwm_frequency)
        else:
            self._update_pwm()

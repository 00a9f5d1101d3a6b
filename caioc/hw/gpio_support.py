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
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import selectors
import threading
from collections.abc import Callable, Iterable

from ._errors import BackendUnavailable

__all__ = ["CHIP_GLOB", "CHIP_LABELS", "EdgeWatcher", "SoftwarePWM", "chip_paths", "find_chip"]

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

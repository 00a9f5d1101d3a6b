"""A simulated sysfs tree in a temporary directory, playing the kernel driver's part.

A :class:`SimulatedSysfsBus` owns a directory (a fresh temporary one by
default, removed by :meth:`~SimulatedSysfsBus.close` or at exit) laid out
as the kernel lays out its devices: one directory per device, one text
file per attribute. Give the simulator itself to the transport
(``W1Bus(sim)``, ``IIOBus(sim)``) and, before each read, it lets the
device behind the file act as the kernel driver would at that moment: run
a conversion on :attr:`~SimulatedSysfsBus.clock`, write the fresh text, or
fail the read with the driver's errno. Outside the transport the files are
plain files, so ``cat`` works on them too.

A device is a :class:`SimulatedSysfsDevice`; subclasses give its files
(:meth:`~SimulatedSysfsDevice.attributes`) and its behaviour
(:meth:`~SimulatedSysfsDevice.on_read`, :meth:`~SimulatedSysfsDevice.on_write`).
:meth:`~SimulatedSysfsDevice.unplug` removes its directory, as the kernel
does when a device drops off; :meth:`~SimulatedSysfsDevice.fail_next`
queues failed reads.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
import weakref
from collections import deque
from pathlib import Path
from typing import Any

from .._clock import REAL_CLOCK, Clock

__all__ = ["SimulatedSysfsBus", "SimulatedSysfsDevice"]


class SimulatedSysfsDevice:
    """One device directory in a :class:`SimulatedSysfsBus`, named :attr:`name`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bus: SimulatedSysfsBus | None = None
        self.plugged = True
        self.reads: list[str] = []
        """Attributes read through the transport, oldest first."""
        self._failures: deque[int] = deque()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}{'' if self.plugged else ' unplugged'}>"

    @property
    def clock(self) -> Clock:
        """The clock of the bus the device is attached to (real time if none)."""
        return self.bus.clock if self.bus is not None else REAL_CLOCK

    def attributes(self) -> dict[str, str]:
        """The files of the directory and their text now (override)."""
        return {}

    def on_read(self, attribute: str) -> str | None:
        """Act as the kernel does on a read of *attribute*: the new text, or None for
        no change; raise OSError to fail the read (override)."""
        return None

    def on_write(self, attribute: str, text: str) -> None:
        """Act on *text* written to *attribute* (override); raise OSError to refuse it."""

    def fail_next(self, count: int = 1, error_number: int = errno.EIO) -> None:
        """Fail the next *count* reads with *error_number* (EIO, ETIMEDOUT ...)."""
        with self._lock:
            self._failures.extend([error_number] * count)

    def unplug(self) -> None:
        """Drop off the bus: the directory goes, as the kernel removes it."""
        self.plugged = False
        if self.bus is not None:
            self.bus._remove(self)

    def replug(self) -> None:
        """Come back: the directory is there again."""
        self.plugged = True
        if self.bus is not None:
            self.bus._publish(self)

    def _read(self, attribute: str) -> str | None:
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        self.reads.append(attribute)
        if failure is not None:
            raise OSError(failure, os.strerror(failure))
        return self.on_read(attribute)


class SimulatedSysfsBus:
    """A directory of simulated devices; pass it as the transport's root.

    *root*: where to build the tree (default: a new temporary directory,
    removed on :meth:`close`); *clock*: what conversions take time on (a
    :class:`~caioc.hw.VirtualClock` in tests).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, clock: Clock | None = None):
        self._cleanup: weakref.finalize[Any, Any] | None = None
        if root is None:
            self.root = Path(tempfile.mkdtemp(prefix="caioc-sysfs-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self.root, True)
        else:
            self.root = Path(root)
            self.root.mkdir(parents=True, exist_ok=True)
        self.clock: Clock = clock or REAL_CLOCK
        self.devices: dict[str, SimulatedSysfsDevice] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.root} devices={sorted(self.devices)}>"

    def attach(self, device: SimulatedSysfsDevice) -> SimulatedSysfsDevice:
        """Add *device* (its directory appears); returns it."""
        with self._lock:
            if device.name in self.devices:
                raise ValueError(f"{self.root}: there is already a {device.name}")
            device.bus = self
            self.devices[device.name] = device
            if device.plugged:
                self._publish(device)
        self.changed()
        return device

    def detach(self, name: str) -> SimulatedSysfsDevice:
        """Remove the device *name* and its directory; returns it."""
        with self._lock:
            device = self.devices.pop(name)
            self._remove(device)
            device.bus = None
        self.changed()
        return device

    def changed(self) -> None:
        """The set of devices changed (subclasses keep index files up to date)."""

    def close(self) -> None:
        """Remove the tree if it is a temporary one; idempotent."""
        if self._cleanup is not None:
            self._cleanup()

    # -- the kernel's side -----------------------------------------------------------

    def _publish(self, device: SimulatedSysfsDevice) -> None:
        with self._lock:
            directory = self.root / device.name
            directory.mkdir(exist_ok=True)
            for attribute, text in device.attributes().items():
                (directory / attribute).write_text(text)
        self.changed()

    def _remove(self, device: SimulatedSysfsDevice) -> None:
        with self._lock:
            shutil.rmtree(self.root / device.name, ignore_errors=True)
        self.changed()

    def _device(self, relative: str) -> tuple[SimulatedSysfsDevice | None, str]:
        name, _, attribute = relative.partition("/")
        device = self.devices.get(name)
        if device is None or not device.plugged:
            return None, attribute
        return device, attribute

    def kernel_read(self, relative: str) -> None:
        """Let the device behind *relative* refresh it (or fail) before it is read."""
        device, attribute = self._device(relative)
        if device is None or not attribute:
            return  # a missing file fails by itself when opened
        text = device._read(attribute)  # may block on the clock, may raise
        if text is not None:
            with self._lock:
                path = self.root / relative
                if path.parent.is_dir():
                    path.write_text(text)

    def kernel_write(self, relative: str, text: str) -> None:
        """Hand *text* written to *relative* to its device."""
        device, attribute = self._device(relative)
        if device is not None and attribute:
            device.on_write(attribute, text)
            with self._lock:
                self._publish(device)

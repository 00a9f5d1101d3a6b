"""Kernel drivers seen through sysfs files: reads and writes on a worker thread.

Some parts are best left to a Linux kernel driver, which then shows each as
a directory of text files: 1-Wire thermometers under
``/sys/bus/w1/devices`` (:mod:`caioc.hw.w1`), IIO sensors such as the
DHT11/DHT22 under ``/sys/bus/iio/devices`` (:mod:`caioc.hw.iio`). Reading
such a file is a blocking system call that may take a whole conversion
(750 ms for a DS18B20), so :class:`SysfsBus` runs every access on its own
worker thread, one at a time, with a timeout, as the other buses do.

The root is configurable, so tests and ``--sim`` point it at a simulated
tree (:class:`caioc.hw.sim.SimulatedSysfsBus`): given the simulator itself
as *root*, the bus lets it play the kernel's part before each access (run
a conversion on its clock, refresh the file, or fail the read with the
errno a real driver would), then reads the real file as usual.

Errors come back as :mod:`caioc.hw._errors` exceptions: a missing file or
directory (the device went away, the driver was unloaded) is
:class:`~caioc.hw.DeviceUnplugged`; ETIMEDOUT is
:class:`~caioc.hw.BusTimeout`; EIO and any other ``OSError`` a
:class:`~caioc.hw.HardwareError` of kind READ (WRITE for a write).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from caioc.ca import AlarmStatus

from ._clock import REAL_CLOCK, Clock
from ._errors import BusTimeout, DeviceUnplugged, HardwareError
from ._worker import BusWorker, WorkerBus

__all__ = ["SimulatedKernel", "SysfsBus"]

T = TypeVar("T")

_GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.ENOTDIR})


@runtime_checkable
class SimulatedKernel(Protocol):
    """What a simulated sysfs tree offers a :class:`SysfsBus` (see the module doc)."""

    root: Path
    clock: Clock

    def kernel_read(self, relative: str) -> None:
        """Before *relative* is read: refresh it, or raise the OSError the driver would."""
        ...

    def kernel_write(self, relative: str, text: str) -> None:
        """After *text* was written to *relative*: act on it, or raise OSError."""
        ...


def _translate(exc: OSError, description: str, source: str, kind: AlarmStatus) -> HardwareError:
    message = f"{source}: {description}: {exc.strerror or exc}"
    if exc.errno == errno.ETIMEDOUT:
        return BusTimeout(message, source=source)
    if exc.errno in _GONE_ERRNOS:
        return DeviceUnplugged(message, source=source)
    error = HardwareError(message, kind=kind, source=source)
    error.errno = exc.errno  # type: ignore[attr-defined]  # the driver may tell EIO apart
    return error


class SysfsBus(WorkerBus):
    """Text files under *root*, read and written on one worker thread.

    *root* is a directory, or a :class:`SimulatedKernel` (whose ``root``
    and ``clock`` are then used). *timeout* bounds every access, including
    the time the kernel spends converting.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | SimulatedKernel,
        *,
        timeout: float = 2.0,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(root, SimulatedKernel):
            self.kernel: SimulatedKernel | None = root
            self.root = Path(root.root)
            clock = clock or root.clock
        else:
            self.kernel = None
            self.root = Path(root)
        self.name = name or str(self.root)
        self.timeout = timeout
        self.clock: Clock = clock or REAL_CLOCK
        self._worker = BusWorker(self.name, clock=self.clock)

    def close(self) -> None:
        """Stop the worker; idempotent (the files belong to the kernel)."""
        self._worker.close()

    # -- the accesses -------------------------------------------------------------------

    def _run(
        self, function: Callable[[], T], description: str, relative: str, kind: AlarmStatus
    ) -> Callable[[], T]:
        source = f"{self.name}/{relative}" if relative else self.name

        def job() -> T:
            try:
                return function()
            except OSError as exc:
                if isinstance(exc, HardwareError):
                    raise
                raise _translate(exc, description, source, kind) from exc

        return job

    def _reader(self, relative: str) -> Callable[[], str]:
        def read() -> str:
            if self.kernel is not None:
                self.kernel.kernel_read(relative)
            with open(self.root / relative, encoding="ascii", errors="replace") as file:
                return file.read()

        return self._run(read, f"read {relative}", relative, AlarmStatus.READ)

    def _writer(self, relative: str, text: str) -> Callable[[], None]:
        def write() -> None:
            # No O_CREAT or O_TRUNC: sysfs has a fixed set of files.
            descriptor = os.open(self.root / relative, os.O_WRONLY)
            try:
                os.write(descriptor, text.encode("ascii"))
            finally:
                os.close(descriptor)
            if self.kernel is not None:
                self.kernel.kernel_write(relative, text)

        return self._run(write, f"write {relative}", relative, AlarmStatus.WRITE)

    def _lister(self, relative: str) -> Callable[[], list[str]]:
        def listing() -> list[str]:
            return sorted(os.listdir(self.root / relative))

        return self._run(listing, f"list {relative or '.'}", relative, AlarmStatus.READ)

    def read(self, relative: str) -> str:
        """The text of the file *relative* to the root."""
        return self._worker.call(self._reader(relative), f"read {relative}", self.timeout)

    async def read_async(self, relative: str) -> str:
        """Like :meth:`read`, awaiting the worker without blocking the loop."""
        return await self._worker.call_async(
            self._reader(relative), f"read {relative}", self.timeout
        )

    def write(self, relative: str, text: str) -> None:
        """Write *text* to the file *relative* to the root."""
        self._worker.call(self._writer(relative, text), f"write {relative}", self.timeout)

    async def write_async(self, relative: str, text: str) -> None:
        """Like :meth:`write`, awaiting the worker."""
        await self._worker.call_async(
            self._writer(relative, text), f"write {relative}", self.timeout
        )

    def listdir(self, relative: str = "") -> list[str]:
        """The names in the directory *relative* to the root, sorted."""
        return self._worker.call(self._lister(relative), "list", self.timeout)

    async def listdir_async(self, relative: str = "") -> list[str]:
        """Like :meth:`listdir`, awaiting the worker."""
        return await self._worker.call_async(self._lister(relative), "list", self.timeout)

    def exists(self, relative: str) -> bool:
        """Whether *relative* exists under the root (a stat, which never blocks)."""
        return (self.root / relative).exists()

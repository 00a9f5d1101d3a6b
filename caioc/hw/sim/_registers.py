"""A simulated chip's register map, shared by the I2C and SPI simulators."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from .._clock import REAL_CLOCK, Clock

__all__ = ["BusRegisterDevice", "ReadHook", "RegisterMap", "WriteHook"]

MapT = TypeVar("MapT", bound="RegisterMap")
# Hooks and actions receive the device itself; stored loosely typed because
# each subclass registers callables that take that subclass.
ReadHook = Callable[[Any, int], None]
WriteHook = Callable[[Any, int, int], None]


class RegisterMap:
    """8-bit registers with a pointer, rules, hooks and timed actions.

    The bus side uses :meth:`read_registers` / :meth:`write_registers`,
    which apply the rules; the hardware side (the chip itself, a test)
    uses :meth:`peek` and :meth:`poke`, which bypass them. The pointer
    advances after every byte (wrapping at *size*) unless
    *auto_increment* is false. *registers* gives power-on contents.

    Behaviour is declared per register (:meth:`define_register`: read-only,
    write-1-to-clear bits), by hooks (:meth:`on_read`, :meth:`on_write`) and
    by actions that happen after some time on :attr:`clock`
    (:meth:`after`), which is how a conversion that takes 10 ms is
    simulated.
    """

    def __init__(
        self,
        *,
        size: int = 256,
        registers: Mapping[int, int] | bytes | None = None,
        auto_increment: bool = True,
    ) -> None:
        self.auto_increment = auto_increment
        self.registers = bytearray(size)
        """The register contents, the hardware side's view."""
        if isinstance(registers, bytes | bytearray):
            self.registers[: len(registers)] = registers
        elif registers is not None:
            for register, value in registers.items():
                self.registers[register] = value
        self._defaults = bytes(self.registers)
        self.pointer = 0
        """The register the next byte read or written goes to."""
        self._read_only: set[int] = set()
        self._clear_on_one: dict[int, int] = {}
        self._read_hooks: dict[int, list[ReadHook]] = {}
        self._write_hooks: dict[int, list[WriteHook]] = {}
        self._scheduled: list[tuple[float, int, Callable[[Any], None]]] = []
        self._sequence = itertools.count()
        self._lock = threading.RLock()

    @property
    def clock(self) -> Clock:
        """The clock timed actions follow; subclasses use their bus's clock."""
        return REAL_CLOCK

    # Declaring behaviour.

    def define_register(
        self,
        register: int,
        value: int = 0,
        *,
        read_only: bool = False,
        write_one_to_clear: int = 0,
    ) -> None:
        """Give *register* a power-on *value* and rules for bus writes.

        A read-only register ignores bus writes (as chips do). Bits set in
        *write_one_to_clear* are cleared by writing 1 and kept by writing 0
        (status flags); the other bits are written normally.
        """
        with self._lock:
            self.registers[register] = value
            self._defaults = bytes(self.registers)
            if read_only:
                self._read_only.add(register)
            else:
                self._read_only.discard(register)
            if write_one_to_clear:
                self._clear_on_one[register] = write_one_to_clear
            else:
                self._clear_on_one.pop(register, None)

    def on_read(self: MapT, register: int, hook: Callable[[MapT, int], None]) -> None:
        """Call ``hook(device, register)`` just before the bus reads *register*."""
        with self._lock:
            self._read_hooks.setdefault(register, []).append(hook)

    def on_write(self: MapT, register: int, hook: Callable[[MapT, int, int], None]) -> None:
        """Call ``hook(device, register, value)`` after the bus writes *value* to it."""
        with self._lock:
            self._write_hooks.setdefault(register, []).append(hook)

    def after(self: MapT, delay: float, action: Callable[[MapT], None]) -> None:
        """Run ``action(device)`` once *delay* seconds have passed on :attr:`clock`.

        Due actions run, in order, at the start of the next access (or on
        :meth:`update`), so nothing happens behind the test's back.
        """
        with self._lock:
            due = self.clock.monotonic() + delay
            heapq.heappush(self._scheduled, (due, next(self._sequence), action))

    def update(self) -> None:
        """Run the actions of :meth:`after` that are due by now."""
        with self._lock:
            now = self.clock.monotonic()
            while self._scheduled and self._scheduled[0][0] <= now:
                _, _, action = heapq.heappop(self._scheduled)
                action(self)

    # The hardware side.

    def peek(self, register: int, length: int = 1) -> bytes:
        """The raw contents of *length* registers from *register* on."""
        with self._lock:
            return bytes(self.registers[register : register + length])

    def poke(self, register: int, data: int | Iterable[int]) -> None:
        """Set registers directly, as the chip itself would (no rules, no hooks)."""
        with self._lock:
            values = [data] if isinstance(data, int) else list(data)
            self.registers[register : register + len(values)] = bytes(values)

    def reset(self) -> None:
        """Back to power-on: default registers, pointer 0, nothing scheduled."""
        with self._lock:
            self.registers[:] = self._defaults
            self.pointer = 0
            self._scheduled.clear()

    # The bus side.

    def read_registers(self, length: int) -> bytes:
        """*length* bytes from the pointer on, running read hooks, moving the pointer."""
        start, size = self.pointer, len(self.registers)
        if not self._read_hooks and self.auto_increment and start + length <= size:
            # Nothing to run per byte: one slice (the common read of a plain map).
            self.pointer = (start + length) % size
            return bytes(self.registers[start : start + length])
        out = bytearray()
        for _ in range(length):
            register = self.pointer
            for hook in self._read_hooks.get(register, ()):
                hook(self, register)
            out.append(self.registers[register])
            self._advance()
        return bytes(out)

    def write_registers(self, data: bytes) -> None:
        """Store *data* from the pointer on, applying the rules and write hooks."""
        for value in data:
            self._store(self.pointer, value)
            self._advance()

    def _advance(self) -> None:
        if self.auto_increment:
            self.pointer = (self.pointer + 1) % len(self.registers)

    def _store(self, register: int, value: int) -> None:
        if register in self._read_only:
            return
        clear_mask = self._clear_on_one.get(register, 0)
        old = self.registers[register]
        self.registers[register] = (value & ~clear_mask & 0xFF) | (old & clear_mask & ~value)
        for hook in self._write_hooks.get(register, ()):
            hook(self, register, value)


class BusRegisterDevice(RegisterMap):
    """A register-map part on a simulated bus that can be pulled out and put back.

    Shared by the I2C and SPI simulators: what an unplugged part looks like
    to the bus (a NACK, idle bytes) is each bus's own business.
    """

    #: The simulated bus the part is attached to, if any (sets :attr:`clock`).
    bus: Any = None
    #: False between :meth:`unplug` and :meth:`replug`.
    plugged = True

    @property
    def clock(self) -> Clock:
        """The clock of the bus the part is attached to (real time if none)."""
        return self.bus.clock if self.bus is not None else REAL_CLOCK

    def unplug(self) -> None:
        """Disconnect the part until :meth:`replug`."""
        self.plugged = False

    def replug(self, *, reset: bool = True) -> None:
        """Reconnect the part, by default powered up afresh (:meth:`reset`)."""
        if reset:
            self.reset()
        self.plugged = True

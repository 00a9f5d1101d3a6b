"""What the I2C sensor drivers share: the bus they are given, time, companion PVs.

:class:`I2CSensor` is a :class:`~caioc.hw.Device` at one address on an I2C
bus. Its *bus* may be:

* an :class:`~caioc.hw.I2CBus`: used as it is and never closed here (its
  owner closes it);
* an smbus2-compatible object (a real :class:`smbus2.SMBus` or a
  :class:`~caioc.hw.sim.SimulatedI2CBus`): wrapped in one :class:`I2CBus`
  *per object*, shared by every sensor given that object, so all their calls
  run serialised on one worker thread as the hardware needs. The worker
  stops when the last sensor using it closes; the smbus object itself is
  left open, because its owner (the board-file loader) closes it;
* an adapter number or path (``1``, ``"/dev/i2c-1"``): the sensor opens its
  own :class:`I2CBus` in :meth:`~I2CSensor.open` and closes it in
  :meth:`~I2CSensor.close`, so a reconnect reopens the adapter.

Sensors wait for conversions on the bus's clock (:meth:`I2CSensor.sleep`),
so under a :class:`~caioc.hw.VirtualClock` a 15 ms conversion costs no real
time and tests see exactly when each transfer happens.

A sensor that measures several quantities in one transfer (temperature and
humidity ...) polls one *primary* reading and publishes the others, its
*companions*, with :meth:`~caioc.hw.Device.post`; when the primary read
fails, :meth:`I2CSensor.measured` gives the companions the same alarm, so no
PV shows a stale value without saying so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import functools
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from caioc.ca import AlarmSeverity, AlarmStatus
from caioc.hw import (
    REAL_CLOCK,
    BusTimeout,
    Clock,
    Device,
    DeviceClosed,
    HardwareError,
    I2CBus,
    I2CDevice,
    SMBusLike,
    reading,
)
from caioc.hw._device import classify

__all__ = ["BusSpec", "I2CSensor", "with_period"]

#: What a driver factory accepts as its ``bus``.
BusSpec = I2CBus | SMBusLike | int | str

#: Bus timeout (seconds) of the I2CBus a sensor opens or shares.
BUS_TIMEOUT = 0.5

DeviceT = TypeVar("DeviceT", bound=Device)
T = TypeVar("T")


class _Unowned:
    """An smbus-like object whose ``close()`` leaves the real one open."""

    def __init__(self, smbus: object) -> None:
        self._smbus = smbus

    def __getattr__(self, name: str) -> Any:
        return getattr(self._smbus, name)

    def close(self) -> None:
        """The smbus object belongs to whoever gave it; they close it."""


@dataclass
class _Shared:
    bus: I2CBus
    users: int


_SHARED: dict[int, _Shared] = {}
_SHARED_LOCK = threading.Lock()


def _acquire(spec: BusSpec) -> tuple[I2CBus, bool]:
    """The I2CBus for *spec*, and whether this caller must release it."""
    if isinstance(spec, I2CBus):
        return spec, False
    if isinstance(spec, int | str):
        return I2CBus(spec, timeout=BUS_TIMEOUT), True
    with _SHARED_LOCK:
        shared = _SHARED.get(id(spec))
        if shared is None or shared.bus.closed:
            name = getattr(spec, "name", None) or "i2c"
            bus = I2CBus(
                cast(SMBusLike, _Unowned(spec)),
                timeout=BUS_TIMEOUT,
                clock=getattr(spec, "clock", None),
                name=str(name),
            )
            # The bus holds the smbus object (in _Unowned), so while the
            # entry exists its id cannot be reused by another object.
            shared = _SHARED[id(spec)] = _Shared(bus, 0)
        shared.users += 1
        return shared.bus, True


def _release(spec: BusSpec, bus: I2CBus) -> None:
    if isinstance(spec, I2CBus):
        return
    if isinstance(spec, int | str):
        bus.close()
        return
    with _SHARED_LOCK:
        shared = _SHARED.get(id(spec))
        if shared is None or shared.bus is not bus:
            bus.close()
            return
        shared.users -= 1
        if shared.users > 0:
            return
        del _SHARED[id(spec)]
    bus.close()  # stops the worker; _Unowned keeps the smbus object open


class I2CSensor(Device):
    """A :class:`~caioc.hw.Device` at *address* on an I2C *bus* (see the module doc).

    Subclasses set :attr:`default_address` and implement ``probe``,
    ``initialise`` and their readings with :attr:`chip`; every exchange that
    must not be interleaved with another (start a conversion, wait, read
    it) runs under :attr:`lock`.
    """

    #: The address used when none is given.
    default_address: int = 0

    def __init__(self, prefix: str = "", *, bus: BusSpec, address: int | None = None) -> None:
        self.address = self.default_address if address is None else int(address)
        if not 0x03 <= self.address <= 0x77:
            raise ValueError(f"I2C address 0x{self.address:02x} is reserved or not 7-bit")
        self.bus_spec = bus
        self._bus: I2CBus | None = None
        self._chip: I2CDevice | None = None
        self._releases = False
        #: Held for each exchange with the chip that must not be interleaved.
        self.lock = asyncio.Lock()
        super().__init__(prefix)

    @property
    def chip(self) -> I2CDevice:
        """The device on the bus; :class:`~caioc.hw.DeviceClosed` when not open."""
        if self._chip is None:
            raise DeviceClosed(f"{type(self).__name__} at 0x{self.address:02x} is not open")
        return self._chip

    @property
    def clock(self) -> Clock:
        """The clock conversions are timed on: the bus's (real time when closed)."""
        return self._bus.clock if self._bus is not None else REAL_CLOCK

    async def open(self) -> None:
        """Get the bus (idempotent: a failed probe leaves it held for the retry)."""
        if self._bus is None:
            self._bus, self._releases = _acquire(self.bus_spec)
            self._chip = self._bus.device(self.address)

    async def close(self) -> None:
        """Let the bus go (closed only if this sensor opened it; idempotent)."""
        bus, self._bus = self._bus, None
        if self._chip is not None:
            self._chip.close()
            self._chip = None
        if bus is not None and self._releases:
            _release(self.bus_spec, bus)

    async def poll(
        self, done: Callable[[], Awaitable[bool]], within: float, step: float, what: str
    ) -> None:
        """Await ``done()`` every *step* s until it is true; BusTimeout after *within* s.

        Both times are on :attr:`clock`; ``done()`` is always tried at least once.
        """
        deadline = self.clock.monotonic() + within
        while not await done():
            if self.clock.monotonic() >= deadline:
                raise BusTimeout(f"{what} within {within:.4f} s more", source=self.chip.name)
            await self.sleep(step)

    @classmethod
    def _declared(cls) -> Iterator[tuple[str, Any]]:
        # PVGroup._declared keeps a base class's pvproperty over a subclass's
        # override of the same name; with_period relies on the override, so
        # take the most derived definition (in the same order).
        for attribute, _ in super()._declared():
            yield attribute, getattr(cls, attribute)

    async def sleep(self, seconds: float) -> None:
        """Wait *seconds* on :attr:`clock` (a conversion time), without blocking the loop."""
        if seconds > 0:
            never: concurrent.futures.Future[None] = concurrent.futures.Future()
            await self.clock.wait_async(never, seconds)

    async def measured(self, measure: Callable[[], Awaitable[T]], *companions: str) -> T:
        """``await measure()`` for a reading; if it fails, so do the *companions*.

        A refused write in a reading's exchange (starting a conversion) is
        still a failed *read* of that reading: READ, not WRITE.
        """
        try:
            return await measure()
        except Exception as error:
            if isinstance(error, HardwareError) and error.kind == AlarmStatus.WRITE:
                error.kind = AlarmStatus.READ
            await self.fail_companions(error, *companions)
            raise

    async def fail_companions(self, error: BaseException, *attributes: str) -> None:
        """Give the readings *attributes* the alarm *error* maps to, keeping their values."""
        status = classify(error)
        for attribute in attributes:
            await getattr(self, attribute).set_alarm(status, AlarmSeverity.INVALID)


@functools.cache
def with_period(cls: type[DeviceT], attribute: str, period: float) -> type[DeviceT]:
    """A subclass of *cls* whose reading *attribute* is polled every *period* seconds.

    Readings declare their poll period in the class; a board file chooses it
    per device, so the factory builds (once per period) this subclass.
    """
    declared = cls._declared_map()[attribute]
    if not isinstance(declared, reading):
        raise TypeError(f"{cls.__name__}.{attribute} is not a reading")
    if declared.period == period:
        return cls
    if not period > 0:
        raise ValueError(f"a poll period must be positive, not {period!r}")
    polled = copy.copy(declared)
    polled.period = float(period)
    return cast(type[DeviceT], type(cls.__name__, (cls,), {attribute: polled}))

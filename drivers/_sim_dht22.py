"""A simulated Aosong DHT22 (AM2302), as the Linux IIO ``dht11`` driver shows it.

Set :attr:`~SimulatedDHT22.temperature` (degC) and
:attr:`~SimulatedDHT22.humidity` (%RH). A read of ``in_temp_input`` or
``in_humidityrelative_input`` does what the kernel driver
(``drivers/iio/humidity/dht11.c``) does:

* a result less than 2 s old is served again from its cache, with no
  transmission;
* otherwise it pulls the line low for 18 ms, then waits up to 1 s for the
  sensor's 40 bits. The sensor (AM2302 datasheet, section 7) sends 16 bits
  of humidity in 0.1 %RH, 16 bits of temperature in 0.1 degC with the top
  bit the sign (sign and magnitude, not two's complement), and a checksum,
  the low 8 bits of the sum of the four data bytes. The kernel checks the
  checksum (EIO if wrong) and, for a DHT22 (high humidity byte below 4),
  gives ``value * 100``: milli-degC and milli-%RH;
* the sensor needs at least 2 s between measurements (its "collecting
  period"): started sooner, it does not answer, and the kernel's read
  fails with ETIMEDOUT after its 1 s wait (counted in
  :attr:`~SimulatedDHT22.too_soon`).

Faults: :meth:`~SimulatedDHT22.noisy_next` (bits misread on a long cable:
the checksum fails, EIO), :meth:`~SimulatedDHT22.silent_next` (no answer:
ETIMEDOUT), :meth:`~caioc.hw.sim.SimulatedSysfsDevice.unplug` (the
overlay is gone).
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

from caioc.hw.sim import SimulatedIIODevice

__all__ = ["SimulatedDHT22", "frame", "simulate"]

#: The sensor's minimum time between measurements, and the kernel's cache time (s).
COLLECTING_PERIOD = 2.0
#: The kernel's start signal (18 ms) plus the sensor's reply (about 5 ms), seconds.
TRANSMISSION_TIME = 0.023
#: How long the kernel waits for the sensor's edges (HZ), seconds.
KERNEL_WAIT = 1.0


def frame(temperature: float, humidity: float) -> bytes:
    """The five bytes a DHT22 sends for *temperature* and *humidity* (section 7)."""
    raw_humidity = min(max(round(humidity * 10), 0), 1000)
    magnitude = min(round(abs(temperature) * 10), 0x7FFF)
    raw_temperature = magnitude | (0x8000 if temperature < 0 and magnitude else 0)
    data = raw_humidity.to_bytes(2, "big") + raw_temperature.to_bytes(2, "big")
    return data + bytes([sum(data) & 0xFF])


def kernel_decode(data: bytes) -> tuple[int, int]:
    """``(milli-degC, milli-%RH)`` as the dht11 driver decodes a DHT22 frame; OSError(EIO)."""
    if sum(data[:4]) & 0xFF != data[4] or data[0] >= 4:
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    sign = -100 if data[2] & 0x80 else 100
    return ((data[2] & 0x7F) << 8 | data[3]) * sign, (data[0] << 8 | data[1]) * 100


class SimulatedDHT22(SimulatedIIODevice):
    """A DHT22 behind the kernel's ``dht11`` IIO driver (directory ``iio:deviceN``)."""

    def __init__(
        self, name: str | None = None, *, temperature: float = 22.0, humidity: float = 55.0
    ) -> None:
        super().__init__("dht11", name)
        #: The air around the sensor: degC, %RH.
        self.temperature = temperature
        self.humidity = humidity
        #: Transmissions the sensor answered, and starts it ignored for coming too soon.
        self.measurements = 0
        self.too_soon = 0
        self._cached: tuple[int, int] | None = None
        self._valid_until = float("-inf")
        self._last_start = float("-inf")
        self._noisy = 0
        self._silent = 0
        self._state_lock = threading.Lock()

    def noisy_next(self, count: int = 1) -> None:
        """The next *count* transmissions arrive with a bit flipped: EIO."""
        with self._state_lock:
            self._noisy += count

    def silent_next(self, count: int = 1) -> None:
        """The sensor ignores the next *count* start signals: ETIMEDOUT."""
        with self._state_lock:
            self._silent += count

    def attributes(self) -> dict[str, str]:
        """``name`` and the two channels (empty until the first read)."""
        return {**super().attributes(), "in_temp_input": "", "in_humidityrelative_input": ""}

    def _transmission(self) -> tuple[int, int]:
        clock = self.clock
        start = clock.monotonic()
        with self._state_lock:
            early = start - self._last_start < COLLECTING_PERIOD
            silent = self._silent > 0 and not early
            self._silent -= silent
            noisy = self._noisy > 0 and not early and not silent
            self._noisy -= noisy
        self._last_start = start
        if early or silent:
            self.too_soon += early
            clock.sleep(KERNEL_WAIT)  # the kernel waits for edges that never come
            raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))
        clock.sleep(TRANSMISSION_TIME)
        data = bytearray(frame(self.temperature, self.humidity))
        if noisy:
            data[3] ^= 0x10  # one bit read wrong
        values = kernel_decode(bytes(data))
        self.measurements += 1
        self._cached = values
        self._valid_until = clock.monotonic() + COLLECTING_PERIOD
        return values

    def on_read(self, attribute: str) -> str | None:
        """A channel read: from the 2 s cache, or a new transmission."""
        if attribute not in ("in_temp_input", "in_humidityrelative_input"):
            return None
        if self._cached is not None and self.clock.monotonic() < self._valid_until:
            values = self._cached
        else:
            values = self._transmission()
        return f"{values[0] if attribute == 'in_temp_input' else values[1]}\n"


def simulate(
    address: int | str | None = None,
    *,
    temperature: float = 22.0,
    humidity: float = 55.0,
    **driver_options: Any,
) -> SimulatedDHT22:
    """A simulated DHT22 at ``iio:deviceN`` *address* (else numbered on attach)."""
    name = address if isinstance(address, str) and address.startswith("iio:device") else None
    return SimulatedDHT22(name, temperature=temperature, humidity=humidity)

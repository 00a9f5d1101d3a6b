"""A simulated Texas Instruments ADS1115 16-bit ADC with four analog inputs.

Set the voltage on each input pin in :attr:`~SimulatedADS1115.inputs` (volts
against GND); a conversion measures the pair the MUX selects, divides by
the PGA's full scale and saturates at 0x7FFF / 0x8000 as the part does
(datasheet section 9.3.3, table 3).

Modelled from the datasheet (SBAS444):

* the address pointer register (8.5.1): a write of one byte selects a
  register, a write of three bytes also writes it (MSB first); reads
  return the selected 16-bit register, MSB first;
* config register (0x01, reset 0x8583): writing OS=1 in power-down starts a
  single-shot conversion; OS reads 0 while it runs and 1 when done; it
  takes ``1 / data rate`` times ``1 + rate_error`` (the oscillator is good
  to +-10 %), after which the conversion register (0x00) holds the result;
  reading it before then gives the previous result;
* continuous mode (MODE=0): conversions repeat every ``1 / data rate``;
* the threshold registers (0x02, 0x03) are stored; the comparator and the
  ALERT/RDY pin are not modelled, nor are inputs beyond the supply rails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from caioc.hw.sim import SimulatedI2CDevice

__all__ = ["SimulatedADS1115"]

_FULL_SCALE = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)
_DATA_RATE = (8, 16, 32, 64, 128, 250, 475, 860)
#: MUX code -> (positive input, negative input or None for GND).
_MUX = ((0, 1), (0, 3), (1, 3), (2, 3), (0, None), (1, None), (2, None), (3, None))
_RESET = {0x00: 0x0000, 0x01: 0x8583, 0x02: 0x8000, 0x03: 0x7FFF}


class SimulatedADS1115(SimulatedI2CDevice):
    """An ADS1115 on a simulated I2C bus (address 0x48..0x4B by the ADDR pin)."""

    def __init__(
        self,
        address: int = 0x48,
        *,
        inputs: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        name: str | None = None,
    ) -> None:
        super().__init__(address, name=name or "ads1115")
        if len(inputs) != 4:
            raise ValueError("the ADS1115 has four inputs")
        #: Volts on AIN0..AIN3 against GND.
        self.inputs = [float(volts) for volts in inputs]
        #: Relative error of the conversion time (datasheet: within +-0.1).
        self.rate_error = 0.0
        #: Completed conversions, and conversion-register reads while one ran.
        self.conversions = 0
        self.reads_while_converting = 0
        self._power_on()

    def _power_on(self) -> None:
        self.values = dict(_RESET)
        self._selected = 0x00
        self._busy_until = -1.0
        self._generation = 0  # invalidates conversions scheduled before a reset

    def reset(self) -> None:
        """Power-on reset (the I2C general-call reset does this too)."""
        super().reset()
        self._power_on()

    def code(self, mux: int, pga: int) -> int:
        """The output code (a signed 16-bit integer) for the present inputs."""
        positive, negative = _MUX[mux]
        volts = self.inputs[positive] - (0.0 if negative is None else self.inputs[negative])
        return min(max(round(volts / _FULL_SCALE[pga] * 32768), -32768), 32767)

    @property
    def converting(self) -> bool:
        """True while a conversion runs."""
        return self.clock.monotonic() < self._busy_until

    # -- the bus side ----------------------------------------------------------------

    def handle_write(self, data: bytes) -> None:
        """Set the pointer, and with two more bytes write the register."""
        if not data:
            return
        if data[0] & 0xFC:
            return  # not a register: the part ignores it
        self._selected = data[0]
        if len(data) < 3:
            return
        value = int.from_bytes(data[1:3], "big")
        if self._selected == 0x00:
            return  # the conversion register is read-only
        if self._selected != 0x01:
            self.values[self._selected] = value
            return
        self.values[0x01] = (value & 0x7FFF) | (self.values[0x01] & 0x8000)
        continuous = not value & 0x0100
        if continuous or (value & 0x8000 and not self.converting):
            self._start()

    def handle_read(self, length: int) -> bytes:
        """The selected register, MSB first (repeated if more is read)."""
        value = self.values[self._selected]
        if self._selected == 0x01:
            value = value & 0x7FFF | (0 if self.converting else 0x8000)
        elif self._selected == 0x00 and self.converting and self.values[0x01] & 0x0100:
            self.reads_while_converting += 1
        return (value.to_bytes(2, "big") * (length // 2 + 1))[:length]

    def _start(self) -> None:
        config = self.values[0x01]
        duration = (1.0 + self.rate_error) / _DATA_RATE[(config >> 5) & 0x07]
        self._busy_until = self.clock.monotonic() + duration
        self._generation += 1
        generation = self._generation

        def done(device: SimulatedADS1115) -> None:
            if generation == device._generation:
                device._finish(config)

        self.after(duration, done)

    def _finish(self, config: int) -> None:
        """The conversion started with *config* (its MUX and PGA) is done."""
        self.values[0x00] = self.code((config >> 12) & 0x07, (config >> 9) & 0x07) & 0xFFFF
        self.conversions += 1
        if not self.values[0x01] & 0x0100:  # continuous: the next one starts at once
            self._start()


def simulate(address: int | None, **options: Any) -> SimulatedADS1115:
    """The simulated part for the registry entry; driver options are ignored."""
    known = {"inputs", "name"}
    return SimulatedADS1115(
        0x48 if address is None else address,
        **{key: value for key, value in options.items() if key in known},
    )

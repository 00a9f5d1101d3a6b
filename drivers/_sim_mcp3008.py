"""A simulated Microchip MCP3008: an 8-channel, 10-bit SAR ADC on SPI.

Set the voltage on each input in :attr:`~SimulatedMCP3008.inputs` (volts
against AGND) and the reference in :attr:`~SimulatedMCP3008.vref`; a
conversion gives ``code = floor(1024 * VIN / VREF)`` (datasheet DS21295,
section 4.0, equation 4-1), limited to 0 .. 1023 (an input at or above
``VREF * 1023 / 1024`` reads 0x3FF; in pseudo-differential mode an IN- above
IN+ reads 0x000, section 4.1).

The part is simulated bit by bit as it talks on the wires (section 5.0,
figure 5-1 and figure 6-1): with chip select low, the first 1 clocked in on
DIN is the start bit; the next four bits are SGL/DIFF, D2, D1 and D0
(table 5-2); one more clock samples the input; on the next DOUT drives the
null bit (0), then B9 .. B0, MSB first; clocking on gives the same result
LSB first (B1 .. B9, figure 5-2), then zeros. Before the null bit DOUT is
high impedance, which the simulated wire reads as 1, so a driver that does
not mask those bits reads nonsense, as on a real board.

The part is good for 3.6 MHz at VDD = 5 V and 1.35 MHz at 2.7 V (section
1.0, timing table); a faster host clock, or an SPI mode other than 0,0 or
1,1 (section 6.1), shifts the reply by a bit as the simulated bus does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from caioc.hw.sim import SimulatedSPIDevice

__all__ = ["SimulatedMCP3008", "simulate"]

#: Table 5-2, differential (SGL/DIFF = 0): D2 D1 D0 -> (IN+, IN-).
DIFFERENTIAL_PAIRS = ((0, 1), (1, 0), (2, 3), (3, 2), (4, 5), (5, 4), (6, 7), (7, 6))


def _bits(data: bytes) -> list[int]:
    return [(byte >> (7 - index)) & 1 for byte in data for index in range(8)]


def _bytes(bits: list[int]) -> bytes:
    out = bytearray()
    for start in range(0, len(bits), 8):
        value = 0
        for bit in bits[start : start + 8]:
            value = value << 1 | bit
        out.append(value)
    return bytes(out)


class SimulatedMCP3008(SimulatedSPIDevice):
    """An MCP3008 on a :class:`~caioc.hw.sim.SimulatedSPIBus` chip select."""

    def __init__(
        self,
        *,
        inputs: Sequence[float] = (0.0,) * 8,
        vref: float = 3.3,
        max_speed_hz: int = 3_600_000,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name or "mcp3008", mode=0, max_speed_hz=max_speed_hz, size=1)
        if len(inputs) != 8:
            raise ValueError("the MCP3008 has eight inputs")
        if not vref > 0:
            raise ValueError(f"VREF must be positive, not {vref!r}")
        #: Volts on CH0..CH7 against AGND.
        self.inputs = [float(volts) for volts in inputs]
        #: The voltage on the VREF pin.
        self.vref = float(vref)
        #: Completed conversions: (single-ended, channel bits D2..D0).
        self.conversions: list[tuple[bool, int]] = []

    def code(self, single_ended: bool, channel: int) -> int:
        """The 10-bit result for the present inputs (equation 4-1, limited)."""
        if single_ended:
            volts = self.inputs[channel]
        else:
            positive, negative = DIFFERENTIAL_PAIRS[channel]
            volts = self.inputs[positive] - self.inputs[negative]
        return min(max(math.floor(1024.0 * volts / self.vref), 0), 1023)

    def handle_transfer(self, data: bytes) -> bytes:
        """One transaction with CS low: DIN bits in, DOUT bits out (figure 5-1)."""
        din = _bits(data)
        dout = [1] * len(din)  # high impedance until the null bit
        try:
            start = din.index(1)
        except ValueError:
            return _bytes(dout)  # no start bit: the part never wakes
        config = din[start + 1 : start + 5]
        if len(config) < 4:
            return _bytes(dout)  # CS went high before the channel was chosen
        single_ended = bool(config[0])
        channel = config[1] << 2 | config[2] << 1 | config[3]
        code = self.code(single_ended, channel)
        msb_first = [(code >> (9 - index)) & 1 for index in range(10)]
        lsb_first = msb_first[-2::-1]  # B1 .. B9: B0 is shared (figure 5-2)
        tail = [0, *msb_first, *lsb_first]  # the null bit, then the data
        null_bit = start + 6  # start, four config bits, one sample clock
        for offset, bit in enumerate(tail):
            if null_bit + offset >= len(dout):
                break
            dout[null_bit + offset] = bit
        for index in range(null_bit + len(tail), len(dout)):
            dout[index] = 0  # DOUT stays low after the LSB-first data
        if null_bit + 10 < len(dout):  # B0 was clocked out: a whole conversion
            self.conversions.append((single_ended, channel))
        return _bytes(dout)


def simulate(
    address: int | str | None = None,
    *,
    inputs: Sequence[float] | None = None,
    vref: float = 3.3,
    **driver_options: Any,
) -> SimulatedMCP3008:
    """A simulated MCP3008 for a board file or a test.

    *address* (the chip select) is where the bus attaches it; the driver's
    options (``channels``, ``period``, ``clock_hz``) do not change the part.
    Without *inputs*, each channel reads a different, plausible voltage so
    a ``--sim`` board shows distinct values: ``vref * (8 - n) / 10`` on CHn
    (so each differential pair n - (n + 1) reads ``vref / 10``).
    """
    if inputs is None:
        inputs = [vref * (8 - channel) / 10 for channel in range(8)]
    return SimulatedMCP3008(inputs=inputs, vref=vref)

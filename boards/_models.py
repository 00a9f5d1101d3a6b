"""Raspberry Pi board definitions: header pins, buses, GPIO chip labels.

Every model here has the same 40-pin header; what differs is the SoC, and
so the label of the GPIO chip (the Pi 5's GPIOs are on the RP1 south
bridge) and the device-tree model string used to detect the board.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BOARDS", "Board", "HeaderPin", "detect_board", "resolve_pin"]


@dataclass(frozen=True)
class HeaderPin:
    """One pin of the 40-pin header."""

    position: int
    #: "GPIO17", "3V3", "5V" or "GND".
    name: str
    #: BCM GPIO number, None for power and ground.
    bcm: int | None = None
    #: Alternate functions commonly used (I2C1 SDA, SPI0 CE0 ...).
    functions: tuple[str, ...] = ()


def _header() -> tuple[HeaderPin, ...]:
    power = {1: "3V3", 17: "3V3", 2: "5V", 4: "5V"}
    ground = {6, 9, 14, 20, 25, 30, 34, 39}
    gpio = {
        3: (2, ("I2C1 SDA",)),
        5: (3, ("I2C1 SCL",)),
        7: (4, ("GPCLK0", "1-Wire")),
        8: (14, ("UART0 TXD",)),
        10: (15, ("UART0 RXD",)),
        11: (17, ()),
        12: (18, ("PWM0", "PCM CLK")),
        13: (27, ()),
        15: (22, ()),
        16: (23, ()),
        18: (24, ()),
        19: (10, ("SPI0 MOSI",)),
        21: (9, ("SPI0 MISO",)),
        22: (25, ()),
        23: (11, ("SPI0 SCLK",)),
        24: (8, ("SPI0 CE0",)),
        26: (7, ("SPI0 CE1",)),
        27: (0, ("ID_SD",)),
        28: (1, ("ID_SC",)),
        29: (5, ()),
        31: (6, ()),
        32: (12, ("PWM0",)),
        33: (13, ("PWM1",)),
        35: (19, ("SPI1 MISO", "PCM FS")),
        36: (16, ("SPI1 CE2",)),
        37: (26, ()),
        38: (20, ("SPI1 MOSI", "PCM DIN")),
        40: (21, ("SPI1 SCLK", "PCM DOUT")),
    }
    pins = []
    for position in range(1, 41):
        if position in power:
            pins.append(HeaderPin(position, power[position]))
        elif position in ground:
            pins.append(HeaderPin(position, "GND"))
        else:
            bcm, functions = gpio[position]
            pins.append(HeaderPin(position, f"GPIO{bcm}", bcm, functions))
    return tuple(pins)


HEADER = _header()


@dataclass(frozen=True)
class Board:
    """A board model and what it offers."""

    name: str
    #: How /proc/device-tree/model starts on this model.
    model_prefix: str
    #: Label of the gpiochip with the header's GPIOs (found by label, not number).
    gpio_chip_label: str
    header: tuple[HeaderPin, ...] = HEADER
    #: Bus name -> Linux device (the defaults of Raspberry Pi OS).
    buses: dict[str, str] = field(
        default_factory=lambda: {
            "i2c-1": "/dev/i2c-1",
            "spi0.0": "/dev/spidev0.0",
            "spi0.1": "/dev/spidev0.1",
            "serial0": "/dev/serial0",
            "w1": "/sys/bus/w1/devices",
        }
    )

    def pin(self, position: int) -> HeaderPin:
        """The header pin at ``position`` (1-40)."""
        if not 1 <= position <= len(self.header):
            raise ValueError(f"the {self.name} header has pins 1-{len(self.header)}")
        return self.header[position - 1]


BOARDS = {
    board.name: board
    for board in (
        Board("raspberry-pi-zero-2-w", "Raspberry Pi Zero 2 W", "pinctrl-bcm2835"),
        Board("raspberry-pi-3", "Raspberry Pi 3", "pinctrl-bcm2835"),
        Board("raspberry-pi-4", "Raspberry Pi 4", "pinctrl-bcm2711"),
        Board("raspberry-pi-5", "Raspberry Pi 5", "pinctrl-rp1"),
    )
}

#: Any model will do for the header, which they all share.
_ANY_MODEL = BOARDS["raspberry-pi-4"]

_MODEL_FILES = (Path("/proc/device-tree/model"), Path("/sys/firmware/devicetree/base/model"))


def detect_board(environ: dict[str, str] | None = None) -> Board | None:
    """The board this runs on: CAIOC_BOARD if set, else the device tree."""
    env = os.environ if environ is None else environ
    override = env.get("CAIOC_BOARD", "").strip()
    if override:
        if override not in BOARDS:
            raise ValueError(f"CAIOC_BOARD={override!r}: known boards are {sorted(BOARDS)}")
        return BOARDS[override]
    for path in _MODEL_FILES:
        try:
            model = path.read_bytes().rstrip(b"\0").decode(errors="replace")
        except OSError:
            continue
        for board in BOARDS.values():
            if model.startswith(board.model_prefix):
                return board
    return None


def resolve_pin(board: Board | None, pin: int | str) -> int:
    """A BCM number from 17, "GPIO17", "BCM17", "BOARD11" or "J8:11".

    Header positions are read on *board*'s header; None means the 40-pin
    header every model here shares. GPIO backends use this as their
    ``pin_resolver`` (see ``boards/_bus_gpio.py``); names it does not know
    raise ValueError and go on to the chip's line names.
    """
    if isinstance(pin, int):
        return pin
    text = pin.strip().upper()
    match = re.fullmatch(r"(?:GPIO|BCM)(\d+)", text)
    if match:
        return int(match.group(1))
    match = re.fullmatch(r"(?:BOARD|J8:)(\d+)", text)
    if match:
        header_pin = (board or _ANY_MODEL).pin(int(match.group(1)))
        if header_pin.bcm is None:
            raise ValueError(f"header pin {header_pin.position} is {header_pin.name}, not a GPIO")
        return header_pin.bcm
    if text.isdigit():
        return int(text)
    raise ValueError(f"{pin!r} names no pin: use 17, 'GPIO17', 'BOARD11' or 'J8:11'")

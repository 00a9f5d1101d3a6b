"""Any register-mapped I2C chip from a board file: each register a polled PV.

Many I2C parts keep each quantity in a register of its own, as a plain
number: a temperature sensor (TMP117, LM75, MCP9808), a current monitor
(INA219), an ambient-light sensor. For those no driver code is needed: a
board file names the registers (driver ``i2c-registers``), and each
becomes a :class:`~caioc.hw.register_reading` PV::

    [[device]]
    driver = "i2c-registers"
    name = "tmp117"
    bus = "i2c-1"
    address = 0x48
    [device.options]
    period = 1.0
    chip_id = { register = 0x0F, format = ">H", value = 0x0117 }
    [device.options.registers]
    temperature = { register = 0x00, format = ">h", scale = 0.0078125, units = "degC" }
    config = { register = 0x01, format = ">H", period = 10.0 }

Each register has ``register`` (its address), ``format`` (a :mod:`struct`
format of one number, ``">H"`` by default), and may have ``scale`` and
``offset`` (the value is ``raw * scale + offset``), ``period`` (the
device's ``period`` by default), ``timeout`` and the PV fields ``units``,
``precision``, ``doc``, alarm and display limits. ``chip_id``, if given,
is read when the device (re)connects and must hold ``value``: a wrong
part is a CALC alarm on every register and is retried, as with the
bundled drivers. The registers of one period are read in one job of the
bus worker each tick, and with ``shared_schedule = true`` (the default)
those of every such device on the bus together (see
:class:`~caioc.hw.register_reading`).

``--sim`` attaches a :class:`SimulatedRegisterChip` (registers of their
own widths, each at its pointer address) holding, for the n-th register, the raw
number nearest to 20 + 5 n in the register's units, within what its
format holds (``sim_value`` in a register's table sets that value
instead), and ``chip_id``'s value.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from caioc.hw import BadReply, register_reading
from caioc.hw.sim import SimulatedI2CDevice

from ._i2c_sensor import BusSpec, I2CSensor
from ._registry import DriverInfo, register
from ._serial_instrument import PV_OPTIONS, check_quantity_name

__all__ = [
    "RegisterChip",
    "SimulatedRegisterChip",
    "make_i2c_registers",
    "simulate_i2c_registers",
]

#: What a register's table may hold, beside the PV fields of PV_OPTIONS.
REGISTER_KEYS = {"register", "format", "scale", "offset", "period", "timeout", "doc", "sim_value"}


class RegisterChip(I2CSensor):
    """An I2C part whose readings are registers (see the module doc); subclassed per board file."""

    #: The chip-id check: (register, struct format, expected value), or None.
    chip_id: tuple[int, str, int] | None = None
    shared_schedule = True

    async def probe(self) -> None:
        if self.chip_id is None:
            return
        where, layout, expected = self.chip_id
        raw = await self.chip.read_registers_async(where, struct.calcsize(layout))
        (found,) = struct.unpack(layout, raw)
        if found != expected:
            raise BadReply(
                f"chip id 0x{found:x} at register 0x{where:02x}, expected 0x{expected:x}",
                data=raw,
            )


def _register_spec(name: str, spec: Any, period: float) -> dict[str, Any]:
    """One register's table from a board file, checked and completed."""
    if not isinstance(spec, Mapping) or "register" not in spec:
        raise ValueError(f"register {name!r}: give a table with at least its 'register'")
    unknown = set(spec) - REGISTER_KEYS - PV_OPTIONS
    if unknown:
        allowed = ", ".join(sorted(REGISTER_KEYS | PV_OPTIONS))
        raise ValueError(f"register {name!r}: unknown {sorted(unknown)} (allowed: {allowed})")
    options = dict(spec)
    options.setdefault("period", period)
    options.setdefault("format", ">H")
    try:
        struct.Struct(options["format"])
    except struct.error as error:
        raise ValueError(f"register {name!r}: format {options['format']!r}: {error}") from None
    return options


def device_class(
    registers: Mapping[str, Any], period: float, chip_id: Mapping[str, Any] | None
) -> type[RegisterChip]:
    """The :class:`RegisterChip` subclass with a reading per register of a board file."""
    if not period > 0:
        raise ValueError(f"a poll period must be positive, not {period!r}")
    if not registers:
        raise ValueError("no registers: give [device.options.registers]")
    namespace: dict[str, Any] = {}
    # Attributes the driver has (methods, status PVs, the chip, PV prefixes ...).
    taken = {name for name, _ in RegisterChip._declared()} | set(dir(RegisterChip))
    taken |= {"address", "bus_spec", "lock", "chip", "clock"}
    for name, spec in registers.items():
        check_quantity_name(RegisterChip, name, taken)
        options = _register_spec(name, spec, period)
        options.pop("sim_value", None)
        where, layout = options.pop("register"), options.pop("format")
        namespace[name] = register_reading(where, layout, **options)
    if chip_id is not None:
        try:
            namespace["chip_id"] = (
                int(chip_id["register"]),
                str(chip_id.get("format", "B")),
                int(chip_id["value"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"chip_id: give register, value (and format): {error}") from None
    return type("RegisterChip", (RegisterChip,), namespace)


def make_i2c_registers(
    *,
    prefix: str,
    bus: BusSpec,
    address: int | None = None,
    period: float = 1.0,
    registers: Mapping[str, Any] | None = None,
    chip_id: Mapping[str, Any] | None = None,
    shared_schedule: bool = True,
) -> RegisterChip:
    """A :class:`RegisterChip` with the registers of a board file's options."""
    if address is None:
        raise ValueError("an i2c-registers device needs its address")
    cls = device_class(registers or {}, float(period), chip_id)
    cls.shared_schedule = bool(shared_schedule)
    return cls(prefix, bus=bus, address=address)


class SimulatedRegisterChip(SimulatedI2CDevice):
    """A part whose registers each hold bytes of their own at their pointer address.

    As in the TMP117, INA219, LM75 or MCP9808, where register 0x00 and
    register 0x01 are both 16 bits wide: a write sets the pointer (and
    stores any further bytes in that register), a read returns the
    pointed register's bytes (zeros past its end). :attr:`values` maps a
    register to its bytes; :meth:`set_register` changes one.
    """

    def __init__(self, address: int) -> None:
        super().__init__(address, name="register chip")
        self.values: dict[int, bytes] = {}

    def set_register(self, register: int, data: bytes) -> None:
        """Give *register* the bytes *data*, as the chip itself would."""
        with self._lock:
            self.values[register] = bytes(data)

    def handle_write(self, data: bytes) -> None:
        if not data:
            return  # an address probe
        self.pointer = data[0]
        if len(data) > 1:
            self.values[self.pointer] = bytes(data[1:])

    def handle_read(self, length: int) -> bytes:
        return (self.values.get(self.pointer, b"") + bytes(length))[:length]


def simulate_i2c_registers(
    *,
    address: int | None = None,
    registers: Mapping[str, Any] | None = None,
    chip_id: Mapping[str, Any] | None = None,
    period: float = 1.0,
    **options: Any,
) -> SimulatedRegisterChip:
    """The simulated part for ``--sim``: the registers hold plausible values (module doc)."""
    if address is None:
        raise ValueError("an i2c-registers device needs its address")
    sim = SimulatedRegisterChip(address)
    for index, (name, spec) in enumerate((registers or {}).items()):
        spec = _register_spec(name, spec, period)
        layout = struct.Struct(spec["format"])
        value = float(spec.get("sim_value", 20.0 + 5 * index))
        raw = (value - float(spec.get("offset", 0.0))) / float(spec.get("scale") or 1.0)
        code = layout.format[-1:]
        number: Any = raw
        if code not in ("e", "f", "d"):
            bits = 8 * layout.size
            low, high = (
                (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if code.islower() else (0, 2**bits - 1)
            )
            number = min(max(round(raw), low), high) if code != "?" else bool(raw)
        sim.set_register(int(spec["register"]), layout.pack(number))
    if chip_id is not None:
        layout = struct.Struct(str(chip_id.get("format", "B")))
        sim.set_register(int(chip_id["register"]), layout.pack(int(chip_id["value"])))
    return sim


register(
    DriverInfo(
        name="i2c-registers",
        summary=(
            "any register-mapped I2C chip: each register named in the board file"
            " (address, struct format, scale) is a polled PV, no driver code"
        ),
        bus="i2c",
        factory=make_i2c_registers,
        simulator=simulate_i2c_registers,
        options={"period": 1.0, "registers": {}, "chip_id": None, "shared_schedule": True},
    )
)

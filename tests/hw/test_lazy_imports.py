"""caioc.hw and caioc.hw.sim load what is used, not every transport and simulator."""

from __future__ import annotations

import subprocess
import sys

import caioc.hw
import caioc.hw.sim


def loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(result.stdout.split())


def test_one_simulator_does_not_load_the_others() -> None:
    loaded = loaded_after("from caioc.hw.sim import SimulatedI2CBus")
    assert "caioc.hw.sim.i2c" in loaded
    for other in ("spi", "serial", "gpio", "w1", "iio", "_sysfs"):
        assert f"caioc.hw.sim.{other}" not in loaded, other
    assert "serial" not in loaded  # pyserial, for the serial simulator only


def test_every_exported_name_resolves() -> None:
    for module in (caioc.hw, caioc.hw.sim):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
        assert set(module.__all__) <= set(dir(module))

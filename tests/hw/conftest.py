"""Fixtures for the hardware layer: virtual clocks, simulated buses, a helper thread."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from caioc.hw import I2CBus, VirtualClock
from caioc.hw.sim import SimulatedI2CBus, SimulatedI2CDevice

# Real-time bound on any wait in these tests: generous, never reached when
# things work, and short enough that a broken test fails instead of hanging.
BOUND = 5.0


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(stall_timeout=BOUND)


@pytest.fixture
def sim_bus(clock: VirtualClock) -> Iterator[SimulatedI2CBus]:
    bus = SimulatedI2CBus(1, clock=clock)
    yield bus
    bus.close()


@pytest.fixture
def sensor(sim_bus: SimulatedI2CBus) -> SimulatedI2CDevice:
    return sim_bus.attach(
        SimulatedI2CDevice(0x48, registers={0x00: 0x12, 0x01: 0x34, 0x02: 0x56, 0x03: 0x78})
    )


@pytest.fixture
def bus(sim_bus: SimulatedI2CBus) -> Iterator[I2CBus]:
    with I2CBus(sim_bus, timeout=0.5) as bus:
        yield bus


@pytest.fixture
def background() -> Iterator[Callable[..., concurrent.futures.Future[Any]]]:
    """Run a blocking call on another thread, so the test can advance the clock."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:

        def start(function: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
            return pool.submit(function, *args)

        yield start

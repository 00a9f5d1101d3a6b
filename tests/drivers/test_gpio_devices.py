"""GPIO devices: I/O-interrupt inputs, outputs and PWM, seen through CA clients."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from peers import server_config, serving_board
from waiting import run, until

from caioc.boards import build, load
from caioc.ca import AlarmSeverity, ChannelType
from caioc.client import ClientConfig, Context, Reading
from caioc.drivers import lookup
from caioc.drivers._sim_gpio import SimulatedButton, SimulatedLoad, SimulatedRelay
from caioc.drivers.gpio_devices import (
    DigitalInput,
    DigitalOutput,
    PWMOutput,
    make_digital_input,
)
from caioc.hw import Direction, Pull, VirtualClock, gpio_support, load_backend
from caioc.hw.sim import SimulatedGPIO
from caioc.server import Server

BOARD_FILES = Path(__file__).resolve().parents[2] / "boards" / "files"


@asynccontextmanager
async def serving(*devices: Any) -> AsyncIterator[Context]:
    """The devices started behind a caioc server on loopback, and a client context."""
    pvdb: dict[str, Any] = {}
    for device in devices:
        pvdb.update(device.pvdb)
    config = server_config()
    server = Server(pvdb, config)
    await server.start()
    for device in devices:
        await device.startup()
    try:
        client = ClientConfig(search_addresses=[("127.0.0.1", server.tcp_port)])
        async with Context(client) as ctx:
            yield ctx
    finally:
        for device in devices:
            await device.shutdown()
        await server.stop()


def test_the_drivers_are_registered_on_the_gpio_bus() -> None:
    for name in ("digital_input", "digital_output", "pwm_output"):
        info = lookup(name)
        assert info.bus == "gpio" and info.default_address is None


# Digital inputs: I/O interrupt.


def test_a_button_press_is_an_io_interrupt_update_seen_by_a_ca_client() -> None:
    async def scenario() -> None:
        gpio = SimulatedGPIO()
        button = gpio.attach(SimulatedButton(17, active_low=True, pull="up"))
        device = DigitalInput("b:", bus=gpio, pin=17, debounce=0.0, states=["Released", "Pressed"])
        async with serving(device) as ctx:
            state, count = await ctx.connect("b:state", "b:edge_count")
            first = await state.read(ChannelType.TIME_ENUM)
            assert first.value == 0 and first.severity == 0  # released: read at start
            updates: list[Reading] = []
            await state.subscribe(ChannelType.TIME_ENUM, callback=updates.append)
            await until(lambda: len(updates) == 1, "the first monitor update")
            button.press()
            await until(lambda: len(updates) == 2, "the press")
            assert updates[-1].value == 1
            button.release()
            await until(lambda: len(updates) == 3, "the release")
            assert updates[-1].value == 0
            assert (await count.read()).value == 2
            labels = await state.read(ChannelType.CTRL_ENUM)
            assert labels.metadata["strs"][:2] == ["Released", "Pressed"]
        assert device.pin is None  # released
        button.press()  # nobody listens: nothing breaks

    run(scenario)


def test_a_tap_shorter_than_the_debounce_still_ends_released() -> None:
    async def scenario() -> None:
        gpio = SimulatedGPIO()
        button = gpio.attach(SimulatedButton(17))
        device = DigitalInput("b:", bus=gpio, pin=17, debounce=0.05)
        await device.startup()
        try:
            button.press()
            button.release()  # within the debounce: this edge is dropped ...
            await until(lambda: device.edge_count.value == 1, "the press")
            # ... and the look at the line after the debounce time puts it right
            await until(lambda: device.state.value == 0, "the state after the tap")
            assert device.edge_count.value == 1  # one edge was reported, one counted
        finally:
            await device.shutdown()

    run(scenario)


def test_the_update_carries_the_edge_time_not_the_delivery_time() -> None:
    async def scenario() -> None:
        clock = VirtualClock(stall_timeout=5.0)
        gpio = SimulatedGPIO(clock=clock)
        button = gpio.attach(SimulatedButton(4))
        device = DigitalInput("b:", bus=gpio, pin=4, debounce=0.0)
        await device.startup()
        try:
            button.press()  # at virtual time 0 ...
            clock.advance(30.0)  # ... delivered 30 s later on the device's clock
            await until(lambda: device.edge_count.value == 1, "the edge")
            assert device.state.value == 1
            assert device.state.timestamp == pytest.approx(time.time() - 30.0, abs=5.0)
            assert device.edge_count.timestamp == device.state.timestamp
        finally:
            await device.shutdown()

    run(scenario)


def test_bounce_is_filtered_and_every_edge_otherwise_counted() -> None:
    async def scenario() -> None:
        clock = VirtualClock(stall_timeout=5.0)
        gpio = SimulatedGPIO(clock=clock)
        calm = gpio.attach(SimulatedButton(5))
        raw = gpio.attach(SimulatedButton(6))
        filtered = DigitalInput("f:", bus=gpio, pin=5, debounce=0.02)
        unfiltered = DigitalInput("u:", bus=gpio, pin=6, debounce=0.0)
        await filtered.startup()
        await unfiltered.startup()
        try:
            calm.chatter(bounces=3)  # 7 flips, all within the same millisecond
            raw.chatter(bounces=3)
            await until(lambda: unfiltered.edge_count.value == 7, "every raw edge")
            await until(lambda: filtered.edge_count.value == 1, "the debounced press")
            clock.advance(0.1)
            calm.release()
            await until(lambda: filtered.edge_count.value == 2, "the release")
            assert filtered.state.value == 0 and gpio.pin(5).bounce == 0.02
        finally:
            await filtered.shutdown()
            await unfiltered.shutdown()

    run(scenario)


def test_pull_and_polarity_options() -> None:
    async def scenario() -> None:
        gpio = SimulatedGPIO()
        switch = gpio.attach(SimulatedButton(9, active_low=False, pull="down"))
        device = DigitalInput("s:", bus=gpio, pin=9, pull="down", active_low=False)
        await device.startup()
        try:
            assert gpio.pin(9).pull is Pull.DOWN and device.state.value == 0
            switch.press()
            await until(lambda: device.state.value == 1, "the closed switch")
        finally:
            await device.shutdown()
        with pytest.raises(ValueError, match="pin"):
            make_digital_input(prefix="x:", bus=gpio)
        with pytest.raises(ValueError, match="two states"):
            DigitalInput("x:", bus=gpio, pin=3, states=["one"])

    run(scenario)


def test_a_digital_input_through_the_gpiod_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path: a simulated line, fake libgpiod, the gpiod backend, the PV."""
    from hw.fake_gpiod import FakeGpiod

    world = FakeGpiod(tmp_path)
    lines = world.add_chip(0, "pinctrl-bcm2711")
    world.install(monkeypatch)
    monkeypatch.setattr(gpio_support, "CHIP_GLOB", world.pattern)

    async def scenario() -> None:
        backend = load_backend("gpiod")
        device = DigitalInput("g:", bus=backend, pin="GPIO17", debounce=0.005)
        await device.startup()
        try:
            assert device.state.value == 0  # pulled up, active low: Off
            lines.pin(17).drive(0)
            await until(lambda: device.state.value == 1, "the press via gpiod")
            assert device.edge_count.value == 1
            request = world.chips[world.pattern.replace("*", "0")].requests[17][1]
            assert request.debounce_period.total_seconds() == pytest.approx(0.005)
        finally:
            await device.shutdown()
            backend.close()
        assert not world.chips[world.pattern.replace("*", "0")].requests

    run(scenario)


# Digital outputs.


def test_a_put_to_a_relay_drives_its_pin_and_stop_leaves_it_safe() -> None:
    async def scenario() -> None:
        gpio = SimulatedGPIO()
        relay = gpio.attach(SimulatedRelay(27, active_low=True))
        device = DigitalOutput("r:", bus=gpio, pin=27, active_low=True, initial="Off")
        async with serving(device) as ctx:
            (state,) = await ctx.connect("r:state")
            assert gpio.pin(27).direction is Direction.OUTPUT
            assert not relay.energised and gpio.pin(27).level == 1  # active low: off is high
            await state.write(1)
            assert relay.energised and gpio.pin(27).level == 0
            await state.write("Off")
            assert not relay.energised
            await state.write("On")
            assert relay.energised and (await state.read()).value == 1
        # the IOC stopped: safe state (Off, high) driven before the line was let go
        assert device.pin is None and gpio.pin(27).direction is Direction.INPUT
        assert gpio.pin(27).level == 1

    run(scenario)


def test_an_output_starts_in_its_initial_state_without_a_glitch() -> None:
    async def scenario() -> None:
        gpio = SimulatedGPIO()
        relay = gpio.attach(SimulatedRelay(22))
        device = DigitalOutput("r:", bus=gpio, pin=22, initial="On", safe_state="On")
        await device.startup()
        try:
            assert relay.energised and device.state.value == 1
            assert [on for _, on in relay.switch_history()] == [False, True]
        finally:
            await device.shutdown()
        assert gpio.pin(22).level == 1  # safe state On

    run(scenario)


# PWM outputs.


def test_pwm_settings_reach_the_pin_and_are_clamped() -> None:
    async def scenario() -> None:
        gpio = SimulatedGPIO()
        led = gpio.attach(SimulatedLoad(18))
        device = PWMOutput(
            "l:", bus=gpio, pin=18, frequency=200.0, duty_cycle=25.0, max_frequency=1000.0
        )
        async with serving(device) as ctx:
            frequency, duty = await ctx.connect("l:frequency", "l:duty_cycle")
            assert led.frequency == 200.0 and led.power == pytest.approx(0.25)
            await duty.write(60.0)
            assert led.power == pytest.approx(0.60)
            await duty.write(150.0)  # clamped to 100 %
            assert led.power == pytest.approx(1.0) and (await duty.read()).value == 100.0
            await frequency.write(5000.0)  # clamped to max_frequency
            assert led.frequency == 1000.0 and (await frequency.read()).value == 1000.0
            limits = await frequency.read(ChannelType.CTRL_DOUBLE)
            assert limits.metadata["upper_ctrl_limit"] == 1000.0
            assert limits.metadata["units"] == "Hz"
        assert led.frequency is None and led.power == 0.0  # stopped, line released low

    run(scenario)


# Through the C client, in a child process.

IOC = """
import asyncio, sys
from caioc.drivers._sim_gpio import SimulatedButton
from caioc.drivers.gpio_devices import DigitalInput
from caioc.hw.sim import SimulatedGPIO
from caioc.ioc import pvproperty, serve

gpio = SimulatedGPIO()
button = gpio.attach(SimulatedButton(17))


class Rig(DigitalInput):
    # A PV of the test rig, not of the device: 1 presses the button, 0 lets go.
    press = pvproperty(0)

    @press.putter
    async def press(self, instance, value):
        button.press() if value else button.release()
        return value


async def main():
    rig = Rig("rig:", bus=gpio, pin=17, debounce=0.0, states=["Released", "Pressed"])
    await serve(rig, list_pvs=True)  # "PVs:" once it listens and the rig has started

asyncio.run(main())
"""


def test_the_c_client_monitor_sees_the_edge() -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    from peers import ca_environment, free_port, process_until_ready, run_pyepics

    env = ca_environment(free_port(), free_port())
    with process_until_ready(IOC, env, ready="PVs:"):
        result = run_pyepics(
            """
            import time
            seen = []
            pv = epics.PV("rig:state", form="time", auto_monitor=True,
                          callback=lambda **kw: seen.append(
                              [kw["value"], kw["timestamp"], kw["severity"]]))
            assert pv.wait_for_connection(timeout=5)

            def wait_for(count):
                until(lambda: len(seen) >= count, f"{count} monitor updates")

            wait_for(1)
            before = time.time()
            epics.caput("rig:press", 1, wait=True, timeout=5)
            wait_for(2)
            epics.caput("rig:press", 0, wait=True, timeout=5)
            wait_for(3)
            result = {"seen": seen, "before": before, "after": time.time(),
                      "count": epics.caget("rig:edge_count", timeout=5),
                      "state": epics.caget("rig:state", as_string=True, timeout=5)}
            """,
            env,
        )
    states = [state for state, _, _ in result["seen"]]
    assert states == [0, 1, 0] and result["state"] == "Released"
    assert all(severity == 0 for _, _, severity in result["seen"])
    pressed_at = result["seen"][1][1]
    assert result["before"] - 1 <= pressed_at <= result["after"] + 1  # the edge's time
    assert result["count"] == 2


# The shipped board file.


def test_the_gpio_demo_board_file_on_simulated_parts() -> None:
    async def scenario() -> None:
        board_file = load(BOARD_FILES / "gpio-demo.toml")
        button, relay, led = build(board_file, sim=True)
        assert button.pin_spec == "J8:11"
        for device in (button, relay, led):
            await device.startup()
        try:
            assert button.pin is not None and button.pin.number == 17  # header pin 11
            gpio = button.backend
            assert gpio is relay.backend is led.backend  # one bus, shared
            assert isinstance(gpio, SimulatedGPIO)
            assert button.state.value == 0 and button.state.alarm_severity == AlarmSeverity.NO_ALARM
            gpio.pin(17).drive(0)
            await until(lambda: button.state.value == 1, "the press")
            assert gpio.pin(18).duty_cycle == pytest.approx(0.25)
            assert gpio.pin(27).direction is Direction.OUTPUT and gpio.pin(27).level == 0
        finally:
            for device in (button, relay, led):
                await device.shutdown()

    run(scenario)


def test_the_gpio_demo_serves_sensible_values_to_the_c_client() -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    from peers import ca_environment, free_port, run_pyepics

    env = ca_environment(free_port(), free_port())
    with serving_board("gpio-demo", env):
        result = run_pyepics(
            """
            names = ["demo:button:state", "demo:button:edge_count", "demo:relay:state",
                     "demo:led:frequency", "demo:led:duty_cycle"]
            result = {}
            for name in names:
                pv = epics.PV(name, form="ctrl")
                pv.wait_for_connection(timeout=5)
                data = pv.get_with_metadata(form="ctrl", timeout=5) or {}
                text = epics.caget(name, as_string=True, timeout=5)
                result[name] = [text, data.get("severity"), data.get("units")]
            epics.caput("demo:relay:state", "On", wait=True, timeout=5)
            epics.caput("demo:led:duty_cycle", 150, wait=True, timeout=5)
            result["relay"] = epics.caget("demo:relay:state", as_string=True, timeout=5)
            result["duty"] = epics.caget("demo:led:duty_cycle", timeout=5)
            """,
            env,
        )
    assert result["demo:button:state"][:2] == ["Released", 0]
    assert result["demo:button:edge_count"][:2] == ["0", 0]
    assert result["demo:relay:state"][:2] == ["Off", 0]
    assert result["demo:led:frequency"][1:] == [0, "Hz"]
    assert float(result["demo:led:frequency"][0]) == 200.0
    assert float(result["demo:led:duty_cycle"][0]) == 25.0
    assert result["relay"] == "On" and result["duty"] == 100.0


def test_header_positions_and_line_names_resolve_through_the_board() -> None:
    from caioc.boards import BOARDS
    from caioc.boards._bus_gpio import open_bus

    gpio = open_bus("gpio", sim=True, board=BOARDS["raspberry-pi-5"])
    assert gpio.pin("J8:11").number == 17
    assert gpio.pin("BOARD12").number == 18
    assert gpio.pin("GPIO4").number == 4
    with pytest.raises(ValueError, match="no pin called 'J8:6'"):
        gpio.pin("J8:6")  # ground
    anywhere = open_bus("gpio", sim=True, board=None)  # the common 40-pin header
    assert anywhere.pin("J8:13").number == 27


def test_a_real_gpio_bus_finds_its_chip_by_the_board_or_the_bus_label(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hw.fake_gpiod import FakeGpiod

    from caioc.boards import BOARDS
    from caioc.boards._bus_gpio import open_bus

    world = FakeGpiod(tmp_path)
    world.add_chip(0, "pinctrl-bcm2711")
    world.add_chip(1, "pinctrl-rp1")
    world.install(monkeypatch)
    monkeypatch.setattr(gpio_support, "CHIP_GLOB", world.pattern)
    monkeypatch.setenv("CAIOC_GPIO_BACKEND", "gpiod")
    with open_bus("gpio", sim=False, board=BOARDS["raspberry-pi-5"]) as pi5:
        assert pi5.chip_label == "pinctrl-rp1"
        assert pi5.pin("J8:11").number == 17  # header positions through the board
    with open_bus("gpio-pinctrl-bcm2711", sim=False, board=None) as named:
        assert named.chip_label == "pinctrl-bcm2711"
    monkeypatch.setitem(sys.modules, "gpiod", None)  # not installed
    with pytest.raises(OSError, match=r"pip install caioc\[gpiod\]"):
        open_bus("gpio", sim=False, board=None)

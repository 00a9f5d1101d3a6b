"""SCPI over serial: the simulated instrument, and the driver through real pyserial on its pty."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from waiting import run, until

from caioc.boards._bus_serial import SimulatedSerialPorts, open_bus, resolve_port
from caioc.ca import AlarmSeverity, AlarmStatus, ChannelType
from caioc.client import ClientConfig, Context, ServerError
from caioc.drivers import lookup
from caioc.drivers._sim_scpi import SimulatedPowerSupply, scpi_header_pattern
from caioc.drivers.scpi import (
    BenchPowerSupply,
    Command,
    Measurement,
    SCPIInstrument,
    make_scpi,
    parse_error,
    parse_identity,
    parse_number,
)
from caioc.hw import BadReply, DeviceUnplugged, SerialPort
from caioc.hw.serial import line_reading
from caioc.server import Server, ServerConfig

REPLY_TIMEOUT = 0.3


@pytest.fixture
def supply() -> Iterator[SimulatedPowerSupply]:
    with SimulatedPowerSupply(read_terminator="\n", write_terminator="\r\n") as sim:
        yield sim


@pytest.fixture
def port(supply: SimulatedPowerSupply) -> Iterator[SerialPort]:
    with SerialPort(supply.path, read_terminator="\r\n", reply_timeout=REPLY_TIMEOUT) as port:
        yield port


def power_supply(sim: SimulatedPowerSupply, **options: Any) -> SCPIInstrument:
    """A BenchPowerSupply on *sim*'s pty, opening its own port (the real pyserial path)."""
    options.setdefault("error_poll_period", None)
    options.setdefault("period", 60.0)  # read at start-up; the tests read on demand after
    cls = BenchPowerSupply.configured(
        period=options.pop("period"), error_poll_period=options.pop("error_poll_period")
    )
    return cls(
        "psu:",
        port=sim.path,
        read_terminator="\r\n",
        reply_timeout=REPLY_TIMEOUT,
        **options,
    )


def alarm(channel: Any) -> tuple[AlarmStatus, AlarmSeverity]:
    return channel.alarm_status, channel.alarm_severity


# -- replies and the SCPI tree notation ------------------------------------------------------------


def test_parsing_replies() -> None:
    assert parse_identity("Keysight Technologies,E36312A,MY5900,2.1.0-1.0.4-1.12") == (
        "Keysight Technologies",
        "E36312A",
        "MY5900",
        "2.1.0-1.0.4-1.12",
    )
    assert parse_identity("ACME,X1,0,1.0,build 7").firmware == "1.0,build 7"
    with pytest.raises(BadReply):
        parse_identity("ACME X1")
    assert parse_error('-113,"Undefined header"') == (-113, "Undefined header")
    assert parse_error('+0,"No error"') == (0, "No error")
    assert parse_error('-222,"Data out of range;VOLT 99"') == (-222, "Data out of range;VOLT 99")
    with pytest.raises(BadReply):
        parse_error("garbage")
    assert parse_number("+1.23450000E+01") == 12.345
    assert parse_number("1.5,2.5") == 1.5
    assert math.isnan(parse_number("9.91E37"))  # SCPI's NaN
    with pytest.raises(BadReply):
        parse_number("OVLD")


@pytest.mark.parametrize(
    ("header", "accepted", "refused"),
    [
        (
            "MEASure[:SCALar]:VOLTage[:DC]?",
            ["MEAS:VOLT?", "measure:scalar:voltage:dc?"],
            ["MEA:VOLT?"],
        ),
        ("[SOURce:]VOLTage", ["VOLT", "SOUR:VOLT", ":source:volt"], ["VOLTA", "SOURCE"]),
        ("SYSTem:ERRor[:NEXT]?", ["SYST:ERR?", ":SYSTEM:ERROR:NEXT?"], ["SYST:ERR", "SYST:ERRO?"]),
        ("*IDN?", ["*IDN?", "*idn?"], ["IDN?", "*IDN"]),
    ],
)
def test_scpi_headers_take_short_and_long_forms(
    header: str, accepted: list[str], refused: list[str]
) -> None:
    pattern = scpi_header_pattern(header)
    assert all(pattern.fullmatch(text) for text in accepted)
    assert not any(pattern.fullmatch(text) for text in refused)


# -- the simulated instrument, through real pyserial ---------------------------------------------


def test_the_simulated_supply_models_its_load(
    supply: SimulatedPowerSupply, port: SerialPort
) -> None:
    assert port.query("*IDN?") == "caioc,PSU-3005,SIM0001,1.0"
    port.write_line("VOLT 12;CURR 2.0;OUTP ON")
    assert port.query("VOLT?;CURR?;OUTP?") == "12.000;2.000;1"
    assert parse_number(port.query("MEAS:VOLT?")) == 12.0  # 1.2 A into 10 ohms
    assert parse_number(port.query("meas:curr:dc?")) == pytest.approx(1.2)
    supply.load_ohms = 2.0  # would draw 6 A: the 2 A limit holds the current
    assert parse_number(port.query("MEAS:CURR?")) == pytest.approx(2.0)
    assert parse_number(port.query("MEAS:VOLT?")) == pytest.approx(4.0)
    assert supply.constant_current
    port.write_line("*RST")
    assert port.query("*OPC?") == "1"
    assert (supply.output, supply.voltage_setpoint) == (False, 0.0)
    assert port.query("SYST:ERR?") == '0,"No error"'


def test_the_error_queue(supply: SimulatedPowerSupply, port: SerialPort) -> None:
    port.write_line("VOLT 99")  # above 30 V
    port.write_line("BOGUS 1")
    port.write_line("VOLT abc")
    port.write_line("VOLT")
    assert port.query("SYST:ERR:COUN?") == "4"
    assert port.query("*STB?") == "4"  # error/event queue not empty
    assert [port.query("SYST:ERR?") for _ in range(5)] == [
        '-222,"Data out of range"',
        '-113,"Undefined header"',
        '-104,"Data type error"',
        '-109,"Missing parameter"',
        '0,"No error"',
    ]
    assert supply.voltage_setpoint == 0.0  # nothing out of range was taken
    assert port.query("*ESR?") == str(0x20 | 0x10)  # command and execution error bits
    assert port.query("*ESR?") == "0"  # reading clears it
    # An unknown query is an error and gets no reply, as on real instruments.
    with pytest.raises(TimeoutError):
        port.query("MEAS:FREQ?")
    for _ in range(supply.queue_size + 3):
        port.write_line("NOPE")
    errors = [port.query("SYST:ERR?") for _ in range(supply.queue_size)]
    assert errors[-1] == '-350,"Queue overflow"' and errors[0] == '-113,"Undefined header"'
    port.write_line("NOPE")
    port.write_line("*CLS")
    assert port.query("SYST:ERR?") == '0,"No error"'


# -- the driver ---------------------------------------------------------------------------------


async def connected(device: SCPIInstrument) -> None:
    """Start *device* and wait until it is connected and each reading was read once."""
    await device.startup()
    await until(lambda: device.connected.value == 1, "the instrument to connect")
    readings = [
        channel
        for name, channel in device._channels.items()
        if isinstance(device._declared_map()[name], Measurement)
    ]
    await until(
        lambda: all(channel.alarm_status != AlarmStatus.UDF for channel in readings),
        "the first poll of every reading",
    )


def test_identity_initialise_and_read_back(supply: SimulatedPowerSupply) -> None:
    async def scenario() -> None:
        supply.voltage_setpoint, supply.current_limit, supply.output = 5.0, 0.25, True
        supply.push_error(-310, "System error")  # left over from before the IOC started
        device = power_supply(supply, init_commands=["SYST:REM"])
        supply.command("SYSTem:REMote", lambda sim, params: None)
        try:
            await connected(device)
            assert (device.manufacturer.value, device.model.value) == ("caioc", "PSU-3005")
            assert (device.serial_number.value, device.firmware.value) == ("SIM0001", "1.0")
            # *CLS first (no *RST by default), then the init commands, queue checked
            commands = supply.received
            assert commands[:2] == ["*IDN?", "*CLS"] and "*RST" not in commands
            assert commands.index("SYST:REM") > commands.index("*CLS")
            # the settings show what the instrument does, not the PVs' defaults
            assert device.voltage_setpoint.value == 5.0
            assert device.current_limit.value == 0.25
            assert device.output.value == 1
            await until(lambda: device.current.value == pytest.approx(0.25), "a measurement")
            assert device.voltage.value == pytest.approx(2.5)  # 0.25 A limit into 10 ohms
            assert alarm(device.voltage) == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)
            assert device.voltage.units == "V" and device.current.precision == 4
            # *CLS cleared the old error; the error PV is defined, not UDF
            assert device.scpi_error.value == "" and device.scpi_error_count.value == 0
            assert device.scpi_error.alarm_status == AlarmStatus.NO_ALARM
        finally:
            await device.shutdown()

    run(scenario)


def test_reset_waits_for_completion_and_a_failing_init_command_fails(
    supply: SimulatedPowerSupply,
) -> None:
    async def scenario() -> None:
        supply.voltage_setpoint, supply.output = 7.0, True
        device = power_supply(supply, reset=True, init_commands=["SYST:BEEP:STAT OFF"])
        try:
            await device.startup()
            await until(lambda: device.error_count.value >= 1, "the initialisation to fail")
            received = supply.received
            assert received[1:4] == ["*RST", "*OPC?", "*CLS"]
            assert supply.output is False  # *RST turned the output off
            assert device.connected.value == 0
            assert "Undefined header" in device.last_error.value
            assert device.scpi_error.value == '-113,"Undefined header"'
        finally:
            await device.shutdown()

    run(scenario)


def test_a_wrong_model_is_calc_until_the_right_one_answers(supply: SimulatedPowerSupply) -> None:
    async def scenario() -> None:
        device = power_supply(supply, expected_model="E36312A", period=0.05)
        device.reconnect_delays = (0.05, 1.0, 0.05)
        try:
            await device.startup()
            await until(lambda: device.model.value == "PSU-3005", "the identity")
            assert alarm(device.model) == (AlarmStatus.CALC, AlarmSeverity.INVALID)
            assert alarm(device.voltage) == (AlarmStatus.CALC, AlarmSeverity.INVALID)
            assert device.connected.value == 0
            assert "PSU-3005" in device.last_error.value
            assert "VOLT?" not in supply.received  # never configured the wrong instrument
            supply.identity = "caioc,E36312A,SIM0002,2.0"  # the right one is plugged in
            await until(lambda: device.connected.value == 1, "the reconnection")
            assert alarm(device.model) == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)
            await until(lambda: device.voltage.alarm_status == AlarmStatus.NO_ALARM, "a reading")
        finally:
            await device.shutdown()

    run(scenario)


def test_settings_reach_the_instrument_and_errors_refuse_them(
    supply: SimulatedPowerSupply,
) -> None:
    async def scenario() -> None:
        device = power_supply(supply, max_error_reads=3)
        setpoint = device.voltage_setpoint
        try:
            await connected(device)
            await setpoint.put_hook(setpoint, 12.5)
            await device.output.put_hook(device.output, 1)
            assert (supply.voltage_setpoint, supply.output) == (12.5, True)
            assert "VOLT 12.500" in supply.received and "OUTP 1" in supply.received
            assert await device.read_now("voltage") == 10.0  # the 1 A limit into 10 ohms
            with pytest.raises(Exception, match=re.escape('-222,"Data out of range"')):
                await setpoint.put_hook(setpoint, 31.0)
            assert supply.voltage_setpoint == 12.5
            assert device.scpi_error.value == '-222,"Data out of range"'
            assert device.scpi_error_count.value == 1
            assert setpoint.alarm_status == AlarmStatus.WRITE
            assert device.connected.value == 1  # a refused value is not a lost instrument
            # A queue that keeps filling is read a bounded number of times per drain.
            for _ in range(8):
                supply.push_error(-230, "Data corrupt or stale")
            async with device.lock:
                assert len(await device.read_errors()) == 3
            assert len(supply.errors) == 5 and device.scpi_error_count.value == 4
        finally:
            await device.shutdown()

    run(scenario)


def test_the_error_queue_is_polled(supply: SimulatedPowerSupply) -> None:
    async def scenario() -> None:
        device = power_supply(supply, error_poll_period=0.05, max_error_reads=3)
        try:
            await connected(device)
            supply.push_error(-200, "Execution error")
            supply.push_error(-221, "Settings conflict")
            await until(lambda: device.scpi_error_count.value == 2, "the errors to be read")
            assert device.scpi_error.value == '-221,"Settings conflict"'
            assert not supply.errors
        finally:
            await device.shutdown()

    run(scenario)


def test_faults_become_alarms_and_recover(supply: SimulatedPowerSupply) -> None:
    async def scenario() -> None:
        supply.voltage_setpoint, supply.output = 3.0, True
        device = power_supply(supply)
        device.reconnect_delays = (0.05, 1.0, 0.05)
        try:
            await connected(device)
            assert await device.read_now("voltage") == 3.0
            supply.faults.garble_next(1)  # line noise: not ASCII any more
            assert await device.read_now("voltage") is None
            assert alarm(device.voltage) == (AlarmStatus.CALC, AlarmSeverity.INVALID)
            assert device.voltage.value == 3.0  # the last good value is kept
            supply.faults.no_reply_next(1)
            assert await device.read_now("voltage") is None
            assert alarm(device.voltage) == (AlarmStatus.TIMEOUT, AlarmSeverity.INVALID)
            supply.voltage_setpoint = 4.0
            assert await device.read_now("voltage") == 4.0
            assert alarm(device.voltage) == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)
            supply.unplug()  # the USB adapter is pulled out
            await device.read_now("voltage")
            await until(lambda: device.connected.value == 0, "the disconnection")
            assert device.current.alarm_status == AlarmStatus.COMM
            supply.replug()
            await until(lambda: device.connected.value == 1, "the reconnection")
            assert await device.read_now("current") == pytest.approx(0.4)
            assert device.current.alarm_status == AlarmStatus.NO_ALARM
        finally:
            await device.shutdown()

    run(scenario)


def test_quantities_declared_by_configuration(supply: SimulatedPowerSupply) -> None:
    async def scenario() -> None:
        supply.quantity("MEAS:TEMP?", 41.5)
        supply.command("SYSTem:LABel", lambda sim, params: sim.state.update(label=params[0]))
        cls = SCPIInstrument.configured(
            measurements={
                "temperature": {"query": "MEAS:TEMP?", "units": "degC", "precision": 1},
                "voltage": "MEAS:VOLT?",
                "serial_text": {"query": "*IDN?", "type": "string"},
            },
            settings={
                "output": {"command": "OUTP {value}", "query": "OUTP?", "enum": ["Off", "On"]},
                "limit": {"command": "CURR {value}", "query": "CURR?", "low": 0, "high": 2},
                "label": {"command": 'SYST:LAB "{value}"', "type": "string"},
            },
            period=60.0,
            error_poll_period=None,
        )
        assert cls.scpi_error.period is None and cls.temperature.period == 60.0
        device = cls("dev:", port=supply.path, read_terminator="\r\n")
        try:
            await connected(device)
            await until(lambda: device.temperature.value == 41.5, "the temperature")
            assert device.temperature.units == "degC"
            assert device.serial_text.value.startswith("caioc,PSU-3005")
            assert device.limit.value == 1.0  # read back
            assert device.limit.upper_ctrl_limit == 2
            await device.output.put_hook(device.output, 1)
            assert supply.output
            await device.label.put_hook(device.label, "bench 3")
            assert supply.state["label"] == '"bench 3"'
        finally:
            await device.shutdown()

    run(scenario)


def test_configuration_mistakes_are_named() -> None:
    with pytest.raises(ValueError, match="taken"):
        SCPIInstrument.configured(measurements={"model": "MEAS:VOLT?"})
    with pytest.raises(ValueError, match="taken"):
        SCPIInstrument.configured(measurements={"reset": "MEAS:VOLT?"})
    with pytest.raises(ValueError, match="unknown keys"):
        SCPIInstrument.configured(measurements={"v": {"query": "MEAS:VOLT?", "unit": "V"}})
    with pytest.raises(ValueError, match="both"):
        SCPIInstrument.configured(measurements={"v": "MEAS:VOLT?"}, settings={"v": "VOLT {value}"})
    with pytest.raises(ValueError, match="value"):
        SCPIInstrument.configured(settings={"v": "VOLT 5"})
    with pytest.raises(ValueError, match="one of"):
        SCPIInstrument.configured(measurements={"v": {"query": "X?", "type": "complex"}})
    # A board file may redefine the template's own quantities.
    redefined = BenchPowerSupply.configured(measurements={"voltage": "MEAS:VOLT:DC?"})
    declared = redefined._declared_map()["voltage"]
    assert isinstance(declared, Measurement) and declared.query == "MEAS:VOLT:DC?"
    assert isinstance(redefined._declared_map()["output"], Command)


# -- the board-file side: the serial bus and the registry ------------------------------------------


def test_the_serial_bus_convention() -> None:
    assert resolve_port("/dev/ttyUSB0") == "/dev/ttyUSB0"
    assert resolve_port("socket://127.0.0.1:5025") == "socket://127.0.0.1:5025"
    with pytest.raises(DeviceUnplugged, match="ffff:fffe"):
        resolve_port("usb:ffff:fffe")  # no such adapter present: retried, not a crash
    with pytest.raises(ValueError):
        resolve_port("usb:0403")
    with pytest.raises(ValueError):
        resolve_port(3)
    with pytest.raises(NotImplementedError, match='bus = "serial"'):
        open_bus("serial-/dev/ttyUSB0", sim=False)


def test_usb_ids_find_the_adapter_among_the_present_ports(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from serial.tools import list_ports, list_ports_common

    def port(device: str, vid: int | None, pid: int | None, serial: str | None) -> object:
        info = list_ports_common.ListPortInfo(device, skip_link_detection=True)
        info.vid, info.pid, info.serial_number = vid, pid, serial
        return info

    present = [
        port("/dev/ttyUSB1", 0x0403, 0x6001, "B2"),
        port("/dev/ttyACM0", 0x2341, 0x0043, "X"),
        port("/dev/ttyUSB0", 0x0403, 0x6001, "A1"),
        port("/dev/ttyS0", None, None, None),
    ]
    monkeypatch.setattr(list_ports, "comports", lambda: present)
    assert resolve_port("usb:2341:0043") == "/dev/ttyACM0"
    assert resolve_port("usb:0403:6001:B2") == "/dev/ttyUSB1"
    with caplog.at_level(logging.WARNING, logger="caioc.boards"):
        assert resolve_port("usb:0403:6001") == "/dev/ttyUSB0"  # two match: the first, said
    assert "add the serial number" in caplog.text
    with pytest.raises(DeviceUnplugged):
        resolve_port("usb:0403:6001:C3")
    del present[0]  # replugged: the adapter comes back under another name
    present.append(port("/dev/ttyUSB3", 0x0403, 0x6001, "B2"))
    assert resolve_port("usb:0403:6001:B2") == "/dev/ttyUSB3"


def test_registry_entries_build_devices_on_a_simulated_serial_bus() -> None:
    async def scenario() -> None:
        bus = open_bus("serial", sim=True)
        assert isinstance(bus, SimulatedSerialPorts)
        devices = []
        try:
            for driver, address in (("scpi-psu", "/dev/ttyUSB0"), ("scpi", "usb:0403:6001")):
                info = lookup(driver)
                assert info.bus == "serial"
                options = {
                    **info.options,
                    "expected_model": "PSU-7",
                    "period": 0.1,
                    "measurements": {"power": {"query": "MEAS:POW?", "units": "W"}},
                }
                part = bus.attach(info.simulator(address=address, **options))
                assert part is bus.part(address)
                devices.append(
                    info.factory(prefix=f"{driver}:", bus=bus, address=address, **options)
                )
            with pytest.raises(ValueError, match="two simulated"):
                bus.attach(lookup("scpi").simulator(address="/dev/ttyUSB0"))
            with pytest.raises(ValueError, match="its port"):
                lookup("scpi").factory(prefix="x:", bus=bus, address=None)
            for device in devices:
                await connected(device)
                assert device.model.value == "PSU-7"
            bus.part("/dev/ttyUSB0").output = True
            bus.part("/dev/ttyUSB0").voltage_setpoint = 2.0
            psu = devices[0]
            await until(lambda: psu.power.value == pytest.approx(0.4), "the power")
            assert psu.power.units == "W" and psu.voltage.units == "V"
            assert not hasattr(devices[1], "voltage")  # the generic one has what it declares
        finally:
            for device in devices:
                await device.shutdown()
            bus.close()

    run(scenario)


# -- through Channel Access ----------------------------------------------------------------------


def test_a_refused_put_reaches_the_ca_client_with_the_instruments_message(
    supply: SimulatedPowerSupply, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        device = power_supply(supply, period=0.05)
        config = ServerConfig(
            port=0,
            interfaces=["127.0.0.1"],
            beacon_addresses=[("127.0.0.1", 9)],
            auto_beacon_addresses=False,
        )
        server = Server(device.pvdb, config)
        await server.start()
        try:
            await connected(device)
            client = ClientConfig(search_addresses=[("127.0.0.1", server.tcp_port)])
            async with Context(client) as ctx:
                setpoint, output, voltage, model = await ctx.connect(
                    "psu:voltage_setpoint", "psu:output", "psu:voltage", "psu:model"
                )
                assert (await model.read(ChannelType.STRING)).value == "PSU-3005"
                await setpoint.write(6.0)
                await output.write("On")
                assert supply.voltage_setpoint == 6.0 and supply.output
                await until(lambda: device.voltage.value == 6.0, "the new output voltage")
                reading = await voltage.read(ChannelType.TIME_DOUBLE)
                assert reading.value == 6.0 and reading.severity == 0
                # A put with completion is refused (ECA_PUTFAIL; the reply has no text) ...
                with pytest.raises(ServerError, match="write request failed"):
                    await setpoint.write(45.0)
                # ... and a plain put's refusal carries the instrument's own message.
                with caplog.at_level(logging.WARNING, logger="caioc.client"):
                    await setpoint.write(46.0, wait=False)
                    await until(
                        lambda: '-222,"Data out of range"' in caplog.text, "the refusal's reason"
                    )
                assert supply.voltage_setpoint == 6.0
                assert (await setpoint.read(ChannelType.DOUBLE)).value == 6.0
        finally:
            await device.shutdown()
            await server.stop()

    run(scenario)


def test_the_c_client_reads_the_instrument_and_hears_the_refusal() -> None:
    pytest.importorskip("epics", reason="pyepics (libca) not installed")
    from peers import ROOT, ca_environment, free_port, process_until_ready

    env = ca_environment(free_port(), free_port())
    argv = [sys.executable, "-m", "caioc.cli.main", "run", "scpi-instrument", "--sim", "--list-pvs"]
    client = textwrap.dedent(
        """
        import ctypes, time, epics, epics.ca

        # libca's exception handler gets the server's reason for a refused
        # plain put (CA_PROTO_ERROR); pyepics does not expose one, so ctypes.
        class ExceptionArgs(ctypes.Structure):
            _fields_ = [("usr", ctypes.c_void_p), ("chid", ctypes.c_void_p),
                        ("type", ctypes.c_long), ("count", ctypes.c_long),
                        ("addr", ctypes.c_void_p), ("stat", ctypes.c_long),
                        ("op", ctypes.c_long), ("ctx", ctypes.c_char_p),
                        ("pFile", ctypes.c_char_p), ("lineNo", ctypes.c_uint)]

        def on_exception(args):
            print("EXCEPTION", args.stat, (args.ctx or b"").decode(), flush=True)

        handler = ctypes.CFUNCTYPE(None, ExceptionArgs)(on_exception)
        epics.ca.initialize_libca()
        epics.ca.libca.ca_add_exception_event(handler, None)
        pvs = {name: epics.PV("bench:psu:" + name, form="ctrl") for name in
               ("model", "voltage_setpoint", "output", "voltage", "scpi_error")}
        for pv in pvs.values():
            pv.wait_for_connection(timeout=5)
        print("MODEL", pvs["model"].get(timeout=5))
        pvs["voltage_setpoint"].put(5.0, wait=True, timeout=5)
        pvs["output"].put(1, wait=True, timeout=5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pvs["voltage"].get(timeout=5) != 5.0:
            time.sleep(0.05)
        print("VOLTAGE", pvs["voltage"].get(timeout=5), pvs["voltage"].units)
        pvs["voltage_setpoint"].put(99.0)  # a plain put: refused by the instrument
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not pvs["scpi_error"].get(timeout=5):
            time.sleep(0.05)
        epics.ca.poll(evt=0.1, iot=0.1)
        print("SETPOINT", pvs["voltage_setpoint"].get(timeout=5, use_monitor=False))
        print("ERROR", pvs["scpi_error"].get(timeout=5), flush=True)
        epics.ca.finalize_libca()
        """
    )
    with process_until_ready("", env, ready="PVs:", argv=argv) as ioc:
        completed = subprocess.run(
            [sys.executable, "-c", client],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        # Stopped as a service is stopped (SIGINT): cleanly, the simulator's pty removed.
        ioc.send_signal(signal.SIGINT)
        assert ioc.wait(timeout=20) == 0
    lines = completed.stdout.splitlines()
    assert "MODEL PSU-3005" in lines, completed.stdout + completed.stderr
    assert "VOLTAGE 5.0 V" in lines
    assert "SETPOINT 5.0" in lines  # the refused value was not taken
    assert 'ERROR -222,"Data out of range"' in lines
    # ECA_PUTFAIL, with the instrument's own words as the reason
    assert 'EXCEPTION 160 write failed: -222,"Data out of range"' in lines


def test_the_make_scpi_factory_opens_a_port_by_path(supply: SimulatedPowerSupply) -> None:
    async def scenario() -> None:
        device = make_scpi(
            prefix="g:",
            address=supply.path,
            read_terminator="\r\n",
            measurements={"voltage": "MEAS:VOLT?"},
            error_poll_period=0.05,
        )
        try:
            await connected(device)
            supply.push_error(-100, "Command error")
            await until(lambda: device.scpi_error_count.value == 1, "the polled error")
            await device.shutdown()
            assert device._port is None
        finally:
            await device.shutdown()

    run(scenario)


@pytest.mark.parametrize("count", [1, 3])
def test_asyncio_queries_do_not_interleave(supply: SimulatedPowerSupply, count: int) -> None:
    async def scenario() -> None:
        device = power_supply(supply)
        try:
            await connected(device)
            supply.output, supply.voltage_setpoint = True, 1.0
            # Writes and polls at once: every write's error check belongs to it.
            writes = [
                device.voltage_setpoint.put_hook(device.voltage_setpoint, 2.0 + i)
                for i in range(count)
            ]
            reads = [device.read_now("voltage") for _ in range(count)]
            await asyncio.gather(*writes, *reads)
            assert device.scpi_error_count.value == 0
            received = supply.received
            for index, command in enumerate(received):
                if command.startswith("VOLT "):
                    assert received[index + 1] == "SYST:ERR?"
        finally:
            await device.shutdown()

    run(scenario)


# -- event lines the instrument sends unasked ------------------------------------------------------


class EventfulSupply(BenchPowerSupply):
    """A supply that also reports events unasked (``EVENT OVP``)."""

    event = line_reading(r"EVENT (.*)", "", doc="The latest event line")


def test_event_lines_reach_their_pv_and_queries_keep_their_replies(
    supply: SimulatedPowerSupply,
) -> None:
    supply.voltage_setpoint, supply.current_limit, supply.output = 5.0, 1.0, True

    async def scenario() -> None:
        cls = EventfulSupply.configured(period=0.01, error_poll_period=0.05)
        device = cls(
            "psu:",
            port=supply.path,
            read_terminator="\r\n",
            reply_timeout=REPLY_TIMEOUT,
            unsolicited=r"EVENT ",
        )
        try:
            await connected(device)
            supply.send("EVENT OVP")  # between queries
            await until(lambda: device.event.value == "OVP", "the event line")
            # A stream of event lines while the polls query: every reply still
            # answers its own query, and no reading sees an event line.
            stream = supply.every(0.002, "EVENT TICK")
            await until(lambda: device.event.value == "TICK", "the streamed events")
            polled = len(supply.received)
            await until(lambda: len(supply.received) > polled + 40, "forty more queries")
            stream.stop()
            assert stream.sent > 10
            for channel in (device.voltage, device.current, device.scpi_error):
                assert alarm(channel)[1] == AlarmSeverity.NO_ALARM, channel
            assert device.voltage.value == pytest.approx(5.0)
            assert device.current.value == pytest.approx(0.5)
            assert device.error_count.value == 0
            port = device.port
        finally:
            await device.shutdown()
        assert port.closed and not port.listening

    run(scenario)

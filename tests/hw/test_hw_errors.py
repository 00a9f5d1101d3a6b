"""Hardware exceptions: builtin bases, alarm kinds, and what they carry."""

from __future__ import annotations

import errno

import pytest

from caioc.ca import AlarmSeverity, AlarmStatus, CaiocError
from caioc.hw import (
    BackendUnavailable,
    BadReply,
    BusTimeout,
    DeviceClosed,
    DeviceUnplugged,
    HardwareError,
    NoAcknowledge,
    PartialReply,
    PinError,
    UnsupportedOperation,
)


@pytest.mark.parametrize(
    ("cls", "builtin", "kind"),
    [
        (BusTimeout, TimeoutError, AlarmStatus.TIMEOUT),
        (NoAcknowledge, OSError, AlarmStatus.READ),
        (DeviceUnplugged, ConnectionError, AlarmStatus.COMM),
        (BadReply, ValueError, AlarmStatus.CALC),
        (PartialReply, ValueError, AlarmStatus.READ),
        (DeviceClosed, RuntimeError, AlarmStatus.COMM),
        (PinError, ValueError, AlarmStatus.WRITE),
        (UnsupportedOperation, NotImplementedError, AlarmStatus.COMM),
        (BackendUnavailable, ImportError, AlarmStatus.COMM),
    ],
)
def test_each_error_is_a_hardware_error_its_builtin_and_names_an_alarm(
    cls: type[HardwareError], builtin: type[BaseException], kind: AlarmStatus
) -> None:
    exc = cls("what happened", source="i2c-1 0x48")
    assert isinstance(exc, HardwareError)
    assert isinstance(exc, CaiocError)
    assert isinstance(exc, builtin)
    assert exc.kind is kind
    assert exc.severity is AlarmSeverity.INVALID
    assert exc.source == "i2c-1 0x48"
    assert str(exc) == "what happened"
    with pytest.raises(builtin):
        raise exc


def test_kind_can_be_overridden_per_instance() -> None:
    exc = NoAcknowledge("write not acknowledged", kind=AlarmStatus.WRITE)
    assert exc.kind is AlarmStatus.WRITE
    assert NoAcknowledge.kind is AlarmStatus.READ


def test_no_acknowledge_carries_the_errno_smbus2_raises() -> None:
    exc = NoAcknowledge("nobody home")
    assert exc.errno == errno.EREMOTEIO == 121
    assert str(exc) == "nobody home"


def test_partial_reply_is_a_bad_reply_and_keeps_the_bytes() -> None:
    exc = PartialReply("cut short", data=b"ACME,")
    assert isinstance(exc, BadReply)
    assert exc.data == b"ACME,"
    assert BadReply("x").data == b""

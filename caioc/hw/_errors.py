"""Hardware faults as exceptions, each naming the EPICS alarm it becomes.

Every class here subclasses both :class:`HardwareError` (so one ``except``
catches any hardware fault) and the builtin that matches its meaning (so
code written against the standard library still does the right thing:
``except TimeoutError`` catches :class:`BusTimeout`, ``except OSError``
catches :class:`NoAcknowledge` as it would catch smbus2's own error).

Each exception carries what the alarm layer needs (that layer comes later;
nothing here sets a PV's alarm):

``kind``
    The :class:`~caioc.ca.AlarmStatus` (the STAT field) a PV bound to the
    failing read or write should show: ``TIMEOUT`` when the hardware did
    not answer in time, ``READ`` / ``WRITE`` when a transfer in that
    direction failed, ``COMM`` when the link itself is gone, ``CALC`` when
    an answer arrived but could not be understood (StreamDevice uses CALC
    for a reply that does not match its format, and so do we).
``severity``
    Always :attr:`~caioc.ca.AlarmSeverity.INVALID`: the value could not be
    read or written, so the PV keeps its last good value and timestamp.
``source``
    A short human name for where it happened (``"i2c-1 0x48"``,
    ``"/dev/ttyUSB0"``), or ``None``.

The class attribute gives the usual kind; a transport may pass ``kind=`` to
say more (a NACK on a write is a ``WRITE`` alarm, on a read a ``READ``).
"""

from __future__ import annotations

import errno

from caioc.ca import AlarmSeverity, AlarmStatus, CaiocError

__all__ = [
    "BackendUnavailable",
    "BadReply",
    "BusTimeout",
    "DeviceClosed",
    "DeviceUnplugged",
    "HardwareError",
    "NoAcknowledge",
    "PartialReply",
    "PinError",
    "UnsupportedOperation",
]


class HardwareError(CaiocError):
    """Base class of every hardware fault caioc raises on purpose.

    *kind* overrides the class's usual alarm status for this instance;
    *source* names the bus, address or port involved.
    """

    kind: AlarmStatus = AlarmStatus.COMM
    severity: AlarmSeverity = AlarmSeverity.INVALID
    source: str | None

    def __init__(
        self,
        message: str,
        *,
        kind: AlarmStatus | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind
        self.source = source


class BusTimeout(HardwareError, TimeoutError):
    """The hardware did not complete a transfer or answer in time.

    Raised for a hung I2C transfer (the per-bus worker gave up waiting),
    an I2C adapter reporting ETIMEDOUT, and a serial instrument that sent
    nothing before the reply timeout. Alarm: ``TIMEOUT``.
    """

    kind = AlarmStatus.TIMEOUT


class NoAcknowledge(HardwareError, OSError):
    """An I2C device did not acknowledge (NACK): absent, busy or unplugged.

    ``errno`` is ``EREMOTEIO`` (121), what smbus2 raises on a Raspberry Pi
    when nobody answers at an address, so code that checks
    ``exc.errno == errno.EREMOTEIO`` keeps working. Alarm: ``READ``, or
    ``WRITE`` when the unacknowledged transfer was a write.
    """

    kind = AlarmStatus.READ

    def __init__(
        self,
        message: str,
        *,
        kind: AlarmStatus | None = None,
        source: str | None = None,
        error_number: int = errno.EREMOTEIO,
    ) -> None:
        super().__init__(message, kind=kind, source=source)
        # Set after construction so str() stays the plain message.
        self.errno = error_number


class DeviceUnplugged(HardwareError, ConnectionError):
    """The link to the hardware is gone: a USB adapter or serial port vanished.

    Transports that can reconnect try again on the next call, so the PV
    recovers by itself once the device is back. Alarm: ``COMM``.
    """

    kind = AlarmStatus.COMM


class BadReply(HardwareError, ValueError):
    """An answer arrived but cannot be understood (garbled, wrong format).

    ``data`` holds the raw bytes received. Alarm: ``CALC``.
    """

    kind = AlarmStatus.CALC
    data: bytes

    def __init__(
        self,
        message: str,
        *,
        data: bytes = b"",
        kind: AlarmStatus | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(message, kind=kind, source=source)
        self.data = data


class PartialReply(BadReply):
    """An answer started but stopped before its terminator (inter-byte timeout).

    ``data`` holds the bytes that did arrive. Alarm: ``READ``.
    """

    kind = AlarmStatus.READ


class DeviceClosed(HardwareError, RuntimeError):
    """The bus, port or device object was used after ``close()``.

    This is a bug in the caller rather than a hardware fault, but a PV
    bound to it should still show that no communication happens.
    Alarm: ``COMM``.
    """

    kind = AlarmStatus.COMM


class PinError(HardwareError, ValueError):
    """A GPIO pin was named or used wrongly (unknown pin, driving an input).

    Alarm: ``WRITE``.
    """

    kind = AlarmStatus.WRITE


class UnsupportedOperation(HardwareError, NotImplementedError):
    """The backend cannot do this (PWM on a backend without it, for example).

    Alarm: ``COMM``.
    """

    kind = AlarmStatus.COMM


class BackendUnavailable(HardwareError, ImportError):
    """A chosen hardware backend cannot be loaded; the message names the fix.

    For a missing library that is the pip extra to install, for example
    ``pip install caioc[gpiod]``. Alarm: ``COMM``.
    """

    kind = AlarmStatus.COMM

"""pyepics-compatible functions and PV class on caioc's threaded client.

Typical pyepics scripts run by changing only the import::

    from caioc.client.pyepics_compat import caget, caput, camonitor, PV

The names, arguments and callback keywords follow pyepics (``epics``); the
work is done by :class:`caioc.client.ThreadedContext`, so no C library is
needed. Not every pyepics corner is here yet: see the module's tests for
what is covered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..ca import AccessRights, ChannelType, DbrClass, native_type, promote
from ..ca._convert import double_to_string
from ._context import Channel, ChannelTimeout, Reading, Subscription
from ._threaded import shared_context

__all__ = ["PV", "caget", "caget_many", "cainfo", "camonitor", "camonitor_clear", "caput"]

_FORMS = {"native": DbrClass.PLAIN, "time": DbrClass.TIME, "ctrl": DbrClass.CTRL}
_monitors: dict[str, Subscription] = {}
_ACCESS_WORDS = {
    (True, True): "read/write",
    (True, False): "read-only",
    (False, True): "write-only",
    (False, False): "no access",
}


def _char_value(value: Any, metadata: dict[str, Any], data_type: int) -> str:
    """What pyepics puts in ``char_value``: enum state, formatted number ..."""
    if isinstance(value, str):
        return value
    native = native_type(data_type)
    if native == ChannelType.ENUM and "strs" in metadata:
        states = metadata["strs"]
        return states[value] if 0 <= int(value) < len(states) else str(value)
    if native in (ChannelType.DOUBLE, ChannelType.FLOAT) and np.ndim(value) == 0:
        return double_to_string(float(value), int(metadata.get("precision", 6) or 0))
    if np.ndim(value):
        return f"<array size={len(value)}, type={ChannelType(native).name.lower()}>"
    return str(value)


def _channel(pvname: str, timeout: float) -> Channel:
    (channel,) = shared_context().connect(pvname, timeout=timeout)
    return channel


def caget(
    pvname: str,
    as_string: bool = False,
    count: int | None = None,
    as_numpy: bool = True,
    timeout: float | None = None,
    connection_timeout: float = 5.0,
) -> Any:
    """The value of ``pvname``, or None if it does not connect in time."""
    try:
        channel = _channel(pvname, connection_timeout)
        assert channel.native_type is not None
        data_type = promote(channel.native_type, DbrClass.CTRL if as_string else DbrClass.PLAIN)
        reading = shared_context().read(pvname, data_type, count, timeout or 5.0)
    except ChannelTimeout:
        return None
    if as_string:
        return _char_value(reading.value, reading.metadata, reading.data_type)
    if not as_numpy and isinstance(reading.value, np.ndarray):
        return reading.value.tolist()
    return reading.value


def caput(
    pvname: str,
    value: Any,
    wait: bool = False,
    timeout: float = 60.0,
    connection_timeout: float = 5.0,
) -> int | None:
    """Write ``value``; with ``wait`` block for completion. 1 on success."""
    try:
        _channel(pvname, connection_timeout)
        shared_context().write(pvname, value, wait=wait, timeout=timeout)
    except ChannelTimeout:
        return None
    return 1


def caget_many(pvlist: Iterable[str], as_string: bool = False, timeout: float = 5.0) -> list[Any]:
    """Values of several PVs, read concurrently (None where one failed)."""
    names = list(pvlist)
    if as_string:
        return [caget(name, as_string=True, timeout=timeout) for name in names]
    readings = shared_context().read_many(names, timeout)
    return [None if reading is None else reading.value for reading in readings]


def camonitor(
    pvname: str,
    writer: Callable[[str], None] | None = None,
    callback: Callable[..., None] | None = None,
) -> None:
    """Print (or pass to ``writer``/``callback``) every update of ``pvname``."""
    camonitor_clear(pvname)

    def report(reading: Reading) -> None:
        keywords = _keywords(pvname, reading)
        if callback is not None:
            callback(**keywords)
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(keywords["timestamp"] or 0))
        line = f"{pvname:30s} {stamp} {keywords['char_value']}"
        (writer or print)(line)

    native = _channel(pvname, 5.0).native_type
    assert native is not None
    _monitors[pvname] = shared_context().subscribe(pvname, report, promote(native, DbrClass.TIME))


def camonitor_clear(pvname: str) -> None:
    """Stop a :func:`camonitor`."""
    subscription = _monitors.pop(pvname, None)
    if subscription is not None:
        shared_context().unsubscribe(subscription)


def cainfo(pvname: str, print_out: bool = True) -> str | None:
    """A summary of the channel, as pyepics' cainfo prints it."""
    pv = PV(pvname, form="ctrl")
    if not pv.wait_for_connection(5.0):
        return None
    text = pv.info
    if print_out:
        print(text)
    return text


def _keywords(pvname: str, reading: Reading) -> dict[str, Any]:
    metadata = reading.metadata
    return {
        "pvname": pvname,
        "value": reading.value,
        "char_value": _char_value(reading.value, metadata, reading.data_type),
        "status": metadata.get("status", 0),
        "severity": metadata.get("severity", 0),
        "timestamp": metadata.get("timestamp"),
        "units": metadata.get("units"),
        "precision": metadata.get("precision"),
        "enum_strs": metadata.get("strs"),
        "count": reading.data_count,
        "type": ChannelType(reading.data_type).name.lower(),
    }


class PV:
    """A process variable as pyepics' ``epics.PV`` presents it."""

    def __init__(
        self,
        pvname: str,
        callback: Callable[..., None] | None = None,
        form: str = "time",
        auto_monitor: bool | None = None,
        connection_callback: Callable[..., None] | None = None,
        connection_timeout: float | None = None,
        count: int | None = None,
        access_callback: Callable[..., None] | None = None,
    ) -> None:
        if form not in _FORMS:
            raise ValueError(f"form must be one of {sorted(_FORMS)}, not {form!r}")
        self.pvname = pvname
        self.form = form
        self.count = count
        self.connection_timeout = connection_timeout or 5.0
        self.callbacks: dict[int, tuple[Callable[..., None], dict[str, Any]]] = {}
        #: ``callback(pvname=, conn=, pv=)`` on each connection change.
        self.connection_callbacks = [connection_callback] if connection_callback else []
        #: ``callback(read_access, write_access, pv=)`` on each rights change.
        self.access_callbacks = [access_callback] if access_callback else []
        self._lock = threading.Lock()
        self._last: dict[str, Any] = {}
        self._subscription: Subscription | None = None
        self._context = shared_context()
        self._channel = self._context.channel(pvname)
        # The client thread reports changes; a channel already connected
        # (shared with an earlier PV) is reported at once.
        self._context.add_connection_callback(self._channel, self._connection_changed)
        self._context.add_access_callback(self._channel, self._access_changed)
        if callback is not None:
            self.add_callback(callback)
        if auto_monitor or callback is not None:
            self._monitor()

    def __repr__(self) -> str:
        return f"<PV {self.pvname!r}, {'connected' if self.connected else 'disconnected'}>"

    @property
    def connected(self) -> bool:
        """Whether the channel is connected now."""
        return self._channel.connected.is_set()

    def wait_for_connection(self, timeout: float | None = None) -> bool:
        """True once connected, False if ``timeout`` passed first."""
        deadline = time.monotonic() + (timeout or self.connection_timeout)
        while not self.connected:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _connection_changed(self, channel: Channel, connected: bool) -> None:
        for callback in list(self.connection_callbacks):
            callback(pvname=self.pvname, conn=connected, pv=self)

    def _access_changed(self, channel: Channel, rights: AccessRights) -> None:
        for callback in list(self.access_callbacks):
            callback(self.read_access, self.write_access, pv=self)

    @property
    def read_access(self) -> bool:
        """Whether the server lets us read."""
        return bool(self._channel.access_rights & AccessRights.READ)

    @property
    def write_access(self) -> bool:
        """Whether the server lets us write."""
        return bool(self._channel.access_rights & AccessRights.WRITE)

    @property
    def access(self) -> str:
        """The rights in pyepics' words ('read/write', 'read-only' ...)."""
        return _ACCESS_WORDS[(self.read_access, self.write_access)]

    def _data_type(self, form: str) -> int:
        native = self._channel.native_type
        assert native is not None
        return promote(native, _FORMS[form])

    def _store(self, reading: Reading) -> dict[str, Any]:
        keywords = _keywords(self.pvname, reading)
        with self._lock:
            self._last.update({k: v for k, v in keywords.items() if v is not None})
        return keywords

    def get(
        self,
        count: int | None = None,
        as_string: bool = False,
        as_numpy: bool = True,
        timeout: float | None = None,
        with_ctrlvars: bool = False,
        use_monitor: bool = True,
    ) -> Any:
        """The value (read now unless a monitor already holds it)."""
        if not self.wait_for_connection(timeout):
            return None
        if not (use_monitor and self._subscription is not None and "value" in self._last):
            form = "ctrl" if with_ctrlvars or as_string else self.form
            reading = self._context.read(
                self.pvname, self._data_type(form), count or self.count, timeout or 5.0
            )
            self._store(reading)
        value = self._last["value"]
        if as_string:
            return self._last["char_value"]
        if not as_numpy and isinstance(value, np.ndarray):
            return value.tolist()
        return value

    def get_with_metadata(self, form: str | None = None, timeout: float | None = None) -> dict:
        """The value and its metadata as one dict."""
        if not self.wait_for_connection(timeout):
            return {}
        reading = self._context.read(
            self.pvname, self._data_type(form or self.form), self.count, timeout or 5.0
        )
        return self._store(reading)

    def get_ctrlvars(self, timeout: float | None = None) -> dict:
        """Units, precision, limits and enum states (DBR_CTRL)."""
        return self.get_with_metadata("ctrl", timeout)

    def get_timevars(self, timeout: float | None = None) -> dict:
        """Status, severity and timestamp (DBR_TIME)."""
        return self.get_with_metadata("time", timeout)

    def put(
        self,
        value: Any,
        wait: bool = False,
        timeout: float = 30.0,
        use_complete: bool = False,
        callback: Callable[..., None] | None = None,
    ) -> int | None:
        """Write ``value``; ``wait`` blocks until the put completes."""
        if not self.wait_for_connection():
            return None
        self._context.write(self.pvname, value, wait=wait or callback is not None, timeout=timeout)
        if callback is not None:
            callback(pvname=self.pvname)
        return 1

    def add_callback(
        self, callback: Callable[..., None], index: int | None = None, **kw: Any
    ) -> int:
        """Call ``callback(pvname=, value=, char_value=, ...)`` on every update."""
        index = max(self.callbacks, default=0) + 1 if index is None else index
        self.callbacks[index] = (callback, kw)
        self._monitor()
        return index

    def remove_callback(self, index: int) -> None:
        """Forget callback ``index``."""
        self.callbacks.pop(index, None)

    def clear_callbacks(self) -> None:
        """Forget every callback."""
        self.callbacks.clear()

    def _monitor(self) -> None:
        if self._subscription is not None:
            return
        form = DbrClass.CTRL if self.form == "ctrl" else DbrClass.TIME

        def updated(reading: Reading) -> None:
            keywords = self._store(reading)
            for callback, extra in list(self.callbacks.values()):
                callback(**{**keywords, **extra, "cb_info": None})

        async def subscribe() -> Subscription:
            channel = self._channel
            await channel.wait_for_connection(self.connection_timeout)
            assert channel.native_type is not None
            return await channel.subscribe(
                promote(channel.native_type, form), self.count, callback=updated
            )

        self._subscription = self._context._call(subscribe(), self.connection_timeout)

    def disconnect(self) -> None:
        """Stop monitoring and forget callbacks."""
        if self._subscription is not None:
            self._context.unsubscribe(self._subscription)
            self._subscription = None
        self.callbacks.clear()
        self._context.remove_connection_callback(self._channel, self._connection_changed)
        self._context.remove_access_callback(self._channel, self._access_changed)

    def _attribute(self, name: str) -> Any:
        if name not in self._last:
            self.get_ctrlvars()
        return self._last.get(name)

    @property
    def value(self) -> Any:
        """The latest value."""
        return self.get()

    @property
    def char_value(self) -> str:
        """The latest value as text."""
        return str(self.get(as_string=True))

    units = property(lambda self: self._attribute("units"), doc="Engineering units.")
    precision = property(lambda self: self._attribute("precision"), doc="Display precision.")
    enum_strs = property(lambda self: self._attribute("enum_strs"), doc="Enum state strings.")
    severity = property(lambda self: self._attribute("severity"), doc="Alarm severity.")
    status = property(lambda self: self._attribute("status"), doc="Alarm status.")
    timestamp = property(lambda self: self._attribute("timestamp"), doc="POSIX timestamp.")

    @property
    def type(self) -> str:
        """The native type's name, as pyepics spells it ('double', 'enum' ...)."""
        native = self._channel.native_type
        return "unknown" if native is None else native.name.lower()

    @property
    def nelm(self) -> int:
        """The native element count."""
        return self._channel.native_count

    @property
    def host(self) -> str | None:
        """host:port of the server."""
        circuit = self._channel.circuit
        return None if circuit is None else f"{circuit.address[0]}:{circuit.address[1]}"

    @property
    def info(self) -> str:
        """A multi-line description, like pyepics' PV.info."""
        value = self.get(as_string=True)
        lines = [
            f"== {self.pvname}  ({self.type}) ==",
            f"   value      = {value}",
            f"   units      = {self.units}",
            f"   host       = {self.host}",
            f"   count      = {self.nelm}",
        ]
        return "\n".join(lines)

"""Declarative IOCs: PVs as class attributes of a :class:`PVGroup`.

::

    class Thermometer(PVGroup):
        \"\"\"A thermometer on an I2C bus.\"\"\"

        temperature = pvproperty(0.0, units="degC", precision=2, read_only=True,
                                 doc="The latest reading")
        setpoint = pvproperty(20.0, lower_ctrl_limit=5, upper_ctrl_limit=30)

        @setpoint.putter
        async def setpoint(self, instance, value):
            if value > 25 and not self.allow_hot:
                raise ValueError("above 25 degC needs allow_hot")
            return value            # None keeps the value as given

        @temperature.scan(period=1.0)
        async def temperature(self, instance):
            await instance.set(read_the_sensor())

Each ``pvproperty`` becomes a :class:`~caioc.server.ChannelData` named
``prefix + name`` with record-like field channels beside it (``.VAL``,
``.DESC``, ``.EGU``, ``.PREC``, limits, ``.SEVR``, ``.STAT`` ...), see
:mod:`._fields`. Hooks are plain ``async`` methods: ``getter`` runs before
each client read, ``putter`` before each client put (raise to refuse it with
a clear message), ``startup``/``shutdown`` when the IOC starts and stops,
``scan`` periodically (at the period ``.SCAN`` shows and may change; a
``.PROC`` write runs it once more, and ``.DISA`` skips it, see
:mod:`._fields`).

A group runs under asyncio, trio or curio: whichever library awaits
:meth:`PVGroup.startup` runs its scan loops (see :mod:`._async_lib`). Hooks
run as code of that library; a hook that sleeps with :func:`caioc.ioc.sleep`
runs under all three.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from typing import Any, TypeVar

import numpy as np

from ..ca import ECA
from ..server import (
    ChannelChar,
    ChannelData,
    ChannelDouble,
    ChannelEnum,
    ChannelError,
    ChannelInteger,
    ChannelString,
)
from ._async_lib import AsyncLib, current_async_lib
from ._fields import FIELDS, ScanControl, add_fields

__all__ = ["PVDatabase", "PVGroup", "SubGroup", "pvproperty"]

log = logging.getLogger("caioc.ioc")

Hook = Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=Hook)

_CHANNEL_OPTIONS = (
    "units",
    "precision",
    "upper_disp_limit",
    "lower_disp_limit",
    "upper_alarm_limit",
    "upper_warning_limit",
    "lower_warning_limit",
    "lower_alarm_limit",
    "upper_ctrl_limit",
    "lower_ctrl_limit",
    "read_only",
    "max_length",
    "record_type",
    "access_group",
    "access_level",
    "autosave",
    "upper_alarm_severity",
    "upper_warning_severity",
    "lower_warning_severity",
    "lower_alarm_severity",
    "alarm_hysteresis",
    "monitor_deadband",
    "archive_deadband",
    "disable_severity",
)


def _channel_class(value: Any, dtype: type | None, enum_strings: Any) -> type[ChannelData]:
    if dtype is not None:
        if issubclass(dtype, ChannelData):
            return dtype
        sample = dtype()
    else:
        sample = value
    if enum_strings is not None or isinstance(sample, bool):
        return ChannelEnum
    if isinstance(sample, (bytes, bytearray)):
        return ChannelChar
    if isinstance(sample, str):
        return ChannelString
    array = np.asarray(sample)
    if array.dtype.kind in "iub":
        return ChannelInteger
    if array.dtype.kind == "f":
        return ChannelDouble
    if array.dtype.kind in "US":
        return ChannelString
    raise TypeError(f"cannot tell the channel type of {value!r}: give dtype=")


class pvproperty:
    """A PV declared as a class attribute of a :class:`PVGroup`."""

    def __init__(
        self,
        value: Any = None,
        *,
        name: str | None = None,
        dtype: type | None = None,
        doc: str | None = None,
        enum_strings: list[str] | None = None,
        **options: Any,
    ) -> None:
        unknown = set(options) - set(_CHANNEL_OPTIONS) - {"enum_severities"}
        if unknown:
            raise TypeError(f"pvproperty got unknown options {sorted(unknown)}")
        self.value = value
        self.name = name
        self.attribute = ""
        self.doc = doc or ""
        self.enum_strings = enum_strings
        self.options = options
        self.channel_class = _channel_class(value, dtype, enum_strings)
        self.hooks: dict[str, Hook] = {}
        self.scan_period: float | None = None

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute
        if self.name is None:
            self.name = attribute

    def __get__(self, group: PVGroup | None, owner: type) -> Any:
        if group is None:
            return self
        return group._channels[self.attribute]

    def __set__(self, group: PVGroup, value: Any) -> None:
        raise AttributeError(
            f"{self.attribute} is a PV: use 'await group.{self.attribute}.set(value)'"
        )

    def _hook(self, kind: str) -> Callable[[F], pvproperty]:
        def decorate(function: F) -> pvproperty:
            if not inspect.iscoroutinefunction(function):
                raise TypeError(f"the {kind} of {self.attribute or 'a pvproperty'} must be async")
            self.hooks[kind] = function
            return self

        return decorate

    def getter(self, function: F) -> pvproperty:
        """``async def f(self, instance) -> value | None`` before each read."""
        return self._hook("getter")(function)

    def putter(self, function: F) -> pvproperty:
        """``async def f(self, instance, value) -> value | None`` before each put."""
        return self._hook("putter")(function)

    def startup(self, function: F) -> pvproperty:
        """``async def f(self, instance)`` when the IOC starts."""
        return self._hook("startup")(function)

    def shutdown(self, function: F) -> pvproperty:
        """``async def f(self, instance)`` when the IOC stops."""
        return self._hook("shutdown")(function)

    def scan(self, period: float) -> Callable[[F], pvproperty]:
        """``async def f(self, instance)`` every ``period`` seconds."""
        if period <= 0:
            raise ValueError("a scan period must be positive")

        def decorate(function: F) -> pvproperty:
            self.scan_period = period
            return self._hook("scan")(function)

        return decorate

    def make(self, group: PVGroup, full_name: str) -> ChannelData:
        """The channel this property stands for in ``group``."""
        options = dict(self.options)
        # Attributes of the channel rather than arguments of its constructor.
        extra = ("access_group", "access_level", "autosave")
        access = {key: options.pop(key) for key in extra if key in options}
        if self.enum_strings is not None:
            options["enum_strings"] = self.enum_strings
        value = self.value
        if self.channel_class is ChannelEnum and isinstance(value, bool):
            value = int(value)
            options.setdefault("enum_strings", ["False", "True"])
        channel = self.channel_class(value=value, **options)
        for key, setting in access.items():
            setattr(channel, key, setting)
        putter = self.hooks.get("putter")
        if putter is not None:
            channel.put_hook = _put_hook(group, putter, full_name)
        getter = self.hooks.get("getter")
        if getter is not None:
            _wrap_read(channel, group, getter)
        return channel


def _put_hook(group: PVGroup, putter: Hook, name: str) -> Callable[..., Awaitable[Any]]:
    async def hook(channel: ChannelData, value: Any) -> Any:
        try:
            return await putter(group, channel, value)
        except ChannelError:
            raise
        except (ValueError, TypeError) as error:
            # Validation: the client sees the reason (as the put's ECA text).
            raise ChannelError(ECA.PUTFAIL, f"{name}: {error}") from error

    return hook


def _wrap_read(channel: ChannelData, group: PVGroup, getter: Hook) -> None:
    read = channel.read

    async def read_after_getter(data_type: int, data_count: int, client_version: int) -> Any:
        if not channel.check_disabled():
            value = await getter(group, channel)
            if value is not None:
                await channel.set(value)
        return await read(data_type, data_count, client_version)

    channel.read = read_after_getter  # type: ignore[method-assign]


class PVDatabase(MutableMapping[str, Any]):
    """A group's ``pvdb``: PV and field names -> their channels.

    The ~25 field channels of a PV (``.EGU``, ``.HHSV`` ...) are made when
    one of them is first looked up, not with the group: most are never
    read, and making them all is most of an IOC's start-up time and much
    of its memory. Their names are known from the start (``FIELDS``), so
    ``in``, ``len`` and iteration make nothing; reading the values does.
    A field made late starts from the PV's state at that moment, which is
    what it would have followed to by then.
    """

    def __init__(self) -> None:
        self._channels: dict[str, Any] = {}
        #: Every name served, in order (values unused: an ordered set).
        self._names: dict[str, None] = {}
        #: PV name -> what makes its field channels, until they are made.
        self._unmade: dict[str, Callable[[], Mapping[str, Any]]] = {}

    def add_pv(self, name: str, channel: Any, make_fields: Callable[[], Mapping[str, Any]]) -> None:
        """Serve ``channel`` as ``name``, and its fields when first looked up."""
        made: list[Mapping[str, Any]] = []

        def make_once() -> Mapping[str, Any]:
            # A group's database and every one it is merged into (its parent
            # group's, the server's) must hold the same field channels.
            if not made:
                made.append(make_fields())
            return made[0]

        self._channels[name] = channel
        self._names[name] = None
        self._names.update(dict.fromkeys(f"{name}.{field}" for field in FIELDS))
        self._unmade[name] = make_once

    def merge(self, other: Mapping[str, Any]) -> None:
        """Add all of ``other`` (fields still unmade stay so); ValueError if a name clashes."""
        clash = self._names.keys() & other.keys()
        if clash:
            raise ValueError(f"PV names used twice: {sorted(clash)[:5]}")
        if isinstance(other, PVDatabase):
            self._channels.update(other._channels)
            self._names.update(other._names)
            self._unmade.update(other._unmade)
        else:
            self.update(other)

    def _make_fields(self, key: str) -> None:
        make = self._unmade.pop(key.rpartition(".")[0], None)
        if make is not None:
            fields = make()
            self._channels.update(fields)
            self._names.update(dict.fromkeys(fields))

    def __getitem__(self, key: str) -> Any:
        try:
            return self._channels[key]
        except KeyError:
            self._make_fields(key)
            return self._channels[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The channel of ``key``, or ``default`` (the server's lookup)."""
        channel = self._channels.get(key)
        if channel is None and key in self._names:
            self._make_fields(key)
            channel = self._channels.get(key)
        return default if channel is None else channel

    def __setitem__(self, key: str, channel: Any) -> None:
        self._make_fields(key)  # a field set by hand replaces the made one
        self._channels[key] = channel
        self._names[key] = None

    def __delitem__(self, key: str) -> None:
        self._make_fields(key)
        del self._channels[key]
        del self._names[key]

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"<PVDatabase of {len(self)} channels ({len(self._unmade)} PVs' fields unmade)>"


class SubGroup:
    """A :class:`PVGroup` nested in another, under an extra prefix."""

    def __init__(self, group: type[PVGroup], prefix: str = "", **kwargs: Any) -> None:
        self.group = group
        self.prefix = prefix
        self.kwargs = kwargs
        self.attribute = ""

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute
        if not self.prefix:
            self.prefix = f"{attribute}:"

    def __get__(self, group: PVGroup | None, owner: type) -> Any:
        if group is None:
            return self
        return group._groups[self.attribute]


class PVGroup:
    """A set of PVs declared with :class:`pvproperty`, served as one IOC.

    ``prefix`` is put before every name; ``{macro}`` fields in names and
    the prefix are filled from ``macros``.
    """

    #: Attribute names a PV or sub-group may not take.
    RESERVED = frozenset({"prefix", "macros", "pvdb", "pv_names", "startup", "shutdown"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attribute, _ in cls._declared():
            if attribute in cls.RESERVED:
                raise TypeError(f"{cls.__name__}.{attribute}: that name is PVGroup's own")

    def __init__(self, prefix: str = "", *, macros: Mapping[str, str] | None = None) -> None:
        self.macros = dict(macros or {})
        self.prefix = prefix.format(**self.macros)
        self._channels: dict[str, ChannelData] = {}
        self._groups: dict[str, PVGroup] = {}
        self.pvdb = PVDatabase()
        #: The PVs themselves, in declaration order (pvdb adds their fields).
        self.pv_names: list[str] = []
        #: The scan loops' tasks, and the library running them (from startup).
        self._tasks: list[Any] = []
        self._async_lib: AsyncLib | None = None
        #: attribute -> the period of its scan hook (what .SCAN shows).
        self._scans: dict[str, ScanControl] = {}
        for attribute, declared in self._declared():
            if isinstance(declared, pvproperty):
                name = self.prefix + (declared.name or attribute).format(**self.macros)
                if name in self.pvdb:
                    raise ValueError(f"two PVs are named {name!r}")
                channel = declared.make(self, name)
                self._channels[attribute] = channel
                self.pv_names.append(name)
                if declared.scan_period is not None:
                    self._scans[attribute] = ScanControl(declared.scan_period)
                make_fields = functools.partial(
                    add_fields,
                    name,
                    channel,
                    declared.doc,
                    scan=self._scans.get(attribute),
                    process=functools.partial(self._process, attribute),
                )
                self.pvdb.add_pv(name, channel, make_fields)
            else:
                sub = declared.group(
                    self.prefix + declared.prefix.format(**self.macros),
                    macros=self.macros,
                    **declared.kwargs,
                )
                self._groups[attribute] = sub
                self.pvdb.merge(sub.pvdb)
                self.pv_names += sub.pv_names

    @classmethod
    def _declared(cls) -> Iterator[tuple[str, pvproperty | SubGroup]]:
        # Base classes first, for the order PVs are listed in; a subclass
        # redefining a PV replaces it in place.
        declared: dict[str, pvproperty | SubGroup] = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                if isinstance(value, (pvproperty, SubGroup)):
                    declared[attribute] = value
        yield from declared.items()

    def _hooks(self, kind: str) -> Iterator[tuple[pvproperty, Hook, ChannelData]]:
        for attribute, declared in self._declared():
            if isinstance(declared, pvproperty) and kind in declared.hooks:
                yield declared, declared.hooks[kind], self._channels[attribute]

    async def startup(self) -> None:
        """Run startup hooks, then start the scan loops (sub-groups too).

        The scan loops run as tasks of the library awaiting this (asyncio,
        trio or curio) until :meth:`shutdown`.
        """
        for _, hook, channel in self._hooks("startup"):
            await hook(self, channel)
        if self._scans:
            lib = self._async_lib = current_async_lib()
            for attribute, scan in self._scans.items():
                declared = type(self)._declared_pvproperty(attribute)
                scan.changed = lib.new_event()
                task = await lib.spawn(
                    self._scan, lib, declared.hooks["scan"], self._channels[attribute], scan
                )
                self._tasks.append(task)
        for group in self._groups.values():
            await group.startup()

    @classmethod
    def _declared_pvproperty(cls, attribute: str) -> pvproperty:
        declared = dict(cls._declared())[attribute]
        assert isinstance(declared, pvproperty)
        return declared

    async def _process(self, attribute: str) -> None:
        """Process the PV of ``attribute`` once, as a ``.PROC`` write does.

        Runs its scan hook, else its getter (storing what it returns), else
        stores its value again; nothing but the DISABLE alarm while it is
        disabled.
        """
        channel = self._channels[attribute]
        if channel.check_disabled():
            return
        hooks = type(self)._declared_pvproperty(attribute).hooks
        if "scan" in hooks:
            await hooks["scan"](self, channel)
            return
        value = None
        if "getter" in hooks:
            value = await hooks["getter"](self, channel)
        await channel.set(channel.value if value is None else value)

    async def _scan(
        self, lib: AsyncLib, hook: Hook, channel: ChannelData, scan: ScanControl
    ) -> None:
        time, changed = lib.time, scan.changed
        assert changed is not None  # made by startup
        due = time()
        while True:
            changed.clear()
            period = scan.period
            if period is None:  # Passive: wait for a period
                await changed.wait()
                due = time() + (scan.period or 0.0)
                continue
            now = time()
            if due > now:
                if await lib.wait_event(changed, due - now):
                    # a new period: the next run is one new period from now
                    due = time() + (scan.period or 0.0)
                    continue
            else:
                # Behind (the hook takes longer than the period): let the
                # other tasks run, and drop the runs missed by more than a
                # period rather than run them back to back.
                await lib.sleep(0)
                due = max(due, now - period)
            if not channel.check_disabled():
                try:
                    await hook(self, channel)
                except Exception:  # a failing scan must not stop the IOC
                    log.exception("scan of %r failed", channel)
            due += period

    async def shutdown(self) -> None:
        """Stop the scan loops and run shutdown hooks (sub-groups first)."""
        for group in self._groups.values():
            await group.shutdown()
        if self._async_lib is not None:
            await self._async_lib.stop_tasks(self._tasks)
        self._tasks.clear()
        for _, hook, channel in self._hooks("shutdown"):
            await hook(self, channel)

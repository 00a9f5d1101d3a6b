"""EPICS access security: Access Security Configuration Files (.acf) for the server.

The file format and its meaning are epics-base's (the Application Developer's
Guide, chapter "Access Security"; ``asLib.y``, ``asLib_lex.l`` and
``asLibRoutines.c``)::

    UAG(ops) { alice, bob }                 # user access groups
    HAG(cr)  { console1, "console-2" }      # host access groups
    ASG(DEFAULT) {                          # access security groups
        RULE(1, READ)
    }
    ASG(interlocked) {
        INPA(ioc:mode)                      # inputs A..L, PVs the server watches
        RULE(0, WRITE, TRAPWRITE) {
            UAG(ops)                        # several names or clauses: any of them
            HAG(cr)                         # UAG, HAG and CALC must all hold
            CALC("A = 1")
        }
        RULE(1, READ)
    }

Every PV belongs to an ASG (``DEFAULT`` unless it names another; a name
with no ASG falls back to ``DEFAULT``, as ``asAddMember`` does) and has an
access security level ASL, 0 or 1. A rule of level L applies to PVs of ASL
<= L, so ``RULE(1, WRITE)`` covers ASL 0 and 1 and ``RULE(0, ...)`` only
ASL 0. A client gets the highest access of the rules that apply to it:
``NONE``, ``READ``, or ``WRITE`` (read and write; ``RPC``, and caioc's alias
``RWX``, also mean read and write for Channel Access). When the file defines
no ``DEFAULT`` group, an empty one exists, so such PVs have no access at all.
User names compare exactly, host names case-insensitively; with
``check_client_ip`` (rsrv's ``asCheckClientIP``) HAG hosts are resolved to
IPv4 addresses when the file is loaded and compared with the client's address.

A CALC condition is true when its result is 1. Its inputs start invalid and
a rule whose CALC reads an invalid input does not apply: the server feeds
values with :meth:`AccessSecurity.set_input` / :meth:`~AccessSecurity.set_pv`
(``None`` for a disconnected input or INVALID severity) and re-evaluates its
clients when :meth:`~AccessSecurity.on_change` callbacks fire.

caioc is stricter than epics-base in two places, both failing closed: a
second ``CALC`` in one rule is an error (epics-base silently keeps the last),
as is an input letter bound twice in one ASG. ``METHOD``, ``AUTHORITY`` and
``PROTOCOL`` (pvAccess/TLS rule clauses of recent epics-base) are not
recognised and are reported as syntax errors.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from ..ca import AccessRights
from ._access_acf import (
    DEFAULT_GROUP,
    AccessConfig,
    AccessConfigError,
    AccessGroup,
    AccessRule,
    Resolver,
    RuleAccess,
    ipv4_address,
    parse_acf,
)
from ._access_calc import INPUT_LETTERS, CalcError, CalcExpression, calc_is_true, compile_calc

__all__ = [
    "DEFAULT_GROUP",
    "AccessConfig",
    "AccessConfigError",
    "AccessGroup",
    "AccessResult",
    "AccessRule",
    "AccessSecurity",
    "CalcError",
    "CalcExpression",
    "RuleAccess",
    "compile_calc",
    "parse_acf",
]

log = logging.getLogger(__name__)

#: Receives the names of the groups whose rights may have changed; None: all of them.
ChangeCallback = Callable[[frozenset[str] | None], None]

_CA_RIGHTS = {
    RuleAccess.NONE: AccessRights.NO_ACCESS,
    RuleAccess.READ: AccessRights.READ,
    RuleAccess.WRITE: AccessRights.READ_WRITE,
    RuleAccess.RPC: AccessRights.READ_WRITE,
}


class AccessResult(NamedTuple):
    """What a client may do with a PV, and whether its writes are to be trapped."""

    rights: AccessRights
    trap_write: bool


# -- runtime -----------------------------------------------------------------


class _GroupState:
    """Input values of one ASG and the current truth of each rule's CALC."""

    __slots__ = ("invalid", "results", "values")

    def __init__(self, group: AccessGroup) -> None:
        self.values = [0.0] * len(INPUT_LETTERS)
        self.invalid = set(group.inputs)  # epics-base: inputs are bad until a value arrives
        self.results: list[bool] = []

    def compute(self, group: AccessGroup) -> bool:
        """Re-evaluate the CALCs; whether any rule's condition changed."""
        results = [
            rule.calc is None
            or (
                not (rule.calc.inputs_used & self.invalid)
                and calc_is_true(rule.calc.evaluate(self.values))
            )
            for rule in group.rules
        ]
        changed, self.results = results != self.results, results
        return changed


class AccessSecurity:
    """Access security for a server: rights of clients on PVs, from an .acf file.

    Create it with :meth:`from_file` or :meth:`from_text`. Until a
    configuration is loaded only an empty DEFAULT group exists: no access.
    The server asks :meth:`rights` (or :meth:`access`, which adds TRAPWRITE)
    when a channel is created, monitors the PVs of :meth:`inputs` and passes
    their values to :meth:`set_pv`, and re-evaluates its channels when an
    :meth:`on_change` callback fires. :meth:`reload`, :meth:`poll` or the
    :meth:`watch` task pick up edits of the file, keeping the rules in force
    when the new version is broken; a server runs :meth:`watch` every
    ``poll_interval`` seconds (5 by default; None or 0: never, reload by
    hand). Not thread-safe: use it from the loop.
    """

    def __init__(
        self,
        *,
        check_client_ip: bool = False,
        resolver: Resolver | None = None,
        substitutions: Mapping[str, str] | None = None,
        poll_interval: float | None = 5.0,
    ) -> None:
        if poll_interval is not None and poll_interval < 0:
            raise ValueError(f"poll_interval must be positive, 0 or None, not {poll_interval}")
        #: Seconds between the checks of the file a server makes (None: none).
        self.poll_interval = poll_interval or None
        self._check_client_ip = check_client_ip
        self._resolver = resolver
        self._substitutions = dict(substitutions) if substitutions is not None else None
        self._path: Path | None = None
        self._signature: tuple[int, int, int] | None = None
        self._callbacks: list[ChangeCallback] = []
        #: Whether rules were loaded (a failed load then keeps them: say so).
        self._loaded = False
        self._install(parse_acf("", check_client_ip=check_client_ip), notify=False)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        check_client_ip: bool = False,
        resolver: Resolver | None = None,
        substitutions: Mapping[str, str] | None = None,
        poll_interval: float | None = 5.0,
    ) -> AccessSecurity:
        """Load an .acf file; :meth:`reload`, :meth:`poll` and :meth:`watch` re-read it."""
        security = cls(
            check_client_ip=check_client_ip,
            resolver=resolver,
            substitutions=substitutions,
            poll_interval=poll_interval,
        )
        security._path = Path(path)
        security.reload()
        return security

    @classmethod
    def from_text(
        cls,
        text: str,
        filename: str = "<string>",
        *,
        check_client_ip: bool = False,
        resolver: Resolver | None = None,
        substitutions: Mapping[str, str] | None = None,
    ) -> AccessSecurity:
        """Load a configuration given as text (``filename`` is for error messages)."""
        security = cls(
            check_client_ip=check_client_ip, resolver=resolver, substitutions=substitutions
        )
        security.load_text(text, filename)
        return security

    # -- configuration --

    @property
    def config(self) -> AccessConfig:
        """The configuration in force."""
        return self._config

    @property
    def path(self) -> Path | None:
        """The file the configuration comes from, if any."""
        return self._path

    @property
    def check_client_ip(self) -> bool:
        """Whether hosts are IP addresses: pass the client's address as ``host``."""
        return self._check_client_ip

    @property
    def warnings(self) -> tuple[str, ...]:
        """What loading the configuration in force logged (unresolved hosts ...)."""
        return self._config.warnings

    def load_text(self, text: str, filename: str = "<string>") -> None:
        """Replace the configuration; on an error keep the old one and raise."""
        config = self._parse(text, filename)
        self._install(config)
        self._loaded = True

    def reload(self) -> None:
        """Re-read the file. On an error keep the rules in force, log and raise."""
        if self._path is None:
            raise RuntimeError("this configuration was not loaded from a file")
        signature = self._stat()
        try:
            text = self._path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            if self._loaded:  # a first load has no old rules: the caller reports the error
                log.error(
                    "access security: cannot read %s (%s); keeping the old rules", self._path, error
                )
            raise
        config = self._parse(text, str(self._path))
        self._signature = signature
        self._install(config)
        self._loaded = True

    def poll(self) -> bool:
        """Reload the file if it changed since it was last read; whether rules changed.

        Never raises: a file that vanished or fails to parse is logged and the
        rules in force stay; the same broken version is not retried.
        """
        if self._path is None:
            return False
        try:
            signature = self._stat()
        except OSError as error:
            if self._signature is not None:
                log.warning("access security: %s: %s; keeping the old rules", self._path, error)
                self._signature = None
            return False
        if signature == self._signature:
            return False
        try:
            self.reload()
        except (OSError, AccessConfigError):
            self._signature = signature  # already logged; wait for the next change
            return False
        return True

    @property
    def watched(self) -> bool:
        """Whether a server should run :meth:`watch`: a file, and a poll interval."""
        return self._path is not None and self.poll_interval is not None

    async def watch(
        self,
        interval: float | None = None,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        """Poll the file every ``interval`` seconds until cancelled (run it as a task).

        ``interval`` None: :attr:`poll_interval`.
        """
        if interval is None:
            interval = self.poll_interval
        if interval is None or interval <= 0:
            raise ValueError("interval must be positive")
        while True:
            await sleep(interval)
            self.poll()

    def _stat(self) -> tuple[int, int, int]:
        assert self._path is not None
        stat = os.stat(self._path)
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _parse(self, text: str, filename: str) -> AccessConfig:
        try:
            return parse_acf(
                text,
                filename,
                check_client_ip=self._check_client_ip,
                resolver=self._resolver,
                substitutions=self._substitutions,
            )
        except AccessConfigError as error:
            if self._loaded:  # a first load has no old rules: the caller reports the error
                log.error("access security: %s; keeping the old rules", error)
            raise

    def _install(self, config: AccessConfig, *, notify: bool = True) -> None:
        old_config = getattr(self, "_config", None)
        old_states: dict[str, _GroupState] = getattr(self, "_states", {})
        states: dict[str, _GroupState] = {}
        by_pv: dict[str, list[tuple[str, str]]] = {}
        for name, group in config.groups.items():
            state = states[name] = _GroupState(group)
            old_group = old_config.groups.get(name) if old_config else None
            for letter, pv in group.inputs.items():
                by_pv.setdefault(pv, []).append((name, letter))
                if old_group is not None and old_group.inputs.get(letter) == pv:
                    # the same PV feeds the same input: its last value still holds
                    old = old_states[name]
                    index = INPUT_LETTERS.index(letter)
                    state.values[index] = old.values[index]
                    if letter not in old.invalid:
                        state.invalid.discard(letter)
            state.compute(group)
        self._config, self._states, self._by_pv = config, states, by_pv
        if notify:
            self._notify(None)

    # -- rights --

    def group_of(self, asg: str) -> str:
        """The group that rules a PV of ASG ``asg`` (DEFAULT for unknown names)."""
        return asg if asg in self._config.groups else DEFAULT_GROUP

    def access(self, asg: str, asl: int, user: str, host: str) -> AccessResult:
        """The rights, and the TRAPWRITE option, of a client on a PV (asComputePvt).

        ``host`` is the host name the client sent or, with :attr:`check_client_ip`,
        its IP address.
        """
        name = self.group_of(asg)
        group = self._config.groups[name]
        # with check_client_ip, a host that is no IPv4 address matches no HAG
        key = ipv4_address(host) if self._check_client_ip else host.lower()
        best, trap_write = RuleAccess.NONE, False
        for rule, condition in zip(group.rules, self._states[name].results, strict=True):
            if best == RuleAccess.RPC:
                break
            if rule.access <= best or asl > rule.level or not condition:
                continue
            if rule.users is not None and user not in rule.users:
                continue
            if rule.hosts is not None and key not in rule.hosts:
                continue
            best, trap_write = rule.access, rule.trap_write
        return AccessResult(_CA_RIGHTS[best], trap_write)

    def rights(self, asg: str, asl: int, user: str, host: str) -> AccessRights:
        """The Channel Access rights of a client on a PV of group ``asg`` and level ``asl``."""
        return self.access(asg, asl, user, host).rights

    # -- inputs --

    def inputs(self) -> dict[str, dict[str, str]]:
        """The INP PVs to monitor: {ASG name: {letter: PV name}}, groups with inputs only."""
        return {
            name: dict(group.inputs) for name, group in self._config.groups.items() if group.inputs
        }

    def input_value(self, asg: str, letter: str) -> float | None:
        """The current value of an input, None while it is invalid."""
        letter = self._letter(asg, letter)
        state = self._states[asg]
        return None if letter in state.invalid else state.values[INPUT_LETTERS.index(letter)]

    def set_input(self, asg: str, letter: str, value: float | None) -> bool:
        """Give an input a new value (None: disconnected or INVALID severity).

        Returns whether some rule's condition changed, in which case the
        :meth:`on_change` callbacks have been called with ``{asg}``.
        """
        letter = self._letter(asg, letter)
        if not self._update(asg, letter, value):
            return False
        self._notify(frozenset({asg}))
        return True

    def set_pv(self, pvname: str, value: float | None) -> bool:
        """Set every input fed by PV ``pvname``; unknown PVs are ignored. See :meth:`set_input`."""
        changed = {
            name
            for name, letter in self._by_pv.get(pvname, ())
            if self._update(name, letter, value)
        }
        if changed:
            self._notify(frozenset(changed))
        return bool(changed)

    def _letter(self, asg: str, letter: str) -> str:
        group = self._config.groups.get(asg)
        if group is None:
            raise KeyError(f"no ASG named {asg!r}")
        letter = letter.upper().removeprefix("INP")
        if letter not in group.inputs:
            raise KeyError(f"ASG {asg!r} has no input INP{letter}")
        return letter

    def _update(self, asg: str, letter: str, value: float | None) -> bool:
        state = self._states[asg]
        if value is None:
            state.invalid.add(letter)
        else:
            state.values[INPUT_LETTERS.index(letter)] = float(value)
            state.invalid.discard(letter)
        return state.compute(self._config.groups[asg])

    # -- notification --

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(groups)`` when rights may have changed; returns an unsubscriber.

        ``groups`` names the ASGs whose CALC conditions changed (PVs of unknown
        groups follow DEFAULT, see :meth:`group_of`), or is None after a
        reload, when everything may have changed.
        """
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def _notify(self, groups: frozenset[str] | None) -> None:
        for callback in list(self._callbacks):
            try:
                callback(groups)
            except Exception:
                log.exception("access security: change callback %r failed", callback)

    def __repr__(self) -> str:
        source = self._path or self._config.filename
        return f"<AccessSecurity {source} groups={sorted(self._config.groups)}>"

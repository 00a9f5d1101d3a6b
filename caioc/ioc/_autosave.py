"""Autosave and restore: chosen PVs survive an IOC restart.

Mark PVs with ``pvproperty(..., autosave=True)`` and give the group an
:class:`Autosave`; the runner restores the saved values before the IOC
serves and saves changes every ``period`` seconds.

Saves are atomic: the new state goes to a temporary file in the same
directory, is flushed to disk, then renamed over the old one (and the
directory entry flushed too). Killing the IOC at any moment, SIGKILL
included, leaves either the previous complete file or the new complete
one, never a torn or empty file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._async_lib import sleep
from ._group import PVGroup

__all__ = ["Autosave"]

log = logging.getLogger("caioc.ioc.autosave")

FORMAT = "caioc-autosave/1"


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


class Autosave:
    """Save and restore the autosave PVs of ``group`` in ``path`` (JSON)."""

    def __init__(self, group: PVGroup, path: str | Path, period: float = 5.0) -> None:
        self.group = group
        self.path = Path(path)
        self.period = period
        self.channels = {
            name: group.pvdb[name]
            for name in group.pv_names
            if getattr(group.pvdb[name], "autosave", False)
        }
        self._last: dict[str, Any] | None = None

    def snapshot(self) -> dict[str, Any]:
        """The values to save now."""
        return {name: _plain(channel.value) for name, channel in self.channels.items()}

    def save(self) -> bool:
        """Write the values atomically if they changed; True if written."""
        values = self.snapshot()
        if values == self._last:
            return False
        # Imported here: only IOCs that autosave need them (~1 MB, ~8 ms).
        import json
        import tempfile

        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = json.dumps({"format": FORMAT, "values": values}, indent=1)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            with os.fdopen(handle, "w") as file:
                file.write(document)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)
        self._last = values
        return True

    def load(self) -> dict[str, Any]:
        """The saved values ({} if there are none or the file is unusable)."""
        import json  # as in save()

        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.error("autosave file %s is unusable (%s): starting from defaults", self.path, error)
            return {}
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            log.error("autosave file %s is not a %s file: ignored", self.path, FORMAT)
            return {}
        values = document.get("values", {})
        return values if isinstance(values, dict) else {}

    def restore(self) -> list[str]:
        """Set the saved values (before serving); returns the names restored."""
        restored = []
        for name, value in self.load().items():
            channel = self.channels.get(name)
            if channel is None:
                continue  # no longer autosaved, or renamed
            try:
                channel.set_nowait(value)
            except (ValueError, TypeError) as error:
                log.warning("cannot restore %s = %r: %s", name, value, error)
                continue
            restored.append(name)
        # The file holds what is served only if it restored every value; if
        # not (no file yet, a PV added since), the next save must write.
        self._last = self.snapshot() if set(restored) == set(self.channels) else None
        return restored

    async def run(self) -> None:
        """Save every ``period`` seconds until cancelled, and once more then.

        Runs under asyncio, trio or curio, whichever awaits it.
        """
        try:
            while True:
                await sleep(self.period)
                try:
                    self.save()
                except OSError as error:  # a full disk must not stop the IOC
                    log.error("autosave to %s failed: %s", self.path, error)
        finally:
            with contextlib.suppress(OSError):
                self.save()

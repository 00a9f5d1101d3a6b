"""Output of ``caioc-shark``: events as text lines or JSON objects."""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from ..ca import Command, Role

__all__ = ["Endpoint", "Event", "Printer"]

Endpoint = tuple[str, int]


@dataclass
class Event:
    """One line of output: a command, or an error, seen at ``time``."""

    time: float | None
    transport: str
    source: Endpoint | None
    destination: Endpoint | None
    sender: Role | None = None
    command: Command | None = None
    error: str | None = None
    note: str | None = None


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


def _values(command: Command) -> tuple[Any, dict[str, Any]] | None:
    to_python = getattr(command, "to_python", None)
    if to_python is None or not command.payload_size:
        return None
    try:
        value, metadata = to_python()
    except Exception:  # a payload the core cannot decode is shown without values
        return None
    return value, metadata


def _short(value: Any) -> str:
    """``value`` on one line, long arrays and lists abbreviated."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list) and len(value) > 10:
        head = ", ".join(map(repr, value[:3]))
        tail = ", ".join(map(repr, value[-3:]))
        return f"[{head}, ..., {tail}] ({len(value)} items)"
    return repr(value)


class Printer:
    """Formats events as text lines or JSON objects on ``out``."""

    def __init__(
        self, out: TextIO, form: str = "text", clock: str = "absolute", values: bool = False
    ) -> None:
        self.out = out
        self.form = form
        self.clock = clock
        self.values = values
        self.start: float | None = None

    def _stamp(self, time: float | None) -> str:
        if time is None:
            return "-"
        if self.clock == "epoch":
            return f"{time:.6f}"
        if self.clock == "relative":
            return f"{time - (self.start or 0.0):.6f}"
        try:
            moment = datetime.datetime.fromtimestamp(time)
        except (ValueError, OverflowError, OSError):  # a corrupt stamp
            return f"{time:.6f}"
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")

    def __call__(self, event: Event) -> None:
        """Print one event."""
        if self.start is None and event.time is not None:
            self.start = event.time
        if self.form == "json":
            self.out.write(json.dumps(self._record(event)) + "\n")
            return
        ends = ""
        if event.source is not None and event.destination is not None:
            ends = " {}:{} -> {}:{}".format(*event.source, *event.destination)
        if event.error is not None:
            body = f"!! {event.error}"
        else:
            body = repr(event.command)
            if event.note:
                body += f" ({event.note})"
            decoded = _values(event.command) if self.values and event.command else None
            if decoded is not None:
                body += f" value={_short(decoded[0])} {decoded[1]!r}"
        self.out.write(f"{self._stamp(event.time)}{ends} {body}\n")

    def _record(self, event: Event) -> dict[str, Any]:
        record: dict[str, Any] = {"time": event.time, "transport": event.transport}
        if event.source is not None and event.destination is not None:
            record["src"] = "{}:{}".format(*event.source)
            record["dst"] = "{}:{}".format(*event.destination)
        if event.sender is not None:
            record["sender"] = event.sender.value
        if event.error is not None:
            record["error"] = event.error
            return record
        command = event.command
        assert command is not None
        record["command"] = type(command).__name__
        record["fields"] = {name: _jsonable(getattr(command, name)) for name in command.FIELDS}
        record["payload_size"] = command.payload_size
        record["repr"] = repr(command)
        if event.note:
            record["note"] = event.note
        decoded = _values(command) if self.values else None
        if decoded is not None:
            record["value"] = _jsonable(decoded[0])
            record["metadata"] = _jsonable(decoded[1])
        return record

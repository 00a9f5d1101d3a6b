"""Faults shared by the simulated buses: hung transfers and garbled data."""

from __future__ import annotations

import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["BusFaults", "Garbler"]

Garbler = Callable[[bytes], bytes]


def _invert(data: bytes) -> bytes:
    return bytes(byte ^ 0xFF for byte in data)


class BusFaults:
    """Faults injected into one simulated device's next accesses.

    Counted faults apply to the next *count* accesses (one bus call each).
    Safe to change from any thread while the bus is in use.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hangs: deque[float | None] = deque()
        self._garbles: deque[Garbler] = deque()
        self._release: concurrent.futures.Future[None] = concurrent.futures.Future()

    def hang_next(self, count: int = 1, *, seconds: float | None = None) -> None:
        """Hang the next *count* accesses, as a device holding the bus would.

        A hung access blocks for *seconds* on the bus clock (``None``: until
        :meth:`clear`, :meth:`release_hangs` or the bus is closed) and then
        fails with errno ETIMEDOUT, as the kernel's adapter timeout does.
        """
        with self._lock:
            self._hangs.extend([seconds] * count)

    def garble_next(self, count: int = 1, garbler: Garbler | None = None) -> None:
        """Corrupt the bytes read by the next *count* accesses.

        *garbler* maps the bytes a read would return to what arrives; the
        default inverts every bit, which no valid reading survives.
        """
        with self._lock:
            self._garbles.extend([garbler or _invert] * count)

    def release_hangs(self) -> None:
        """Let every access hung without a time limit fail now."""
        with self._lock:
            release, self._release = self._release, concurrent.futures.Future()
        release.set_result(None)

    def clear(self) -> None:
        """Remove every pending fault and release hung accesses."""
        with self._lock:
            self._clear_locked()
        self.release_hangs()

    @property
    def pending(self) -> bool:
        """True while any fault is set or still counted down."""
        return bool(self._hangs or self._garbles)

    def _clear_locked(self) -> None:
        self._hangs.clear()
        self._garbles.clear()

    def _take(self) -> tuple[str, Any]:
        """The fault for the access starting now: ("ok"|"hang"|"garble", detail)."""
        with self._lock:
            return self._take_locked()

    def _take_locked(self) -> tuple[str, Any]:
        if self._hangs:
            return "hang", (self._hangs.popleft(), self._release)
        if self._garbles:
            return "garble", self._garbles.popleft()
        return "ok", None

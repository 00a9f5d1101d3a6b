"""Beacon anomalies, as libca's ``bhe`` (beacon hash entry) judges them.

A client keeps, per server, when the last beacon came, its id and the
average period between beacons. A beacon that says the server is new,
restarted, or back after a silence is an *anomaly*: the context then
searches again at once for every name still unresolved.
"""

from __future__ import annotations

__all__ = ["EARLY_BEACON", "LATE_BEACON", "BeaconHistory"]


#: A beacon this much earlier than the average period says the server
#: restarted (its start-up burst), as libca's bhe judges it.
EARLY_BEACON = 0.8
#: A beacon this much later than the average period follows a silence:
#: the server was unreachable or frozen and is back.
LATE_BEACON = 3.25


class BeaconHistory:
    """What libca's bhe keeps per server: when, which id, how often."""

    __slots__ = ("last_id", "last_time", "period")

    def __init__(self, now: float, beacon_id: int) -> None:
        self.last_time = now
        self.last_id = beacon_id
        self.period: float | None = None

    def update(self, now: float, beacon_id: int) -> bool:
        """Record a beacon; True if it is an anomaly."""
        if beacon_id == self.last_id:
            return False  # the same beacon by a second path
        restarted = beacon_id < self.last_id and self.last_id - beacon_id < 0x8000_0000
        interval = now - self.last_time
        self.last_time, self.last_id = now, beacon_id
        period = self.period
        if restarted:
            self.period = None  # a new start-up burst: learn the period again
            return True
        if period is None:
            self.period = interval
            return False
        if interval <= period * EARLY_BEACON:
            self.period = None  # likely a restart's burst: learn the period again
            return True
        if interval >= period * LATE_BEACON:
            return True  # a silence, not a new rhythm: the period stands
        self.period = (period + interval) / 2  # a running average, as libca's
        return False

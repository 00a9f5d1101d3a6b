"""What the ADC drivers share: a clipped conversion is only a bound.

A conversion at the converter's full code (or beyond its full scale) says
the input is at or past the limit, not what it is: the reading is posted
with a HWLIMIT/INVALID alarm, as EPICS device support does for a clipped
ADC. A channel's read function calls :meth:`ClippedReadings.mark_clipped`
before it returns the value; the overridden :meth:`~ClippedReadings.post`
then publishes it with the alarm.
"""

from __future__ import annotations

from typing import Any

from caioc.ca import AlarmSeverity, AlarmStatus
from caioc.hw import Device

__all__ = ["ClippedReadings"]


class ClippedReadings(Device):
    """A device whose readings marked clipped are posted with HWLIMIT/INVALID."""

    def mark_clipped(self, attribute: str) -> None:
        """The next value posted to *attribute* is at the full scale: only a bound."""
        self.__dict__.setdefault("_clipped", set()).add(attribute)

    async def post(self, attribute: str, value: Any, *, timestamp: float | None = None) -> None:
        """Publish a reading; one marked clipped gets HWLIMIT/INVALID."""
        clipped = self.__dict__.get("_clipped", set())
        if attribute in clipped:
            clipped.discard(attribute)
            channel = getattr(self, attribute)
            await channel.set(
                value,
                status=AlarmStatus.HWLIMIT,
                severity=AlarmSeverity.INVALID,
                timestamp=timestamp,
            )
            return
        await super().post(attribute, value, timestamp=timestamp)

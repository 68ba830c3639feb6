"""Clocks: real time for real address spaces, virtual time for simulation.

The monitoring loop only asks a clock for "now" and to wait until a deadline. With
:class:`VirtualClock` waiting is instantaneous, so a simulated hour runs in seconds and a run is
reproducible from its seed.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_us(self) -> int:
        """Current time in microseconds (monotonic; origin is arbitrary)."""
        ...

    def sleep_until(self, deadline_us: int) -> None:
        """Return once ``now_us() >= deadline_us`` (or at once if already past)."""
        ...


class RealClock:
    """Wall-clock (monotonic) time with real sleeps."""

    def now_us(self) -> int:
        return time.monotonic_ns() // 1000

    def sleep_until(self, deadline_us: int) -> None:
        delay = deadline_us - self.now_us()
        if delay > 0:
            time.sleep(delay / 1e6)


class VirtualClock:
    """Simulated time: sleeping just moves the time forward."""

    def __init__(self, start_us: int = 0) -> None:
        self._now_us = start_us

    def now_us(self) -> int:
        return self._now_us

    def sleep_until(self, deadline_us: int) -> None:
        if deadline_us > self._now_us:
            self._now_us = deadline_us

    def advance(self, delta_us: int) -> None:
        self._now_us += max(delta_us, 0)

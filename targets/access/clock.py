"""Where the Oracle's time comes from.

- `SimulatedClock` (the default): time stands still but for the operator's rate limit, which spaces an account's
  queries 60/rate seconds apart; every figure that reads time (time to compromise, campaign hours) is the same on
  any machine and at any load.
- `WallClock`: seconds since the clock was made, as they pass. A judge behind a real API (`gavel serve`,
  `target=remote`) is timed by it; a rate limit is then the service's to enforce (it refuses calls over the rate),
  so `wait` only records nothing.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    real: bool
    """Whether it is the wall clock (time a judge really took), not simulated."""

    def now(self) -> float:
        """Seconds since the clock started."""

    def wait(self, seconds: float) -> None:
        """The rate limit spaces the next query `seconds` later."""


class SimulatedClock:
    real = False

    def __init__(self) -> None:
        self._now = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def wait(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class WallClock:
    real = True

    def __init__(self) -> None:
        self._start = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._start

    def wait(self, seconds: float) -> None:
        """Real time passes by itself; a service over its rate refuses the call (429) instead of slowing it."""

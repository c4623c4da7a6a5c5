"""One account's limits on the wall clock: a quota of rows per window, and a rate of rows per sliding minute.

The quota window starts at the account's first query after its previous window ended (as the Oracle's
`_roll_window`), so a window is never shared between two bursts and never starts before anyone asked. The rate
counts the rows charged in the last 60 seconds. Both count charged rows: answered, or rejected by the detector
(the query was made); rows refused are not charged.

An `AccountLimits` is the in-memory copy of what the store holds (the latest window; the charges of the last
minute, from the ledger), so that a restart resumes exactly where the service stopped.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

RATE_PERIOD_S = 60.0


@dataclass(frozen=True)
class Blocked:
    """Why an account cannot be charged the rows it asks for, and in how many seconds it could be."""

    reason: str
    """quota | rate"""
    retry_after: int
    message: str


class AccountLimits:
    def __init__(
        self,
        *,
        quota: int,
        window_hours: float,
        rate: int | None,
        window: tuple[float, int] | None = None,
        recent: list[tuple[float, int]] = (),
    ) -> None:
        """`window`: (start, used) of the latest window, None before the first query; `recent`: (time, rows charged)
        of the charges of the last minute, oldest first."""
        self.quota, self.window_hours, self.rate = quota, window_hours, rate
        self.window_start, self.used = window if window is not None else (None, 0)
        self._recent: deque[tuple[float, int]] = deque(recent)

    def update(self, *, quota: int, window_hours: float, rate: int | None) -> None:
        """The key's limits as the store holds them now (an operator may change them while the service runs)."""
        self.quota, self.window_hours, self.rate = quota, window_hours, rate

    def roll_due(self, now: float) -> bool:
        """Whether a query now would start a new window (the previous one has ended, or there was none)."""
        return self.window_start is None or now - self.window_start >= self.window_hours * 3600

    def roll(self, now: float) -> bool:
        """Start a new window at `now` when the previous one has ended (or there was none); True when it did."""
        if self.roll_due(now):
            self.window_start, self.used = now, 0
            return True
        return False

    def _forget(self, now: float) -> None:
        while self._recent and self._recent[0][0] <= now - RATE_PERIOD_S:
            self._recent.popleft()

    def in_last_minute(self, now: float) -> int:
        self._forget(now)
        return sum(rows for _, rows in self._recent)

    def allowance(self, now: float) -> int:
        """Rows that may be charged now (after `roll`)."""
        left = self.quota - self.used
        if self.rate is not None:
            left = min(left, self.rate - self.in_last_minute(now))
        return max(0, left)

    def blocked(self, now: float, rows: int, who: str) -> Blocked | None:
        """Why `rows` more rows cannot be charged now (quota first: it frees later), else None. `who` names the
        account in the message ("key 'alice'", "device 'cam-1'")."""
        if self.used + rows > self.quota:
            end = self.window_start + self.window_hours * 3600
            more = "" if rows <= self.quota else f" (the request's {rows} rows exceed the whole quota)"
            return Blocked(
                "quota",
                _seconds(end - now),
                f"{who} has {max(0, self.quota - self.used)} of its {self.quota} rows left in this "
                f"{self.window_hours:g} h window{more}; the next window starts on its first query after that",
            )
        if self.rate is not None and self.in_last_minute(now) + rows > self.rate:
            return Blocked(
                "rate",
                self._rate_retry(now, rows),
                f"{who} may be charged {self.rate} rows per minute; {self.in_last_minute(now)} were charged in the "
                "last 60 s" + (f" (the request's {rows} rows exceed the whole rate)" if rows > self.rate else ""),
            )
        return None

    def _rate_retry(self, now: float, rows: int) -> int:
        """Seconds until enough of the last minute's rows age out for `rows` more (a whole minute when `rows` is
        more than the rate: send fewer)."""
        excess = self.in_last_minute(now) + rows - self.rate
        for at, charged in self._recent:
            excess -= charged
            if excess <= 0:
                return _seconds(at + RATE_PERIOD_S - now)
        return _seconds(RATE_PERIOD_S)

    def charge(self, now: float, rows: int) -> None:
        if rows:
            self.used += rows
            self._recent.append((now, rows))


def _seconds(delay: float) -> int:
    """Retry-After is whole seconds; never 0 (the client would ask again at once and be refused again)."""
    return max(1, math.ceil(delay))

"""Pacing shared by every process of a deployment, through the job store.

`LimiterRegistry` (bot.targets.base) paces the clients of one process. Lambda runs many
containers, and the poller, the Slack functions and `tablebot serve` each have their own: their
requests together must still respect the vendors' limits. `StorePacing` books every request's
start in the job store (`JobStore.reserve_rate_slot`: one conditional write in DynamoDB, one
transaction in the embedded SQLite store), so all of them share one sliding window per key:

- BigPanda: 5 requests a second per organization (key: base URL + the token's variable name);
- D·engage: its requests-per-second limit per caller address (key: base URL), and one upsert a
  minute per table (`part_spacing_seconds`, key: base URL + table).

The limiter keeps the `RateLimiter` reading of a rate (5 a second: at most 5 starts in any window
of 1 s + margin). Clocks: the store's (wall) clock; containers' clocks agree to well under the
margin on AWS (NTP). The margin (`STORE_PACING_MARGIN_SECONDS`, 0.2 s: wider than in one process,
because a booking travels through the store) covers the jitter between a booked start and the
request's arrival. A caller that finds its booked start already past by more than
`late_tolerance_seconds` (a slow store write) does not send late, bunched with the next window's
requests: it books again (the late slot stays spent).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

from bot.targets.base import Clock, Sleep

# Added to every window when bookings go through the store (see the module docstring).
STORE_PACING_MARGIN_SECONDS = 0.2
# A booked start missed by more than this is booked again rather than sent late.
LATE_TOLERANCE_SECONDS = 0.05
_MAX_REBOOKINGS = 20


class RateSlots(Protocol):
    """What the pacing needs of the job store."""

    def reserve_rate_slot(self, key: str, *, limit: int, window_seconds: float) -> float: ...


def _take(book: Callable[[], float], wall: Clock, sleep: Sleep, tolerance: float) -> float:
    """Book a start and sleep until it; book again while the booked start is already past by more
    than `tolerance`. Returns the seconds slept."""
    wait = 0.0
    for _ in range(_MAX_REBOOKINGS):
        wait = book() - wall()
        if wait >= -tolerance:
            break
    if wait > 0:
        sleep(wait)
    return max(0.0, wait)


class SharedRateLimiter:
    """At most `limit` request starts in any window of `period + margin` seconds, across processes."""

    def __init__(
        self, slots: RateSlots, key: str, rate: float, *, margin_seconds: float, sleep: Sleep, wall: Clock = time.time
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.key = key
        self.rate = rate
        self.limit = max(1, math.floor(rate))
        self.period = 1.0 if rate >= 1 else 1.0 / rate
        self.margin_seconds = margin_seconds
        self._slots = slots
        self._sleep = sleep
        self._wall = wall

    @property
    def window(self) -> float:
        return self.period + self.margin_seconds

    def acquire(self) -> float:
        key = f"rps|{self.key}"
        return _take(
            lambda: self._slots.reserve_rate_slot(key, limit=self.limit, window_seconds=self.window),
            self._wall,
            self._sleep,
            LATE_TOLERANCE_SECONDS,
        )


class SharedTableSpacer:
    """Calls on one upstream table at least `spacing` seconds apart, across processes."""

    def __init__(
        self,
        slots: RateSlots,
        key: str,
        spacing: float,
        *,
        sleep: Sleep,
        wall: Clock = time.time,
        margin_seconds: float = 0.0,
    ) -> None:
        self.key = key
        self.spacing = spacing
        # Added to the spacing, as to a rate window: two calls' arrivals jitter apart by up to it.
        self.margin_seconds = margin_seconds
        self._slots = slots
        self._sleep = sleep
        self._wall = wall

    def wait(self, key: str) -> float:
        if self.spacing <= 0:
            return 0.0
        slot = f"table|{self.key}|{key}"
        return _take(
            lambda: self._slots.reserve_rate_slot(slot, limit=1, window_seconds=self.spacing + self.margin_seconds),
            self._wall,
            self._sleep,
            LATE_TOLERANCE_SECONDS,
        )


class StorePacing:
    """A `LimiterRegistry` whose limiters and spacers book in the job store (module docstring)."""

    def __init__(
        self, slots: RateSlots, *, margin_seconds: float = STORE_PACING_MARGIN_SECONDS, wall: Clock = time.time
    ) -> None:
        self.slots = slots
        self.margin_seconds = margin_seconds
        self.wall = wall  # epoch seconds, the same clock as the store's

    def limiter(
        self, key: str, rate: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
    ) -> SharedRateLimiter:
        return SharedRateLimiter(self.slots, key, rate, margin_seconds=self.margin_seconds, sleep=sleep, wall=self.wall)

    def spacer(
        self, key: str, spacing: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
    ) -> SharedTableSpacer:
        return SharedTableSpacer(
            self.slots, key, spacing, sleep=sleep, wall=self.wall, margin_seconds=self.margin_seconds
        )

"""One pacer shared by every worker: when requests may start, learned from the server.

Like rclone's lib/pacer, a 429 pauses the whole pool, not one worker. Two sources of rate:

- Laravel's fixed windows (identifAI: 2/s and 60/min per key). `X-RateLimit-Limit` names a
  limit L; the answer with `X-RateLimit-Remaining = L-1` is the first hit of a window. A window
  cannot restart before it ends, so the time between two first hits, and `now + Retry-After`
  minus the first hit on a 429, are upper bounds on its length W. Pacing at L/W (a little
  under) then never meets a 429.
- Limiters that say nothing (a leaky bucket, no headers): AIMD in the spirit of botocore's
  adaptive mode: a 429 cuts the rate to 0.9 of what was just sent, successes win it back
  quickly up to that level and then probe slowly above it.

`--max-rate` caps both. All timing is on an injected clock; sleeping is injected too.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from batchmap.policy import retry_after

SAFETY = 0.995  # pace at this share of a learned fixed-window limit: room for timing jitter
PAUSE_FLOOR = 0.5  # longest pause for a 429 whose Retry-After is 0 or absent: never at once
DECREASE = 0.9  # AIMD: rate after a 429 from a limiter that sends no limit headers, as a share
RECOVER_TO = 0.97  # ... then won back quickly up to this share of the rate that met the 429
RECOVER = 0.05  # share of that gap won back per success
PROBE = 0.0003  # then growth per success, as a share of the rate: a 429 every few hundred
PROBE_SPEEDUP = 50  # successes of probing after which each further 50 doubles the growth
SLOW_START = 1.02  # growth per success after the first 429 of an unpaced start
MIN_RATE = 0.05  # requests per second: the pacer never stops altogether
ACCEPTED_WINDOW = 2.0  # seconds of successes behind the measured accepted rate
MIN_EVIDENCE = 10  # successes in that window before the measure may lower the rate


@dataclass(frozen=True, slots=True)
class PacerView:
    """What a progress display needs to know."""

    rate: float | None
    paused_until: float
    pause_reason: str
    limits: tuple[tuple[int, float], ...]


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


class Pacer:
    """Decides when the next request may start; shared by all workers of a run."""

    def __init__(
        self,
        *,
        max_rate: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.max_rate = max_rate
        self.clock = clock
        self.sleep = sleep
        self.rate: float | None = max_rate
        self.paused_until = 0.0
        self.pause_reason = ""
        self.windows: dict[int, float] = {}  # limit -> learned window length (upper bound)
        self._window_floor: dict[int, float] = {}  # limit -> lower bound, when no first hit seen
        self._first_hit: dict[int, float] = {}
        self._good_rate: float | None = None
        self._last_cut = -math.inf
        self._probes = 0
        self._slow_start = True
        self._scout: asyncio.Event | None = None
        self._next_start = 0.0
        self._accepted: deque[float] = deque()

    # -- waiting -------------------------------------------------------------------------

    async def wait_turn(self) -> float:
        """Wait until a request may start; returns the start time."""
        if self._scout is None and self.rate is None and not self.windows:
            # Knowing nothing, send one scout and let its answer speak before a burst.
            self._scout = asyncio.Event()
        elif self._scout is not None:
            await self._scout.wait()
        while True:
            now = self.clock()
            slot = max(now, self._next_start, self.paused_until)
            self._next_start = slot + (1.0 / self.rate if self.rate else 0.0)
            if slot > now:
                await self.sleep(slot - now)
                if self.paused_until > self.clock():
                    continue  # a 429 paused the pool while we waited: queue again
            return self.clock()

    def pause(self, until: float, reason: str) -> None:
        """Hold every worker until `until` (never shortens a pause already in force)."""
        if until > self.paused_until:
            self.paused_until = until
            self.pause_reason = reason

    # -- learning ------------------------------------------------------------------------

    def on_no_answer(self) -> None:
        """A request ended without an HTTP answer (reset, timeout): nothing to learn."""
        self._end_scouting()

    def _end_scouting(self) -> None:
        if self._scout is not None:
            self._scout.set()

    def on_answer(self, status: int, headers: Mapping[str, str], *, sent_at: float) -> None:
        """Learn from one HTTP answer (header names lowercase)."""
        self._end_scouting()
        now = self.clock()
        limit = _header_int(headers, "x-ratelimit-limit")
        remaining = _header_int(headers, "x-ratelimit-remaining")
        if status == 429:
            self._on_rate_limited(headers, limit=limit, now=now, sent_at=sent_at)
            return
        if limit is not None and remaining is not None:
            self._track_window(limit, remaining, sent_at=sent_at)
        if status < 500:
            self._accepted.append(now)
            self._accepted_rate(now)  # trims the history to the last second
            self._grow()

    def _on_rate_limited(
        self, headers: Mapping[str, str], *, limit: int | None, now: float, sent_at: float
    ) -> None:
        wait = retry_after(headers)
        # Retry-After is a floor; 0 or absent still means a short pause, never a hammering retry.
        reason = (
            "rate limited (429)" if wait is None else f"rate limited (429, Retry-After {wait:g}s)"
        )
        self.pause(now + (wait or self._pause_floor()), reason)
        if limit is not None:
            self._learn_from_429(limit, end=now + (wait or 0))
        elif sent_at > self._last_cut:
            # Cut once per round: answers to requests sent before the last cut carry no news.
            self._last_cut = now
            if self.rate is None:
                # An unpaced burst says little about the real limit: start from what was
                # accepted lately and slow-start (2% more per success) up to the next 429.
                base = self._accepted_rate(now)
            else:
                # A limiter that is saturated accepts just its own rate: trust that measure
                # over the rate we were sending at, which overshot; but only on evidence, so
                # a 429 after a quiet spell cannot collapse the rate.
                base = self.rate
                if len(self._accepted) >= MIN_EVIDENCE:
                    base = min(base, self._accepted_rate(now))
                self._slow_start = False
            self._good_rate = base
            self.rate = max(MIN_RATE, base * DECREASE)
            self._probes = 0

    def _pause_floor(self) -> float:
        # A few request intervals, at most PAUSE_FLOOR: long enough not to hammer a limiter
        # that gave no Retry-After, short enough not to idle a fast one.
        if self.rate is None:
            return PAUSE_FLOOR
        return min(PAUSE_FLOOR, max(0.05, 5.0 / self.rate))

    def _track_window(self, limit: int, remaining: int, *, sent_at: float) -> None:
        if remaining == limit - 1:
            previous = self._first_hit.get(limit)
            self._first_hit[limit] = sent_at
            if previous is not None and sent_at > previous:
                self._bound_window(limit, sent_at - previous)
        elif remaining == 0 and limit in self.windows and limit in self._first_hit:
            end = self._first_hit[limit] + self.windows[limit]
            self.pause(end, f"quota of {limit} per {self.windows[limit]:g}s used up")

    def _learn_from_429(self, limit: int, *, end: float) -> None:
        start = self._first_hit.get(limit)
        if start is not None and end > start:
            self._bound_window(limit, end - start)
        else:
            # No first hit seen: the window is at least as long as the wait, and at least 1 s.
            floor = max(1.0, end - self.clock(), self._window_floor.get(limit, 0.0))
            self._window_floor[limit] = floor
            self.windows.setdefault(limit, floor)
            self.windows[limit] = max(self.windows[limit], floor)
        self._apply_limits()

    def _bound_window(self, limit: int, bound: float) -> None:
        bound = max(bound, self._window_floor.get(limit, 0.0))
        self.windows[limit] = min(self.windows.get(limit, math.inf), bound)
        self._apply_limits()

    def _apply_limits(self) -> None:
        ceiling = self.ceiling()
        if ceiling is None:
            return
        if self._good_rate is None or self.rate is None or self.rate > ceiling:
            # Learned limits set the pace outright, upwards too as a window estimate tightens;
            # only a headerless limiter's AIMD rate may sit below the ceiling.
            self.rate = ceiling

    def ceiling(self) -> float | None:
        """The highest rate the user and the learned limits allow."""
        caps = [SAFETY * limit / window for limit, window in self.windows.items()]
        if self.max_rate is not None:
            caps.append(self.max_rate)
        return min(caps) if caps else None

    def _grow(self) -> None:
        # Growth is counted in requests, not seconds, so the share of 429s stays small at any
        # rate: quick recovery to just under the level that met a 429, then a probe that starts
        # slow and speeds up the longer no 429 comes (convex, like CUBIC's).
        if self.rate is None or self._good_rate is None:
            return
        target = RECOVER_TO * self._good_rate
        if self._slow_start:
            self.rate *= SLOW_START
        elif self.rate < 0.999 * target:
            self.rate += (target - self.rate) * RECOVER
        else:
            self._probes += 1
            self.rate *= 1.0 + PROBE * max(1.0, self._probes / PROBE_SPEEDUP)
        ceiling = self.ceiling()
        if ceiling is not None:
            self.rate = min(self.rate, ceiling)

    def _accepted_rate(self, now: float) -> float:
        """Successes per second over the last ACCEPTED_WINDOW seconds (or since the first)."""
        while self._accepted and self._accepted[0] < now - ACCEPTED_WINDOW:
            self._accepted.popleft()
        # At least a one-second span: a burst inside a fraction of a second counts per second.
        span = max(1.0, now - self._accepted[0]) if self._accepted else 1.0
        return max(MIN_RATE, len(self._accepted) / span)

    # -- reporting and persistence -------------------------------------------------------

    def view(self) -> PacerView:
        """A snapshot for the progress display."""
        return PacerView(
            rate=self.rate,
            paused_until=self.paused_until,
            pause_reason=self.pause_reason,
            limits=tuple(sorted(self.windows.items())),
        )

    def state(self) -> dict[str, Any]:
        """What a later run should know: learned limits and any pause the server imposed."""
        return {
            "rate": self.rate,
            "good_rate": self._good_rate,
            "paused_until": self.paused_until,
            "pause_reason": self.pause_reason,
            "windows": {str(limit): window for limit, window in self.windows.items()},
            "window_floor": {str(k): v for k, v in self._window_floor.items()},
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Start from a saved `state()`: no opening burst of 429s after a restart."""
        self.windows = {int(k): float(v) for k, v in state.get("windows", {}).items()}
        self._window_floor = {int(k): float(v) for k, v in state.get("window_floor", {}).items()}
        good = state.get("good_rate")
        self._good_rate = float(good) if good is not None else None
        self._slow_start = self._good_rate is None  # a learned level is probed gently
        rate = state.get("rate")
        if rate is not None and (self.max_rate is None or rate < self.max_rate):
            self.rate = float(rate)
        self._apply_limits()
        self.pause(float(state.get("paused_until", 0.0)), str(state.get("pause_reason", "")))

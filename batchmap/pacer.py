"""One pacer shared by every worker: the gate that decides when a request may start.

Like rclone's lib/pacer (`pacer.go` apart from `pacers.go`), the mechanism lives here and the
learning in strategies (batchmap/pacers.py): `FixedWindows` for Laravel's `X-RateLimit-*`
windows, `Aimd` for limiters that send no rate headers. The gate hands out start times at the
lowest rate the strategies and `--max-rate` allow, holds the whole pool during a pause (a 429
pauses everyone, not one worker), and lets one scout go first when it knows nothing yet or
when a pause asked for a probe (an outage).

Time is monotonic (`clock`, injectable, as is `sleep`); the wall clock (`wall`) is read only
to save a pause with `state()` and to read it back in `restore()`.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from batchmap.pacers import MAX_LIMIT, Aimd, Answer, FixedWindows, Strategy, finite
from batchmap.policy import retry_after

MAX_PAUSE = 3600.0  # seconds: the longest the pacer holds the pool for any single signal
PAUSE_FLOOR = 0.5  # longest pause for a 429 whose Retry-After is 0 or absent: never at once
_DIGITS = re.compile(r"\s*(\d{1,9})\s*")


@dataclass(frozen=True, slots=True)
class PacerView:
    """What a progress display needs to know (times on the pacer's clock)."""

    rate: float | None
    paused_until: float
    pause_reason: str
    limits: tuple[tuple[int, float], ...]


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    # Rate headers are untrusted: only plain non-negative integers count.
    value = headers.get(name)
    match = _DIGITS.fullmatch(value) if isinstance(value, str) else None
    return int(match.group(1)) if match else None


def _rate_headers(headers: Mapping[str, str]) -> tuple[int | None, int | None]:
    """(limit, remaining), each None unless sane: a limit of 1..MAX_LIMIT, remaining <= it."""
    limit = _header_int(headers, "x-ratelimit-limit")
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        return None, None
    remaining = _header_int(headers, "x-ratelimit-remaining")
    return limit, remaining if remaining is not None and remaining < limit else None


def _wait(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds, finite, at most MAX_PAUSE; None when absent or unusable."""
    seconds = finite(retry_after(headers))  # policy's own checks, and ours: inf is absent
    return None if seconds is None else min(seconds, MAX_PAUSE)


class Pacer:
    """Decides when the next request may start; shared by all workers of a run."""

    def __init__(
        self,
        *,
        max_rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.max_rate = finite(max_rate, low=1e-6) if max_rate is not None else None
        self.clock = clock
        self.sleep = sleep
        self.wall = wall
        self.windows = FixedWindows()
        self.aimd = Aimd()
        self.paused_until = 0.0
        self.pause_reason = ""
        self._next_start = 0.0
        self._scout: asyncio.Event | None = None  # set when the scout's answer came
        self._scout_sent: float | None = None  # when the scout's request started
        self._scouted = False  # the opening scout went
        self._probe = False  # a pause asked that one request go first when it ends

    @property
    def rate(self) -> float | None:
        """Requests per second now: the lowest of `--max-rate` and the strategies' rates."""
        rates = [r for r in (self.max_rate, self.windows.rate, self.aimd.rate) if r is not None]
        return min(rates) if rates else None

    def ceiling(self) -> float | None:
        """The highest rate the user and the learned limits allow."""
        rates = [r for r in (self.max_rate, self.windows.rate) if r is not None]
        return min(rates) if rates else None

    # -- the gate ------------------------------------------------------------------------

    async def wait_turn(self) -> float:
        """Wait until a request may start; returns the start time."""
        scouting = False
        try:
            while True:
                if not scouting:
                    if self._scout is not None and not self._scout.is_set():
                        await self._scout.wait()  # the scout's answer speaks first
                        continue
                    if self._scout_wanted():
                        self._scouted, self._probe, scouting = True, False, True
                        self._scout, self._scout_sent = asyncio.Event(), None
                now = self.clock()
                rate = self.rate
                slot = max(now, self._next_start, self.paused_until)
                self._next_start = slot + (1.0 / rate if rate else 0.0)
                if slot > now:
                    await self.sleep(slot - now)
                    if self.paused_until > self.clock():
                        continue  # a pause came while we waited: queue again
                    if not scouting and (self._scout_wanted() or self._scouting()):
                        continue
                    now = self.clock()
                if scouting:
                    self._scout_sent = now
                return now
        except BaseException:
            if scouting:
                self._end_scouting(None, force=True)  # a cancelled scout holds no one
            raise

    def _scout_wanted(self) -> bool:
        knows_nothing = self.rate is None and not self.windows.windows
        return self._probe or (knows_nothing and not self._scouted)

    def _scouting(self) -> bool:
        return self._scout is not None and not self._scout.is_set()

    def _end_scouting(self, sent_at: float | None, *, force: bool = False) -> None:
        # Only the scout's own answer (or a later request's) speaks: an answer to a request
        # sent before it, still in flight when the pause began, must not release the others.
        if self._scout is None or self._scout.is_set():
            return
        started = self._scout_sent
        if force or (started is not None and (sent_at is None or sent_at >= started)):
            self._scout.set()

    def pause(self, until: float, reason: str, *, probe: bool = False) -> None:
        """Hold every worker until `until` (at most MAX_PAUSE from now; never shortens a pause
        in force). With `probe`, one request goes first when it ends, the rest after its answer.
        """
        if probe:
            self._probe = True
        if not math.isfinite(until):
            return
        until = min(until, self.clock() + MAX_PAUSE)
        if until > self.paused_until:
            self.paused_until = until
            self.pause_reason = reason

    # -- learning ------------------------------------------------------------------------

    def on_no_answer(self, *, sent_at: float | None = None) -> None:
        """A request ended without an HTTP answer (reset, timeout): nothing to learn, but a
        scout's failure lets the others go (pass `sent_at` so an older request's cannot)."""
        self._end_scouting(sent_at)

    def on_answer(self, status: int, headers: Mapping[str, str], *, sent_at: float) -> None:
        """Learn from one HTTP answer (header names lowercase or an httpx.Headers)."""
        self._end_scouting(sent_at)
        now = self.clock()
        limit, remaining = _rate_headers(headers)
        wait = _wait(headers)
        pause = 0.0
        if status == 429:
            pause = wait or self._pause_floor()  # Retry-After is a floor; 0 still pauses
        elif status == 503:
            pause = max(wait or 0.0, self._pause_floor())
        answer = Answer(
            status,
            sent_at=sent_at,
            at=now,
            limit=limit,
            remaining=remaining,
            retry_after=wait,
            pause=pause,
            rate=self.rate,
            ceiling=self.ceiling(),
        )
        if pause:
            said = "" if wait is None else f", Retry-After {wait:g}s"
            self.pause(now + pause, f"rate limited ({status}{said})")
        strategies: tuple[Strategy, ...] = (self.windows, self.aimd)
        for strategy in strategies:
            advice = strategy.learn(answer)
            if advice.until:
                self.pause(advice.until, advice.reason)

    def _pause_floor(self) -> float:
        # A few request intervals, at most PAUSE_FLOOR: long enough not to hammer a limiter
        # that gave no Retry-After, short enough not to idle a fast one.
        rate = self.rate
        if rate is None:
            return PAUSE_FLOOR
        return min(PAUSE_FLOOR, max(0.05, 5.0 / rate))

    # -- reporting and persistence -------------------------------------------------------

    def view(self) -> PacerView:
        """A snapshot for the progress display."""
        return PacerView(
            rate=self.rate,
            paused_until=self.paused_until,
            pause_reason=self.pause_reason,
            limits=tuple(self.windows.lengths().items()),
        )

    def state(self) -> dict[str, Any]:
        """What a later run should know: learned limits and any pause the server imposed.

        Every number is finite; `paused_until` is wall-clock time (0 when not paused).
        """
        now = self.clock()
        paused_until = 0.0
        if self.paused_until > now:
            paused_until = round(self.wall() - now + self.paused_until, 3)
        rate = self.rate
        return {
            "rate": rate,  # shown by `status`; not read back (the strategies keep their own)
            **self.aimd.state(),
            "paused_until": paused_until,
            "pause_reason": self.pause_reason if paused_until else "",
            **self.windows.state(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Start from a saved `state()`: no opening burst of 429s after a restart.

        Saved values are untrusted (an older version's, a hand-edited file): anything not a
        sane finite number is ignored, and a saved pause lasts at most MAX_PAUSE from now.
        """
        if not isinstance(state, Mapping):
            return
        self.windows.restore(state)
        self.aimd.restore(state, lift=self.max_rate is not None)
        until = finite(state.get("paused_until"), low=0.0)
        if until:
            reason = state.get("pause_reason")
            self.pause(
                until - self.wall() + self.clock(),
                reason[:200] if isinstance(reason, str) else "paused by the last run",
            )

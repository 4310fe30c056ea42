"""One pacer shared by every worker: the gate that decides when a request may start.

Like rclone's lib/pacer (`pacer.go` apart from `pacers.go`), the mechanism lives here and the
learning in strategies (batchmap/strategies.py): `FixedWindows` for Laravel's `X-RateLimit-*`
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

from batchmap.numeric import finite
from batchmap.policy import retry_after
from batchmap.strategies import MAX_LIMIT, MAX_WINDOW, Aimd, Answer, FixedWindows, Strategy

MAX_PAUSE = 3600.0  # seconds: the longest the pacer holds the pool for any single signal
# The first pause for a 429 whose Retry-After is 0 or absent (never at once); each such 429
# in a row doubles it, up to MAX_PAUSE: a sliding window that counts refusals (a minute's,
# issue 16) needs silence, not a refusal every half second (7 in a row reach a minute).
PAUSE_FLOOR = 0.5
_DIGITS = re.compile(r"\s*(\d{1,12})\s*")
_WINDOW = re.compile(r";\s*w=(\d{1,9})")
_ITEM = re.compile(r'\s*("(?:[^"\\]|\\.)*"|[A-Za-z*][\w:./*-]*)((?:\s*;\s*[a-z*][\w.*-]*=[^;,]*)*)')


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


@dataclass(frozen=True, slots=True)
class RateHeaders:
    """What an answer's rate headers say, each field None unless sane."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None  # seconds from now until the shown window ends
    window: float | None = None  # the shown window's length in seconds


def _items(value: str | None) -> dict[str, dict[str, str]]:
    # A structured-field list (RFC 8941), as far as the ratelimit headers use it:
    # `"name";q=100;w=60, "other";q=5` -> {"name": {"q": "100", "w": "60"}, ...}.
    found: dict[str, dict[str, str]] = {}
    for part in (value or "").split(",")[:16]:
        match = _ITEM.fullmatch(part.strip())
        if match:
            params = (p.split("=", 1) for p in match.group(2).split(";") if "=" in p)
            found[match.group(1).strip('"')] = {k.strip(): v.strip() for k, v in params}
    return found


def _int(text: str | None) -> int | None:
    match = _DIGITS.fullmatch(text) if isinstance(text, str) else None
    return int(match.group(1)) if match else None


def _ietf(headers: Mapping[str, str]) -> tuple[int | None, int | None, int | None, int | None]:
    """(limit, remaining, reset, window) from draft-ietf-httpapi-ratelimit-headers: the
    structured `RateLimit-Policy` + `RateLimit` pair, or draft 7's `RateLimit-Limit`,
    `-Remaining`, `-Reset` (delta seconds; the limit may carry `;w=`)."""
    now = _items(headers.get("ratelimit"))
    if now:
        name, said = next(iter(now.items()))
        policy = _items(headers.get("ratelimit-policy")).get(name, {})
        return (
            _int(policy.get("q")),
            _int(said.get("r")),
            _int(said.get("t")),
            _int(policy.get("w")),
        )
    limit_text = headers.get("ratelimit-limit")
    if not isinstance(limit_text, str):
        return None, None, None, None
    window = _WINDOW.search(limit_text)
    return (
        _int(limit_text.split(",")[0].split(";")[0]),
        _header_int(headers, "ratelimit-remaining"),
        _header_int(headers, "ratelimit-reset"),
        _int(window.group(1)) if window else None,
    )


def _rate_headers(headers: Mapping[str, str], wall: float) -> RateHeaders:
    """The IETF headers, else `X-RateLimit-*` (whose Reset may be epoch seconds, Laravel's
    and GitHub's, or a delta); nothing unless the limit is 1..MAX_LIMIT, remaining below it,
    reset and window within a day. Headers are untrusted evidence."""
    limit, remaining, reset, window = _ietf(headers)
    if limit is None:
        limit = _header_int(headers, "x-ratelimit-limit")
        remaining = _header_int(headers, "x-ratelimit-remaining")
        reset, window = _header_int(headers, "x-ratelimit-reset"), None
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        return RateHeaders()
    when = None if reset is None else float(reset) - (wall if reset > MAX_WINDOW else 0.0)
    return RateHeaders(
        limit,
        remaining if remaining is not None and remaining < limit else None,
        when if when is not None and 0.0 <= when <= MAX_WINDOW else None,
        float(window) if window and window <= MAX_WINDOW else None,
    )


def _wait(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds, finite, at most MAX_PAUSE; None when absent or unusable."""
    seconds = finite(retry_after(headers), low=0.0)  # policy checks too; inf is absent
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
        self._strikes = 0  # 429s in a row that named no wait
        self._struck_at = -math.inf  # when the last of them paused the pool

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
        said = _rate_headers(headers, self.wall())
        wait = _wait(headers)
        if status == 429 and not wait and said.reset:
            wait = min(said.reset, MAX_PAUSE)  # no Retry-After, but the window's end is named
        pause = 0.0
        if status == 429:
            pause = wait or self._pause_floor() * 2.0 ** self._strike(sent_at, now)
        elif status == 503:  # an outage's, maybe: health.Health decides about those
            pause = max(wait or 0.0, self._pause_floor())
        elif status < 500 and sent_at >= self._struck_at:
            self._strikes = 0
        answer = Answer(
            status,
            sent_at=sent_at,
            at=now,
            limit=said.limit,
            remaining=said.remaining,
            retry_after=wait,
            reset=said.reset,
            window=said.window,
            pause=pause,
            rate=self.rate,
            ceiling=self.ceiling(),
        )
        if pause:
            why = "" if wait is None else f", Retry-After {wait:g}s"
            # A 429 that names no wait: one request goes first when it ends (a limiter that
            # counts refusals sees one, not the pool's every worker).
            self.pause(
                now + pause, f"rate limited ({status}{why})", probe=status == 429 and not wait
            )
        strategies: tuple[Strategy, ...] = (self.windows, self.aimd)
        for strategy in strategies:
            advice = strategy.learn(answer)
            if advice.until:
                self.pause(advice.until, advice.reason)
        rate, scout = self.rate, answer.rate is None
        if rate:  # the next start keeps the pace from this request (the scout's: its answer)
            self._next_start = max(self._next_start, (now if scout else sent_at) + 1.0 / rate)

    def _strike(self, sent_at: float, now: float) -> int:
        # A refusal that names no wait, to a request sent since the last such pause: one more
        # in a row (each doubles the pause). Requests sent before it add nothing.
        if sent_at > self._struck_at:
            self._strikes, self._struck_at = min(self._strikes + 1, 24), now
        return max(0, self._strikes - 1)

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

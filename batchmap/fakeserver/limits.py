"""Laravel's ThrottleRequests as identifAI runs it, plus an optional leaky bucket in front.

Pure: every method takes the wall-clock time, as Laravel's limiter does (its cache TTLs are
Unix timestamps), so tests drive it with made-up times.

What Laravel 8.83 does (Illuminate/Routing/Middleware/ThrottleRequests.php and
Illuminate/Cache/RateLimiter.php; the same loop in later versions):

- `handleRequest` walks the limits in order: `tooManyAttempts` refuses with that limit's
  headers, otherwise `hit` counts the request before the next limit is checked. So a request
  a later limit refuses has already counted on every earlier one.
- `hit` stores the window's timer as `availableAt(decay)` = `time() + decay` in whole seconds
  and gives the counter the same TTL; the file, database and array stores keep expiry times
  as integer timestamps, so a window whose first hit is at x.48 ends at floor(x.48) + W,
  sooner than W says. (Redis expires keys exactly W seconds after the first hit instead:
  `whole_seconds=False`.)
- A 429 carries `Retry-After` = timer - time() (whole seconds, at least 1),
  `X-RateLimit-Reset` = time() + Retry-After (the window's end) and `Remaining: 0`.
- A success gets each limit's headers in turn, but `getHeaders` keeps the ones already there
  unless this limit has fewer remaining: the limit with the fewest left wins, the earlier one
  on a tie. (Earlier Laravel 8 releases let each limit overwrite the previous, so the last
  limit's showed: `shown="last"`.)

This is the one model of Laravel's limiter: the fake server answers with it, the pacer's
simulations (tests/limiters.py `Laravel`) drive it, and tests/test_laravel_limiter.py checks
it, request by request, against Laravel 8's own middleware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Headers = tuple[tuple[str, str], ...]
Shown = Literal["fewest", "last"]  # which limit's headers a success carries


@dataclass(slots=True)
class FixedWindow:
    """One Laravel limit: a window opens at the first hit after the previous one ended.

    `whole`: the counter expires on the whole second (file, database and array cache stores);
    otherwise exactly `seconds` after the first hit (Redis TTLs), while the timer behind
    Retry-After stays whole seconds, so Retry-After can say 0 for up to a second while refused.
    """

    max_attempts: int
    seconds: float
    whole: bool = True
    hits: int = 0
    ends: float = -math.inf  # when the counter expires
    timer: int = 0  # Laravel's `key:timer`: availableAt(decay) = floor(time() + decay)

    def full(self, now: float) -> bool:
        """True if the window `now` falls in has no attempt left (`tooManyAttempts`)."""
        return now < self.ends and self.hits >= self.max_attempts

    def hit(self, now: float) -> None:
        """Count one request, opening a new window if the last one is over."""
        if now >= self.ends:
            end = now + self.seconds
            self.timer = math.floor(end)
            self.hits, self.ends = 0, self.timer if self.whole else end
        self.hits += 1

    def remaining(self, now: float) -> int:
        """Attempts left in the window `now` falls in (`retriesLeft`)."""
        return self.max_attempts - self.hits if now < self.ends else self.max_attempts

    def refusal_headers(self, now: float) -> Headers:
        """Laravel's 429 headers for this limit; Retry-After and Reset are whole seconds."""
        if self.seconds < 1:  # not Laravel's (it has no shorter windows): round the wait up
            wait, reset = max(1, math.ceil(self.ends - now)), math.ceil(self.ends)
        else:
            second = math.floor(now)
            wait = max(0, self.timer - second)  # `availableIn`
            reset = second + wait  # `availableAt(retryAfter)`
        return (
            ("X-RateLimit-Limit", str(self.max_attempts)),
            ("X-RateLimit-Remaining", "0"),
            ("Retry-After", str(wait)),
            ("X-RateLimit-Reset", str(reset)),
        )


@dataclass(slots=True)
class LeakyBucket:
    """GCRA: on average one request per `interval` seconds, with `burst` allowed back to back."""

    interval: float
    tolerance: float
    due: float = -math.inf  # theoretical arrival time of the next request

    def wait(self, now: float) -> float:
        """Seconds until a request would conform; 0 if it conforms now."""
        return max(0.0, self.due - self.tolerance - now)

    def hit(self, now: float) -> None:
        """Count one accepted request."""
        self.due = max(self.due, now) + self.interval


@dataclass(frozen=True, slots=True)
class Admission:
    """The limiter's decision and the rate headers the answer carries."""

    allowed: bool
    headers: Headers


class RateLimiter:
    """A leaky bucket in front (like nginx's limit_req), then Laravel's fixed windows."""

    def __init__(
        self,
        limits: tuple[tuple[int, float], ...],
        *,
        whole_seconds: bool = True,
        leaky_rate: float | None = None,
        leaky_burst: int = 1,
        headers: bool = True,
        shown: Shown = "fewest",
    ) -> None:
        self._windows = [
            FixedWindow(most, float(window), whole_seconds and window >= 1)
            for most, window in limits
        ]
        self._bucket: LeakyBucket | None = None
        if leaky_rate is not None:
            interval = 1.0 / leaky_rate
            self._bucket = LeakyBucket(interval, interval * (leaky_burst - 1))
        self._headers = headers
        self._shown = shown

    @property
    def windows(self) -> tuple[FixedWindow, ...]:
        """The fixed windows, in the order Laravel checks them (for tests to inspect)."""
        return tuple(self._windows)

    def admit(self, now: float) -> Admission:
        """Accept and count the request, or refuse it with the headers of the limit that tripped."""
        bucket = self._bucket
        if bucket is not None:
            # The proxy in front refuses before Laravel sees the request; it counts what passes.
            wait = bucket.wait(now)
            if wait > 0:
                return self._refuse((("Retry-After", str(math.ceil(wait))),))
            bucket.hit(now)
        for window in self._windows:
            if window.full(now):
                # Earlier limits have already counted this refused request, as in Laravel.
                return self._refuse(window.refusal_headers(now))
            window.hit(now)
        return Admission(True, self._success_headers(now))

    def _refuse(self, headers: Headers) -> Admission:
        return Admission(False, headers if self._headers else ())

    def _success_headers(self, now: float) -> Headers:
        """Laravel's `getHeaders`: the limit with the fewest attempts left, the first on a tie
        (or, with `shown="last"`, the last limit's)."""
        if not self._headers or not self._windows:
            return ()
        shown = self._windows[0]
        left = shown.remaining(now)
        for window in self._windows[1:]:
            remaining = window.remaining(now)
            if remaining < left or self._shown == "last":
                shown, left = window, remaining
        return (
            ("X-RateLimit-Limit", str(shown.max_attempts)),
            ("X-RateLimit-Remaining", str(max(0, left))),
        )

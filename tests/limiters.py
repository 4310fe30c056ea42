"""Rate limiters simulated on a fake clock, to drive the Pacer without sockets or sleeping."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field


class FakeClock:
    """Virtual time: `sleep` advances it instead of waiting."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        # Sleepers that start together wake together: time moves to the latest wake-up,
        # not to the sum of everyone's naps.
        target = self.now + max(0.0, seconds)
        await asyncio.sleep(0)
        self.now = max(self.now, target)


@dataclass
class FixedWindows:
    """Laravel's ThrottleRequests: fixed windows per limit starting at the first hit.

    Successes carry the last limit's headers; a 429 carries the tripped limit's, with a
    whole-second Retry-After rounded up.
    """

    limits: tuple[tuple[int, float], ...]
    starts: dict[int, float] = field(default_factory=dict)
    hits: dict[int, int] = field(default_factory=dict)

    def answer(self, now: float) -> tuple[int, dict[str, str]]:
        for index, (limit, window) in enumerate(self.limits):
            start = self.starts.get(index)
            if start is None or now >= start + window:
                self.starts[index], self.hits[index] = now, 0
            if self.hits[index] >= limit:
                wait = math.ceil(self.starts[index] + window - now)
                return 429, {
                    "retry-after": str(max(0, wait)),
                    "x-ratelimit-limit": str(limit),
                    "x-ratelimit-remaining": "0",
                }
        for index in range(len(self.limits)):
            self.hits[index] += 1
        if not self.limits:
            return 200, {}
        limit = self.limits[-1][0]
        remaining = limit - self.hits[len(self.limits) - 1]
        return 200, {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(remaining)}


@dataclass
class LeakyBucket:
    """A leaky bucket that says nothing but 429: no Retry-After, no rate headers."""

    rate: float
    burst: int
    level: float = 0.0
    last: float | None = None

    def answer(self, now: float) -> tuple[int, dict[str, str]]:
        if self.last is not None:
            self.level = max(0.0, self.level - (now - self.last) * self.rate)
        self.last = now
        if self.level + 1 > self.burst:
            return 429, {}
        self.level += 1
        return 200, {}

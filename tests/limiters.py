"""Rate limiters simulated on a fake clock, to drive the Pacer without sockets or sleeping."""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from batchmap.fakeserver.limits import RateLimiter, Shown
from batchmap.pacer import Pacer


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
    """Idealised fixed windows (not Laravel's: that is `Laravel`): per limit, a window starts
    at its first hit and lasts exactly W; a request counts only if every limit admits it.

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


@dataclass
class Laravel:
    """Laravel's ThrottleRequests with a whole-second cache (Laravel 8, file cache): the fake
    server's own model (`batchmap.fakeserver.limits.RateLimiter`, checked against Laravel 8's
    middleware by tests/test_laravel_limiter.py), as a Limiter.

    On a success `headers="min"` gives the limit with the fewest left, first on ties, as
    ThrottleRequests::getHeaders does since Laravel 8.x; `"last"` the last limit's (each limit
    overwrote the previous before). The server's clock is the caller's plus `offset`, so its
    seconds fall anywhere.
    """

    limits: tuple[tuple[int, int], ...]
    headers: str = "last"  # or "min"
    offset: float = 0.37
    model: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        if self.headers not in ("min", "last"):
            raise ValueError(f"headers={self.headers!r}: 'min' or 'last'")
        shown: Shown = "fewest" if self.headers == "min" else "last"
        self.model = RateLimiter(self.limits, shown=shown)

    @property
    def counts(self) -> dict[int, int]:
        """Requests counted per limit (by index) in its last window."""
        return {index: window.hits for index, window in enumerate(self.model.windows)}

    def answer(self, now: float) -> tuple[int, dict[str, str]]:
        admission = self.model.admit(now + self.offset)
        headers = {name.lower(): value for name, value in admission.headers}
        return (200 if admission.allowed else 429), headers


@dataclass
class NginxLimitReq:
    """nginx's limit_req (ngx_http_limit_req_lookup): a leaky bucket kept in milliseconds.

    `excess = excess - rate * ms / 1000 + 1000`, refused when above `burst * 1000`; no rate
    headers. nginx answers 503 by default (`limit_req_status` makes it 429); `retry_after`
    is the Retry-After an `add_header ... always` gives every refusal, if any.
    """

    rate: float
    burst: int = 0
    status: int = 429
    retry_after: str | None = "1"
    excess: int = 0
    last: int | None = None

    def answer(self, now: float) -> tuple[int, dict[str, str]]:
        ms = int(now * 1000)
        if self.last is None:
            self.last = ms
            return 200, {}
        elapsed = max(0, ms - self.last)
        excess = max(0, self.excess - int(self.rate * 1000) * elapsed // 1000 + 1000)
        if excess > self.burst * 1000:
            return self.status, {} if self.retry_after is None else {
                "retry-after": self.retry_after
            }
        self.excess = excess
        if elapsed:
            self.last = ms
        return 200, {}


@dataclass
class Storm:
    """A proxy or WAF in front of `inner`: every request in [start, start + seconds) gets a
    429 with `Retry-After` and no rate headers."""

    inner: Limiter
    start: float
    seconds: float
    retry_after: str = "3"

    def answer(self, now: float) -> tuple[int, dict[str, str]]:
        if self.start <= now < self.start + self.seconds:
            return 429, {"retry-after": self.retry_after}
        return self.inner.answer(now)


class Limiter(Protocol):
    """Anything that answers a request sent at `now` with (status, headers)."""

    def answer(self, now: float) -> tuple[int, dict[str, str]]: ...


Log = list[tuple[float, int]]


def simulate(
    pacer: Pacer, clock: FakeClock, server: Limiter, *, seconds: float, latency: float = 0.001
) -> Log:
    """One worker: (start time, status) of every request in `seconds` of virtual time."""
    log: Log = []

    async def loop() -> None:
        end = clock() + seconds
        while clock() < end:
            sent = await pacer.wait_turn()
            status, headers = server.answer(sent)
            clock.now += latency
            pacer.on_answer(status, headers, sent_at=sent)
            log.append((sent, status))

    asyncio.run(loop())
    return log


class VirtualClock:
    """Virtual time for several workers: sleepers wake one by one in time order."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._count += 1
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), self._count, wake))
        await wake

    async def drive(self, main: Awaitable[None]) -> None:
        """Run `main`, moving time to the next wake-up whenever every task is waiting."""
        task = asyncio.ensure_future(main)
        while not task.done():
            for _ in range(8):
                await asyncio.sleep(0)  # let every runnable task reach its next wait
            if task.done():
                break
            if not self._sleepers:
                raise RuntimeError("every worker waits on something that never comes")
            moment, _, wake = heapq.heappop(self._sleepers)
            self.now = max(self.now, moment)
            wake.set_result(None)
        task.result()


@dataclass
class Until:
    """When a simulated pool stops: once the clock passes `end` (a worker already waiting for
    its turn still sends), or once `ids` requests were answered, not refused (a worker whose
    turn comes after that sends nothing)."""

    clock: VirtualClock
    end: float = math.inf
    ids: float = math.inf  # ids left to resolve

    def before_turn(self) -> bool:
        return self.clock() < self.end and self.ids > 0

    def after_turn(self) -> bool:
        return self.ids > 0

    def answered(self, status: int) -> None:
        if status not in (429, 503):  # a refusal is asked again; anything else resolves its id
            self.ids -= 1


def run_pool(
    pacer: Pacer,
    server: Limiter,
    until: Until,
    *,
    workers: int,
    latency: float,
    jitter: float = 0.0,
    seed: int = 1,
) -> Log:
    """`workers` workers share `pacer` until `until` says stop; each request takes `latency`
    seconds there and back (each way up to `jitter` longer, at random), the server answering
    in the middle. (start time, status) of every request, in time order."""
    clock = until.clock
    log: Log = []
    rng = random.Random(seed)

    async def worker() -> None:
        while until.before_turn():
            sent = await pacer.wait_turn()
            if not until.after_turn():
                return
            await clock.sleep(latency / 2 + rng.random() * jitter)
            status, headers = server.answer(clock())
            until.answered(status)
            await clock.sleep(latency / 2 + rng.random() * jitter)
            pacer.on_answer(status, headers, sent_at=sent)
            log.append((sent, status))

    async def pool() -> None:
        await asyncio.gather(*(worker() for _ in range(workers)))

    asyncio.run(clock.drive(pool()))
    log.sort()
    return log


def simulate_pool(
    pacer: Pacer,
    clock: VirtualClock,
    server: Limiter,
    *,
    seconds: float,
    workers: int = 4,
    latency: float = 0.05,
    jitter: float = 0.0,
    seed: int = 1,
) -> Log:
    """`workers` workers for `seconds` of virtual time (see `run_pool`)."""
    until = Until(clock, end=clock() + seconds)
    return run_pool(
        pacer, server, until, workers=workers, latency=latency, jitter=jitter, seed=seed
    )


@dataclass(frozen=True)
class Figures:
    """How well a run used a limiter that allows `allowed` requests per second."""

    steady: float  # answers (not 429/503) per second over the steady part, / allowed
    whole: float  # the same over the whole run
    refused: float  # share of requests answered 429 or 503
    per_id: float  # requests per resolved identifier (one not refused)


def figures(log: Log, *, allowed: float, steady_after: float) -> Figures:
    """Figures of a run; its steady part starts `steady_after` seconds in."""
    first, last = log[0][0], log[-1][0]
    tail = [status for sent, status in log if sent >= first + steady_after]
    statuses = [status for _, status in log]
    answered = sum(1 for s in statuses if s not in (429, 503))
    steady_answered = sum(1 for s in tail if s not in (429, 503))
    return Figures(
        steady=steady_answered / (last - first - steady_after) / allowed,
        whole=answered / (last - first) / allowed,
        refused=(len(statuses) - answered) / len(statuses),
        per_id=len(statuses) / max(1, answered),
    )


# ----------------------------------------------------------- other people's limiter shapes


def _fewest_left(shown: list[tuple[int, int, float]]) -> tuple[int, int, float]:
    # (limit, left, end) of the limit with the fewest requests left, first on ties.
    return min(shown, key=lambda item: item[1])


@dataclass
class LimitsPackage:
    """Fixed windows as the `limits` package keeps them (Flask-Limiter, SlowAPI): each window
    opens at its first hit and lasts exactly W seconds. Successes and 429s carry
    `X-RateLimit-Limit/-Remaining/-Reset` (Reset: epoch seconds, whole) of the limit with the
    fewest left; a 429 adds `Retry-After` (whole seconds, rounded up). Refusals count nowhere.
    With `ietf`, the same windows speak draft-ietf-httpapi-ratelimit-headers' structured form
    instead: `RateLimit-Policy: "p0";q=L;w=W, ...` and `RateLimit: "pN";r=left;t=seconds`,
    and a 429 carries no Retry-After."""

    limits: tuple[tuple[int, float], ...]
    ietf: bool = False
    starts: dict[int, float] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)

    def answer(self, now: float) -> tuple[int, dict[str, str]]:
        for index, (_, window) in enumerate(self.limits):
            if index not in self.starts or now >= self.starts[index] + window:
                self.starts[index], self.counts[index] = now, 0
        full = [i for i, (limit, _) in enumerate(self.limits) if self.counts[i] >= limit]
        if not full:
            for index in range(len(self.limits)):
                self.counts[index] += 1
        shown = [
            (limit, limit - self.counts[i], self.starts[i] + window, i)
            for i, (limit, window) in enumerate(self.limits)
        ]
        limit, left, end, index = min(shown, key=lambda item: item[1])
        headers: dict[str, str]
        if self.ietf:
            policy = ", ".join(f'"p{i}";q={q};w={w:g}' for i, (q, w) in enumerate(self.limits))
            wait = max(0, math.ceil(end - now))
            headers = {"ratelimit-policy": policy, "ratelimit": f'"p{index}";r={left};t={wait}'}
        else:
            headers = {
                "x-ratelimit-limit": str(limit),
                "x-ratelimit-remaining": str(left),
                "x-ratelimit-reset": str(math.ceil(end)),
            }
            if full:
                headers["retry-after"] = str(max(1, math.ceil(end - now)))
        return (429 if full else 200), headers


@dataclass
class SlidingLog:
    """A sliding-window limiter that counts every request, refused ones too (a proxy that
    logs each arrival), and answers a bare 429: no Retry-After, no rate headers."""

    limits: tuple[tuple[int, float], ...]
    seen: list[list[float]] = field(default_factory=list)

    def answer(self, now: float) -> tuple[int, dict[str, str]]:
        if not self.seen:
            self.seen = [[] for _ in self.limits]
        ok = True
        for (limit, window), log in zip(self.limits, self.seen, strict=True):
            while log and log[0] <= now - window:
                log.pop(0)
            ok = ok and len(log) < limit
            log.append(now)
        return (200 if ok else 429), {}


@dataclass
class LyingRemaining:
    """Allows `rate` per second (nginx's bucket, burst 5) but every success says
    `X-RateLimit-Limit: 1000`, `X-RateLimit-Remaining: 0` (issue 17, item 6)."""

    rate: float
    inner: NginxLimitReq | None = None

    def answer(self, now: float) -> tuple[int, dict[str, str]]:
        if self.inner is None:
            self.inner = NginxLimitReq(rate=self.rate, burst=5)
        status, headers = self.inner.answer(now)
        if status == 200:
            headers = {"x-ratelimit-limit": "1000", "x-ratelimit-remaining": "0"}
        return status, headers


def ideal_seconds(make: Callable[[], Limiter], n: int, step: float = 0.005) -> float:
    """The time from the first to the n-th accepted request of a client that knows the limit:
    it sends the moment the limiter would accept (never a refused request)."""
    import copy

    server, now, accepted = make(), 0.0, 0
    while True:
        trial = copy.deepcopy(server)
        if trial.answer(now)[0] < 400:
            server = trial
            accepted += 1
            if accepted == n:
                return now
        else:
            now += step


def simulate_ids(
    pacer: Pacer,
    server: Limiter,
    *,
    ids: int,
    workers: int = 4,
    latency: float = 0.004,
    start: float = 1_700_000_000.25,
) -> Log:
    """`workers` workers share `pacer` until `ids` requests were accepted: the CLI's shape
    (a 429 is asked again, anything else resolves its id). (start time, status) per request."""
    clock = VirtualClock(start)
    pacer.clock = pacer.wall = clock
    pacer.sleep = clock.sleep
    return run_pool(pacer, server, Until(clock, ids=ids), workers=workers, latency=latency)

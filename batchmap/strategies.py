"""Pacing strategies: what one answer teaches about the server's limit (rclone's `pacers.go`).

A strategy sees each answer as an `Answer` and keeps an opinion on the highest safe rate
(`rate`, requests per second, None for none yet); it may also ask the gate (pacer.py) to hold
the pool until some time (`Advice`). Strategies do no I/O and read no clock: times come in
the `Answer`, so each decision can be tested with a table.

- `FixedWindows` learns Laravel's fixed windows from `X-RateLimit-*` and `Retry-After`.
- `Aimd` finds a limiter that sends no rate headers (a leaky bucket, nginx `limit_req`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from batchmap.numeric import finite

MAX_LIMIT = 1_000_000  # an X-RateLimit-Limit above this is absurd and ignored; nor any rate
MAX_WINDOW = 86_400.0  # a window longer than a day is not learned
SAFETY = 0.995  # pace at this share of a learned fixed-window limit: room for timing jitter
EPS = 0.001  # seconds: float rounding allowed for when a bound is rounded to whole seconds
MAX_OVERTAKE = 32  # answers overtaking an earlier one: more than this is not tracked
HISTORY = 4096  # answers remembered, to bound when a window began unseen

# AIMD. A limiter that may count refusals must see the pace drop under its limit in one step:
# 0.7 is CUBIC's and botocore's factor (the 0.9 of earlier versions crept down 10% per 429,
# and a sliding counter that counts refusals got 1.23 requests per id: issue 16).
DECREASE = 0.7  # rate after a congestion signal, as a share of the level that met it
RECOVER_TO = 0.97  # ... then won back quickly up to this share of that level
RECOVER = 0.05  # share of that gap won back per success (~60 successes from 0.7 to 0.96)
PROBE = 0.0003  # then growth per success above it, as a share of the rate
PROBE_SPEEDUP = 50  # probing successes after which each further 50 doubles the growth
# A probe's cost: its 429, the pause times the rate, and the recovery from DECREASE. The hold
# before the next probe is that cost / PROBE_BUDGET successes, so probing costs at most 1%.
PROBE_BUDGET = 0.01
HOLD_MAX = 1_000_000  # the most successes ever held before a probe (a finite bound)
# A limiter whose first answer names no limit is climbed to from START_RATE, doubling each
# second, not hit unpaced (4 workers' first burst against nginx's limit_req: four 429s).
START_RATE = 4.0
SAME_LEVEL = 0.05  # a 429 within this share of the last level confirms that level
LIAR = 3  # successes in a row whose header says 0 remain: the header lies (issue 17, item 6)
MIN_RATE = 0.05  # requests per second: the pacer never stops altogether
# Seconds of successes behind the measured accepted rate: while the rate doubles each second,
# the last one (saturated, not half the one before); later, all since the rate came back to
# just under the level, so a bucket's burst is spread thin (over 1 s nginx's burst of 5 read
# as 25/s for 20/s, and each 429 lowered the level by one: five 1 s pauses to find it), and
# the climb back from a cut is not counted (it read 14.7/s for 20/s).
ACCEPTED_WINDOW = 1.0
MIN_EVIDENCE = 10  # successes in that window before the measure may lower the level


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer as the strategies see it; rate headers already validated."""

    status: int
    sent_at: float
    at: float  # when it arrived
    limit: int | None = None
    remaining: int | None = None
    retry_after: float | None = None
    reset: float | None = None  # seconds until the shown limit's window ends, when said
    window: float | None = None  # the shown limit's window length, when said (IETF `w`)
    pause: float = 0.0  # seconds the gate holds the pool for it (a 429's or 503's)
    rate: float | None = None  # the rate in force when it was sent
    ceiling: float | None = None  # the rate the user and learned limits allow


@dataclass(frozen=True, slots=True)
class Advice:
    """Hold the pool until `until` (0: no pause), saying why."""

    until: float = 0.0
    reason: str = ""


NOTHING = Advice()


class Strategy(Protocol):
    """A source of pace: learns from answers, holds an opinion on the rate."""

    @property
    def rate(self) -> float | None: ...

    def learn(self, answer: Answer) -> Advice: ...

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: Mapping[str, Any]) -> None: ...


def is_congestion(answer: Answer) -> bool:
    """A 429 without a usable limit header, or a 503: a limiter that says nothing of its rate."""
    return answer.status == 503 or (answer.status == 429 and answer.limit is None)


# ------------------------------------------------------------------------ fixed windows


@dataclass(slots=True)
class _Window:
    """What is known of one Laravel limit of `limit` requests per whole-second window."""

    limit: int
    low: int = 1  # the shortest window length consistent with what was seen (whole seconds)
    high: float = math.inf  # the longest
    soft: bool = False  # `low` came from a saved state: fresh evidence may lower it
    start: float | None = None  # no earlier than the current window's first hit, when known
    start_sent: float | None = None  # no later than it: its request's send time, when seen
    seen_start: bool = False  # `start` was seen (Remaining = limit - 1), not inferred
    last_hit: int = 0  # hit number (limit - Remaining) of the last answer about this limit
    full_at: float | None = None  # send time of a request that found the window used up
    counted_mark: int = 0  # answers counted in all when the last about this limit came
    zeros: int = 0  # successes that said 0 remain with fewer requests made than the limit


class FixedWindows:
    """Laravel's ThrottleRequests: per limit L, a window opens at its first hit and ends on a
    whole second, `floor(first hit) + W` (the cache TTL is `time() + W` in integer seconds),
    so it lasts between W - 1 and W seconds; `Retry-After` is `end - floor(now)`.

    The learner keeps, per limit, the shortest whole W consistent with every answer (each 429
    proves the window still open, so it only grows on evidence). It paces at L/W of the
    shortest window only (even pacing at L/W never exceeds L in a window at most W long,
    whatever its phase) and spends every longer window's quota at that pace, pausing when the
    headers say it is used up until that window ends (the `Reset` a server names, else its
    first hit + W): a window's head start is not given up to an average (issue 16).

    Headers are evidence, not orders: a limit whose successes keep saying 0 remain, LIAR times
    without a 429 and while we have made fewer requests than the limit, is a header that lies
    (issue 17, item 6), and is ignored from then on.
    """

    def __init__(self) -> None:
        self.windows: dict[int, _Window] = {}
        self._latest_sent = -math.inf
        self._done: deque[float] = deque(maxlen=HISTORY)  # when each answer arrived
        self._hits: deque[float] = deque(maxlen=HISTORY)  # send times of those counted
        self._reordered = False
        self._counted = 0  # answers the limiter counted, so far
        self._recent: deque[float] = deque(maxlen=MAX_OVERTAKE)  # the last answers' send times
        self._overtake = 0  # the most answers ever seen to overtake an earlier request's
        self._liars: set[int] = set()  # limits whose headers proved false

    @property
    def rate(self) -> float | None:
        pacing = self._pacing()
        return None if pacing is None else SAFETY * pacing.limit / pacing.low

    def _pacing(self) -> _Window | None:
        # The shortest window sets the pace (the slowest of those equally short).
        if not self.windows:
            return None
        return min(self.windows.values(), key=lambda w: (w.low, w.limit / w.low))

    def lengths(self) -> dict[int, float]:
        """Limit -> the window length paced for, in seconds."""
        return {limit: float(w.low) for limit, w in sorted(self.windows.items())}

    def learn(self, answer: Answer) -> Advice:
        if answer.sent_at < self._latest_sent - EPS:
            self._reordered = True  # answers overtake each other: history says little
            overtaken_by = sum(1 for sent in self._recent if sent > answer.sent_at)
            self._overtake = max(self._overtake, min(overtaken_by, MAX_OVERTAKE))
        self._recent.append(answer.sent_at)
        if answer.status != 429 and answer.status < 500:
            self._counted += 1
        advice = self._learn(answer)
        if not advice.until and answer.status != 429 and answer.status < 500:
            advice = self._count_unshown(answer)
        self._latest_sent = max(self._latest_sent, answer.sent_at)
        self._done.append(answer.at)
        if answer.status != 429 and answer.status < 500:
            self._hits.append(answer.sent_at)
        return advice

    def _learn(self, answer: Answer) -> Advice:
        counted = answer.status != 429 and answer.status < 500
        if answer.limit in self._liars:
            answer = replace(answer, limit=None, remaining=None, reset=None, window=None)
        if answer.limit is None or answer.status >= 500:
            if counted:
                self._infer_starts(answer, skip=None)
            return NOTHING
        window = self.windows.setdefault(answer.limit, _Window(answer.limit))
        if answer.window is not None:  # stated outright (IETF `w`): no need to learn it
            window.low = max(1, math.ceil(answer.window - EPS))
            window.high, window.soft = float(window.low), False
        if answer.status == 429:
            window.zeros = 0  # a 429 bears the header out
            self._on_refused(window, answer)
            return NOTHING  # the gate pauses for Retry-After
        self._infer_starts(answer, skip=window.limit)
        if answer.remaining is None:
            return NOTHING
        if answer.remaining == 0 and window.limit > self._counted:
            # More hits than we ever made, yet our request was accepted: evidence against it.
            window.zeros += 1
            if window.zeros >= LIAR:
                self._liars.add(window.limit)  # a success outranks a header saying 0 remain
                del self.windows[window.limit]
                return NOTHING
        else:
            window.zeros = 0
        advice = self._on_counted(window, answer, hit=window.limit - answer.remaining)
        sure = window.low == 1 or window.high <= window.low  # its W cannot be shorter
        if advice.until and sure and window is self._pacing() and window.limit <= self._counted:
            return NOTHING  # our pace alone keeps that window; pausing loses time
        if advice.until and answer.reset is not None:
            advice = replace(advice, until=answer.at + answer.reset)  # the server said when
        return advice

    # The server counts a request at some moment between its send time and its answer's
    # arrival: bounds use the send time of the later request and the arrival of the earlier.

    def _begun(self, window: _Window, *, hits_before: int, answer: Answer) -> float | None:
        """A time no earlier than the first hit of the window that holds `hits_before` hits
        before `answer`'s request; None when nothing says (then `answer.at` is the bound)."""
        if hits_before <= 0:
            return answer.at
        start = window.start
        enough = len(self._done) >= hits_before
        # Answers that overtook each other shift positions in the history by up to that much.
        late, early = max(1, hits_before - self._overtake), hits_before + self._overtake
        latest = self._done[-late] if len(self._done) >= late else math.inf
        earliest = self._hits[-early] if len(self._hits) >= early else -math.inf
        if start is not None and earliest - EPS <= start <= latest + EPS:
            return start  # the tracked start belongs to this window, not an older one
        if self._reordered or not enough:
            return None
        return min(self._done[-hits_before], answer.at)

    def _on_counted(self, window: _Window, answer: Answer, *, hit: int) -> Advice:
        first_sent = window.start_sent if window.seen_start else None
        if first_sent is not None and answer.sent_at < first_sent:
            return NOTHING  # sent before this window's first hit: an older window's
        between = self._counted - window.counted_mark - 1  # answers that showed other limits
        if hit == 1:
            if window.seen_start and window.start_sent is not None:
                # The window that began then has ended by now: W - 1 < end - start <= gap.
                _shorter_than(window, answer.at - window.start_sent + 1.0)
            window.start, window.start_sent = answer.at, answer.sent_at
            window.seen_start, window.full_at, window.last_hit = True, None, 0
        elif hit + 2 * self._overtake + 1 < window.last_hit + between + 1:
            # Fewer hits than answers since, beyond what overtaking on the way there and back
            # explains: a window we did not see begin.
            window.start, window.seen_start, window.last_hit = None, False, 0
        start = self._begun(window, hits_before=hit - 1, answer=answer)
        if start is not None:
            _longer_than(window, answer.sent_at - start)  # still counted: the end is later
        window.last_hit, window.counted_mark = max(window.last_hit, hit), self._counted
        if hit < window.limit:
            return NOTHING
        if start is None:
            # No start known for sure: the last `limit` answers still bound it, if loosely;
            # a pause that ends too soon costs one 429, whose Retry-After then says when.
            start = self._done[-hit] if len(self._done) >= hit else answer.at
        window.full_at = answer.sent_at
        return Advice(start + _longest(window), f"quota of {window.limit} used up")

    def _count_unshown(self, answer: Answer) -> Advice:
        # A limit the headers do not show (Laravel shows the one with the fewest left, and
        # on a tie the first) still counts each accepted request: when ours fill a window
        # whose start is known, wait for its end without a 429 to say so.
        pacing = self._pacing()
        for window in self.windows.values():
            start = window.start
            if window.limit == answer.limit or window is pacing or start is None:
                continue
            if answer.at > start and window.full_at is None and not self._reordered:
                window.last_hit += 1
                if window.last_hit >= window.limit:
                    window.full_at = answer.sent_at
                    return Advice(start + _longest(window), f"quota of {window.limit} used up")
        return NOTHING

    def _infer_starts(self, answer: Answer, *, skip: int | None) -> None:
        # An accepted request sent after one that found a window used up opens the next
        # window of that limit (for earlier limits it may open later: an upper estimate).
        if self._reordered:
            return
        for window in self.windows.values():
            full = window.full_at
            if window.limit != skip and full is not None and answer.sent_at > full:
                window.start, window.seen_start, window.full_at = answer.at, False, None
                window.last_hit = 1

    def _on_refused(self, window: _Window, answer: Answer) -> None:
        start = self._begun(window, hits_before=window.limit, answer=answer)
        if start is None:
            start = answer.at
        exact = window.seen_start and start == window.start and window.start_sent is not None
        window.full_at, window.last_hit = answer.sent_at, window.limit
        elapsed = max(0.0, answer.sent_at - start)
        _longer_than(window, elapsed)  # the window is still open
        wait = answer.retry_after
        if wait is None:
            return
        whole = round(wait)
        if abs(wait - whole) < EPS and whole >= 1:
            # end = floor(now) + wait and floor(now) - floor(start) is floor(elapsed) or one
            # more, so W = end - floor(start) is wait + floor(elapsed) or wait + that + 1.
            _at_least(window, whole + max(0, math.floor(elapsed - EPS)))
            if exact and window.start_sent is not None:
                longest = answer.at - window.start_sent
                _shorter_than(window, whole + math.floor(longest + EPS) + 2.0)
        else:
            _longer_than(window, elapsed + wait - 1.0)

    def state(self) -> dict[str, Any]:
        return {"windows": {str(limit): float(w.low) for limit, w in self.windows.items()}}

    def restore(self, state: Mapping[str, Any]) -> None:
        saved = state.get("windows")
        if not isinstance(saved, Mapping):
            return
        for key, value in saved.items():
            limit = finite(key, low=1, high=MAX_LIMIT)
            length = finite(value, low=0.001, high=MAX_WINDOW)
            if limit is None or length is None or limit != int(limit):
                continue
            # A saved length is a hint (older versions saved fractions): a whole second up.
            low = max(1, math.ceil(length - EPS))
            self.windows[int(limit)] = _Window(int(limit), low=low, soft=True)


def _longest(window: _Window) -> float:
    # A pause for a used-up quota waits for the longest W the evidence allows: a 429's whole
    # seconds leave W one second open (identifAI's minute read as 59 s cost a 429 a window).
    return float(window.low) if window.high <= window.low else float(window.low + 1)


def _at_least(window: _Window, length: int) -> None:
    if length > window.low:
        window.low = min(length, int(MAX_WINDOW))
        window.soft = False
    if window.high < window.low:
        window.high = math.inf  # the evidence disagrees: trust what the 429s proved


def _longer_than(window: _Window, elapsed: float) -> None:
    # W > elapsed, in whole seconds.
    _at_least(window, math.floor(elapsed - EPS) + 1)


def _shorter_than(window: _Window, bound: float) -> None:
    # W < bound, in whole seconds.
    longest = math.ceil(bound - EPS) - 1
    if longest < 1:
        return
    window.high = min(window.high, float(longest))
    if window.soft and window.high < window.low:
        window.low = int(window.high)


# ------------------------------------------------------------------------------- AIMD


class Aimd:
    """Additive increase, multiplicative decrease for limiters that send no rate headers.

    A congestion signal (a headerless 429, a 503) cuts the rate once per round to DECREASE of
    the level it met; successes win it back quickly to RECOVER_TO of that level, hold there,
    then probe slowly above it. A probe's 429 costs the request, its pause times the rate, and
    the recovery (`probe_cost`), so the hold is that cost / PROBE_BUDGET successes: probing
    costs at most PROBE_BUDGET of the requests, whatever the pause; it doubles each time the
    same level is confirmed. The level is only lowered on evidence: successes measured.
    """

    def __init__(self) -> None:
        self.rate: float | None = None
        self.level: float | None = None  # the rate at which the last congestion came
        self.confirmed = 0  # how many times in a row congestion came at about that level
        self._climbing = False  # slow start: no level known in this run yet
        self._hold = 0  # successes still to wait before probing
        self._probes = 0
        self._last_cut = -math.inf
        self._fresh = 0  # successes since the last cut
        self._accepted: deque[float] = deque(maxlen=HISTORY)
        self._resumed: float | None = None  # the rate the last cut resumed at
        self._since = math.inf  # when the rate last climbed back to RECOVER_TO of the level

    def learn(self, answer: Answer) -> Advice:
        if is_congestion(answer):
            if answer.sent_at > self._last_cut:
                self._cut(answer)  # answers to requests sent before the last cut carry no news
        elif answer.status < 500:
            self._accepted.append(answer.at)
            self._fresh += 1
            if self.rate is None and self.level is None and answer.limit is None:
                self.rate, self._climbing = START_RATE, True  # nothing said: a slow start
            recovering = self._recovering()
            self._grow(answer.ceiling)
            if recovering and not self._recovering():
                self._since = answer.at
        return NOTHING

    def accepted_rate(self, now: float, since: float | None = None) -> tuple[float, int]:
        """Successes per second over the last ACCEPTED_WINDOW seconds (or since `since`, if
        earlier), and how many."""
        since = now - ACCEPTED_WINDOW if since is None else min(since, now - ACCEPTED_WINDOW)
        while self._accepted and self._accepted[0] < min(since, now - ACCEPTED_WINDOW, self._since):
            self._accepted.popleft()
        times = [t for t in self._accepted if t >= since]
        if len(times) < 2 or times[-1] - times[0] < 0.5:
            return len(times) / 1.0, len(times)  # a burst in an instant counts per second
        # Intervals between successes, not successes per whole second: 20 a second read 19.
        return (len(times) - 1) / (times[-1] - times[0]), len(times)

    def _cut(self, answer: Answer) -> None:
        fresh, self._fresh = self._fresh, 0
        first = self._last_cut == -math.inf
        self._last_cut = answer.at
        sent = answer.rate if answer.rate is not None else self.rate
        probing = self._climbing or self._probes > 0 or self.level is None
        # Climbing or probing, the last second is saturated; holding, all since the hold began.
        measured, evidence = self.accepted_rate(answer.at, None if probing else self._since)
        self._since = math.inf
        if fresh == 0 and (sent is None or self.level is not None or not first):
            # Nothing accepted since the last cut (a storm, an outage, a 429 first thing):
            # no news about the level, and the pause is answer enough. Only a first 429 at
            # a rate the user set, with no level learned, still slows the pace.
            return
        if sent is None:
            # Unpaced until now: start from what was accepted lately and climb fast.
            self.rate = max(MIN_RATE, min(measured, answer.ceiling or measured))
            self._climbing = True
            return
        if self._recovering() and self._resumed is not None:
            # Refused on the way back up: the limit lies between the rate
            # resumed at after the last cut (accepted) and the rate sent now. Bisect (a
            # bucket's burst hid the limit, and each 429 lowered the level by 3%: six pauses).
            level = (sent + self._resumed) / 2
        elif evidence >= MIN_EVIDENCE:
            # A saturated limiter accepts just its own rate: trust that over the rate sent.
            level = min(sent, measured)
        elif self._climbing:
            # The rate doubled each second: the limit lies between half the rate sent and it.
            level = sent * DECREASE
        else:
            level = sent
        level = max(MIN_RATE, level)
        same = self.level is not None and abs(level / self.level - 1.0) <= SAME_LEVEL
        self.confirmed = self.confirmed + 1 if same else 0
        self.level = level
        self.rate = self._resumed = max(MIN_RATE, level * DECREASE)
        # A level met while climbing is a guess (the limit lies between half the rate sent
        # and it): probe above it at once. One met later is held, at PROBE_BUDGET's price.
        guessed, self._climbing = self._climbing, False
        self._probes = 0
        self._hold = int(min(HOLD_MAX, probe_cost(answer.pause, level) / PROBE_BUDGET))
        self._hold = 0 if guessed else min(HOLD_MAX, self._hold * 2**self.confirmed)

    def _recovering(self) -> bool:
        level, rate = self.level, self.rate
        return level is not None and rate is not None and rate < 0.999 * RECOVER_TO * level

    def _grow(self, ceiling: float | None) -> None:
        # Growth is counted in requests, not seconds, so the share of 429s stays small at any
        # rate: quick recovery to just under the level, a hold, then a probe that starts slow
        # and speeds up the longer no 429 comes (convex, like CUBIC's).
        if self.rate is None:
            return
        if self._climbing or self.level is None:
            self.rate *= min(2.0, 2.0 ** (1.0 / self.rate))  # doubles each second (or success)
        elif self.rate < 0.999 * RECOVER_TO * self.level:
            self.rate += (RECOVER_TO * self.level - self.rate) * RECOVER
        elif self._hold > 0:
            self._hold -= 1
        else:
            self._probes += 1
            self.rate *= 1.0 + min(1.0, PROBE * max(1.0, self._probes / PROBE_SPEEDUP))
        self.rate = min(self.rate, ceiling if ceiling is not None else MAX_LIMIT)

    def state(self) -> dict[str, Any]:
        return {"good_rate": self.level, "confirmed": self.confirmed}

    def restore(self, state: Mapping[str, Any], *, lift: bool = False) -> None:
        """Start just under a saved level, probed only after a hold; with `lift` (the user
        named a ceiling) the level is only remembered, and the pace starts at that ceiling."""
        self.level = finite(state.get("good_rate"), low=MIN_RATE, high=MAX_LIMIT)
        confirmed = finite(state.get("confirmed"), low=0, high=10)
        self.confirmed = int(confirmed or 0)
        if self.level is None or lift:
            return
        self.rate = RECOVER_TO * self.level  # the rate it was sending at may have been mid-cut
        # The pause is not known: a second's (nginx's Retry-After: 1) is the usual price.
        self._hold = int(min(HOLD_MAX, probe_cost(1.0, self.level) / PROBE_BUDGET))
        self._hold = min(HOLD_MAX, self._hold * 2**self.confirmed)


def probe_cost(pause: float, level: float) -> float:
    """Requests a probe that meets the limit costs: its 429, the requests its pause forgoes at
    `level`, and those forgone while the rate climbs back from DECREASE to RECOVER_TO."""
    cost, rate = 1.0 + pause * level, DECREASE * level
    while rate < 0.999 * RECOVER_TO * level:
        cost += level / rate - 1.0  # one success at `rate` takes the time of level/rate
        rate += (RECOVER_TO * level - rate) * RECOVER
    return cost

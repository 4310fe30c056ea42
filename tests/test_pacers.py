"""Pacing strategies decision by decision: tables of answers and what each should conclude."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from batchmap.pacers import (
    PROBE_BUDGET,
    probe_cost,
    NOTHING,
    SAFETY,
    Advice,
    Aimd,
    Answer,
    FixedWindows,
)


def ok(at: float, limit: int | None = None, remaining: int | None = None) -> Answer:
    return Answer(200, sent_at=at, at=at, limit=limit, remaining=remaining)


def refused(at: float, limit: int | None = None, wait: float | None = None) -> Answer:
    return Answer(429, sent_at=at, at=at, limit=limit, remaining=0, retry_after=wait)


@dataclass(frozen=True)
class WindowCase:
    answers: tuple[Answer, ...]
    limit: int
    low: int  # the window length paced for
    high: float = float("inf")
    advice: Advice = NOTHING  # what the last answer asked of the gate


INF = float("inf")

WINDOW_CASES = {
    "a 429 after a seen first hit pins W to two whole seconds": WindowCase(
        (ok(0.0, 60, 59), refused(3.2, 60, 4)), 60, low=7, high=8
    ),
    "a 429 with no first hit seen: W is at least its Retry-After": WindowCase(
        (refused(10.0, 60, 30),), 60, low=30
    ),
    "a hit still counted proves the window open that long": WindowCase(
        (ok(0.0, 60, 59), ok(29.5, 60, 30)), 60, low=30
    ),
    "two first hits bound W from above, a second more than their gap": WindowCase(
        (ok(0.0, 60, 59), ok(58.5, 60, 1), ok(60.3, 60, 59)), 60, low=59, high=61
    ),
    "the quota used up pauses until the window must have ended": WindowCase(
        (ok(0.0, 60, 59), ok(58.5, 60, 1), ok(60.3, 60, 59), ok(119.0, 60, 0)),
        60,
        low=59,
        high=61,
        advice=Advice(60.3 + 59, "quota of 60 per 59s used up"),
    ),
    "fewest-left headers: the first success after a full window opens the next": WindowCase(
        (refused(10.0, 60, 50), ok(40.0, 2, 1), refused(95.5, 60, 5)), 60, low=60
    ),
    "a limit of one: each hit fills its window, so the pool waits it out": WindowCase(
        (ok(0.0, 1, 0), refused(0.5, 1, 3), ok(3.5, 1, 0)),
        1,
        low=3,
        high=4,
        advice=Advice(3.5 + 3, "quota of 1 per 3s used up"),
    ),
    "a non-integer Retry-After (not Laravel) still bounds W from below": WindowCase(
        (ok(0.0, 10, 9), refused(0.5, 10, 1.5)), 10, low=1
    ),
}


@pytest.mark.parametrize("case", WINDOW_CASES.values(), ids=WINDOW_CASES.keys())
def test_fixed_window_decisions(case: WindowCase) -> None:
    learner = FixedWindows()
    advice = NOTHING
    for answer in case.answers:
        advice = learner.learn(answer)
    window = learner.windows[case.limit]
    assert (window.low, window.high) == (case.low, case.high)
    assert advice == case.advice
    assert learner.rate == pytest.approx(
        min(SAFETY * w.limit / w.low for w in learner.windows.values())
    )


def test_answers_without_rate_headers_teach_the_windows_nothing() -> None:
    learner = FixedWindows()
    learner.learn(ok(0.0))
    learner.learn(refused(1.0, None, 3))
    assert learner.rate is None and not learner.windows


RESTORE_CASES = {
    "a whole window comes back as it was": ({"60": 60.0}, {60: 60}),
    "an older version's fraction is rounded up to a whole second": ({"60": 59.4}, {60: 60}),
    "garbage is ignored": ({"0": 5.0, "x": 1.0, "7": "nan", "8": -1.0, "9": 1e9}, {}),
}


@pytest.mark.parametrize(("saved", "lows"), RESTORE_CASES.values(), ids=RESTORE_CASES.keys())
def test_fixed_windows_restore(saved: dict[str, object], lows: dict[int, int]) -> None:
    learner = FixedWindows()
    learner.restore({"windows": saved})
    assert {limit: w.low for limit, w in learner.windows.items()} == lows


def test_a_restored_window_is_a_hint_that_fresh_first_hits_can_shorten() -> None:
    learner = FixedWindows()
    learner.restore({"windows": {"60": 61.0}})
    learner.learn(ok(0.0, 60, 59))
    learner.learn(ok(59.2, 60, 59))
    assert learner.windows[60].low == 60


# -- AIMD -----------------------------------------------------------------------------------


def aimd(
    *, rate: float | None, level: float | None, confirmed: int = 0, cut_at: float | None = None
) -> Aimd:
    strategy = Aimd()
    strategy.rate, strategy.level, strategy.confirmed = rate, level, confirmed
    if cut_at is not None:
        strategy._last_cut = cut_at
    return strategy


def congestion(at: float, *, rate: float | None, pause: float = 1.0, status: int = 429) -> Answer:
    return Answer(status, sent_at=at, at=at, pause=pause, rate=rate, retry_after=pause)


@dataclass(frozen=True)
class AimdCase:
    start: Aimd
    successes: int  # at `per_second`, just before the signal
    per_second: float
    signal: Answer
    rate: float | None
    level: float | None
    confirmed: int = 0
    hold: int = 0


AIMD_CASES = {
    "congestion before anything succeeded changes nothing but the pause": AimdCase(
        aimd(rate=None, level=None), 0, 1.0, congestion(5.0, rate=None), None, None
    ),
    "congestion after an unpaced burst starts from what was accepted, then climbs": AimdCase(
        aimd(rate=None, level=None), 15, 15.0, congestion(5.0, rate=None), 15.0, None
    ),
    "a level is measured from what was accepted, not what was sent": AimdCase(
        aimd(rate=25.0, level=30.0), 24, 15.0, congestion(5.0, rate=25.0), 13.5, 15.0, 0, 50
    ),
    "the same level again confirms it and the hold before a probe grows": AimdCase(
        aimd(rate=20.2, level=20.0), 38, 20.0, congestion(5.0, rate=20.2), 18.0, 20.0, 1, 200
    ),
    "a cheap 429 (short pause, low rate) is probed for sooner": AimdCase(
        aimd(rate=6.2, level=6.0, confirmed=1),
        11,
        6.0,
        congestion(5.0, rate=6.2, pause=0.05),
        5.4,
        6.0,
        2,
        520,
    ),
    "a storm, nothing accepted since the last cut, changes nothing but the pause": AimdCase(
        aimd(rate=13.5, level=15.0, cut_at=2.0),
        0,
        1.0,
        congestion(5.0, rate=13.5, pause=3.0),
        13.5,
        15.0,
    ),
    "a 503 is congestion like a headerless 429": AimdCase(
        aimd(rate=20.2, level=20.0),
        38,
        20.0,
        congestion(5.0, rate=20.2, status=503),
        18.0,
        20.0,
        1,
        200,
    ),
}


@pytest.mark.parametrize("case", AIMD_CASES.values(), ids=AIMD_CASES.keys())
def test_aimd_decisions(case: AimdCase) -> None:
    strategy = case.start
    saved_rate = strategy.rate
    for i in range(case.successes):  # accepted lately at `per_second`, rate unchanged
        strategy._accepted.append(case.signal.at - (case.successes - i) / case.per_second)
    strategy._fresh = case.successes
    strategy.rate = saved_rate
    strategy.learn(case.signal)
    assert strategy.rate == (None if case.rate is None else pytest.approx(case.rate))
    assert strategy.level == (None if case.level is None else pytest.approx(case.level))
    assert strategy.confirmed == case.confirmed
    assert strategy._hold == case.hold


def test_answers_sent_before_the_last_cut_carry_no_news() -> None:
    strategy = aimd(rate=10.0, level=None)
    strategy._fresh = 1
    strategy.learn(congestion(5.0, rate=10.0))
    strategy.learn(Answer(429, sent_at=4.9, at=5.1, rate=9.0))
    assert strategy.rate == pytest.approx(9.0)


@pytest.mark.parametrize("status", [500, 502, 504])
def test_other_server_errors_are_not_congestion(status: int) -> None:
    strategy = aimd(rate=10.0, level=10.0)
    strategy.learn(Answer(status, sent_at=1.0, at=1.0, rate=10.0))
    assert strategy.rate == 10.0


GROWTH_CASES = {
    "climbing doubles the rate each second (each success when slower)": (
        aimd(rate=0.5, level=None),
        1.0,
    ),
    "climbing at 20/s adds a twentieth of a doubling per success": (
        aimd(rate=20.0, level=None),
        20.0 * 2**0.05,
    ),
    "below the level it wins back a twentieth of the gap": (
        aimd(rate=10.0, level=20.0),
        10.0 + (0.97 * 20.0 - 10.0) * 0.05,
    ),
}


@pytest.mark.parametrize(("strategy", "after"), GROWTH_CASES.values(), ids=GROWTH_CASES.keys())
def test_aimd_growth_per_success(strategy: Aimd, after: float) -> None:
    strategy._climbing = strategy.level is None
    strategy.learn(ok(1.0))
    assert strategy.rate == pytest.approx(after)


def test_a_held_level_is_probed_only_after_the_hold() -> None:
    strategy = aimd(rate=0.97 * 20.0, level=20.0)
    strategy._hold = HOLD_FIRST
    for i in range(HOLD_FIRST):
        strategy.learn(ok(float(i)))
    assert strategy.rate == pytest.approx(0.97 * 20.0)
    strategy.learn(ok(100.0))
    assert strategy.rate is not None and strategy.rate > 0.97 * 20.0


def test_probing_never_grows_the_rate_past_a_finite_bound() -> None:
    strategy = aimd(rate=1e5, level=10.0)
    strategy._probes = 10**9
    for i in range(100):
        strategy.learn(ok(float(i)))
    assert strategy.rate is not None and strategy.rate <= 1e6


def test_a_restored_level_keeps_how_often_it_was_confirmed() -> None:
    strategy = Aimd()
    strategy.restore({"good_rate": 20.0, "confirmed": 3})
    assert strategy.rate == pytest.approx(0.97 * 20.0)
    assert strategy.confirmed == 3 and strategy._hold == HOLD_FIRST * 4**3
    lifted = Aimd()
    lifted.restore({"good_rate": 0.05, "rate": 0.045}, lift=True)
    assert lifted.rate is None and lifted.level == 0.05

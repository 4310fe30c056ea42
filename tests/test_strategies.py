"""Pacing strategies decision by decision: tables of answers and what each should conclude."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from batchmap.strategies import (
    DECREASE,
    LIAR,
    NOTHING,
    PROBE_BUDGET,
    SAFETY,
    START_RATE,
    Advice,
    Aimd,
    Answer,
    FixedWindows,
    probe_cost,
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
        advice=Advice(60.3 + 60, "quota of 60 used up"),  # W may be 60: the longest allowed
    ),
    "fewest-left headers: the first success after a full window opens the next": WindowCase(
        (refused(10.0, 60, 50), ok(40.0, 2, 1), refused(95.5, 60, 5)), 60, low=60
    ),
    "a limit of one whose W is not sure (3 or 4 s): the pool waits the longest out": WindowCase(
        (ok(0.0, 1, 0), refused(0.5, 1, 3), ok(3.5, 1, 0)),
        1,
        low=3,
        high=4,
        advice=Advice(3.5 + 4, "quota of 1 used up"),
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
    shortest = min(learner.windows.values(), key=lambda w: (w.low, w.limit / w.low))
    assert learner.rate == pytest.approx(SAFETY * shortest.limit / shortest.low)


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
    *,
    rate: float | None,
    level: float | None,
    confirmed: int = 0,
    cut_at: float | None = None,
    resumed: float | None = None,
) -> Aimd:
    strategy = Aimd()
    strategy.rate, strategy.level, strategy.confirmed = rate, level, confirmed
    strategy._resumed = resumed
    if cut_at is not None:
        strategy._last_cut = cut_at
    return strategy


def held(pause: float, level: float) -> int:
    """Successes held before a probe: its cost over PROBE_BUDGET."""
    return int(probe_cost(pause, level) / PROBE_BUDGET)


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
    "a level is measured from what was accepted, not what was sent; one cut to 0.7": AimdCase(
        aimd(rate=25.0, level=30.0),
        24,
        15.0,
        congestion(5.0, rate=25.0),
        10.5,
        15.0,
        0,
        held(1, 15),
    ),
    "the same level again confirms it and the hold before a probe doubles": AimdCase(
        aimd(rate=20.2, level=20.0),
        38,
        20.0,
        congestion(5.0, rate=20.2),
        14.0,
        20.0,
        1,
        held(1, 20) * 2,
    ),
    "a cheap 429 (short pause, low rate) is probed for sooner": AimdCase(
        aimd(rate=6.2, level=6.0, confirmed=1),
        11,
        6.0,
        congestion(5.0, rate=6.2, pause=0.05),
        0.7 * 6.2,
        6.2,
        2,
        held(0.05, 6.2) * 4,
    ),
    "refused on the way back up: the level is bisected, not lowered 3% a pause": AimdCase(
        aimd(rate=23.8, level=25.0, resumed=17.5),
        30,
        23.0,
        congestion(5.0, rate=23.8),
        0.7 * (23.8 + 17.5) / 2,
        (23.8 + 17.5) / 2,
        0,
        held(1, (23.8 + 17.5) / 2),
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
        14.0,
        20.0,
        1,
        held(1, 20) * 2,
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
    assert strategy.rate == pytest.approx(DECREASE * 10.0)


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
    strategy._hold = 50
    for i in range(50):
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
    assert strategy.confirmed == 3 and strategy._hold == held(1.0, 20.0) * 2**3
    lifted = Aimd()
    lifted.restore({"good_rate": 0.05, "rate": 0.045}, lift=True)
    assert lifted.rate is None and lifted.level == 0.05


def test_a_probe_costs_at_most_its_budget_whatever_the_pause() -> None:
    """Issue 16: the hold was at least 50 successes whatever a probe cost, so at 20/s with a
    1 s pause the first probe cost 42% of the requests. Now the hold is cost / budget."""
    for pause, level in ((1.0, 20.0), (0.05, 6.0), (30.0, 100.0), (1.0, 0.5)):
        strategy = aimd(rate=1.02 * level, level=level)
        for i in range(40):
            strategy._accepted.append(5.0 - (40 - i) / level)
        strategy._fresh = 40
        strategy._probes = 1  # probing above the level: the last second is saturated
        strategy.learn(congestion(5.0, rate=1.02 * level, pause=pause))
        found = strategy.level
        assert found is not None
        assert probe_cost(pause, found) / max(1, strategy._hold) <= PROBE_BUDGET * 1.01
        assert probe_cost(pause, found) >= 1 + pause * found


def test_a_level_met_while_climbing_is_probed_above_at_once() -> None:
    strategy = aimd(rate=21.0, level=None)
    strategy._climbing = True
    for i in range(20):
        strategy._accepted.append(5.0 - (20 - i) / 20.0)
    strategy._fresh = 20
    strategy.learn(congestion(5.0, rate=21.0))
    assert strategy.level == pytest.approx(20.0) and strategy.rate == pytest.approx(14.0)
    assert strategy._hold == 0


def test_the_first_answer_without_headers_starts_a_climb_not_an_unpaced_burst() -> None:
    strategy = Aimd()
    strategy.learn(ok(0.0))
    assert strategy.rate is not None and strategy.rate <= 2 * START_RATE
    with_headers = Aimd()
    with_headers.learn(ok(0.0, 60, 59))
    assert with_headers.rate is None  # the windows pace a limiter that names its limit


# -- the windows: spend the quota at the short limit's pace, pause at the long one's end ------


def test_the_pace_is_the_shortest_window_s_not_the_long_window_s_average() -> None:
    learner = FixedWindows()
    learner.learn(ok(0.0, 20, 19))
    learner.learn(refused(0.5, 300, 30))  # a long window: 300 per 30 s or more
    assert learner.windows[300].low >= 30
    assert learner.rate == pytest.approx(SAFETY * 20.0)  # not 300/30 = 10/s


WINDOW_PAUSES = {
    "a long window's quota used up, Reset named: pause until that Reset": (
        (ok(0.0, 20, 19), Answer(200, sent_at=9.0, at=9.0, limit=300, remaining=0, reset=21.0)),
        9.0 + 21.0,
    ),
    "the short (pacing) window used up: no pause, the pace keeps it": (
        tuple(ok(0.05 * i, 20, 19 - i) for i in range(20)),
        0.0,
    ),
    "IETF `w` states the window: no 429 needed to learn it": (
        (
            Answer(200, sent_at=0.0, at=0.0, limit=20, remaining=19, window=1.0),
            Answer(200, sent_at=0.1, at=0.1, limit=300, remaining=299, window=30.0),
            Answer(200, sent_at=15.0, at=15.0, limit=300, remaining=0, window=30.0, reset=15.0),
        ),
        30.0,
    ),
}


@pytest.mark.parametrize(("answers", "until"), WINDOW_PAUSES.values(), ids=WINDOW_PAUSES.keys())
def test_window_pauses(answers: tuple[Answer, ...], until: float) -> None:
    learner = FixedWindows()
    advice = NOTHING
    for answer in answers:
        advice = learner.learn(answer)
    assert advice.until == pytest.approx(until)


def test_a_header_that_successes_contradict_is_ignored() -> None:
    """Issue 17, item 6: 10/s allowed, every success says Remaining 0 of 1000."""
    learner = FixedWindows()
    for i in range(LIAR):
        learner.learn(ok(float(i), 1000, 0))
    assert 1000 not in learner.windows and learner.rate is None
    assert learner.learn(ok(10.0, 1000, 0)) == NOTHING


def test_a_true_zero_is_believed_when_our_own_requests_used_the_quota() -> None:
    learner = FixedWindows()
    for i in range(60):
        learner.learn(ok(i * 0.5, 60, 59 - i))
    for window in range(3):  # Laravel shows the minute limit only at its end
        for i in range(60):
            learner.learn(ok(100.0 * (window + 1) + i * 0.5, 2, 1 - i % 2))
        learner.learn(ok(100.0 * (window + 1) + 30, 60, 0))
    assert 60 in learner.windows

"""The shared pacer: pauses, learned limits and AIMD, driven on a fake clock."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from batchmap.pacer import PAUSE_FLOOR, Pacer
from tests.limiters import FakeClock, FixedWindows, LeakyBucket


def simulate(
    pacer: Pacer, clock: FakeClock, server: FixedWindows | LeakyBucket, *, seconds: float
) -> list[tuple[float, int]]:
    """One worker, zero latency: (start time, status) of every request in `seconds`."""
    log: list[tuple[float, int]] = []

    async def loop() -> None:
        end = clock() + seconds
        while clock() < end:
            sent = await pacer.wait_turn()
            status, headers = server.answer(sent)
            clock.now += 0.001  # the answer arrives a millisecond later
            pacer.on_answer(status, headers, sent_at=sent)
            log.append((sent, status))

    asyncio.run(loop())
    return log


def steady(log: list[tuple[float, int]], *, after: float) -> tuple[float, float]:
    """(successes per second, share of 429s) from `after` seconds into the run."""
    start = log[0][0] + after
    tail = [status for sent, status in log if sent >= start]
    span = log[-1][0] - start
    return tail.count(200) / span, tail.count(429) / len(tail)


def make(clock: FakeClock, *, max_rate: float | None = None) -> Pacer:
    return Pacer(max_rate=max_rate, clock=clock, sleep=clock.sleep)


def test_identifai_limits_are_learned_and_then_never_exceeded() -> None:
    clock = FakeClock()
    pacer = make(clock)
    log = simulate(pacer, clock, FixedWindows(((2, 1.0), (60, 60.0))), seconds=900)
    rate, share_429 = steady(log, after=180)
    assert rate >= 0.98 * 1.0  # 60/min is the binding limit: 1 per second
    assert share_429 == 0.0
    assert sum(1 for _, status in log if status == 429) <= 4  # only while learning


def test_scaled_limits_run_near_the_ceiling() -> None:
    clock = FakeClock()
    pacer = make(clock)
    log = simulate(pacer, clock, FixedWindows(((20, 1.0), (300, 30.0))), seconds=300)
    rate, share_429 = steady(log, after=60)
    assert rate >= 0.98 * 10.0
    assert share_429 <= 0.01


def test_unknown_leaky_bucket_is_found_from_429s_alone() -> None:
    clock = FakeClock()
    pacer = make(clock)
    log = simulate(pacer, clock, LeakyBucket(rate=20.0, burst=20), seconds=600)
    rate, share_429 = steady(log, after=60)
    assert rate >= 0.95 * 20.0
    assert share_429 <= 0.01


def test_max_rate_is_a_ceiling() -> None:
    clock = FakeClock()
    pacer = make(clock, max_rate=5.0)
    log = simulate(pacer, clock, FixedWindows(()), seconds=20)
    rate, _ = steady(log, after=1)
    assert rate == pytest.approx(5.0, rel=0.01)


def test_a_429_pauses_for_at_least_retry_after() -> None:
    clock = FakeClock()
    pacer = make(clock)
    pacer.on_answer(429, {"retry-after": "7"}, sent_at=clock())
    started = clock()
    asyncio.run(pacer.wait_turn())
    assert clock() - started >= 7.0
    assert "429" in pacer.view().pause_reason


@pytest.mark.parametrize("headers", [{"retry-after": "0"}, {}])
def test_retry_after_zero_or_absent_still_pauses_briefly(headers: dict[str, str]) -> None:
    clock = FakeClock()
    pacer = make(clock)
    pacer.on_answer(429, headers, sent_at=clock())
    started = clock()
    asyncio.run(pacer.wait_turn())
    assert clock() - started >= PAUSE_FLOOR


def test_one_429_pauses_every_waiting_worker() -> None:
    clock = FakeClock()
    pacer = make(clock, max_rate=10.0)
    starts: list[float] = []

    async def worker() -> None:
        starts.append(await pacer.wait_turn())

    async def scenario() -> None:
        await worker()
        pacer.on_answer(429, {"retry-after": "3"}, sent_at=clock())
        await asyncio.gather(*(worker() for _ in range(4)))

    paused_at = clock()
    asyncio.run(scenario())
    assert all(start >= paused_at + 3.0 for start in starts[1:])
    gaps = [b - a for a, b in itertools.pairwise(starts[1:])]
    assert all(gap >= 0.1 - 1e-9 for gap in gaps)  # and then they go one by one at the rate


def test_saved_state_resumes_paused_and_at_the_learned_rate() -> None:
    clock = FakeClock()
    first = make(clock)
    simulate(first, clock, FixedWindows(((2, 1.0), (60, 60.0))), seconds=200)
    first.on_answer(429, {"retry-after": "40", "x-ratelimit-limit": "60"}, sent_at=clock())
    state = first.state()

    second = make(clock)
    second.restore(state)
    assert second.rate == pytest.approx(first.rate)
    started = clock()
    asyncio.run(second.wait_turn())
    assert clock() - started >= 40.0


def test_user_ceiling_wins_over_a_restored_rate() -> None:
    clock = FakeClock()
    pacer = make(clock, max_rate=0.5)
    pacer.restore({"rate": 5.0, "windows": {}})
    assert pacer.rate == 0.5


def test_the_rate_rises_when_a_window_estimate_tightens() -> None:
    clock = FakeClock()
    pacer = make(clock)
    # The first estimate comes from a 429's whole-second Retry-After: too long.
    pacer.on_answer(200, {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "59"}, sent_at=0.0)
    clock.now = 3.2
    pacer.on_answer(429, {"retry-after": "4", "x-ratelimit-limit": "60"}, sent_at=3.2)
    first = pacer.rate
    assert first is not None and first < 60 / 7.0
    # Two first hits 6.05 s apart prove the window is at most 6.05 s.
    for start in (7.2, 13.25):
        pacer.on_answer(
            200, {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "59"}, sent_at=start
        )
    assert pacer.windows[60] == pytest.approx(6.05)
    assert pacer.rate == pytest.approx(0.995 * 60 / 6.05)


def test_a_restored_aimd_rate_is_probed_gently_not_slow_started() -> None:
    clock = FakeClock()
    pacer = make(clock)
    pacer.restore({"rate": 18.0, "good_rate": 20.0, "windows": {}})
    for _ in range(100):
        pacer.on_answer(200, {}, sent_at=clock())
    assert pacer.rate is not None and pacer.rate < 20.0 * 1.01


def test_a_silent_leaky_bucket_costs_few_429s_while_the_pacer_finds_it() -> None:
    clock = FakeClock()
    pacer = make(clock)
    log = simulate(pacer, clock, LeakyBucket(rate=20.0, burst=5), seconds=60)
    assert sum(1 for _, status in log if status == 429) <= 8


def test_a_429_after_a_quiet_spell_does_not_collapse_the_rate() -> None:
    clock = FakeClock()
    pacer = make(clock)
    pacer.restore({"rate": 10.0, "good_rate": 10.0, "windows": {}})
    clock.now += 3600  # nothing accepted lately: no evidence of a lower limit
    pacer.on_answer(429, {}, sent_at=clock())
    assert pacer.rate == pytest.approx(9.0)

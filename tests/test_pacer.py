"""The shared pacer: pauses, learned limits and AIMD, driven on a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from batchmap.pacer import MAX_PAUSE, PAUSE_FLOOR, Pacer, _rate_headers
from batchmap.strategies import DECREASE
from tests.limiters import (
    FakeClock,
    FixedWindows,
    Laravel,
    LeakyBucket,
    Limiter,
    NginxLimitReq,
    Storm,
    VirtualClock,
    figures,
    simulate,
    simulate_pool,
)


def steady(log: list[tuple[float, int]], *, after: float) -> tuple[float, float]:
    """(successes per second, share of 429s) from `after` seconds into the run."""
    start = log[0][0] + after
    tail = [status for sent, status in log if sent >= start]
    span = log[-1][0] - start
    return tail.count(200) / span, tail.count(429) / len(tail)


def make(clock: FakeClock, *, max_rate: float | None = None) -> Pacer:
    return Pacer(max_rate=max_rate, clock=clock, sleep=clock.sleep, wall=clock)


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
    assert pacer.rate is not None and pacer.rate >= 0.85 * 10.0
    assert pacer.aimd.level == 10.0


# -- whole-second Laravel windows (issue 9, finding 10) -------------------------------------

LARAVEL_CASES = [
    pytest.param(((2, 1), (60, 60)), 1.0, "last", id="identifai-2/s+60/min"),
    pytest.param(((2, 1), (60, 60)), 1.0, "min", id="identifai-fewest-left-headers"),
    pytest.param(((20, 1), (300, 30)), 10.0, "last", id="20/s+300/30s"),
    pytest.param(((20, 1), (300, 30)), 10.0, "min", id="20/s+300/30s-fewest-left-headers"),
]


@pytest.mark.parametrize(("limits", "allowed", "headers"), LARAVEL_CASES)
@pytest.mark.parametrize("offset", [0.02, 0.37, 0.98])
def test_whole_second_laravel_windows_run_at_the_slow_limit_with_few_429s(
    limits: tuple[tuple[int, int], ...], allowed: float, headers: str, offset: float
) -> None:
    clock = FakeClock()
    pacer = make(clock)
    server = Laravel(limits, headers=headers, offset=offset)
    log = simulate(pacer, clock, server, seconds=600)
    result = figures(log, allowed=allowed, steady_after=120)
    assert result.steady >= 0.98
    assert result.whole >= 0.95
    assert result.refused <= 0.01


@pytest.mark.parametrize(
    ("server", "allowed", "most_refused", "jitter"),
    [
        pytest.param(Laravel(((2, 1), (60, 60))), 1.0, 0.01, 0.02, id="identifai"),
        pytest.param(
            Laravel(((20, 1), (300, 30)), headers="min"), 10.0, 0.01, 0.02, id="20/s+300/30s"
        ),
        pytest.param(Laravel(((20, 1), (300, 30))), 10.0, 0.02, 0.1, id="20/s+300/30s-overtaking"),
        pytest.param(NginxLimitReq(rate=20.0), 20.0, 0.02, 0.0, id="nginx"),
    ],
)
def test_four_workers_with_latency_keep_the_figures(
    server: Limiter, allowed: float, most_refused: float, jitter: float
) -> None:
    """Answers arrive 50 ms (up to 90 or 250 ms) after their request, out of order across four
    workers. (nginx without burst refuses any arrivals closer than 1/rate, so there jitter
    itself caps the rate anyone can reach: it runs without.) Against fixed windows the pacer
    spends each window's quota at the short limit's pace and then pauses, so a half run by
    time cuts windows anywhere: the whole run is the figure there."""
    clock = VirtualClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep, wall=clock)
    log = simulate_pool(pacer, clock, server, seconds=600, workers=4, latency=0.05, jitter=jitter)
    result = figures(log, allowed=allowed, steady_after=300)
    if allowed < 20:
        assert result.whole >= 0.98
    else:
        assert result.steady >= 0.95
    assert result.refused <= most_refused


def test_the_laravel_simulator_counts_a_refusal_on_the_limits_before_the_one_that_tripped() -> None:
    server = Laravel(((5, 1), (2, 60)), offset=0.0)
    statuses = [server.answer(1000.1 + i * 0.01)[0] for i in range(4)]
    assert statuses == [200, 200, 429, 429]
    assert server.counts == {0: 4, 1: 2}  # ThrottleRequests hits limit 1 before asking limit 2
    assert server.answer(1000.2)[0] == 429  # the 5/s window is used up by the refusals too
    status, headers = server.answer(1001.0)
    assert status == 429 and headers["retry-after"] == "59" and headers["x-ratelimit-limit"] == "2"


# -- limiters without rate headers ------------------------------------------------------------


def test_nginx_limit_req_with_whole_second_retry_after_runs_near_its_limit() -> None:
    """Finding 9: a probe's 429 pauses the pool a whole second, so probes must be rare."""
    clock = FakeClock()
    pacer = make(clock)
    log = simulate(pacer, clock, NginxLimitReq(rate=20.0, retry_after="1"), seconds=600)
    result = figures(log, allowed=20.0, steady_after=300)
    assert result.steady >= 0.95
    assert result.per_id <= 1.02


def test_nginx_default_503_is_paced_like_a_headerless_429() -> None:
    clock = FakeClock()
    pacer = make(clock)
    server = NginxLimitReq(rate=20.0, status=503, retry_after=None)
    log = simulate(pacer, clock, server, seconds=600)
    result = figures(log, allowed=20.0, steady_after=300)
    assert result.steady >= 0.95
    assert result.per_id <= 1.02


def test_a_429_storm_without_rate_headers_neither_collapses_the_pace_nor_saves_it_slow() -> None:
    """Finding 1: 10 s of 429s (Retry-After 3, no rate headers) from ~15/s."""
    clock = FakeClock()
    pacer = make(clock)
    limiter = NginxLimitReq(rate=15.0, burst=5)
    simulate(pacer, clock, limiter, seconds=120)
    storm = Storm(limiter, start=clock(), seconds=10.0, retry_after="3")
    simulate(pacer, clock, storm, seconds=10)
    assert pacer.rate is not None and pacer.rate >= 0.5 * 15.0
    saved = pacer.state()
    after = simulate(pacer, clock, limiter, seconds=30)
    assert figures(after, allowed=15.0, steady_after=5).steady >= 0.9

    resumed = make(clock)
    resumed.restore(saved)
    again = simulate(resumed, clock, limiter, seconds=30)
    assert figures(again, allowed=15.0, steady_after=5).steady >= 0.9


def test_max_rate_lifts_a_restored_rate_that_an_old_version_collapsed() -> None:
    clock = FakeClock()
    pacer = make(clock, max_rate=2.0)
    pacer.restore({"rate": 0.045, "good_rate": 0.05, "windows": {}})
    log = simulate(pacer, clock, FixedWindows(()), seconds=60)
    late = [sent for sent, _ in log if sent >= log[0][0] + 30]
    assert len(late) >= 0.95 * 2.0 * 30


def test_a_429_on_the_very_first_request_recovers_to_the_limit_within_seconds() -> None:
    """Finding 11: no crawl back from 0.05/s at 2% per success."""
    clock = FakeClock()
    pacer = make(clock)
    server = Storm(NginxLimitReq(rate=20.0, retry_after="1"), start=clock(), seconds=0.001)
    log = simulate(pacer, clock, server, seconds=30)
    assert log[0][1] == 429
    window = [status for sent, status in log if 10.0 <= sent - log[0][0] < 30.0]
    assert window.count(200) >= 0.7 * 20.0 * 20  # climbing, then probing above a guessed level


@pytest.mark.parametrize(("status", "retry_after", "least"), [(503, "5", 5.0), (503, None, 0.05)])
def test_a_503_pauses_the_pool_and_cuts_the_rate_once(
    status: int, retry_after: str | None, least: float
) -> None:
    clock = FakeClock()
    pacer = make(clock, max_rate=10.0)
    headers = {} if retry_after is None else {"retry-after": retry_after}
    sent = clock()
    pacer.on_answer(status, headers, sent_at=sent)
    pacer.on_answer(status, headers, sent_at=sent)  # same round: no second cut
    assert pacer.rate == pytest.approx(DECREASE * 10.0)  # one cut, in one step
    started = clock()
    asyncio.run(pacer.wait_turn())
    assert clock() - started >= least


@pytest.mark.parametrize("status", [500, 502, 504])
def test_other_5xx_teach_the_pacer_nothing(status: int) -> None:
    clock = FakeClock()
    pacer = make(clock, max_rate=10.0)
    pacer.on_answer(status, {"retry-after": "30"}, sent_at=clock())
    assert pacer.rate == 10.0 and pacer.paused_until == 0.0


# -- untrusted headers and saved state (findings 5 and 6) ------------------------------------


class Refuses:
    """Every other request: 429 carrying a rate header a server should never send."""

    def __init__(self, limit: str) -> None:
        self.limit, self.count = limit, 0

    def answer(self, now: float) -> tuple[int, dict[str, str]]:
        self.count += 1
        if self.count % 2:
            return 200, {"x-ratelimit-limit": self.limit, "x-ratelimit-remaining": self.limit}
        return 429, {"retry-after": "0", "x-ratelimit-limit": self.limit}


@pytest.mark.parametrize("limit", ["0", "-5", "1.5", "abc", "", "10000001", "1_000"])
def test_absurd_rate_headers_are_ignored_and_max_rate_stays_a_ceiling(limit: str) -> None:
    clock = FakeClock()
    pacer = make(clock, max_rate=2.0)
    server: Limiter = Refuses(limit)
    log = simulate(pacer, clock, server, seconds=30)
    starts = [sent for sent, _ in log]
    assert all(b - a >= 0.5 - 1e-9 for a, b in itertools.pairwise(starts))
    assert not pacer.windows.windows


def test_the_default_clock_is_monotonic() -> None:
    assert Pacer().clock is time.monotonic


def test_a_saved_pause_is_wall_clock_time_and_comes_back_on_another_monotonic_clock() -> None:
    clock = FakeClock(start=500.0)
    pacer = Pacer(clock=clock, sleep=clock.sleep, wall=lambda: 1_700_000_000.0)
    pacer.on_answer(429, {"retry-after": "40"}, sent_at=clock())
    state = pacer.state()
    assert state["paused_until"] == pytest.approx(1_700_000_040.0)

    later = FakeClock(start=7.0)  # a new process: another monotonic origin, 10 s later
    resumed = Pacer(clock=later, sleep=later.sleep, wall=lambda: 1_700_000_010.0)
    resumed.restore(state)
    assert resumed.paused_until == pytest.approx(7.0 + 30.0)


@pytest.mark.parametrize("until", [math.inf, math.nan, "soon", None, -1.0, [1]])
def test_a_restored_pause_that_is_not_a_finite_time_is_ignored(until: object) -> None:
    clock = FakeClock()
    pacer = make(clock)
    pacer.restore({"paused_until": until, "rate": math.nan, "windows": {"60": math.inf}})
    assert pacer.paused_until == 0.0
    assert pacer.rate is None and not pacer.windows.windows


@pytest.mark.parametrize("retry_after", ["inf", "1e400", "99999999", "nan", "-3"])
def test_no_single_signal_pauses_longer_than_an_hour(retry_after: str) -> None:
    clock = FakeClock()
    pacer = make(clock)
    pacer.on_answer(429, {"retry-after": retry_after}, sent_at=clock())
    pacer.restore({"paused_until": clock() + 10 * 3600.0})
    assert 0.0 < pacer.paused_until - clock() <= MAX_PAUSE
    json.dumps(pacer.state(), allow_nan=False)


def test_every_number_saved_is_finite() -> None:
    clock = FakeClock()
    pacer = make(clock)
    simulate(pacer, clock, Laravel(((2, 1), (60, 60))), seconds=120)
    pacer.on_answer(429, {"retry-after": "inf"}, sent_at=clock())
    json.dumps(pacer.state(), allow_nan=False)


# -- the gate: probes after an outage pause (for the runner) ---------------------------------


def test_a_probe_pause_lets_exactly_one_request_go_until_it_is_answered() -> None:
    clock = FakeClock()
    pacer = make(clock, max_rate=100.0)
    starts: list[float] = []

    async def worker() -> None:
        starts.append(await pacer.wait_turn())

    async def scenario() -> None:
        pacer.pause(clock() + 30.0, "API unreachable", probe=True)
        workers = [asyncio.create_task(worker()) for _ in range(4)]
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(starts) == 1 and starts[0] >= paused_at + 30.0
        clock.now += 5.0  # the probe takes its time to answer
        pacer.on_answer(200, {}, sent_at=starts[0])
        await asyncio.gather(*workers)

    paused_at = clock()
    asyncio.run(scenario())
    assert len(starts) == 4 and all(start >= paused_at + 35.0 for start in starts[1:])


def test_a_probe_that_gets_no_answer_still_releases_the_others() -> None:
    clock = FakeClock()
    pacer = make(clock, max_rate=100.0)

    async def scenario() -> int:
        pacer.pause(clock() + 1.0, "API unreachable", probe=True)
        await pacer.wait_turn()
        others = asyncio.create_task(pacer.wait_turn())
        for _ in range(20):
            await asyncio.sleep(0)
        waiting = not others.done()
        pacer.on_no_answer()
        await others
        return int(waiting)

    assert asyncio.run(scenario()) == 1


LARAVEL_THROTTLE = r"""<?php
require '/usr/share/php/Illuminate/autoload.php';
use Illuminate\Cache\{FileStore, RateLimiter, Repository};
use Illuminate\Filesystem\Filesystem;
use Illuminate\Http\Exceptions\ThrottleRequestsException;
use Illuminate\Routing\Middleware\ThrottleRequests;
use Illuminate\Support\Carbon;
use Symfony\Component\HttpFoundation\Response;

class Throttle extends ThrottleRequests {
    public function answer($limits) {
        return $this->handleRequest(null, fn ($r) => new Response('ok'), $limits);
    }
}
$throttle = new Throttle(new RateLimiter(new Repository(new FileStore(new Filesystem, $argv[1]))));
$limits = [];
foreach (array_slice($argv, 2) as $i => $spec) {
    [$max, $seconds] = explode('/', $spec);
    $limits[] = (object) ['key' => "k$i", 'maxAttempts' => (int) $max,
        'decayMinutes' => ((int) $seconds) / 60, 'responseCallback' => null];
}
while (($line = fgets(STDIN)) !== false) {
    Carbon::setTestNow(Carbon::createFromTimestamp((float) trim($line)));
    try {
        $h = $throttle->answer($limits)->headers;
        echo "200 {$h->get('X-RateLimit-Limit')} {$h->get('X-RateLimit-Remaining')}\n";
    } catch (ThrottleRequestsException $e) {
        $h = $e->getHeaders();
        echo "429 {$h['X-RateLimit-Limit']} 0 {$h['Retry-After']} {$h['X-RateLimit-Reset']}\n";
    }
}
"""


@pytest.mark.skipif(
    shutil.which("php") is None or not Path("/usr/share/php/Illuminate").is_dir(),
    reason="needs php and Debian's php-laravel-framework",
)
@pytest.mark.parametrize("limits", [((2, 1), (7, 10))])
def test_the_laravel_simulator_answers_as_laravels_own_throttle_middleware(
    limits: tuple[tuple[int, int], ...], tmp_path: Path
) -> None:
    """Laravel 8's ThrottleRequests and RateLimiter on a file cache, on Carbon's test clock."""
    rng = random.Random(7)
    moment, times = 1_700_000_000.0, []
    for _ in range(400):
        moment += rng.choice([0.0, 0.01, 0.05, 0.3, 0.5, 0.9, 1.0, 2.5, rng.random() * 3])
        times.append(round(moment, 3))
    script = tmp_path / "throttle.php"
    script.write_text(LARAVEL_THROTTLE)
    (tmp_path / "cache").mkdir()
    specs = [f"{most}/{seconds}" for most, seconds in limits]
    laravel = subprocess.run(
        ["php", str(script), str(tmp_path / "cache"), *specs],
        input="".join(f"{t:.3f}\n" for t in times),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    simulator = Laravel(limits, headers="min", offset=0.0)
    for t, expected in zip(times, laravel, strict=True):
        status, headers = simulator.answer(t)
        fields = [status, headers["x-ratelimit-limit"], headers["x-ratelimit-remaining"]]
        if status == 429:
            fields += [headers["retry-after"], headers["x-ratelimit-reset"]]
        assert " ".join(map(str, fields)) == expected, f"at {t}"


def test_an_answer_to_a_request_sent_before_the_probe_does_not_release_the_others() -> None:
    clock = FakeClock()
    pacer = make(clock, max_rate=100.0)
    old_request = clock()

    async def scenario() -> tuple[bool, bool]:
        clock.now += 1.0
        pacer.pause(clock() + 30.0, "API unreachable", probe=True)
        probe = await pacer.wait_turn()
        others = asyncio.create_task(pacer.wait_turn())
        pacer.on_no_answer(sent_at=old_request)  # in flight since before the outage
        pacer.on_answer(503, {}, sent_at=old_request)
        for _ in range(20):
            await asyncio.sleep(0)
        held = not others.done()
        pacer.on_answer(200, {}, sent_at=probe)
        await others
        return held, others.done()

    assert asyncio.run(scenario()) == (True, True)


def test_a_later_shorter_pause_never_shortens_the_one_in_force() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    pacer.pause(clock() + 30, "rate limited (429, Retry-After 30s)")
    pacer.pause(clock() + 2, "rate limited (429)")  # a later, shorter signal
    assert pacer.paused_until == clock() + 30
    assert pacer.pause_reason == "rate limited (429, Retry-After 30s)"

    async def start() -> float:
        return await pacer.wait_turn()

    assert asyncio.run(start()) >= clock.now and clock.now >= 1_000_030


# -- 429s that name no wait; the rate headers read (issue 16) --------------------------------


def test_429s_that_name_no_wait_double_the_pause_until_one_succeeds() -> None:
    """A limiter that counts refusals needs silence: each refusal in a row doubles the pause
    (a sliding minute took 1.23 requests per id at a fixed half second)."""
    clock = FakeClock()
    pacer = make(clock, max_rate=10.0)
    pauses = []
    for headers in ({}, {"retry-after": "0"}, {}, {}):
        sent = clock()
        pacer.on_answer(429, headers, sent_at=sent)
        pauses.append(pacer.paused_until - clock())
        clock.now = pacer.paused_until
    assert pauses == pytest.approx([PAUSE_FLOOR * 2**i for i in range(4)])
    pacer.on_answer(200, {}, sent_at=clock())
    pacer.on_answer(429, {}, sent_at=clock())
    assert pacer.paused_until - clock() == pytest.approx(PAUSE_FLOOR)


def test_answers_to_requests_sent_before_a_no_wait_pause_do_not_double_it() -> None:
    clock = FakeClock()
    pacer = make(clock, max_rate=10.0)
    sent = clock()
    for _ in range(4):  # the pool's other requests, in flight when the first 429 came
        pacer.on_answer(429, {}, sent_at=sent)
    assert pacer.paused_until - clock() == pytest.approx(PAUSE_FLOOR)


HEADERS = {
    "X-RateLimit-* with an epoch Reset": (
        {"x-ratelimit-limit": "300", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1000020"},
        (300, 0, 20.0, None),
    ),
    "X-RateLimit-Reset as seconds from now": (
        {"x-ratelimit-limit": "300", "x-ratelimit-remaining": "5", "x-ratelimit-reset": "20"},
        (300, 5, 20.0, None),
    ),
    "IETF draft 7": (
        {"ratelimit-limit": "100, 100;w=60", "ratelimit-remaining": "50", "ratelimit-reset": "30"},
        (100, 50, 30.0, 60.0),
    ),
    "IETF structured RateLimit-Policy and RateLimit": (
        {
            "ratelimit-policy": '"burst";q=20;w=1, "window";q=300;w=30',
            "ratelimit": '"window";r=12;t=9',
        },
        (300, 12, 9.0, 30.0),
    ),
    "insane values are no evidence": (
        {"x-ratelimit-limit": "0", "x-ratelimit-remaining": "-1", "x-ratelimit-reset": "x"},
        (None, None, None, None),
    ),
    "remaining above the limit, a reset a year away: ignored": (
        {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "11", "x-ratelimit-reset": "31536000"},
        (10, None, None, None),
    ),
}


@pytest.mark.parametrize(("headers", "said"), HEADERS.values(), ids=HEADERS.keys())
def test_rate_headers_are_read_as_evidence(
    headers: dict[str, str], said: tuple[object, ...]
) -> None:
    found = _rate_headers(headers, 1_000_000.0)
    assert (found.limit, found.remaining, found.reset, found.window) == said


def test_a_429_without_retry_after_waits_for_the_reset_the_headers_name() -> None:
    clock = FakeClock()
    pacer = make(clock)
    headers = {"ratelimit-policy": '"w";q=300;w=30', "ratelimit": '"w";r=0;t=12'}
    pacer.on_answer(429, headers, sent_at=clock())
    assert pacer.paused_until - clock() == pytest.approx(12.0)


def test_the_first_request_goes_alone_and_its_headers_set_the_pace() -> None:
    """Issue 16: five requests left at once before any answer, three were 429s."""
    clock = VirtualClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep, wall=clock)
    log = simulate_pool(
        pacer, clock, Laravel(((2, 1), (60, 60)), headers="min"), seconds=60, workers=4
    )
    assert log[1][0] - log[0][0] >= 0.05  # the second waited for the first's answer
    assert sum(1 for _, status in log if status == 429) <= 1  # at most one in the first minute

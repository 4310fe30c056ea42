"""What the user watches: plain progress lines, pauses, ETA."""

from __future__ import annotations

from pathlib import Path

import httpx

from batchmap.context import RunContext, RunSettings
from batchmap.files import Layout
from batchmap.models import JobState
from batchmap.pacer import Pacer
from batchmap.progress import plain_line
from batchmap.runner import Runner
from batchmap.session import Watch
from batchmap.store import Store
from batchmap.timeline import human_seconds
from tests.limiters import FakeClock


def test_durations_read_like_a_person_writes_them() -> None:
    assert [human_seconds(s) for s in (None, 12, 245, 12_000, 1_000_000)] == [
        "?", "12s", "4m05s", "3h20m", "11d13h",
    ]  # fmt: skip


def test_a_plain_line_says_counts_rate_eta_and_why_the_pool_waits(tmp_path: Path) -> None:
    clock = FakeClock()
    pacer = Pacer(max_rate=2.0, clock=clock, sleep=clock.sleep)
    client = httpx.AsyncClient()
    runner = Runner(RunContext.make(
        Store(tmp_path / "jobs.db"), client, pacer,
        RunSettings(out=tmp_path, prefilter=False, layout=Layout.FLAT), clock=clock,
    ))  # fmt: skip
    base = {state: 0 for state in JobState}
    base[JobState.PENDING] = 100
    watch = Watch(runner, base)
    watch.progress()
    runner.ctx.tally.finished[JobState.DONE] = 20
    clock.now += 10
    pacer.on_answer(429, {"retry-after": "30"}, sent_at=clock())
    line = plain_line(watch.progress())
    assert "progress 20/100" in line and "done 20" in line and "pending 80" in line
    assert "rate 2.00/s" in line  # 20 rows in 10 s
    assert "paused 30s: rate limited" in line


def test_the_eta_holds_steady_through_a_minute_window_pause(tmp_path: Path) -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    runner = Runner(RunContext.make(
        Store(tmp_path / "jobs.db"), httpx.AsyncClient(), pacer,
        RunSettings(out=tmp_path, prefilter=False, layout=Layout.FLAT), clock=clock,
    ))  # fmt: skip
    base = {state: 0 for state in JobState}
    base[JobState.PENDING] = 200
    watch = Watch(runner, base)
    etas = []
    # 2 per second for 30 s, then a 30 s pause (60 per minute), three times over.
    for second in range(180):
        if second % 60 < 30:
            runner.ctx.tally.finished[JobState.DONE] += 2
        clock.now += 1
        eta = watch.progress().eta
        if second >= 60 and eta is not None:
            etas.append(clock.now + eta)  # the predicted finish
    # Steady within a fraction of a window: it once swung 1m12s -> 13m18s -> 1m47s in one run.
    assert max(etas) - min(etas) < 60

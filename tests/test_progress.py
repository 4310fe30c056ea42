"""What the user watches: plain progress lines, pauses, ETA."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import httpx

from batchmap.files import Layout
from batchmap.models import JobState
from batchmap.pacer import Pacer
from batchmap.progress import duration, plain_line, snapshot
from batchmap.runner import Runner, RunSettings
from batchmap.store import Store
from tests.limiters import FakeClock


def test_durations_read_like_a_person_writes_them() -> None:
    assert [duration(s) for s in (None, 12, 245, 12_000, 1_000_000)] == [
        "?", "12s", "4m05s", "3h20m", "11d13h",
    ]  # fmt: skip


def test_a_plain_line_says_counts_rate_eta_and_why_the_pool_waits(tmp_path: Path) -> None:
    clock = FakeClock()
    pacer = Pacer(max_rate=2.0, clock=clock, sleep=clock.sleep)
    client = httpx.AsyncClient()
    runner = Runner(
        Store(tmp_path / "jobs.db"), client, pacer, RunSettings(out=tmp_path, layout=Layout.FLAT),
        clock=clock,
    )  # fmt: skip
    base = {state: 0 for state in JobState}
    base[JobState.PENDING] = 100
    history: deque[tuple[float, int]] = deque()
    snapshot(runner, base, history)
    runner.tally.finished[JobState.DONE] = 20
    clock.now += 10
    pacer.on_answer(429, {"retry-after": "30"}, sent_at=clock())
    snap = snapshot(runner, base, history)
    line = plain_line(snap)
    assert "progress 20/100" in line and "done 20" in line and "pending 80" in line
    assert "rate 2.00/s" in line  # 20 rows in 10 s
    assert "pacer 1.80/s" in line  # the 429 cut the pace
    assert "ETA 44s" in line  # 80 left at the slower of the two
    assert "paused 30s: rate limited (429, Retry-After 30s)" in line

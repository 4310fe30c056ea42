"""The report's charts for any job, 30 seconds to two weeks: axis, totals, screenshots."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from batchmap import report_charts
from batchmap.report_charts import bar_step, progress_points, step_words, time_axis
from batchmap.report_html import write_html
from batchmap.timeline import History, iso, parse_time, run_summaries

START = parse_time("2026-12-04T12:30:40Z") or 0.0
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def minute_row(run_id: int, at: float, **fields: Any) -> dict[str, Any]:
    whole = at - at % 60
    return {"run_id": run_id, "minute": iso(whole), "limits": [[2, 1.0], [60, 60.0]], **fields}


def demo_30s() -> tuple[History, dict[str, Any]]:
    """`make demo`: 50 rows in 30 s at identifAI's limits, 2 decided by the prefilter, 3
    unknown; then `verify --repair` refetched 3 and a resume found nothing to do."""
    runs = [
        {"run_id": 1, "started_at": iso(START), "ended_at": iso(START + 30), "exit_code": 1},
        {"run_id": 2, "started_at": iso(START + 40), "ended_at": iso(START + 43),
         "exit_code": 0},
        {"run_id": 3, "started_at": iso(START + 50), "ended_at": iso(START + 50),
         "exit_code": 0},
    ]  # fmt: skip
    minutes = [
        minute_row(1, START, requests=22, classification_requests=1, ok=18, no_heatmap=2,
                   not_found=1, finished=21),
        minute_row(1, START + 30, requests=30, ok=27, not_found=2, finished=29),
        minute_row(2, START + 40, requests=3, ok=3, finished=3),
        minute_row(3, START + 50),
    ]  # fmt: skip
    facts = {
        "counts": {"pending": 0, "running": 0, "done": 45, "no_heatmap": 2, "failed": 3},
        "http_status": {"200": 45, "404": 3, "none": 2},
        "total": 50,
        "learned_limits": [],
    }
    return History(runs, minutes, {}), facts


def job_2h() -> tuple[History, dict[str, Any]]:
    """7,000 rows at identifAI's ceiling (60/min) for two hours, with a 10-minute pause."""
    runs = [{"run_id": 1, "started_at": iso(START), "ended_at": iso(START + 7200),
             "exit_code": 0}]  # fmt: skip
    minutes = []
    for m in range(120):
        paused = 50 <= m < 60
        minutes.append(
            minute_row(1, START + 60 * m, requests=0 if paused else 60, ok=0 if paused else 58,
                       no_heatmap=0 if paused else 2, finished=0 if paused else 60,
                       paused_seconds=60.0 if paused else 0.0,
                       pause_reasons={"server asked to wait": 60.0} if paused else {})
        )  # fmt: skip
    facts = {
        "counts": {"pending": 400, "running": 0, "done": 6380, "no_heatmap": 220, "failed": 0},
        "http_status": {"200": 6380, "204": 220, "none": 400},
        "total": 7000,
    }
    return History(runs, minutes, {}), facts


def job_10_days() -> tuple[History, dict[str, Any]]:
    """A million-row job's first 10 days: a run a day of 20 hours, an outage on day 4."""
    runs, minutes = [], []
    for day in range(10):
        begin = START + day * 86400
        end = begin + 20 * 3600
        runs.append({"run_id": day + 1, "started_at": iso(begin), "ended_at": iso(end),
                     "exit_code": 130})  # fmt: skip
        for m in range(0, 20 * 60, 1):
            outage = day == 4 and 300 <= m < 420
            minutes.append(
                minute_row(day + 1, begin + 60 * m, requests=0 if outage else 60,
                           ok=0 if outage else 50, no_heatmap=0 if outage else 10,
                           finished=0 if outage else 60, outage_seconds=60.0 if outage else 0.0,
                           pause_reasons={"API unreachable": 60.0} if outage else {})
            )  # fmt: skip
    # Then a resume that found nothing to do: no minute did any work.
    last = START + 9 * 86400 + 20 * 3600 + 300
    runs.append({"run_id": 11, "started_at": iso(last), "ended_at": iso(last), "exit_code": 0})
    minutes.append(minute_row(11, last))
    done = sum(m.get("finished", 0) for m in minutes)
    facts = {
        "counts": {"pending": 1_000_000 - done, "running": 0, "done": done, "no_heatmap": 0,
                   "failed": 0},
        "http_status": {"200": done, "none": 1_000_000 - done},
        "total": 1_000_000,
    }  # fmt: skip
    return History(runs, minutes, {}), facts


JOBS = {"demo-30s": demo_30s, "job-2h": job_2h, "job-10-days": job_10_days}


def page(history: History, facts: dict[str, Any], tmp_path: Path) -> str:
    full = {"database": "/data/jobs.db", "out": str(tmp_path), "top_errors": [], "pause": None,
            "learned_limits": [], **facts}  # fmt: skip
    handle = io.StringIO()
    now = max(parse_time(r["ended_at"]) or 0.0 for r in history.runs) + 60
    write_html(iter([]), handle, facts=full, history=history, report_dir=tmp_path, now=now)
    return handle.getvalue()


# -- the axis ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "unit", "first_labels"),
    [
        (30, "s", ["0 s", "5 s", "10 s"]),
        (7200, "min", ["0 min", "15 min", "30 min"]),
        (40 * 3600, "h", ["0 h", "6 h", "12 h"]),
        (10 * 86400, "days", ["day 0", "day 2", "day 4"]),
        (14 * 86400, "days", ["day 0", "day 2", "day 4"]),
    ],
)
def test_the_time_unit_follows_the_span_and_ticks_are_distinct(
    span: float, unit: str, first_labels: list[str]
) -> None:
    axis = time_axis(START, START + span)
    labels = [label for _, label in axis.ticks]
    assert axis.unit == unit and labels[:3] == first_labels
    assert len(set(labels)) == len(labels) and 3 <= len(labels) <= report_charts.MAX_TICKS + 1


@pytest.mark.parametrize(
    ("span", "words"),
    [(30, "minute"), (7200, "minute"), (86400, "15 minutes"), (10 * 86400, "2 hours")],
)
def test_bars_are_as_narrow_as_the_span_allows(span: float, words: str) -> None:
    assert step_words(bar_step(span)) == words


def test_progress_counts_each_row_once_and_stays_flat_between_runs() -> None:
    history, facts = demo_30s()
    points = progress_points(
        run_summaries(history.runs, history.minutes), history.minutes, total=facts["total"]
    )
    values = [v for _, v in points]
    assert values == sorted(values) and max(values) == 50  # 53 finishes, 50 rows
    assert points[0] == (START, 0) and points[1] == (START + 20, 21)  # 12:31:00, in the run


# -- the page ---------------------------------------------------------------------------------


def svgs(html: str) -> dict[str, str]:
    return dict(re.findall(r'<svg class="chart"[^>]*aria-label="([^"]+)">(.*?)</svg>', html))


def test_a_30_second_demo_reads_in_seconds_and_counts_each_row_once(tmp_path: Path) -> None:
    history, facts = demo_30s()
    html = page(history, facts, tmp_path)
    charts = svgs(html)
    progress = charts["rows finished so far over the whole job"]
    assert ">0 s<" in progress and ">50 s<" in progress
    assert "53" not in html.split('id="story"')[1].split("</section>")[0]
    assert "50 rows resolved" in html  # the table's rows, not the timeline's 53 finishes
    assert "decided by the classifications prefilter: 2 rows without a heatmap" in html
    assert "204 no heatmap" not in html  # the fake answered no 204: the prefilter decided
    assert "in run " not in html  # one minute-by-minute chart is enough for a short job


def test_a_2_hour_job_is_drawn_per_minute_against_its_ceiling(tmp_path: Path) -> None:
    history, facts = job_2h()
    charts = svgs(page(history, facts, tmp_path))
    rate = charts["rows finished per minute over the whole job"]
    assert rate.count('class="fin"') == 110 and 'class="ceil"' in rate
    ticks = re.findall(r'text-anchor="(?:start|middle|end)">([^<]+)</text>', rate)
    assert "0 min" in ticks and "120 min" in ticks
    assert ">80<" in rate and "5,000" not in rate  # just above the ceiling, not 5,000


def test_a_10_day_job_is_drawn_in_days(tmp_path: Path) -> None:
    history, facts = job_10_days()
    html = page(history, facts, tmp_path)
    charts = svgs(html)
    assert "rows finished per 2 hours over the whole job" in charts
    assert ">day 8<" in charts["rows finished so far over the whole job"]
    assert 'class="idle"' in charts["rows finished per 2 hours over the whole job"]
    # The last run that did work is run 10, not run 11 (a resume with nothing to do).
    assert "rows finished per 5 minutes in run 10" in charts and "in run 11" not in html


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
@pytest.mark.parametrize("name", sorted(JOBS))
@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_screenshots_of_every_span_in_both_schemes(tmp_path: Path, name: str, dark: bool) -> None:
    from tools.screenshot_report import screenshot

    assert CHROMIUM is not None
    history, facts = JOBS[name]()
    report = tmp_path / f"{name}.html"
    report.write_text(page(history, facts, tmp_path), encoding="utf-8")
    shot = tmp_path / f"{name}-{'dark' if dark else 'light'}.png"
    try:
        screenshot(report, shot, chromium=CHROMIUM, window="1200,1400", dark=dark)
    except subprocess.CalledProcessError as error:  # pragma: no cover - a broken browser
        pytest.skip(f"chromium failed: {error.stderr!r}")
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000

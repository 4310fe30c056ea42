"""The run's story from timeline and run rows: tables of inputs and the buckets/spans they make."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchmap import timeline
from batchmap.models import TIMELINE_COLUMNS
from batchmap.store import Store
from batchmap.timeline import Bucket, Span, parse_time

T0 = "2026-11-27T10:00:00Z"


def at(text: str) -> float:
    moment = parse_time(text)
    assert moment is not None
    return moment


def minute(hhmm: str, *, day: str = "2026-11-27", run_id: int = 1, **fields: Any) -> dict[str, Any]:
    """A timeline row (DESIGN.md's columns) at `day`T`hhmm`."""
    row: dict[str, Any] = {"run_id": run_id, "minute": f"{day}T{hhmm}:00Z"}
    row.update(fields)
    return row


def run(run_id: int, started: str, ended: str | None, code: int | None = None) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "started_at": started,
        "ended_at": ended,
        "exit_code": code,
        "version": "0.2.0",
        "pid": 1,
        "options": {},
    }


# -- buckets ---------------------------------------------------------------------------------


def test_finishes_per_hour_are_summed_and_zero_filled() -> None:
    rows = [
        minute("10:05", finished=3, requests=4, rate_limited=1),
        minute("10:59", finished=2, requests=2),
        minute("11:00", finished=7, requests=7),
        minute("13:30", finished=1, requests=1),
    ]

    series = timeline.buckets(rows, step=3600)

    assert [(b.start, b.finished, b.requests, b.rate_limited) for b in series] == [
        (at("2026-11-27T10:00:00Z"), 5, 6, 1),
        (at("2026-11-27T11:00:00Z"), 7, 7, 0),
        (at("2026-11-27T12:00:00Z"), 0, 0, 0),
        (at("2026-11-27T13:00:00Z"), 1, 1, 0),
    ]


def test_buckets_within_given_bounds_drop_rows_outside() -> None:
    rows = [minute("09:59", finished=9), minute("10:00", finished=1), minute("10:02", finished=2)]

    series = timeline.buckets(rows, step=60, start=at(T0), end=at("2026-11-27T10:03:00Z"))

    assert [b.finished for b in series] == [1, 0, 2]


def test_rows_with_garbage_minutes_are_skipped_not_fatal() -> None:
    rows = [minute("10:00", finished=1), {"run_id": 1, "minute": "yesterday", "finished": 5}]

    assert [b.finished for b in timeline.buckets(rows, step=60)] == [1]
    assert timeline.buckets([], step=60) == []


@pytest.mark.parametrize(
    ("count", "most", "sizes"),
    [(10, 20, [1] * 10), (10, 5, [2] * 5), (10, 4, [3, 3, 3, 1]), (1, 1, [1])],
)
def test_coarsen_merges_neighbours_to_at_most_n_bars(
    count: int, most: int, sizes: list[int]
) -> None:
    series = [Bucket(i * 60.0, 60.0, finished=1, requests=2) for i in range(count)]

    merged = timeline.coarsen(series, most=most)

    assert len(merged) <= most
    assert [b.finished for b in merged] == sizes
    assert sum(b.requests for b in merged) == 2 * count


# -- spans -----------------------------------------------------------------------------------

OUT = {"outage: 5xx across identifiers": 60.0}
WAIT = {"429 Retry-After": 45.0}


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param(
            [
                minute("10:00", outage_seconds=60.0, pause_reasons=OUT),
                minute("10:01", outage_seconds=30.0, pause_reasons={"outage: timeouts": 30.0}),
            ],
            [("outage", "10:00", "10:02", 90.0)],
            id="neighbouring outage minutes merge",
        ),
        pytest.param(
            [minute("10:00", outage_seconds=60.0), minute("10:05", outage_seconds=60.0)],
            [("outage", "10:00", "10:01", 60.0), ("outage", "10:05", "10:06", 60.0)],
            id="a gap splits",
        ),
        pytest.param(
            [minute("10:00", outage_seconds=60.0), minute("10:01", run_id=2, outage_seconds=9.0)],
            [("outage", "10:00", "10:01", 60.0), ("outage", "10:01", "10:02", 9.0)],
            id="another run splits",
        ),
        pytest.param(
            [minute("10:00", paused_seconds=29.0), minute("10:01", paused_seconds=12.0)],
            [],
            id="short waits of pacing are no pause",
        ),
        pytest.param(
            [
                minute("10:00", paused_seconds=45.0, pause_reasons=WAIT),
                minute("10:01", paused_seconds=60.0, outage_seconds=60.0),
                minute("10:02", paused_seconds=50.0),
            ],
            [
                ("pause", "10:00", "10:01", 45.0),
                ("outage", "10:01", "10:02", 60.0),
                ("pause", "10:02", "10:03", 50.0),
            ],
            id="a minute in outage is an outage, not a pause",
        ),
    ],
)
def test_stall_spans(
    rows: list[dict[str, Any]], expected: list[tuple[str, str, str, float]]
) -> None:
    spans = timeline.stall_spans(rows)

    assert [(s.kind, s.start, s.end, s.seconds) for s in spans] == [
        (kind, at(f"2026-11-27T{a}:00Z"), at(f"2026-11-27T{b}:00Z"), waited)
        for kind, a, b, waited in expected
    ]


def test_stall_reasons_add_up_and_show_on_hover() -> None:
    rows = [
        minute("10:00", outage_seconds=60.0, pause_reasons=OUT),
        minute(
            "10:01", outage_seconds=60.0, pause_reasons='{"outage: 5xx across identifiers": 20}'
        ),
    ]

    (span,) = timeline.stall_spans(rows)

    assert span.reasons == {"outage: 5xx across identifiers": 80.0}
    assert span.describe() == (
        "outage 2026-11-27T10:00:00Z to 2026-11-27T10:02:00Z (2m): "
        "outage: 5xx across identifiers (1m20s)"
    )


def test_idle_spans_between_runs_and_after_the_last() -> None:
    runs = timeline.run_summaries(
        [
            run(1, "2026-11-27T08:00:00Z", "2026-11-27T09:00:00Z", 130),
            run(2, "2026-11-27T09:01:00Z", "2026-11-27T10:00:00Z", 4),  # a restart: no gap
            run(3, "2026-11-27T12:00:00Z", "2026-11-27T13:00:00Z", 0),
        ],
        [],
    )

    spans = timeline.idle_spans(runs, now=at("2026-11-27T15:00:00Z"))

    assert [(s.start, s.end) for s in spans] == [
        (at("2026-11-27T10:00:00Z"), at("2026-11-27T12:00:00Z")),
        (at("2026-11-27T13:00:00Z"), at("2026-11-27T15:00:00Z")),
    ]
    assert "run 2 stopped: the API could not be used as given" in spans[0].describe()
    assert "run 3 finished every row" in spans[1].describe()


def test_a_run_without_an_end_is_idle_after_its_last_minute_once_silent() -> None:
    runs = timeline.run_summaries(
        [run(1, "2026-11-27T10:00:00Z", None)],
        [minute("10:00", finished=1), minute("10:09", finished=1)],
    )

    assert timeline.idle_spans(runs, now=at("2026-11-27T10:11:00Z")) == []  # still going
    (span,) = timeline.idle_spans(runs, now=at("2026-11-27T11:00:00Z"))
    assert span.start == at("2026-11-27T10:10:00Z")
    assert "no end recorded" in span.describe()


def test_only_long_pauses_are_worth_listing() -> None:
    assert not timeline.worth_listing(Span("pause", 0.0, 60.0, 45.0))
    assert timeline.worth_listing(Span("pause", 0.0, 180.0, 170.0))
    assert timeline.worth_listing(Span("outage", 0.0, 60.0, 10.0))


# -- runs, totals, ETA -----------------------------------------------------------------------


def test_run_durations_use_the_end_or_the_last_minute_seen() -> None:
    runs = timeline.run_summaries(
        [
            run(2, "2026-11-27T10:00:00Z", None),
            run(1, "2026-11-27T08:00:00Z", "2026-11-27T09:30:00Z", 0),
        ],
        [minute("10:44", run_id=2)],
    )

    assert [(r.run_id, r.duration, r.exit_code) for r in runs] == [
        (1, 5400.0, 0),
        (2, 2700.0, None),
    ]


def test_totals_share_of_429s_and_requests_per_finished_row() -> None:
    rows = [
        minute("10:00", requests=60, rate_limited=3, ok=50, not_found=7, finished=57),
        minute("10:01", requests=40, rate_limited=1, ok=39, finished=43, paused_seconds=20.0),
    ]

    sums = timeline.totals(rows)

    assert (sums.requests, sums.finished, sums.paused_seconds) == (100, 100, 20.0)
    assert sums.answers["rate_limited"] == 4 and sums.answers["ok"] == 89
    assert sums.rate_limited_share == pytest.approx(0.04)
    assert sums.requests_per_finished == pytest.approx(1.0)
    assert timeline.totals([]).rate_limited_share == 0.0
    assert timeline.totals([]).requests_per_finished is None


def test_eta_uses_running_minutes_only() -> None:
    rows = [
        minute("10:00", run_id=1, finished=30),
        minute("10:09", run_id=1, finished=30),  # run 1: 10 minutes, 60 finished
        minute("10:40", run_id=2, finished=30),
        minute("10:49", run_id=2, finished=30),  # run 2: 10 minutes, 60 finished; 30 idle between
    ]

    estimate = timeline.eta(rows, remaining=600, window_minutes=60)

    assert estimate is not None
    assert estimate.window_minutes == 20
    assert estimate.rate_per_hour == pytest.approx(360.0)
    assert estimate.seconds == pytest.approx(6000.0)
    assert estimate.finish_at(1000.0) == pytest.approx(7000.0)


@pytest.mark.parametrize(
    ("rows", "remaining", "seconds"),
    [
        ([minute("10:00", finished=0)], 10, None),
        ([minute("10:00", finished=5)], 0, 0.0),
    ],
)
def test_eta_edges(rows: list[dict[str, Any]], remaining: int, seconds: float | None) -> None:
    estimate = timeline.eta(rows, remaining=remaining)

    assert estimate is not None and estimate.seconds == seconds
    assert timeline.eta([], remaining=5) is None


def test_eta_looks_at_the_recent_window_only() -> None:
    old = [minute(f"08:{m:02d}", finished=100) for m in range(60)]
    recent = [minute(f"10:{m:02d}", finished=1) for m in range(60)]

    estimate = timeline.eta(old + recent, remaining=60)

    assert estimate is not None and estimate.rate_per_hour == pytest.approx(60.0)


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ([[2, 1.0], [60, 60.0]], 60.0),
        ([{"limit": 2, "window_seconds": 1.0}], 120.0),
        ([[60, math.inf], [0, 60], ["x", 1], [5]], None),
        ([], None),
    ],
)
def test_ceiling_is_the_tightest_learned_limit(limits: list[Any], expected: float | None) -> None:
    assert timeline.ceiling_per_minute(limits) == expected


# -- the terminal ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "line"),
    [
        ([0, 1, 5, 10], "▁▂▅█"),
        ([0, 0], "▁▁"),
        ([], ""),
        ([3, math.nan, math.inf, 3], "█▁▁█"),
    ],
)
def test_sparkline_keeps_any_finish_above_zero(values: list[float], line: str) -> None:
    assert timeline.sparkline(values) == line


def test_last_hours_are_24_buckets_ending_with_the_current_hour() -> None:
    rows = [minute("10:30", finished=4), minute("09:15", day="2026-11-26", finished=9)]

    day = timeline.last_hours(rows, now=at("2026-11-27T10:45:00Z"))

    assert len(day) == 24
    assert day[0].start == at("2026-11-26T11:00:00Z")
    assert [b.finished for b in day] == [0] * 23 + [4]  # yesterday 09:15 is older than 24h


def test_every_number_is_finite_or_none() -> None:
    rows = [minute("10:00", finished=math.nan, paused_seconds=math.inf, requests=2)]
    sums = timeline.totals(rows)
    assert (sums.finished, sums.paused_seconds, sums.requests) == (0, 0.0, 2)


def test_timeline_columns_follow_the_schema(tmp_path: Path) -> None:
    assert TIMELINE_COLUMNS[:3] == ("run_id", "minute", "requests")
    assert TIMELINE_COLUMNS[-2:] == ("pacer_rate", "limits")
    # The table a new job database gets is made from the same definition (MinuteStats).
    with Store(tmp_path / "jobs.db") as store:
        info = store.conn.execute("PRAGMA table_info(timeline)").fetchall()
    assert tuple(row[1] for row in info) == TIMELINE_COLUMNS
    not_null = {row[1] for row in info if row[3]}
    assert not_null == set(TIMELINE_COLUMNS) - {"pacer_rate"}
    assert [row[1] for row in sorted(info, key=lambda row: row[5]) if row[5]] == [
        "run_id",
        "minute",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (80, "1m20s"), (600, "10m"), (3660, "1h01m"), (93600, "1d02h")],
)
def test_human_seconds(seconds: float, text: str) -> None:
    assert timeline.human_seconds(seconds) == text


# -- whatever the rows hold ----------------------------------------------------------------------

numbers = st.one_of(
    st.none(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
)
minutes_rows = st.lists(
    st.fixed_dictionaries(
        {
            "run_id": st.one_of(st.none(), st.integers(0, 3)),
            "minute": st.one_of(
                st.integers(0, 3000).map(lambda m: timeline.iso(at(T0) + 60 * m)),
                st.just("garbage"),
                st.none(),
            ),
            "requests": numbers,
            "finished": numbers,
            "rate_limited": numbers,
            "paused_seconds": numbers,
            "outage_seconds": numbers,
            "pause_reasons": st.one_of(
                st.none(), st.just("{bad json"), st.dictionaries(st.text(max_size=5), numbers)
            ),
            "limits": st.one_of(st.none(), st.lists(st.lists(numbers, max_size=3), max_size=3)),
        }
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(rows=minutes_rows, remaining=st.integers(0, 10**6))
def test_the_story_of_any_rows_is_finite_json(rows: list[dict[str, Any]], remaining: int) -> None:
    from batchmap.report import story_facts
    from batchmap.timeline import History

    runs = [run(1, T0, None), run(2, "not a time", "2026-11-27T11:00:00Z", 0)]
    facts = story_facts(History(runs, rows, {}), remaining=remaining, now=at(T0) + 90_000)

    json.dumps(facts, allow_nan=False)
    assert len(facts["last_24h"]["finishes_per_hour"]) == 24

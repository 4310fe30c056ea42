"""The report's charts: an axis that suits any span, cumulative progress, rate against a ceiling.

A job can last 30 seconds or two weeks. The time axis counts from the job's start in the unit
its span calls for (seconds, minutes, hours or days) at a step that gives a handful of
distinct ticks; bars are as wide as the span allows (a minute at least: the timeline counts
per minute). Pure functions returning inline SVG; colours are CSS classes (report.css).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from batchmap import timeline
from batchmap.timeline import Bucket, Row, RunSummary, Span

WIDTH = 1000
HEIGHT = 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 26
MAX_TICKS = 8
MAX_BARS = 150
HEADROOM = 1.08  # the highest value (or the ceiling) never sits on the frame's top edge
# (unit name, seconds per unit, steps in that unit), from the shortest span up.
UNITS: tuple[tuple[str, float, tuple[int, ...]], ...] = (
    ("s", 1.0, (1, 2, 5, 10, 15, 30, 60)),
    ("min", 60.0, (1, 2, 5, 10, 15, 30, 60)),
    ("h", 3600.0, (1, 2, 3, 6, 12, 24)),
    ("days", 86400.0, (1, 2, 7, 14, 30, 60, 90, 180, 365)),
)
BAR_STEPS = (60.0, 300.0, 900.0, 3600.0, 7200.0, 21600.0, 86400.0, 604800.0)


@dataclass(frozen=True, slots=True)
class Axis:
    """The time axis of a chart: its range and its ticks, labelled in one unit."""

    start: float
    end: float
    unit: str  # "s", "min", "h" or "days"
    ticks: tuple[tuple[float, str], ...]

    @property
    def span(self) -> float:
        """Seconds from start to end."""
        return self.end - self.start


def unit_for(span: float) -> tuple[str, float, tuple[int, ...]]:
    """Seconds up to 3 minutes, minutes up to 3 hours, hours up to 3 days, then days."""
    if span <= 180:
        return UNITS[0]
    if span <= 3 * 3600:
        return UNITS[1]
    if span <= 3 * 86400:
        return UNITS[2]
    return UNITS[3]


def time_axis(start: float, end: float) -> Axis:
    """An axis from `start` to `end` with at most MAX_TICKS distinct, readable labels."""
    end = max(end, start + 1.0)
    span = end - start
    unit, seconds, steps = unit_for(span)
    step = next((s for s in steps if span / (s * seconds) <= MAX_TICKS), steps[-1]) * seconds
    ticks = []
    n = 0
    while n * step <= span + 1e-9:
        value = n * step / seconds
        label = f"day {value:.0f}" if unit == "days" else f"{value:.0f} {unit}"
        ticks.append((start + n * step, label))
        n += 1
    return Axis(start, end, unit, tuple(ticks))


def bar_step(span: float) -> float:
    """Bar width in seconds: the narrowest that keeps a span under MAX_BARS bars."""
    return next((s for s in BAR_STEPS if span / s <= MAX_BARS), BAR_STEPS[-1])


def step_words(step: float) -> str:
    """'minute', '5 minutes', 'hour', '2 hours', 'day'."""
    for size, word in ((604800.0, "week"), (86400.0, "day"), (3600.0, "hour"), (60.0, "minute")):
        if step >= size and step % size == 0:
            n = int(step // size)
            return word if n == 1 else f"{n} {word}s"
    return f"{step:g} s"


def count_ticks(top: float, *, most: int = 4) -> tuple[float, list[float]]:
    """A nice axis top and its ticks for counts: whole numbers, 1, 2 or 5 times a power of 10."""
    if top <= 0:
        return 1.0, [0.0, 1.0]
    raw = max(1.0, top / most)
    power = 10 ** math.floor(math.log10(raw))
    step = next(f * power for f in (1, 2, 2.5, 5, 10) if f * power >= raw)
    count = max(1, math.ceil(top / step - 1e-9))
    return count * step, [i * step for i in range(count + 1)]


class _Plot:
    """Coordinates and the frame (grid, count labels, time ticks) shared by both charts."""

    def __init__(self, axis: Axis, top: float, ticks: list[float], label: str) -> None:
        self.axis, self.top = axis, top
        self.w, self.h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
        self.parts = [
            f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="{escape(label)}">'
        ]
        for value in ticks:
            gy = self.y(value)
            cls = "axis" if value == 0 else "grid"
            self.parts.append(
                f'<line class="{cls}" x1="{LEFT}" y1="{gy:.1f}" x2="{WIDTH - RIGHT}" '
                f'y2="{gy:.1f}"/><text x="{LEFT - 6}" y="{gy + 4:.1f}" text-anchor="end">'
                f"{_count(value)}</text>"
            )
        for i, (t, text) in enumerate(axis.ticks):
            tx = self.x(t)
            anchor = "start" if i == 0 else "end" if tx > WIDTH - RIGHT - 20 else "middle"
            self.parts.append(
                f'<line class="tick" x1="{tx:.1f}" y1="{TOP + self.h}" x2="{tx:.1f}" '
                f'y2="{TOP + self.h + 4}"/><text x="{tx:.1f}" y="{HEIGHT - 6}" '
                f'text-anchor="{anchor}">{escape(text)}</text>'
            )

    def x(self, t: float) -> float:
        axis = self.axis
        return LEFT + (min(max(t, axis.start), axis.end) - axis.start) / axis.span * self.w

    def y(self, v: float) -> float:
        return TOP + self.h - v / self.top * self.h

    def spans(self, spans: Sequence[Span]) -> None:
        for span in spans:
            left, right = self.x(span.start), self.x(span.end)
            if right - left <= 0:
                continue
            self.parts.append(
                f'<rect class="{span.kind}" x="{left:.1f}" y="{TOP}" '
                f'width="{max(1.0, right - left):.1f}" height="{self.h}">'
                f"<title>{escape(span.describe())}</title></rect>"
            )

    def svg(self) -> str:
        return "".join([*self.parts, "</svg>"])


def progress_points(
    runs: Sequence[RunSummary], minutes: Sequence[Row], *, total: int
) -> list[tuple[float, int]]:
    """Rows finished so far over time, each row counted once (never above `total`).

    A run adds its finishes from its start to its end; between runs the line stays flat.
    A row fetched again (a repair, `--retry-failed`) finishes again in the timeline, so the
    sum is capped at the job's rows.
    """
    by_run: dict[int, list[tuple[float, int]]] = {}
    for moment, row in timeline.timed(minutes):
        by_run.setdefault(timeline._int(row, "run_id"), []).append(
            (moment, timeline._int(row, "finished"))
        )
    known = {run.run_id: run for run in runs}
    points: list[tuple[float, int]] = []
    done = 0
    order = sorted(by_run, key=lambda run_id: by_run[run_id][0][0])
    for run_id in order:
        rows = by_run[run_id]
        run = known.get(run_id)
        start = rows[0][0] if run is None or run.started is None else run.started
        end = rows[-1][0] + timeline.MINUTE
        if run is not None and run.ended is not None:
            end = max(run.ended, start)
        points.append((start, done))
        for moment, finished in rows:
            done = min(total, done + finished) if total else done + finished
            points.append((min(max(moment + timeline.MINUTE, start), end), done))
        if end > points[-1][0]:
            points.append((end, done))  # the run went on to its end without a finish
    return points


def progress_chart(
    points: Sequence[tuple[float, int]],
    *,
    total: int,
    axis: Axis,
    spans: Sequence[Span] = (),
    label: str,
) -> str:
    """Rows finished so far as a rising line over a shaded area, the job's size dashed above."""
    if not points:
        return ""
    top, ticks = count_ticks(max(total, points[-1][1], 1) * HEADROOM)
    plot = _Plot(axis, top, ticks, label)
    plot.spans(spans)
    line = " ".join(f"{plot.x(t):.1f},{plot.y(v):.1f}" for t, v in points)
    base = TOP + plot.h
    first, last = plot.x(points[0][0]), plot.x(points[-1][0])
    plot.parts.append(
        f'<polygon class="cum-area" points="{first:.1f},{base} {line} {last:.1f},{base}"/>'
        f'<polyline class="cum" points="{line}"/>'
    )
    if total:
        ty = plot.y(total)
        plot.parts.append(
            f'<line class="total" x1="{LEFT}" y1="{ty:.1f}" x2="{WIDTH - RIGHT}" y2="{ty:.1f}">'
            f"<title>all {total:,} rows of the job</title></line>"
        )
    end_t, end_v = points[-1]
    plot.parts.append(
        f'<circle class="cum-end" cx="{plot.x(end_t):.1f}" cy="{plot.y(end_v):.1f}" r="3">'
        f"<title>{end_v:,} of {total:,} rows finished at {timeline.iso(end_t)}</title></circle>"
    )
    return plot.svg()


def rate_chart(
    series: Sequence[Bucket],
    *,
    axis: Axis,
    spans: Sequence[Span] = (),
    ceiling_per_minute: float | None = None,
    label: str,
) -> str:
    """Finishes per bar, requests as a line, the learned limit as a dashed line."""
    if not series:
        return ""
    step = series[0].seconds
    ceiling = None if ceiling_per_minute is None else ceiling_per_minute * step / 60
    most = max(max(b.finished for b in series), max(b.requests for b in series), ceiling or 0)
    top, ticks = count_ticks(most * HEADROOM)
    plot = _Plot(axis, top, ticks, label)
    plot.spans(spans)
    base = TOP + plot.h
    for bucket in series:
        left, right = plot.x(bucket.start), plot.x(bucket.start + bucket.seconds)
        if bucket.finished <= 0 or right - left <= 0:
            continue
        gap = 1.0 if right - left > 3 else 0.0
        by = plot.y(bucket.finished)
        plot.parts.append(
            f'<rect class="fin" x="{left:.1f}" y="{by:.1f}" '
            f'width="{max(0.5, right - left - gap):.2f}" height="{base - by:.1f}">'
            f"<title>{escape(_tooltip(bucket))}</title></rect>"
        )
    inside = [b for b in series if b.start + b.seconds > axis.start and b.start < axis.end]
    points = " ".join(
        f"{plot.x(max(axis.start, min(axis.end, b.start + b.seconds / 2))):.1f},"
        f"{plot.y(b.requests):.1f}"
        for b in inside
    )
    if points:
        plot.parts.append(f'<polyline class="req" points="{points}"/>')
    if ceiling is not None:
        cy = plot.y(ceiling)
        plot.parts.append(
            f'<line class="ceil" x1="{LEFT}" y1="{cy:.1f}" x2="{WIDTH - RIGHT}" y2="{cy:.1f}">'
            f"<title>learned limit: {_count(ceiling)} requests per {step_words(step)}</title>"
            "</line>"
        )
    return plot.svg()


def _count(value: float) -> str:
    """An axis label: 0, 50, 8,000, 250k, 1.5M (short enough for the margin)."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 100_000:
        return f"{value / 1000:g}k"
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _tooltip(bucket: Bucket) -> str:
    start = datetime.fromtimestamp(bucket.start, UTC).strftime("%Y-%m-%d %H:%M UTC")
    limited = f", {bucket.rate_limited:,} answered 429" if bucket.rate_limited else ""
    return f"{start}: {bucket.finished:,} finished, {bucket.requests:,} requests{limited}"

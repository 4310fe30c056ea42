"""Inline SVG charts for the HTML report: bars of finishes, a line of requests, shaded stalls.

Colours are CSS classes (report.css), so the light and dark schemes both apply; every text
that comes from data is escaped. Sizes are in viewBox units: the chart scales to its box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from batchmap.timeline import Bucket, Span

WIDTH = 1000
HEIGHT = 200
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 10, 22
X_LABELS = 6


def bar_chart(
    series: Sequence[Bucket],
    *,
    spans: Sequence[Span] = (),
    ceiling_per_minute: float | None = None,
    label: str,
) -> str:
    """Finishes as bars and requests as a line per bucket, stalls shaded behind them.

    `ceiling_per_minute` (the tightest learned limit) is drawn as a dashed line, so a job
    that ran at the ceiling shows requests hugging it.
    """
    if not series:
        return ""
    t0 = series[0].start
    t1 = series[-1].start + series[-1].seconds
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = series[0].seconds
    ceiling = None if ceiling_per_minute is None else ceiling_per_minute * step / 60
    top = max(max(b.finished for b in series), max(b.requests for b in series), ceiling or 0)
    top = _nice(top)

    def x(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - v / top * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}">'
    ]
    for span in spans:
        left, right = max(span.start, t0), min(span.end, t1)
        if right <= left:
            continue
        parts.append(
            f'<rect class="{span.kind}" x="{x(left):.1f}" y="{TOP}" '
            f'width="{max(1.0, x(right) - x(left)):.1f}" height="{plot_h}">'
            f"<title>{escape(span.describe())}</title></rect>"
        )
    for fraction in (0.5, 1.0):
        gy = y(top * fraction)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{gy:.1f}" x2="{WIDTH - RIGHT}" y2="{gy:.1f}"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{gy + 4:.1f}" text-anchor="end">'
            f"{_count(top * fraction)}</text>"
        )
    base = TOP + plot_h
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}"/>')
    width = plot_w / len(series)
    gap = 1.0 if width > 3 else 0.0
    for bucket in series:
        if bucket.finished <= 0:
            continue
        bx, by = x(bucket.start), y(bucket.finished)
        parts.append(
            f'<rect class="fin" x="{bx:.1f}" y="{by:.1f}" width="{max(0.5, width - gap):.2f}" '
            f'height="{base - by:.1f}"><title>{escape(_tooltip(bucket))}</title></rect>'
        )
    points = " ".join(f"{x(b.start + b.seconds / 2):.1f},{y(b.requests):.1f}" for b in series)
    parts.append(f'<polyline class="req" points="{points}"/>')
    if ceiling is not None:
        cy = y(ceiling)
        parts.append(
            f'<line class="ceil" x1="{LEFT}" y1="{cy:.1f}" x2="{WIDTH - RIGHT}" y2="{cy:.1f}">'
            f"<title>learned limit: {_count(ceiling)} requests per bar</title></line>"
        )
    for i in range(X_LABELS + 1):
        t = t0 + (t1 - t0) * i / X_LABELS
        anchor = "start" if i == 0 else "end" if i == X_LABELS else "middle"
        parts.append(
            f'<text x="{x(t):.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}">'
            f"{_clock(t, t1 - t0)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _nice(value: float) -> float:
    """The axis top: 1, 2 or 5 times a power of ten, at least `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        if factor * power >= value:
            return float(factor * power)
    return float(10 * power)


def _count(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _clock(t: float, extent: float) -> str:
    moment = datetime.fromtimestamp(t, UTC)
    if extent <= 2 * 86400:
        return moment.strftime("%H:%M")
    return moment.strftime("%b %d %H:%M")


def _tooltip(bucket: Bucket) -> str:
    start = datetime.fromtimestamp(bucket.start, UTC).strftime("%Y-%m-%d %H:%M UTC")
    limited = f", {bucket.rate_limited:,} answered 429" if bucket.rate_limited else ""
    return f"{start}: {bucket.finished:,} finished, {bucket.requests:,} requests{limited}"

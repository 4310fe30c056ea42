"""The run's story in the HTML report: metrics, answers by kind, SVG charts, stalls, runs.

Charts are inline SVG whose colours are CSS classes (report.css), so the light and dark
schemes both apply; every text that comes from data is escaped. Sizes are viewBox units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from batchmap import timeline
from batchmap.timeline import Bucket, History, Span

WIDTH = 1000
HEIGHT = 200
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 10, 22
X_LABELS = 6
MAX_STALLS = 30  # outages and long pauses listed under the charts (the newest)
HOUR_BARS = 360  # the whole-job chart merges hours beyond this many bars
RUN_MINUTES = 720  # the last-run chart shows at most its last 12 hours, minute by minute


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


# -- the run's story -------------------------------------------------------------------------


def story_section(history: History, facts: dict[str, Any], *, now: float) -> str:
    """The "What happened" section: metrics, answers by kind, charts, stalls and runs."""
    parts = ['<section id="story">\n<h2>What happened</h2>\n<div class="panel">\n']
    minutes = history.minutes
    if not minutes and not history.runs:
        parts.append(
            '<p class="empty">no run history in this job database yet '
            "(runs made before batchmap recorded a timeline have none)</p>\n</div>\n</section>\n"
        )
        return "".join(parts)
    runs = timeline.run_summaries(history.runs, minutes)
    sums = timeline.totals(minutes)
    remaining = int((facts.get("counts") or {}).get("pending", 0)) + int(
        (facts.get("counts") or {}).get("running", 0)
    )
    parts.append(_metrics(sums, timeline.eta(minutes, remaining=remaining), now=now))
    parts.append(_answers_bar(sums))
    stalls = timeline.stall_spans(minutes)
    idle = timeline.idle_spans(runs, now=now)
    ceiling = timeline.ceiling_per_minute(
        timeline.latest_limits(minutes) or facts.get("learned_limits") or []
    )
    parts.append(_legend(has_ceiling=ceiling is not None))
    pairs = timeline.timed(minutes)
    if pairs:
        start = min([pairs[0][0], *(r.started for r in runs if r.started is not None)])
        hours = timeline.buckets(
            minutes, step=timeline.HOUR, start=start, end=max(now, pairs[-1][0])
        )
        hourly = timeline.coarsen(hours, most=HOUR_BARS)
        per = (
            "hour"
            if hourly[0].seconds <= timeline.HOUR
            else timeline.human_seconds(hourly[0].seconds)
        )
        parts.append(f"<h3>Finishes per {per} over the whole job</h3>\n")
        wide = [s for s in stalls if s.kind == "outage" or s.end - s.start >= hourly[0].seconds / 2]
        parts.append(
            bar_chart(
                hourly,
                spans=[*idle, *wide],
                ceiling_per_minute=ceiling,
                label=f"finishes per {per} over the whole job",
            )
        )
        parts.append(_last_run_chart(history, stalls, ceiling))
    parts.append(_stalls_list([s for s in [*stalls, *idle] if timeline.worth_listing(s)]))
    parts.append(_runs_table(runs))
    parts.append("</div>\n</section>\n")
    return "".join(parts)


def _last_run_chart(
    history: History, stalls: Sequence[timeline.Span], ceiling: float | None
) -> str:
    run_id, rows = timeline.last_run_minutes(history.minutes, history.runs)
    pairs = timeline.timed(rows)
    if not pairs:
        return ""
    end = pairs[-1][0] + timeline.MINUTE
    start = max(pairs[0][0], end - RUN_MINUTES * timeline.MINUTE)
    series = timeline.buckets(rows, step=timeline.MINUTE, start=start, end=end)
    span_text = "" if start == pairs[0][0] else f" (its last {RUN_MINUTES // 60} hours)"
    return f"<h3>Finishes per minute in the last run (run {run_id}){span_text}</h3>\n" + bar_chart(
        series,
        spans=stalls,
        ceiling_per_minute=ceiling,
        label=f"finishes per minute in run {run_id}",
    )


def _legend(*, has_ceiling: bool) -> str:
    items = [
        ('<i style="--c: var(--bar)"></i>rows finished', True),
        ('<i class="line" style="--c: var(--req)"></i>requests sent', True),
        ('<i class="dash" style="--c: var(--ceiling)"></i>learned rate limit', has_ceiling),
        ('<i style="--c: var(--outage)"></i>outage', True),
        ('<i style="--c: var(--pause)"></i>paused (rate limit or server wait)', True),
        ('<i style="--c: var(--idle)"></i>not running', True),
    ]
    body = "".join(f"<span>{text}</span>" for text, show in items if show)
    return f'<p class="legend">{body} <span>(hover a bar or a shaded span for details)</span></p>\n'


def _metrics(sums: timeline.Totals, estimate: timeline.Eta | None, *, now: float) -> str:
    share = sums.rate_limited_share
    limited = sums.answers.get("rate_limited", 0)
    cells = [
        (
            "requests answered 429",
            _percent(share),
            f"{limited:,} of {sums.requests:,} requests",
            share > 0.01,
        ),
        (
            "requests per resolved identifier",
            "&ndash;"
            if sums.requests_per_finished is None
            else f"{sums.requests_per_finished:.2f}",
            f"{sums.requests:,} requests, {sums.finished:,} rows resolved (final state)"
            + (
                f", {sums.classification_requests:,} classification requests"
                if sums.classification_requests
                else ""
            ),
            False,
        ),
        (
            "paused / outage",
            f"{timeline.human_seconds(sums.paused_seconds)} / "
            f"{timeline.human_seconds(sums.outage_seconds)}",
            "time the pool waited, over every run",
            sums.outage_seconds > 0,
        ),
        ("estimated finish", *_eta_words(estimate, now=now), False),
    ]
    body = "".join(
        f'<div class="metric{" warn" if warn else ""}"><div class="label">{label}</div>'
        f'<div class="big">{value}</div><div class="note">{note}</div></div>'
        for label, value, note, warn in cells
    )
    return f'<div class="metrics">{body}</div>\n'


def _percent(share: float) -> str:
    """A share as a percentage with enough digits that a small non-zero one is not 0.0%."""
    if share == 0 or share >= 0.1:
        return f"{100 * share:.0f}%" if share >= 0.1 else "0%"
    return f"{100 * share:.2g}%" if share >= 0.0001 else "<0.01%"


def _eta_words(estimate: timeline.Eta | None, *, now: float) -> tuple[str, str]:
    if estimate is None:
        return "&ndash;", "no timeline yet"
    if estimate.remaining == 0:
        return "done", "no row is pending"
    rate = (
        f"{estimate.rate_per_hour:,.0f} rows/hour "
        f"over the last {estimate.window_minutes} running minutes"
    )
    finish = estimate.finish_at(now)
    if estimate.seconds is None or finish is None or not math.isfinite(finish):
        return "&ndash;", f"{_rows(estimate.remaining)} left and no recent finishes"
    return (
        f"in {timeline.human_seconds(estimate.seconds)}",
        f"{_rows(estimate.remaining)} left at {rate}; about {timeline.iso(finish)} if running now",
    )


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def _answers_bar(sums: timeline.Totals) -> str:
    total = sum(sums.answers.values())
    if not total:
        return ""
    spans, legend = [], []
    for key, label in timeline.ANSWER_CLASSES:
        n = sums.answers.get(key, 0)
        if not n:
            continue
        tip = f"{label}: {n:,} ({_percent(n / total)})"
        spans.append(f'<span style="--c: var(--a-{key}); flex: {n} 1 0" title="{tip}"></span>')
        legend.append(f'<span><i style="--c: var(--a-{key})"></i>{tip}</span>')
    return (
        '<h3>Answers by kind</h3>\n<div class="bar tall" role="img" aria-label="answers by kind">'
        + "".join(spans)
        + f'</div>\n<p class="legend">{"".join(legend)}</p>\n'
    )


def _stalls_list(spans: Sequence[timeline.Span]) -> str:
    if not spans:
        return '<p class="note">no outage, long pause or stop between runs</p>\n'
    newest = sorted(spans, key=lambda s: s.start)[-MAX_STALLS:]
    more = len(spans) - len(newest)
    head = (
        f"<h3>Outages, long pauses and stops (the newest {len(newest)} of {len(spans)})</h3>\n"
        if more
        else "<h3>Outages, long pauses and stops</h3>\n"
    )
    items = "".join(f"<li>{escape(span.describe())}</li>\n" for span in reversed(newest))
    return f'{head}<ul class="stalls">\n{items}</ul>\n'


def _runs_table(runs: Sequence[timeline.RunSummary]) -> str:
    if not runs:
        return ""
    rows = []
    newest = runs[-1].run_id
    for run in reversed(runs):
        started = "" if run.started is None else timeline.iso(run.started)
        if run.ended is not None:
            ended, meaning = timeline.iso(run.ended), timeline.exit_meaning(run.exit_code)
        else:
            seen = "" if run.last_seen is None else f" (last seen {timeline.iso(run.last_seen)})"
            guess = "still running, or killed" if run.run_id == newest else "killed"
            ended, meaning = "&ndash;", f"no end recorded: {guess}{seen}"
        duration = "" if run.duration is None else timeline.human_seconds(run.duration)
        code = "" if run.exit_code is None else str(run.exit_code)
        rows.append(
            f'<tr><td class="num">{run.run_id}</td><td class="when">{started}</td>'
            f'<td class="when">{ended}</td>'
            f'<td class="num">{duration}</td><td class="num">{code}</td>'
            f"<td>{escape(meaning)}</td><td>{escape(run.version or '')}</td></tr>\n"
        )
    return (
        '<h3>Runs</h3>\n<div class="table-wrap"><table id="runs">\n<thead><tr>'
        '<th class="num">run</th><th>start (UTC)</th><th>end (UTC)</th>'
        '<th class="num">duration</th><th class="num">exit</th><th>meaning</th>'
        "<th>version</th></tr></thead>\n<tbody>\n" + "".join(rows) + "</tbody>\n</table></div>\n"
    )

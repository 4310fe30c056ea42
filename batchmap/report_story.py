"""The run's story in the HTML report: metrics, answers by kind, SVG charts, stalls, runs.

Charts are inline SVG whose colours are CSS classes (report.css), so the light and dark
schemes both apply; every text that comes from data is escaped. Sizes are viewBox units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from batchmap import timeline
from batchmap.report_charts import (
    bar_step,
    progress_chart,
    progress_points,
    rate_chart,
    step_words,
    time_axis,
)
from batchmap.timeline import History

MAX_STALLS = 30  # outages and long pauses listed under the charts (the newest)
RUN_MINUTES = 720  # the last-run chart shows at most its last 12 hours


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
    counts = {str(k): int(v) for k, v in (facts.get("counts") or {}).items()}
    remaining = counts.get("pending", 0) + counts.get("running", 0)
    total = sum(counts.values())
    resolved = total - remaining if counts else sums.finished
    parts.append(
        _metrics(sums, timeline.eta(minutes, remaining=remaining), now=now, resolved=resolved)
    )
    parts.append(_answers_bar(sums, prefilter_decided=_prefilter_decided(facts)))
    stalls = timeline.stall_spans(minutes)
    idle = timeline.idle_spans(runs, now=now)
    ceiling = timeline.ceiling_per_minute(
        timeline.latest_limits(minutes) or facts.get("learned_limits") or []
    )
    parts.append(_legend(has_ceiling=ceiling is not None))
    points = progress_points(runs, minutes, total=total)
    if points:
        axis = time_axis(points[0][0], max(t for t, _ in points))
        began = timeline.iso(axis.start).replace("T", " ").replace("Z", " UTC")
        shaded = [*idle, *stalls]
        parts.append(
            f"<h3>Rows finished so far, over the job's {timeline.human_seconds(axis.span)} "
            f"(from {began})</h3>\n"
        )
        parts.append(
            progress_chart(
                points,
                total=total,
                axis=axis,
                spans=shaded,
                label="rows finished so far over the whole job",
            )
        )
        step = bar_step(axis.span)
        per = step_words(step)
        series = timeline.buckets(minutes, step=step, start=axis.start, end=axis.end)
        wide = [s for s in stalls if s.kind == "outage" or s.end - s.start >= step / 2]
        parts.append(f"<h3>Rows finished per {per} over the whole job</h3>\n")
        parts.append(
            rate_chart(
                series,
                axis=axis,
                spans=[*idle, *wide],
                ceiling_per_minute=ceiling,
                label=f"rows finished per {per} over the whole job",
            )
        )
        if step > timeline.MINUTE:  # otherwise the whole job is already drawn minute by minute
            parts.append(_last_run_chart(history, runs, stalls, ceiling))
    parts.append(_stalls_list([s for s in [*stalls, *idle] if timeline.worth_listing(s)]))
    parts.append(_runs_table(runs))
    parts.append("</div>\n</section>\n")
    return "".join(parts)


def _prefilter_decided(facts: dict[str, Any]) -> int:
    """Rows the classifications prefilter ended `no_heatmap`: those without a 204 of their own."""
    counts = facts.get("counts") or {}
    by_status = facts.get("http_status") or {}
    return max(0, int(counts.get("no_heatmap", 0)) - int(by_status.get("204", 0)))


def _last_run_chart(
    history: History,
    runs: Sequence[timeline.RunSummary],
    stalls: Sequence[timeline.Span],
    ceiling: float | None,
) -> str:
    """The newest run that did any work, in more detail; nothing when only one run did."""
    working: dict[int, list[dict[str, Any]]] = {}
    for _, row in timeline.timed(history.minutes):
        if timeline._int(row, "requests") or timeline._int(row, "finished"):
            working.setdefault(timeline._int(row, "run_id"), []).append(dict(row))
    if len(working) < 2:
        return ""  # the whole-job charts already show the one run that worked
    run_id = max(working)
    rows = [dict(r) for r in history.minutes if timeline._int(r, "run_id") == run_id]
    pairs = timeline.timed(rows)
    run = next((r for r in runs if r.run_id == run_id), None)
    start = pairs[0][0] if run is None or run.started is None else run.started
    end = pairs[-1][0] + timeline.MINUTE
    if run is not None and run.ended is not None:
        end = max(run.ended, start + 1)
    start = max(start, end - RUN_MINUTES * timeline.MINUTE)
    axis = time_axis(start, end)
    step = bar_step(axis.span)
    per = step_words(step)
    series = timeline.buckets(rows, step=step, start=start, end=end)
    capped = " (its last 12 hours)" if end - start >= RUN_MINUTES * timeline.MINUTE else ""
    return (
        f"<h3>Rows finished per {per} in run {run_id}, the last run that fetched{capped}</h3>\n"
        + rate_chart(
            series,
            axis=axis,
            spans=stalls,
            ceiling_per_minute=ceiling,
            label=f"rows finished per {per} in run {run_id}",
        )
    )


def _legend(*, has_ceiling: bool) -> str:
    items = [
        ('<i class="line" style="--c: var(--cum)"></i>rows finished so far', True),
        ('<i style="--c: var(--bar)"></i>rows finished', True),
        ('<i class="line" style="--c: var(--req)"></i>requests sent', True),
        ('<i class="dash" style="--c: var(--ceiling)"></i>learned rate limit', has_ceiling),
        ('<i style="--c: var(--outage)"></i>outage', True),
        ('<i style="--c: var(--pause)"></i>paused (rate limit or server wait)', True),
        ('<i style="--c: var(--idle)"></i>not running', True),
    ]
    body = "".join(f"<span>{text}</span>" for text, show in items if show)
    return f'<p class="legend">{body} <span>(hover a bar or a shaded span for details)</span></p>\n'


def _metrics(
    sums: timeline.Totals, estimate: timeline.Eta | None, *, now: float, resolved: int
) -> str:
    share = sums.rate_limited_share
    per_resolved = sums.requests / resolved if resolved else None
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
            "&ndash;" if per_resolved is None else f"{per_resolved:.2f}",
            f"{sums.requests:,} requests, {resolved:,} rows resolved (final state)"
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


def _answers_bar(sums: timeline.Totals, *, prefilter_decided: int = 0) -> str:
    """Heatmap requests by answer; rows the prefilter decided are said apart, not as 204s."""
    answers = dict(sums.answers)
    # The timeline counts a prefilter decision in its no_heatmap class: take those out.
    answers["no_heatmap"] = max(0, answers.get("no_heatmap", 0) - prefilter_decided)
    total = sum(answers.values())
    if not total and not prefilter_decided:
        return ""
    spans, legend = [], []
    for key, label in timeline.ANSWER_CLASSES:
        n = answers.get(key, 0)
        if not n:
            continue
        tip = f"{label}: {n:,} ({_percent(n / total)})"
        spans.append(f'<span style="--c: var(--a-{key}); flex: {n} 1 0" title="{tip}"></span>')
        legend.append(f'<span><i style="--c: var(--a-{key})"></i>{tip}</span>')
    bar = (
        '<div class="bar tall" role="img" aria-label="heatmap requests by answer">'
        + "".join(spans)
        + f'</div>\n<p class="legend">{"".join(legend)}</p>\n'
        if total
        else ""
    )
    note = ""
    if prefilter_decided:
        asked = sums.classification_requests
        note = (
            f'<p class="note">decided by the classifications prefilter: '
            f"{_rows(prefilter_decided)} without a heatmap, no heatmap request spent"
            + (f" ({asked:,} classification request{'s' * (asked != 1)} in all)" if asked else "")
            + "</p>\n"
        )
    return (
        '<h3>Heatmap requests by answer</h3>\n<p class="note">every request, so a row '
        "fetched again answers again</p>\n" + bar + note
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

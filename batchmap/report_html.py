"""The HTML report: one page (CSS and JS inlined, no network; heatmaps are linked files).

Rows arrive once, in load order, possibly a million of them. Only bounded things are kept:
at most MAX_THUMBNAILS tiles and MAX_FAILURES table rows, counts per state, per failure
group and per verdict. The run's story comes from the `runs` and `timeline` tables
(batchmap.timeline), drawn by batchmap.report_story.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any, TextIO

from batchmap import timeline
from batchmap.html_parts import asset, confidence_text, image_src
from batchmap.models import JobState, Written
from batchmap.originals import Originals
from batchmap.report_review import Review
from batchmap.report_story import story_section
from batchmap.timeline import History

MAX_THUMBNAILS = 1000
# 10,000 table rows cost headless Chromium about 2 s more than 1,000 (tools/bench_report.py);
# the failure groups above the table account for every failed row.
MAX_FAILURES = 1000
MAX_ERROR_CHARS = 2000  # a server message can be long; the CSV/JSON reports keep it whole
MAX_VERDICTS = 12  # distinct verdict names counted; the rest are "other"
FULL_CSV = "batchmap report --format csv"

_STATE_LABELS = {
    JobState.DONE: "done",
    JobState.NO_HEATMAP: "no heatmap",
    JobState.FAILED: "failed",
    JobState.PENDING: "pending",
    JobState.RUNNING: "running",
}


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """A kind of failure: what it means and what to do about it."""

    title: str
    meaning: str
    todo: str
    retryable: bool


RETRY_HINT = "<code>batchmap resume --retry-failed</code> tries these rows again."
FAILURE_GROUPS: dict[str, FailureGroup] = {
    "not_found": FailureGroup(
        "404 not found",
        "The API does not know these identifiers. Permanent: a retry only spends quota.",
        "Check the identifiers and the CSV column (<code>--column</code>); if every row is "
        "404, check <code>--base-url</code> (a path prefix?).",
        retryable=False,
    ),
    "client_error": FailureGroup(
        "other 4xx",
        "The API refused the request for these identifiers. Permanent.",
        "Read the server's message in the error column; fix the identifiers, not the run.",
        retryable=False,
    ),
    "redirect": FailureGroup(
        "redirect refused",
        "The server redirected to another host; batchmap never sends the API key there.",
        "Point <code>--base-url</code> at the final address the API redirects to.",
        retryable=False,
    ),
    "too_large": FailureGroup(
        "answer too large",
        "The answer was larger than the size limit and was refused while it streamed.",
        "If it persists, the server sends something other than a heatmap. " + RETRY_HINT,
        retryable=True,
    ),
    "bad_body": FailureGroup(
        "broken heatmap",
        "A 200 answer that was not a complete PNG (truncated, corrupt or another type).",
        RETRY_HINT,
        retryable=True,
    ),
    "server": FailureGroup(
        "server errors (5xx)",
        "The server answered with an error on every attempt. Transient.",
        RETRY_HINT,
        retryable=True,
    ),
    "network": FailureGroup(
        "timeouts and network errors",
        "No complete answer on any attempt: timeouts, resets, refused connections.",
        RETRY_HINT + " A larger <code>--timeout</code> helps with slow answers.",
        retryable=True,
    ),
    "other": FailureGroup(
        "other failures",
        "Failures batchmap has no rule for.",
        "Read the error column; <code>batchmap resume --retry-failed</code> retries them.",
        retryable=True,
    ),
}
_TOO_LARGE = re.compile(r"too large|larger than|exceed", re.IGNORECASE)


def failure_group(row: dict[str, Any]) -> str:
    """The FAILURE_GROUPS key of a failed row, from its HTTP status and error text."""
    status = row.get("http_status")
    error = str(row.get("error") or "")
    if "redirect" in error:
        return "redirect"
    if _TOO_LARGE.search(error):
        return "too_large"
    if status == 404:
        return "not_found"
    if isinstance(status, int) and 400 <= status < 500 and status != 408:
        return "client_error"
    if error.startswith("200 but") or status == 200:
        return "bad_body"
    if isinstance(status, int) and (status >= 500 or status == 408):
        return "server"
    if status is None and error:
        return "network"
    return "other"


def write_html(
    rows: Iterable[dict[str, Any]],
    handle: TextIO,
    *,
    facts: dict[str, Any],
    report_dir: Path,
    history: History | None = None,
    now: float | None = None,
    originals: Originals | None = None,
) -> Written:
    """Write the page; it accounts for every row and renders the capped sections.

    With `originals` (the job's photos), the page opens with the photo review.
    """
    review = Review(originals, report_dir)
    moment = datetime.now(UTC).timestamp() if now is None else now
    tiles: list[str] = []
    failures: list[str] = []
    seen: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    examples: dict[str, str] = {}
    verdicts: Counter[str] = Counter()
    shown_verdicts: Counter[str] = Counter()
    heatmaps = 0
    for row in rows:
        review.add(row)
        state = str(row["state"])
        seen[state] += 1
        verdict = _verdict_key(row.get("verdict"), verdicts)
        verdicts[verdict] += 1
        if state == JobState.DONE and row.get("path"):
            heatmaps += 1
            if len(tiles) < MAX_THUMBNAILS:
                tiles.append(_tile(row, report_dir, verdict))
                shown_verdicts[verdict] += 1
        elif state == JobState.FAILED:
            group = failure_group(row)
            groups[group] += 1
            examples.setdefault(group, str(row.get("error") or "")[:300])
            if len(failures) < MAX_FAILURES:
                failures.append(_failure_row(row))
    total = sum(seen.values())
    story = history or History()
    handle.write(_head(facts))
    handle.write(
        _header(
            facts,
            listed=total,
            heatmaps=heatmaps,
            seen=seen,
            shown=(len(tiles), len(failures)),
        )
    )
    handle.write("<main>\n")
    handle.write(review.section())
    handle.write(story_section(story, facts, now=moment))
    handle.write(_grid_section(tiles, heatmaps, shown_verdicts, verdicts))
    handle.write(
        _failures_section(
            failures, seen[JobState.FAILED], groups, examples, facts.get("top_errors") or []
        )
    )
    handle.write(_no_heatmap_section(seen[JobState.NO_HEATMAP]))
    handle.write("</main>\n")
    handle.write(
        f"<footer>generated by batchmap at {timeline.iso(moment)}; every row: "
        f"<code>{FULL_CSV}</code>; the timeline: "
        "<code>batchmap report --format timeline-csv</code></footer>\n</body>\n</html>\n"
    )
    return Written(total, len(tiles) + len(failures), thumbnails=len(tiles), failures=len(failures))


def _verdict_key(value: Any, counted: Counter[str]) -> str:
    if value is None or value == "":
        return "none"
    key = str(value)
    if key in counted or len(counted) < MAX_VERDICTS:
        return key
    return "other"


def _tile(row: dict[str, Any], report_dir: Path, verdict: str) -> str:
    identifier = escape(str(row["identifier"]))
    src = escape(image_src(str(row["path"]), report_dir))
    name = str(row.get("image_name") or "")
    confidence = confidence_text(row.get("confidence"))
    verdict_text = "" if verdict == "none" else f"{verdict} {confidence}".strip()
    title = " · ".join(part for part in (str(row["identifier"]), name, verdict_text) if part)
    caption = [f'<span class="id mono">{identifier}</span>']
    if name:
        caption.append(f'<span class="name">{escape(name)}</span>')
    if verdict_text:
        caption.append(
            f'<span class="verdict v-{escape(_css_word(verdict))}">{escape(verdict_text)}</span>'
        )
    return (
        f'<figure class="tile" data-verdict="{escape(verdict)}" title="{escape(title)}">'
        f'<a href="{src}"><img loading="lazy" src="{src}" width="64" height="64" '
        f'alt="{identifier}"></a><figcaption>{"".join(caption)}</figcaption></figure>\n'
    )


def _css_word(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())


def _failure_row(row: dict[str, Any]) -> str:
    error = str(row["error"] or "")
    if len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS] + "…"
    retryable = "" if row["retryable"] is None else ("yes" if row["retryable"] else "no")
    return (
        f'<tr><td class="id mono">{escape(str(row["identifier"]))}'
        f"{_kept_text(row.get('user_columns'))}</td>"
        f'<td class="num">{_text(row["http_status"])}</td>'
        f'<td class="num">{_text(row["attempts"])}</td>'
        f"<td>{retryable}</td>"
        f'<td class="err">{escape(error)}</td></tr>\n'
    )


def _kept_text(columns: Any) -> str:
    """The user's own CSV columns of a row, as "Name: Photo 7.jpg · ..." (clipped)."""
    if not isinstance(columns, dict) or not columns:
        return ""
    text = " · ".join(f"{key}: {value}" for key, value in columns.items())
    text = text if len(text) <= 300 else text[:300] + "…"
    return f'<div class="kept">{escape(text)}</div>'


def _text(value: Any) -> str:
    return "" if value is None else escape(str(value))


def _head(facts: dict[str, Any]) -> str:
    name = escape(Path(str(facts.get("database") or "batchmap.db")).name)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light dark">\n'
        f"<title>batchmap report: {name}</title>\n"
        f"<style>{asset('report.css')}</style>\n<script>{asset('report.js')}</script>\n"
        "</head>\n<body>\n"
    )


def _header(
    facts: dict[str, Any],
    *,
    listed: int,
    heatmaps: int,
    seen: Counter[str],
    shown: tuple[int, int],
) -> str:
    database = str(facts.get("database") or "")
    counts: dict[str, int] = facts.get("counts") or {}
    total = int(facts.get("total") or 0)
    parts = [
        f"<header>\n<h1>batchmap report: {escape(Path(database).name)}</h1>\n",
        f'<p class="sub">job database <code>{escape(database)}</code> · '
        f"{total:,} identifiers</p>\n",
        _shows(listed=listed, total=total, heatmaps=heatmaps, seen=seen, shown=shown),
        '<section class="cards" aria-label="rows per state">\n',
    ]
    for state, label in _STATE_LABELS.items():
        n = int(counts.get(state.value, 0))
        pct = f"{100 * n / total:.1f}%" if total else "&ndash;"
        parts.append(
            f'<div class="card state-{state.value}{" zero" if n == 0 else ""}"'
            f' style="--c: var(--{state.value})">'
            f'<div class="label">{label}</div><div class="n">{n:,}</div>'
            f'<div class="pct">{pct}</div></div>\n'
        )
    parts.append("</section>\n")
    if total:
        parts.append('<div class="bar" aria-hidden="true">')
        for state in _STATE_LABELS:
            n = int(counts.get(state.value, 0))
            if n:
                parts.append(
                    f'<span style="--c: var(--{state.value}); flex: {n} 1 0"'
                    f' title="{_STATE_LABELS[state]}: {n:,}"></span>'
                )
        parts.append("</div>\n")
    parts.append(_facts_list(facts))
    parts.append(
        '<nav><a href="#story">timeline</a>'
        f'<a href="#heatmaps">heatmaps ({heatmaps:,})</a>'
        f'<a href="#failures">failures ({seen[JobState.FAILED]:,})</a>'
        f'<a href="#no-heatmap">no heatmap ({seen[JobState.NO_HEATMAP]:,})</a></nav>\n'
        "</header>\n"
    )
    return "".join(parts)


def _shows(
    *, listed: int, total: int, heatmaps: int, seen: Counter[str], shown: tuple[int, int]
) -> str:
    """The sentence that says what the page shows and where the rest is."""
    tiles, failures = shown
    failed = seen[JobState.FAILED]
    scope = (
        f"all {listed:,} rows of the job"
        if listed == total
        else f"{listed:,} of the job's {total:,} rows (filtered by state)"
    )
    capped = heatmaps > tiles or failed > failures
    text = (
        f"This page accounts for {scope}: counts per state, the run's timeline and every "
        f"failure by kind. It shows {_of(tiles, heatmaps)} heatmaps as thumbnails and "
        f"{_of(failures, failed)} failed rows one by one."
    )
    if capped:
        text += f" Every row: <code>{FULL_CSV}</code>."
    text += " Thumbnails are links to the files under the heatmaps directory, not copies."
    return f'<p class="shows">{text}</p>\n'


def _of(shown: int, total: int) -> str:
    return f"all {total:,}" if shown >= total else f"{shown:,} of {total:,}"


def _facts_list(facts: dict[str, Any]) -> str:
    items: list[tuple[str, str]] = []
    if facts.get("out"):
        items.append(("heatmaps directory", f"<code>{escape(str(facts['out']))}</code>"))
    items.append(("last activity", escape(str(facts.get("last_activity") or "never"))))
    statuses = facts.get("http_status") or {}
    if statuses:
        items.append(
            (
                "last HTTP status",
                " · ".join(f"{escape(str(code))}: {int(n):,}" for code, n in statuses.items()),
            )
        )
    pause = facts.get("pause")
    if pause:
        reason = escape(str(pause.get("reason") or ""))
        items.append(("paused", f"{escape(str(pause.get('seconds_left')))} s left {reason}"))
    limits = facts.get("learned_limits") or []
    if limits:
        items.append(
            (
                "learned rate limits",
                ", ".join(
                    f"{int(item['limit'])} per {float(item['window_seconds']):g} s"
                    for item in limits
                ),
            )
        )
    body = "".join(f"<dt>{key}</dt><dd>{value}</dd>\n" for key, value in items)
    return f'<dl class="facts">\n{body}</dl>\n'


# -- heatmaps and failures -------------------------------------------------------------------


def _grid_section(
    tiles: list[str], heatmaps: int, shown: Counter[str], everywhere: Counter[str]
) -> str:
    parts = ['<section id="heatmaps">\n<h2>Heatmaps</h2>\n<div class="panel">\n']
    if not tiles:
        parts.append('<p class="empty">no heatmaps in this report</p>\n')
        parts.append("</div>\n</section>\n")
        return "".join(parts)
    if heatmaps > len(tiles):
        parts.append(
            f'<p class="note">showing the first {len(tiles):,} of {heatmaps:,} heatmaps; '
            f"see <code>{FULL_CSV}</code> for every row (with its verdict)</p>\n"
        )
    classified = {k: n for k, n in everywhere.items() if k != "none"}
    if classified:
        summary = " · ".join(
            f"{'no verdict' if k == 'none' else escape(k)}: {n:,}"
            for k, n in everywhere.most_common()
        )
        parts.append(f'<p class="note">verdicts of every row in this report: {summary}</p>\n')
    parts.append('<div class="tools">')
    parts.append(_filter_input("tiles", "filter heatmaps by identifier, name or verdict"))
    if len(shown) > 1 or classified:
        parts.append('<div class="verdicts" role="group" aria-label="filter by verdict">')
        parts.append(_verdict_button("", f"all ({len(tiles):,})", pressed=True))
        for key, n in sorted(shown.items(), key=lambda kv: (kv[0] == "none", -kv[1])):
            label = "no verdict" if key == "none" else key
            parts.append(_verdict_button(key, f"{label} ({n:,})", pressed=False))
        parts.append("</div>")
    parts.append('<span class="shown" id="tiles-shown"></span></div>\n')
    parts.append('<div class="grid" id="tiles">\n')
    parts.extend(tiles)
    parts.append("</div>\n</div>\n</section>\n")
    return "".join(parts)


def _verdict_button(key: str, label: str, *, pressed: bool) -> str:
    return (
        f'<button type="button" data-for="tiles" data-verdict="{escape(key)}" '
        f'aria-pressed="{"true" if pressed else "false"}">{escape(label)}</button>'
    )


def _failures_section(
    rows: list[str],
    failed: int,
    groups: Counter[str],
    examples: dict[str, str],
    top: Sequence[dict[str, Any]],
) -> str:
    parts = ['<section id="failures">\n<h2>Failures</h2>\n<div class="panel">\n']
    if not failed:
        parts.append('<p class="empty">no failed rows in this report</p>\n')
        parts.append("</div>\n</section>\n")
        return "".join(parts)
    parts.append('<div class="groups">\n')
    for key, n in groups.most_common():
        group = FAILURE_GROUPS[key]
        example = escape(examples.get(key) or "")
        parts.append(
            f'<div class="group{" retry" if group.retryable else ""}" data-group="{key}">'
            f'<span class="count">{n:,}</span> {escape(group.title)}'
            f"<p>{escape(group.meaning)}</p>"
            f'<p class="todo">{group.todo}</p>'
            + (f'<p class="example">for example: {example}</p>' if example else "")
            + "</div>\n"
        )
    parts.append("</div>\n")
    if top:
        parts.append('<p class="note">most frequent errors in the job:</p>\n<ul class="errors">\n')
        parts.extend(
            f'<li><span class="count">{int(item["count"]):,}&times;</span> '
            f"{escape(str(item['error'] or '(no message)'))}</li>\n"
            for item in top
        )
        parts.append("</ul>\n")
    if failed > len(rows):
        parts.append(
            f'<p class="note">showing the first {len(rows):,} of {failed:,} failed rows; '
            "<code>batchmap report --state failed --format csv</code> lists them all</p>\n"
        )
    parts.append('<div class="tools">')
    parts.append(_filter_input("failed-rows", "filter failures by identifier, status or error"))
    parts.append('<span class="shown" id="failed-rows-shown"></span></div>\n')
    parts.append(
        '<div class="table-wrap"><table>\n<thead><tr><th>identifier</th>'
        '<th class="num">HTTP status</th><th class="num">attempts</th><th>retryable</th>'
        "<th>error</th></tr></thead>\n"
        '<tbody id="failed-rows">\n'
    )
    parts.extend(rows)
    parts.append("</tbody>\n</table></div>\n</div>\n</section>\n")
    return "".join(parts)


def _no_heatmap_section(count: int) -> str:
    text = (
        f"{count:,} identifiers have no heatmap (HTTP 204 or the classifications list, final); "
        "<code>batchmap report --state no_heatmap</code> lists them"
        if count
        else "no identifier in this report lacks a heatmap"
    )
    return (
        '<section id="no-heatmap">\n<h2>No heatmap</h2>\n'
        f'<div class="panel"><p class="note">{text}</p></div>\n</section>\n'
    )


def _filter_input(target: str, label: str) -> str:
    return (
        f'<input type="search" data-filter="{target}" placeholder="{label}" aria-label="{label}">'
    )

"""The HTML report: one self-contained page (inline CSS and JS, no network) over a row stream.

Rows arrive once, in load order, possibly a million of them. Only the capped sections are
buffered (at most MAX_THUMBNAILS tiles and MAX_FAILURES table rows), so memory stays bounded.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from batchmap.models import JobState

MAX_THUMBNAILS = 1000
MAX_FAILURES = 10_000
MAX_ERROR_CHARS = 2000  # a server message can be long; the CSV/JSON reports keep it whole

_STATE_LABELS = {
    JobState.DONE: "done",
    JobState.NO_HEATMAP: "no heatmap",
    JobState.FAILED: "failed",
    JobState.PENDING: "pending",
    JobState.RUNNING: "running",
}

_CSS = """
:root {
  --bg: #f5f6f8; --panel: #fff; --ink: #1d2330; --muted: #5d6677; --line: #dde1e8;
  --done: #1f8a4c; --no_heatmap: #6b7280; --failed: #c62d3a; --pending: #b7791f;
  --running: #2b6cb0;
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    "Noto Sans", sans-serif;
}
code, td.num, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
header, main > section {
  max-width: 1280px; margin: 0 auto; padding: 20px 24px;
}
header { padding-top: 28px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 10px; }
.sub { color: var(--muted); margin: 0 0 18px; overflow-wrap: anywhere; }
.cards {
  display: grid; gap: 12px; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr));
}
.card {
  background: var(--panel); border: 1px solid var(--line); border-left: 6px solid var(--c);
  border-radius: 8px; padding: 10px 14px;
}
.card.zero { opacity: .55; }
.card .n { font-size: 26px; font-weight: 650; color: var(--c); font-variant-numeric: tabular-nums; }
.card .label { color: var(--muted); font-size: 13px; text-transform: uppercase;
  letter-spacing: .04em; }
.card .pct { color: var(--muted); font-size: 13px; }
.bar { display: flex; height: 8px; border-radius: 4px; overflow: hidden; margin: 14px 0;
  background: var(--line); }
.bar span { background: var(--c); }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0;
  font-size: 14px; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; overflow-wrap: anywhere; }
nav { margin-top: 14px; display: flex; gap: 8px; flex-wrap: wrap; }
nav a { text-decoration: none; color: var(--ink); background: var(--panel);
  border: 1px solid var(--line); border-radius: 999px; padding: 3px 12px; font-size: 14px; }
nav a:hover { border-color: var(--muted); }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 16px; }
.note { color: var(--muted); margin: 0 0 10px; }
.tools { display: flex; gap: 12px; align-items: center; margin: 0 0 12px; flex-wrap: wrap; }
.tools input {
  font: inherit; padding: 6px 10px; border: 1px solid var(--line); border-radius: 6px;
  width: min(420px, 100%); background: var(--panel);
}
.tools .shown { color: var(--muted); font-size: 13px; }
.grid { display: grid; gap: 10px; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); }
.tile { margin: 0; background: var(--bg); border: 1px solid var(--line); border-radius: 6px;
  padding: 6px; min-width: 0; }
.tile a { display: block; }
.tile img {
  display: block; width: 100%; height: auto; aspect-ratio: 1; background: #e8ebf0;
  image-rendering: pixelated; border-radius: 3px;
}
.tile.missing { border-color: var(--failed); }
.tile.missing img { visibility: hidden; }
.tile.missing figcaption { color: var(--failed); }
.tile.missing figcaption::before { content: "missing: "; }
.tile figcaption {
  margin-top: 5px; font-size: 12px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; color: var(--ink);
}
.errors { margin: 0 0 14px; padding-left: 20px; }
.errors li { overflow-wrap: anywhere; }
.errors .count { color: var(--failed); font-weight: 600; font-variant-numeric: tabular-nums; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { background: var(--bg); position: sticky; top: 0; font-weight: 600; }
th.num { text-align: right; }
td.id { max-width: 360px; overflow-wrap: anywhere; }
td.err { overflow-wrap: anywhere; }
td.num { text-align: right; white-space: nowrap; }
tbody tr:hover { background: #fafbfc; }
.empty { color: var(--muted); font-style: italic; margin: 0; }
footer { max-width: 1280px; margin: 0 auto; padding: 8px 24px 32px; color: var(--muted);
  font-size: 13px; }
"""

# Registered in <head>, before any <img> is parsed, so even the first failed load is seen.
_HEAD_JS = """
document.addEventListener("error", function (event) {
  var img = event.target;
  if (img.tagName === "IMG" && img.closest(".tile")) img.closest(".tile").classList.add("missing");
}, true);
"""

# Each filter box names the container whose children it hides; matching is case-insensitive.
_FILTER_JS = """
document.querySelectorAll("input[data-filter]").forEach(function (box) {
  var items = Array.prototype.slice.call(document.getElementById(box.dataset.filter).children);
  var shown = document.getElementById(box.dataset.filter + "-shown");
  box.addEventListener("input", function () {
    var needle = box.value.trim().toLowerCase(), count = 0;
    items.forEach(function (item) {
      var hit = !needle || item.textContent.toLowerCase().indexOf(needle) !== -1;
      item.hidden = !hit;
      if (hit) count++;
    });
    if (shown) shown.textContent = needle ? count + " of " + items.length + " match" : "";
  });
});
"""


def write_html(
    rows: Iterator[dict[str, Any]], handle: TextIO, *, facts: dict[str, Any], report_dir: Path
) -> int:
    """Write one self-contained HTML page; returns the number of rows."""
    tiles: list[str] = []
    failures: list[str] = []
    seen: Counter[str] = Counter()
    heatmaps = 0
    for row in rows:
        state = str(row["state"])
        seen[state] += 1
        if state == JobState.DONE and row.get("path"):
            heatmaps += 1
            if len(tiles) < MAX_THUMBNAILS:
                tiles.append(_tile(row, report_dir))
        elif state == JobState.FAILED and len(failures) < MAX_FAILURES:
            failures.append(_failure_row(row))
    total = sum(seen.values())
    handle.write(_head(facts))
    handle.write(_header(facts, listed=total, heatmaps=heatmaps, seen=seen))
    handle.write("<main>\n")
    handle.write(_grid_section(tiles, heatmaps))
    handle.write(_failures_section(failures, seen[JobState.FAILED], facts))
    handle.write(_no_heatmap_section(seen[JobState.NO_HEATMAP]))
    handle.write("</main>\n")
    generated = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    handle.write(
        f"<footer>generated by batchmap at {generated}; full details: "
        "<code>batchmap report --format csv</code></footer>\n"
        f"<script>{_FILTER_JS}</script>\n</body>\n</html>\n"
    )
    return total


def image_src(path: str, report_dir: Path) -> str:
    """The URL of `path` relative to `report_dir`, or a file:// URI when no relative path exists."""
    try:
        relative = os.path.relpath(path, report_dir)
    except ValueError:  # another drive on Windows
        return Path(path).absolute().as_uri()
    return quote(Path(relative).as_posix())


def _tile(row: dict[str, Any], report_dir: Path) -> str:
    identifier = escape(str(row["identifier"]))
    src = escape(image_src(str(row["path"]), report_dir))
    return (
        f'<figure class="tile" title="{identifier}"><a href="{src}">'
        f'<img loading="lazy" src="{src}" width="64" height="64" alt="{identifier}"></a>'
        f"<figcaption>{identifier}</figcaption></figure>\n"
    )


def _failure_row(row: dict[str, Any]) -> str:
    error = str(row["error"] or "")
    if len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS] + "…"
    retryable = "" if row["retryable"] is None else ("yes" if row["retryable"] else "no")
    return (
        f'<tr><td class="id mono">{escape(str(row["identifier"]))}</td>'
        f'<td class="num">{_text(row["http_status"])}</td>'
        f'<td class="num">{_text(row["attempts"])}</td>'
        f"<td>{retryable}</td>"
        f'<td class="err">{escape(error)}</td></tr>\n'
    )


def _text(value: Any) -> str:
    return "" if value is None else escape(str(value))


def _head(facts: dict[str, Any]) -> str:
    name = escape(Path(str(facts.get("database") or "batchmap.db")).name)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>batchmap report: {name}</title>\n"
        f"<style>{_CSS}</style>\n<script>{_HEAD_JS}</script>\n</head>\n<body>\n"
    )


def _header(facts: dict[str, Any], *, listed: int, heatmaps: int, seen: Counter[str]) -> str:
    database = str(facts.get("database") or "")
    counts: dict[str, int] = facts.get("counts") or {}
    total = int(facts.get("total") or 0)
    parts = [
        f"<header>\n<h1>batchmap report: {escape(Path(database).name)}</h1>\n",
        f'<p class="sub">job database <code>{escape(database)}</code> · '
        f"{total:,} identifiers</p>\n",
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
    parts.append(_facts_list(facts, listed=listed, total=total))
    parts.append(
        f'<nav><a href="#heatmaps">heatmaps ({heatmaps:,})</a>'
        f'<a href="#failures">failures ({seen[JobState.FAILED]:,})</a>'
        f'<a href="#no-heatmap">no heatmap ({seen[JobState.NO_HEATMAP]:,})</a></nav>\n'
        "</header>\n"
    )
    return "".join(parts)


def _facts_list(facts: dict[str, Any], *, listed: int, total: int) -> str:
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
    if listed != total:
        items.append(("this report", f"lists {listed:,} of the {total:,} rows (filtered)"))
    body = "".join(f"<dt>{key}</dt><dd>{value}</dd>\n" for key, value in items)
    return f'<dl class="facts">\n{body}</dl>\n'


def _grid_section(tiles: list[str], heatmaps: int) -> str:
    parts = ['<section id="heatmaps">\n<h2>Heatmaps</h2>\n<div class="panel">\n']
    if not tiles:
        parts.append('<p class="empty">no heatmaps in this report</p>\n')
    else:
        if heatmaps > len(tiles):
            parts.append(
                f'<p class="note">showing the first {len(tiles):,} of {heatmaps:,} heatmaps</p>\n'
            )
        parts.append(_filter_box("tiles", "filter heatmaps by identifier"))
        parts.append('<div class="grid" id="tiles">\n')
        parts.extend(tiles)
        parts.append("</div>\n")
    parts.append("</div>\n</section>\n")
    return "".join(parts)


def _failures_section(rows: list[str], failed: int, facts: dict[str, Any]) -> str:
    parts = ['<section id="failures">\n<h2>Failures</h2>\n<div class="panel">\n']
    if not rows:
        parts.append('<p class="empty">no failed rows in this report</p>\n')
        parts.append("</div>\n</section>\n")
        return "".join(parts)
    top = facts.get("top_errors") or []
    if top:
        parts.append('<p class="note">most frequent errors:</p>\n<ul class="errors">\n')
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
    parts.append(_filter_box("failed-rows", "filter failures by identifier, status or error"))
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
        f"{count:,} identifiers have no heatmap (HTTP 204, final); "
        "<code>batchmap report --state no_heatmap</code> lists them"
        if count
        else "no identifier in this report lacks a heatmap"
    )
    return (
        '<section id="no-heatmap">\n<h2>No heatmap</h2>\n'
        f'<div class="panel"><p class="note">{text}</p></div>\n</section>\n'
    )


def _filter_box(target: str, label: str) -> str:
    return (
        f'<div class="tools"><input type="search" data-filter="{target}" '
        f'placeholder="{label}" aria-label="{label}">'
        f'<span class="shown" id="{target}-shown"></span></div>\n'
    )

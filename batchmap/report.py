"""Status summaries and streamed exports of the job table (csv, json, jsonl, html)."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from batchmap.models import JobState
from batchmap.store import REPORT_COLUMNS, Store


class Format(StrEnum):
    """Report formats."""

    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"
    HTML = "html"


def status_facts(store: Store, *, now: float | None = None) -> dict[str, Any]:
    """Everything `batchmap status` shows, as JSON-ready data."""
    counts = store.counts()
    by_status, last_activity = store.activity()
    pacer = store.get_meta("pacer") or {}
    moment = time.time() if now is None else now
    paused_until = float(pacer.get("paused_until", 0.0))
    return {
        "database": str(store.path),
        "total": sum(counts.values()),
        "counts": {state.value: n for state, n in counts.items()},
        "http_status": {str(code) if code is not None else "none": n for code, n in by_status},
        "top_errors": [{"error": error, "count": n} for error, n in store.top_errors()],
        "last_activity": last_activity,
        "out": store.get_meta("out"),
        "pause": (
            {
                "seconds_left": round(paused_until - moment, 1),
                "reason": pacer.get("pause_reason", ""),
            }
            if paused_until > moment
            else None
        ),
        "learned_limits": [
            {"limit": int(limit), "window_seconds": window}
            for limit, window in sorted(pacer.get("windows", {}).items(), key=lambda kv: int(kv[0]))
        ],
        "pacer_rate": pacer.get("rate"),
    }


def export(
    store: Store,
    handle: TextIO,
    *,
    fmt: Format,
    state: JobState | None = None,
    report_dir: Path | None = None,
) -> int:
    """Write one record per row to `handle`, streaming; returns the number of rows.

    `report_dir` is where the report will live: the HTML report links heatmaps relative to it.
    """
    rows = store.rows(state=state)
    if fmt is Format.CSV:
        return _write_csv(rows, handle)
    if fmt is Format.JSONL:
        return _write_jsonl(rows, handle)
    if fmt is Format.JSON:
        return _write_json(rows, handle)
    from batchmap.report_html import write_html  # only the HTML report needs it

    base = (report_dir or Path.cwd()).absolute()
    return write_html(rows, handle, facts=status_facts(store), report_dir=base)


def _write_csv(rows: Iterator[dict[str, Any]], handle: TextIO) -> int:
    writer = csv.DictWriter(handle, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for count, row in enumerate(rows, 1):  # noqa: B007 - the count is the result
        writer.writerow(row)
    return count


def _write_jsonl(rows: Iterator[dict[str, Any]], handle: TextIO) -> int:
    count = 0
    for count, row in enumerate(rows, 1):  # noqa: B007
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return count


def _write_json(rows: Iterator[dict[str, Any]], handle: TextIO) -> int:
    # A JSON array written element by element: a million rows never sit in memory at once.
    handle.write("[")
    count = 0
    for count, row in enumerate(rows, 1):
        handle.write(("\n" if count == 1 else ",\n") + json.dumps(row, ensure_ascii=False))
    handle.write("\n]\n")
    return count


def read_status(db_path: Path) -> dict[str, Any]:
    """The facts `batchmap status` shows, from an existing job database."""
    store = Store(db_path, create=False)
    try:
        return status_facts(store)
    finally:
        store.close()


def write_report(
    db_path: Path, *, fmt: Format, state: JobState | None = None, output: Path | None = None
) -> int:
    """Export the job table to `output` (standard output when None); the number of rows."""
    store = Store(db_path, create=False)
    try:
        if output is None:
            return export(store, sys.stdout, fmt=fmt, state=state)
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "w", encoding="utf-8", newline="") as handle:
            return export(store, handle, fmt=fmt, state=state, report_dir=output.parent)
    finally:
        store.close()

"""Status summaries and streamed exports of the job table (csv, json, jsonl, html, timeline-csv)."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from batchmap import timeline
from batchmap.errors import InputError
from batchmap.lock import JobLock
from batchmap.models import TIMELINE_COLUMNS, JobState, Written
from batchmap.numeric import finite
from batchmap.originals import META_KEY as ORIGINALS_KEY
from batchmap.originals import remembered as remembered_originals
from batchmap.report_html import write_html
from batchmap.store import REPORT_COLUMNS, Store
from batchmap.timeline import History

# Stalls `status` lists: the most recent ones of the last 24 hours.
MAX_STATUS_STALLS = 10


class Format(StrEnum):
    """Report formats."""

    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"
    HTML = "html"
    TIMELINE_CSV = "timeline-csv"  # one row per (run, minute) of the timeline table


def read_history(store: Store) -> History:
    """The runs, timeline and verdict counts: the one place report.py reads them."""
    return History(runs=store.runs(), minutes=store.timeline(), verdicts=store.verdict_counts())


def status_facts(store: Store, *, now: float | None = None, story: bool = True) -> dict[str, Any]:
    """Everything `batchmap status` shows, as JSON-ready data (every number finite).

    `story=False` leaves out the timeline's story (the HTML report draws its own).
    """
    counts = store.counts()
    by_status, last_activity = store.activity()
    pacer = store.get_meta("pacer") or {}
    moment = time.time() if now is None else now
    paused_until = finite(pacer.get("paused_until")) or 0.0
    facts: dict[str, Any] = {
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
                "until": timeline.iso(paused_until),
                "reason": str(pacer.get("pause_reason", "")),
            }
            if paused_until > moment
            else None
        ),
        "learned_limits": learned_limits(pacer.get("windows")),
        "base_url": store.get_meta("base_url"),
        "pacer_rate": finite(pacer.get("rate")),
    }
    if story:
        remaining = counts[JobState.PENDING] + counts[JobState.RUNNING]
        resolved = sum(counts.values()) - remaining
        facts.update(
            story_facts(read_history(store), remaining=remaining, now=moment, resolved=resolved)
        )
    return facts


def learned_limits(windows: Any) -> list[dict[str, Any]]:
    """The fixed windows a pacer state saved, as `{limit, window_seconds}`, fewest first."""
    limits = []
    for limit, window in (windows or {}).items() if isinstance(windows, Mapping) else ():
        count, seconds = finite(_number(limit)), finite(window)
        if count is not None and seconds is not None and count > 0 and seconds > 0:
            limits.append({"limit": int(count), "window_seconds": seconds})
    return sorted(limits, key=lambda item: item["limit"])


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def story_facts(
    history: History, *, remaining: int, now: float, resolved: int | None = None
) -> dict[str, Any]:
    """The timeline's story for `status`: last 24 hours, stalls, requests, ETA, runs, verdicts.

    `resolved`: rows of the job in a final state, each counted once (the timeline counts a
    row fetched again twice); requests per resolved identifier divide by it.
    """
    minutes = history.minutes
    day = timeline.last_hours(minutes, now=now, hours=24)
    per_hour = [b.finished for b in day]
    runs = timeline.run_summaries(history.runs, minutes)
    stalls = sorted(
        (
            span
            for span in [*timeline.stall_spans(minutes), *timeline.idle_spans(runs, now=now)]
            if timeline.worth_listing(span) and span.end > now - 24 * timeline.HOUR
        ),
        key=lambda span: span.start,
    )
    sums = timeline.totals(minutes)
    finished = sums.finished if resolved is None else resolved
    per_finished = sums.requests / finished if finished else None
    estimate = timeline.eta(minutes, remaining=remaining)
    return {
        "last_24h": {
            "start": timeline.iso(day[0].start) if day else None,
            "finishes_per_hour": per_hour,
            "sparkline": timeline.sparkline(per_hour),
        },
        "stalls": [s.as_json() for s in stalls[-MAX_STATUS_STALLS:]],
        "requests": {
            "total": sums.requests,
            "classification": sums.classification_requests,
            "rate_limited": sums.answers.get("rate_limited", 0),
            "rate_limited_share": round(sums.rate_limited_share, 4),
            "finished": finished,
            "per_resolved_identifier": None if per_finished is None else round(per_finished, 3),
        },
        "eta": _eta_facts(estimate, now=now),
        "runs": {"count": len(runs), "last": _run_facts(runs[-1]) if runs else None},
        "verdicts": {str(k): int(v) for k, v in history.verdicts.items()},
    }


def _eta_facts(estimate: timeline.Eta | None, *, now: float) -> dict[str, Any] | None:
    if estimate is None:
        return None
    finish = estimate.finish_at(now)
    return {
        "remaining": estimate.remaining,
        "rate_per_hour": round(estimate.rate_per_hour, 1),
        "measured_over_minutes": estimate.window_minutes,
        "seconds": None if estimate.seconds is None else round(estimate.seconds),
        "finish_at": None if finish is None or not math.isfinite(finish) else timeline.iso(finish),
    }


def _run_facts(run: timeline.RunSummary) -> dict[str, Any]:
    duration = run.duration
    return {
        "run_id": run.run_id,
        "started_at": None if run.started is None else timeline.iso(run.started),
        "ended_at": None if run.ended is None else timeline.iso(run.ended),
        "seconds": None if duration is None else round(duration),
        "exit_code": run.exit_code,
        "meaning": timeline.exit_meaning(run.exit_code) if run.ended is not None else None,
    }


def export(
    store: Store,
    handle: TextIO,
    *,
    fmt: Format,
    state: JobState | None = None,
    report_dir: Path | None = None,
    now: float | None = None,
) -> Written:
    """Write the report to `handle`, streaming the rows.

    `report_dir` is where the report will live: the HTML report links heatmaps relative to it.
    """
    if fmt is Format.TIMELINE_CSV:
        if state is not None:
            raise InputError("--state selects job rows; --format timeline-csv has none")
        count = write_timeline_csv(read_history(store).minutes, handle)
        return Written(count, count)
    rows = store.rows(state=state)
    if fmt is not Format.HTML:
        count = write_rows(rows, handle, fmt=fmt, columns=kept_column_names(store))
        return Written(count, count)

    moment = time.time() if now is None else now
    base = (report_dir or Path.cwd()).absolute()
    return write_html(
        rows,
        handle,
        facts=status_facts(store, now=moment, story=False),
        history=read_history(store),
        report_dir=base,
        now=moment,
        originals=remembered_originals(store.get_meta(ORIGINALS_KEY)),
    )


def kept_column_names(store: Store) -> list[str]:
    """The names of the CSV columns kept beside the identifiers (`user_columns`), in order."""
    names = store.get_meta("user_columns")
    return [str(name) for name in names] if isinstance(names, list) else []


def write_rows(
    rows: Iterable[dict[str, Any]],
    handle: TextIO,
    *,
    fmt: Format,
    columns: Sequence[str] = (),
) -> int:
    """Job rows as csv, json or jsonl (columns: store.REPORT_COLUMNS); the number of rows.

    The user's kept CSV columns are an object `user_columns` in json and jsonl; csv has it as
    compact JSON, and each of `columns` as a column of its own after ours (suffixed " (csv)"
    if it shares a name with one of ours).
    """
    if fmt is Format.CSV:
        return _write_csv(rows, handle, columns=columns)
    if fmt is Format.JSONL:
        return _write_jsonl(rows, handle)
    if fmt is Format.JSON:
        return _write_json(rows, handle)
    raise ValueError(f"write_rows cannot write {fmt}")


def write_timeline_csv(minutes: Iterable[Mapping[str, Any]], handle: TextIO) -> int:
    """One CSV row per (run, minute); JSON columns (pause_reasons, limits) as compact JSON."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(TIMELINE_COLUMNS)
    count = 0
    for count, row in enumerate(minutes, 1):  # noqa: B007 - the count is the result
        writer.writerow(_cell(row.get(column)) for column in TIMELINE_COLUMNS)
    return count


def _cell(value: Any) -> Any:
    # Seconds to a tenth and rates to a thousandth: 12.300000000000001 is noise in a sheet.
    if isinstance(value, dict):
        value = {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return "" if value is None else _rounded(value)


def _rounded(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 1) if abs(value) >= 1 else round(value, 3)
    return value


def _write_csv(rows: Iterable[dict[str, Any]], handle: TextIO, *, columns: Sequence[str]) -> int:
    theirs = {name: f"{name} (csv)" if name in REPORT_COLUMNS else name for name in columns}
    writer = csv.DictWriter(
        handle,
        fieldnames=[*REPORT_COLUMNS, *theirs.values()],
        lineterminator="\n",
        extrasaction="ignore",
    )
    writer.writeheader()
    count = 0
    for count, row in enumerate(rows, 1):  # noqa: B007 - the count is the result
        kept = row.get("user_columns")
        if kept:
            row = {**row, **{theirs[k]: v for k, v in kept.items() if k in theirs}}
            row["user_columns"] = json.dumps(kept, ensure_ascii=False, separators=(",", ":"))
        writer.writerow(row)
    return count


def _write_jsonl(rows: Iterable[dict[str, Any]], handle: TextIO) -> int:
    count = 0
    for count, row in enumerate(rows, 1):  # noqa: B007
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return count


def _write_json(rows: Iterable[dict[str, Any]], handle: TextIO) -> int:
    # A JSON array written element by element: a million rows never sit in memory at once.
    handle.write("[")
    count = 0
    for count, row in enumerate(rows, 1):
        handle.write(("\n" if count == 1 else ",\n") + json.dumps(row, ensure_ascii=False))
    handle.write("\n]\n")
    return count


def read_status(db_path: Path) -> dict[str, Any]:
    """The facts `batchmap status` shows, from an existing job database."""
    with Store(db_path, create=False) as store:
        facts = status_facts(store)
    facts["active_run_pid"] = JobLock.owner(db_path)  # a run holding the lock right now
    return facts


def write_report(
    db_path: Path, *, fmt: Format, state: JobState | None = None, output: Path | None = None
) -> Written:
    """Export the job table to `output` (standard output when None).

    A reader that closes standard output early (`batchmap report | head -1`) ends the
    report quietly: the result has `reader_gone` set, and nothing more is written.
    """
    store = Store(db_path, create=False)
    try:
        if output is None:
            return _to_stdout(store, fmt=fmt, state=state)
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "w", encoding="utf-8", newline="") as handle:
            return export(store, handle, fmt=fmt, state=state, report_dir=output.parent)
    finally:
        store.close()


def _to_stdout(store: Store, *, fmt: Format, state: JobState | None) -> Written:
    try:
        written = export(store, sys.stdout, fmt=fmt, state=state)
        sys.stdout.flush()  # inside the try: the last buffer is where a closed pipe shows
    except BrokenPipeError:
        silence_stdout()
        return Written(0, 0, reader_gone=True)
    return written


def silence_stdout() -> None:
    """Point stdout at /dev/null once its reader has gone (`| head`): the one way we do it."""
    # Python flushes stdout again at exit; pointing it at /dev/null keeps that flush from
    # printing "Exception ignored ... BrokenPipeError" (the recipe in Python's signal docs).
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's captured output)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def story_lines(facts: dict[str, Any]) -> list[str]:
    """The timeline's story from `status_facts`, as lines for the terminal (`batchmap status`)."""
    lines = []
    day = facts.get("last_24h") or {}
    per_hour = day.get("finishes_per_hour") or []
    if any(per_hour):
        lines.append(
            f"last 24h  {day['sparkline']}  {sum(per_hour):,} finished, "
            f"at most {max(per_hour):,} in an hour (since {day['start']})"
        )
    requests = facts.get("requests") or {}
    if requests.get("total"):
        per_row = requests.get("per_resolved_identifier")
        lines.append(
            f"requests: {requests['total']:,}, {100 * requests['rate_limited_share']:.2g}% "
            "answered 429"
            + (f", {per_row:.2f} per resolved identifier" if per_row is not None else "")
        )
    eta = facts.get("eta")
    if eta and eta.get("remaining") and eta.get("seconds") is not None:
        lines.append(
            f"ETA: {timeline.human_seconds(eta['seconds'])} for {eta['remaining']:,} rows at "
            f"{eta['rate_per_hour']:,.0f} rows/hour (about {eta['finish_at']} if running)"
        )
    for stall in facts.get("stalls") or []:
        reasons = "; ".join(stall.get("reasons") or {})
        word = {"outage": "outage", "pause": "paused", "idle": "not running"}[stall["kind"]]
        lines.append(
            f"{word} {stall['start']} to {stall['end']}" + (f": {reasons}" if reasons else "")
        )
    last = (facts.get("runs") or {}).get("last")
    if last:
        end = (
            f"ended {last['ended_at']}, exit {last['exit_code']} ({last['meaning']})"
            if last.get("ended_at")
            else "no end recorded (running, or killed)"
        )
        lines.append(f"last run: {last['run_id']}, started {last['started_at']}, {end}")
    verdicts = facts.get("verdicts") or {}
    if verdicts:
        lines.append("verdicts: " + " · ".join(f"{k}: {n:,}" for k, n in verdicts.items()))
    limits = facts.get("learned_limits") or []
    if limits:
        lines.append(
            "learned limits: "
            + ", ".join(f"{item['limit']} per {item['window_seconds']:g}s" for item in limits)
        )
    return lines

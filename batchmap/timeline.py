"""The run's story from the `runs` and `timeline` tables: pure functions over plain row dicts.

Rows are dicts as `Store.runs()` and `Store.timeline()` return them (DESIGN.md's schema, JSON
columns decoded). Nothing here reads a clock: callers pass `now` (epoch seconds), so every
function is a table of inputs and outputs. Every number returned is finite.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from itertools import pairwise
from typing import Any

from batchmap.numeric import finite

Row = Mapping[str, Any]

MINUTE = 60.0
HOUR = 3600.0
# A minute counts as paused when the pool waited at least this long in it: pacing at the ceiling
# adds short waits to every minute, which are not a story worth a shaded span.
PAUSED_MINUTE_SECONDS = 30.0
# A pause span this long or longer is a "long pause" worth listing (outages always are).
LONG_PAUSE_SECONDS = 120.0
# A gap between runs shorter than this is a restart, not the job standing still.
IDLE_GAP_SECONDS = 120.0
# The most history behind an ETA's rate, live (progress) and saved (status, report): long
# enough that a fixed window's pause does not swing it, short enough to follow a new pace.
ETA_WINDOW = 600.0
SPARKS = "▁▂▃▄▅▆▇█"
# Answer classes of the timeline, in the order a legend shows them.
ANSWER_CLASSES: tuple[tuple[str, str], ...] = (
    ("ok", "200 heatmap"),
    ("no_heatmap", "204 no heatmap"),
    ("not_found", "404"),
    ("client_error", "other 4xx"),
    ("server_error", "5xx"),
    ("rate_limited", "429"),
    ("network_error", "network error"),
)


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bar of a chart: what happened from `start` (epoch seconds) for `seconds`."""

    start: float
    seconds: float
    finished: int = 0
    requests: int = 0
    rate_limited: int = 0


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of time the job did not fetch: an outage, a long pause, or no run at all."""

    kind: str  # "outage", "pause" or "idle"
    start: float
    end: float
    seconds: float  # seconds waited inside the span (idle: its length)
    reasons: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for a tooltip or the terminal."""
        length = human_seconds(self.end - self.start)
        head = f"{_KIND_WORDS[self.kind]} {iso(self.start)} to {iso(self.end)} ({length})"
        if not self.reasons:
            return head
        top = sorted(self.reasons.items(), key=lambda kv: -kv[1])[:3]
        return (
            head
            + ": "
            + "; ".join(
                f"{reason} ({human_seconds(waited)})" if waited else reason
                for reason, waited in top
            )
        )

    def as_json(self) -> dict[str, Any]:
        """JSON-ready, with ISO times."""
        return {
            "kind": self.kind,
            "start": iso(self.start),
            "end": iso(self.end),
            "seconds": round(self.seconds, 1),
            "reasons": {k: round(v, 1) for k, v in self.reasons.items()},
        }


_KIND_WORDS = {"outage": "outage", "pause": "paused", "idle": "not running"}


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run as the report lists it."""

    run_id: int
    started: float | None
    ended: float | None  # None: no end recorded (killed, or still running)
    last_seen: float | None  # the end of its last timeline minute
    exit_code: int | None
    version: str | None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (or to the last minute seen)."""
        end = self.ended if self.ended is not None else self.last_seen
        if self.started is None or end is None:
            return None
        return max(0.0, end - self.started)


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over timeline rows."""

    requests: int = 0
    classification_requests: int = 0
    finished: int = 0
    paused_seconds: float = 0.0
    outage_seconds: float = 0.0
    answers: dict[str, int] = field(default_factory=dict)

    @property
    def rate_limited_share(self) -> float:
        """The share of requests answered 429 (0 when nothing was sent)."""
        return self.answers.get("rate_limited", 0) / self.requests if self.requests else 0.0

    @property
    def requests_per_finished(self) -> float | None:
        """Requests per resolved identifier (a row that reached a final state); None before any."""
        return self.requests / self.finished if self.finished else None


@dataclass(frozen=True, slots=True)
class Eta:
    """When the remaining rows finish at the recent rate."""

    remaining: int
    rate_per_hour: float
    seconds: float | None  # None when the recent rate is zero
    window_minutes: int  # running minutes the rate was measured over

    def finish_at(self, now: float) -> float | None:
        """The wall-clock time of the finish, if the job keeps running from `now`."""
        return None if self.seconds is None else now + self.seconds


@dataclass(frozen=True, slots=True)
class History:
    """What the `runs` and `timeline` tables hold, plus verdict counts: the report's input."""

    runs: Sequence[Row] = ()
    minutes: Sequence[Row] = ()
    verdicts: Mapping[str, int] = field(default_factory=dict)


# -- time ------------------------------------------------------------------------------------


def parse_time(text: str | None) -> float | None:
    """Epoch seconds of an ISO 8601 time as stored ('...Z'), None for None or garbage."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(seconds: float | None = None, *, ms: bool = False) -> str:
    """'YYYY-MM-DDTHH:MM:SSZ' for epoch seconds (now when None); `ms` adds milliseconds."""
    moment = datetime.now(UTC) if seconds is None else datetime.fromtimestamp(seconds, UTC)
    text = moment.isoformat(timespec="milliseconds" if ms else "seconds")
    return text.replace("+00:00", "Z")


def human_seconds(seconds: float | None) -> str:
    """'45s', '4m05s', '12m', '3h20m', '2d04h': short and rounded; '?' when unknown."""
    if seconds is None:
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m" + (f"{s % 60:02d}s" if s < 600 and s % 60 else "")
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


@lru_cache(maxsize=1 << 16)
def _parse_minute(text: str) -> float | None:
    return parse_time(text)


def _minute_of(row: Row) -> float | None:
    # A report parses each of ~17,000 minutes several times: the cache makes that once.
    minute = row.get("minute")
    return _parse_minute(minute) if isinstance(minute, str) else None


def _int(row: Row, key: str) -> int:
    # A count past 2**53 is no count batchmap wrote: treated as missing, so sums stay finite.
    value = finite(row.get(key))
    return int(value) if value is not None and abs(value) < 2**53 else 0


def _float(row: Row, key: str) -> float:
    value = finite(row.get(key))
    return value if value is not None and abs(value) < 2**53 else 0.0


def _reasons(row: Row) -> dict[str, float]:
    value = row.get("pause_reasons")
    if isinstance(value, str):  # undecoded JSON
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in ((k, finite(v)) for k, v in value.items()) if v is not None}


def timed(minutes: Iterable[Row]) -> list[tuple[float, Row]]:
    """Rows with a parseable minute, as (epoch seconds, row), in time order."""
    pairs = [(t, row) for row in minutes if (t := _minute_of(row)) is not None]
    pairs.sort(key=lambda pair: (pair[0], _int(pair[1], "run_id")))
    return pairs


# -- buckets ---------------------------------------------------------------------------------


def buckets(
    minutes: Iterable[Row], *, step: float, start: float | None = None, end: float | None = None
) -> list[Bucket]:
    """Finishes, requests and 429s per `step` seconds from `start` to `end`, zero-filled.

    Bounds default to the first and last minute of the rows; `start` is floored to `step`.
    """
    pairs = timed(minutes)
    if not pairs and (start is None or end is None):
        return []
    first = start if start is not None else pairs[0][0]
    last = end if end is not None else pairs[-1][0] + MINUTE
    origin = math.floor(first / step) * step
    count = max(1, math.ceil((last - origin) / step))
    finished = [0] * count
    requests = [0] * count
    limited = [0] * count
    for moment, row in pairs:
        index = int((moment - origin) // step)
        if 0 <= index < count:
            finished[index] += _int(row, "finished")
            requests[index] += _int(row, "requests")
            limited[index] += _int(row, "rate_limited")
    return [
        Bucket(origin + i * step, step, finished[i], requests[i], limited[i]) for i in range(count)
    ]


def coarsen(series: Sequence[Bucket], *, most: int) -> list[Bucket]:
    """Merge neighbouring buckets so at most `most` remain (a year of hours becomes days)."""
    if len(series) <= most:
        return list(series)
    factor = math.ceil(len(series) / most)
    merged = []
    for i in range(0, len(series), factor):
        group = series[i : i + factor]
        merged.append(
            Bucket(
                group[0].start,
                group[0].seconds * factor,
                sum(b.finished for b in group),
                sum(b.requests for b in group),
                sum(b.rate_limited for b in group),
            )
        )
    return merged


def last_run_minutes(minutes: Sequence[Row], runs: Sequence[Row]) -> tuple[int | None, list[Row]]:
    """The newest run's id and its timeline rows (the newest run that has any)."""
    ids = [_int(run, "run_id") for run in runs] + [_int(row, "run_id") for row in minutes]
    for run_id in sorted(set(ids), reverse=True):
        rows = [row for row in minutes if _int(row, "run_id") == run_id]
        if rows:
            return run_id, rows
    return None, []


# -- spans -----------------------------------------------------------------------------------


def minute_kind(row: Row) -> str | None:
    """'outage', 'pause' or None: what a timeline minute was, one class per minute."""
    if _float(row, "outage_seconds") > 0:
        return "outage"
    if _float(row, "paused_seconds") >= PAUSED_MINUTE_SECONDS:
        return "pause"
    return None


def stall_spans(minutes: Iterable[Row]) -> list[Span]:
    """Outages and long pauses: neighbouring minutes of one kind (and one run) merged."""
    spans: list[Span] = []
    open_kind: str | None = None
    open_run = -1
    start = end = waited = 0.0
    reasons: Counter[str] = Counter()

    def close() -> None:
        if open_kind is not None:
            spans.append(Span(open_kind, start, end, waited, dict(reasons)))

    for moment, row in timed(minutes):
        kind = minute_kind(row)
        run_id = _int(row, "run_id")
        key = "outage_seconds" if kind == "outage" else "paused_seconds"
        if kind is not None and kind == open_kind and run_id == open_run and moment <= end:
            end = moment + MINUTE
            waited += _float(row, key)
            reasons.update(_reasons(row))
            continue
        close()
        open_kind = kind
        if kind is not None:
            open_run, start, end = run_id, moment, moment + MINUTE
            waited = _float(row, key)
            reasons = Counter(_reasons(row))
    close()
    return spans


def worth_listing(span: Span) -> bool:
    """Outages and stops always; pauses when they lasted LONG_PAUSE_SECONDS or more."""
    return span.kind != "pause" or span.end - span.start >= LONG_PAUSE_SECONDS


def idle_spans(runs: Sequence[RunSummary], *, now: float) -> list[Span]:
    """The stretches when no run was going: between runs, and after the last one ended."""
    spans = []
    ordered = sorted((r for r in runs if r.started is not None), key=lambda r: r.started or 0.0)
    for before, after in pairwise(ordered):
        stop = before.ended if before.ended is not None else before.last_seen
        begin = after.started
        if stop is not None and begin is not None and begin - stop >= IDLE_GAP_SECONDS:
            spans.append(Span("idle", stop, begin, begin - stop, _why(before)))
    if ordered:
        # After the newest run: its end, or its last minute when it has none (killed, or a
        # run that has been silent too long to be going).
        last = ordered[-1]
        stop = last.ended if last.ended is not None else last.last_seen
        if stop is not None and now - stop >= IDLE_GAP_SECONDS:
            spans.append(Span("idle", stop, now, now - stop, _why(last)))
    return spans


def _why(run: RunSummary) -> dict[str, float]:
    if run.ended is None:
        return {f"run {run.run_id} has no end recorded (killed?)": 0.0}
    return {f"run {run.run_id} {exit_meaning(run.exit_code)}": 0.0}


def exit_meaning(code: int | None) -> str:
    """What a run's exit code says, in words."""
    words = {
        0: "finished every row",
        1: "finished with failed rows",
        2: "stopped on a usage or input error",
        3: "stopped: the API key was refused (401/403)",
        4: "stopped: the API could not be used as given",
        5: "stopped on local storage trouble",
        130: "was interrupted",
    }
    if code is None:
        return "has no exit code recorded"
    return words.get(code, f"exited with code {code}")


# -- runs, totals, ETA -----------------------------------------------------------------------


def run_summaries(runs: Iterable[Row], minutes: Iterable[Row]) -> list[RunSummary]:
    """Each run with its start, end, last minute seen and exit code, oldest first."""
    last_seen: dict[int, float] = {}
    for moment, row in timed(minutes):
        run_id = _int(row, "run_id")
        last_seen[run_id] = max(last_seen.get(run_id, 0.0), moment + MINUTE)
    summaries = []
    for run in runs:
        run_id = _int(run, "run_id")
        code = run.get("exit_code")
        summaries.append(
            RunSummary(
                run_id=run_id,
                started=parse_time(run.get("started_at")),
                ended=parse_time(run.get("ended_at")),
                last_seen=last_seen.get(run_id),
                exit_code=int(code) if isinstance(code, int) else None,
                version=str(run["version"]) if run.get("version") else None,
            )
        )
    summaries.sort(key=lambda r: r.run_id)
    return summaries


def totals(minutes: Iterable[Row]) -> Totals:
    """Requests, answers by class, finishes and waits summed over the rows."""
    answers: Counter[str] = Counter()
    requests = classification = finished = 0
    paused = outage = 0.0
    for row in minutes:
        requests += _int(row, "requests")
        classification += _int(row, "classification_requests")
        finished += _int(row, "finished")
        paused += _float(row, "paused_seconds")
        outage += _float(row, "outage_seconds")
        for key, _ in ANSWER_CLASSES:
            answers[key] += _int(row, key)
    return Totals(requests, classification, finished, paused, outage, dict(answers))


def eta(
    minutes: Sequence[Row], *, remaining: int, window_minutes: int = int(ETA_WINDOW // MINUTE)
) -> Eta | None:
    """The remaining rows over the finish rate of the last `window_minutes` minutes of running.

    Time between runs does not count: the rate is per minute a run was going. None when
    there is no timeline; `seconds` is None when the recent rate is zero.
    """
    pairs = timed(minutes)
    if not pairs:
        return None
    horizon = pairs[-1][0] - (window_minutes - 1) * MINUTE
    recent = [(t, row) for t, row in pairs if t >= horizon]
    spans: dict[int, tuple[float, float]] = {}
    finished = 0
    for moment, row in recent:
        run_id = _int(row, "run_id")
        low, high = spans.get(run_id, (moment, moment))
        spans[run_id] = (min(low, moment), max(high, moment))
        finished += _int(row, "finished")
    running = sum(int((high - low) // MINUTE) + 1 for low, high in spans.values())
    rate_per_minute = finished / running
    seconds = remaining / rate_per_minute * MINUTE if rate_per_minute > 0 else None
    if remaining == 0:
        seconds = 0.0
    return Eta(remaining, rate_per_minute * 60, seconds, running)


def ceiling_per_minute(limits: Iterable[Any]) -> float | None:
    """The tightest learned limit as requests per minute ([[limit, window_s], ...] or dicts)."""
    rates = []
    for item in limits or ():
        if isinstance(item, Mapping):
            limit, window = finite(item.get("limit")), finite(item.get("window_seconds"))
        elif isinstance(item, list | tuple) and len(item) == 2:
            limit, window = finite(item[0]), finite(item[1])
        else:
            continue
        if limit and window and limit > 0 and window > 0:
            rates.append(limit / window * MINUTE)
    return min(rates) if rates else None


def latest_limits(minutes: Sequence[Row]) -> list[Any]:
    """The learned limits of the newest timeline row that has any."""
    for _, row in reversed(timed(minutes)):
        limits = row.get("limits")
        if isinstance(limits, str):
            try:
                limits = json.loads(limits)
            except ValueError:
                continue
        if limits:
            return list(limits)
    return []


# -- the terminal ----------------------------------------------------------------------------


def sparkline(values: Sequence[float]) -> str:
    """One block character per value; zero is the lowest block and any finish shows above it."""
    top = max((v for v in values if math.isfinite(v)), default=0)
    if top <= 0:
        return SPARKS[0] * len(values)
    line = []
    for value in values:
        if not math.isfinite(value) or value <= 0:
            line.append(SPARKS[0])
        else:
            line.append(SPARKS[1 + min(len(SPARKS) - 2, int(value / top * (len(SPARKS) - 1)))])
    return "".join(line)


def last_hours(minutes: Iterable[Row], *, now: float, hours: int = 24) -> list[Bucket]:
    """Finishes per hour for the `hours` hours up to and including the current one."""
    end = (math.floor(now / HOUR) + 1) * HOUR
    return buckets(minutes, step=HOUR, start=end - hours * HOUR, end=end)

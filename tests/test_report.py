"""Exports and `status` facts: the columns, the timeline, a closed pipe, finite numbers."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from batchmap import report, store
from batchmap.errors import InputError
from batchmap.models import JobState, Written
from batchmap.report import Format, export, story_facts, write_rows
from batchmap.store import Store
from batchmap.timeline import History, parse_time
from tests.conftest import cli_env

NOW = parse_time("2026-11-27T12:30:00Z") or 0.0
V2 = {
    "has_heatmap": 1,
    "verdict": "artificial",
    "confidence": 0.97,
    "image_hash": "ab" * 32,
    "image_name": 'cat, "big".jpg',
}


def minute(hhmm: str, *, run_id: int = 1, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"run_id": run_id, "minute": f"2026-11-27T{hhmm}:00Z"}
    row.update(fields)
    return row


RUNS = [
    {"run_id": 1, "started_at": "2026-11-27T09:00:00Z", "ended_at": "2026-11-27T10:00:00Z",
     "exit_code": 130, "version": "0.2.0", "pid": 1, "options": {}},
    {"run_id": 2, "started_at": "2026-11-27T11:00:00Z", "ended_at": None,
     "exit_code": None, "version": "0.2.0", "pid": 2, "options": {}},
]  # fmt: skip
MINUTES = [
    minute("09:10", requests=60, ok=50, rate_limited=2, finished=58),
    minute("09:11", requests=60, ok=60, finished=60, pause_reasons={}),
    minute("11:00", run_id=2, outage_seconds=60.0, server_error=3, requests=3,
           pause_reasons={"outage: 5xx across identifiers": 60.0}),
    minute("11:01", run_id=2, outage_seconds=60.0, server_error=1, requests=1),
    minute("12:29", run_id=2, requests=60, ok=60, finished=60, pacer_rate=0.98,
           limits=[[2, 1.0], [60, 60.0]]),
]  # fmt: skip


class StoreV2(Store):
    """The Store of schema v2 as DESIGN.md names it, for report's seam (read_history)."""

    history = History()

    def runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.history.runs]

    def timeline(self, *, since: str | None = None) -> list[dict[str, Any]]:
        return [dict(r) for r in self.history.minutes]

    def verdict_counts(self) -> dict[str, int]:
        return dict(self.history.verdicts)


@pytest.fixture
def job(tmp_path: Path) -> Iterator[StoreV2]:
    with closing(StoreV2(tmp_path / "jobs.db")) as opened:
        opened.load_ids(["a", "b", "c"])
        opened.history = History(RUNS, MINUTES, {"artificial": 2, "human": 1})
        yield opened


# -- rows ------------------------------------------------------------------------------------


def v2_rows() -> list[dict[str, Any]]:
    base = dict.fromkeys(store.REPORT_COLUMNS)
    return [{**base, "identifier": "x", "state": "done", **V2}, {**base, "identifier": "y"}]


def test_exports_use_the_store_columns_not_a_copy() -> None:
    assert vars(report)["REPORT_COLUMNS"] is store.REPORT_COLUMNS


def test_csv_carries_every_column_the_store_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    # The v2 columns as storage adds them; the export follows without a change of its own.
    columns = (*store.REPORT_COLUMNS, *(c for c in V2 if c not in store.REPORT_COLUMNS))
    monkeypatch.setattr(report, "REPORT_COLUMNS", columns)
    handle = io.StringIO()

    count = write_rows(iter(v2_rows()), handle, fmt=Format.CSV)

    records = list(csv.DictReader(io.StringIO(handle.getvalue())))
    assert count == 2
    assert tuple(records[0]) == columns
    assert {k: records[0][k] for k in V2} == {k: str(v) for k, v in V2.items()}


@pytest.mark.parametrize("fmt", [Format.JSON, Format.JSONL])
def test_json_exports_carry_every_column_of_the_rows(fmt: Format) -> None:
    handle = io.StringIO()

    write_rows(iter(v2_rows()), handle, fmt=fmt)

    text = handle.getvalue()
    records = (
        json.loads(text) if fmt is Format.JSON else [json.loads(x) for x in text.split("\n") if x]
    )
    assert records == v2_rows()


# -- timeline-csv ------------------------------------------------------------------------------


def test_timeline_csv_has_one_row_per_run_minute_with_json_columns(job: StoreV2) -> None:
    handle = io.StringIO()

    written = export(job, handle, fmt=Format.TIMELINE_CSV)

    records = list(csv.DictReader(io.StringIO(handle.getvalue())))
    assert written == Written(5, 5)
    assert [(r["run_id"], r["minute"]) for r in records] == [
        (str(m["run_id"]), m["minute"]) for m in MINUTES
    ]
    assert json.loads(records[2]["pause_reasons"]) == {"outage: 5xx across identifiers": 60.0}
    assert json.loads(records[4]["limits"]) == [[2, 1.0], [60, 60.0]]
    assert records[0]["outage_seconds"] == ""  # absent, not "None"


def test_timeline_csv_keeps_pause_reasons_whole_and_rounds_seconds() -> None:
    from batchmap.minutes import _short_reason

    reason = _short_reason("quota of 60 per 60.0s used up")
    assert reason == "quota of 60 per 60.0s"  # which limit, not a bare "quota of"
    handle = io.StringIO()
    report.write_timeline_csv(
        [minute("09:10", paused_seconds=12.300000000000001, pacer_rate=0.9951234567,
                pause_reasons={reason: 12.300000000000001, "rate limited": 0.1000000002})],
        handle,
    )  # fmt: skip
    (record,) = csv.DictReader(io.StringIO(handle.getvalue()))
    assert record["paused_seconds"] == "12.3" and record["pacer_rate"] == "0.995"
    assert json.loads(record["pause_reasons"]) == {reason: 12.3, "rate limited": 0.1}


def test_timeline_csv_of_a_job_without_history_is_a_header(tmp_path: Path) -> None:
    with closing(Store(tmp_path / "jobs.db")) as plain:
        handle = io.StringIO()
        written = export(plain, handle, fmt=Format.TIMELINE_CSV)
    assert written.rows == 0
    assert handle.getvalue().startswith("run_id,minute,requests,")


# -- what the CLI says -------------------------------------------------------------------------


def test_written_says_how_many_rows_the_page_shows() -> None:
    page = Written(100203, 1012, thumbnails=1000, failures=12)

    assert page.message("big.html") == (
        "wrote 100203 rows to big.html (1000 thumbnails and 12 failed rows shown; "
        "all rows: batchmap report --format csv)"
    )
    assert Written(5, 5).message("r.csv") == "wrote 5 rows to r.csv"
    assert f"{Written(5, 5)}" == "5"  # the CLI's current "wrote {count} rows" still reads right


def test_html_export_accounts_for_rows_it_does_not_render(
    job: StoreV2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchmap import report_html

    monkeypatch.setattr(report_html, "MAX_THUMBNAILS", 0)
    written = export(job, io.StringIO(), fmt=Format.HTML, report_dir=tmp_path, now=NOW)

    assert (written.rows, written.rendered) == (3, 0)


def test_a_closed_pipe_ends_the_report_quietly(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with closing(Store(db)) as big:
        big.load_ids(f"{i:064x}" for i in range(60_000))  # ~4 MB of CSV: more than a pipe holds
    script = (
        f"{sys.executable} -m batchmap report --db {db} --format csv | head -1; "
        'echo "exit=${PIPESTATUS[0]}" >&2'
    )

    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=cli_env(), timeout=60
    )

    assert done.stdout == ",".join(store.REPORT_COLUMNS) + "\n"
    lines = done.stderr.strip().splitlines()
    assert lines[-1] in ("exit=0", "exit=141"), done.stderr
    assert lines[:-1] == [], done.stderr  # no "Broken pipe", no "Exception ignored"


# -- status ------------------------------------------------------------------------------------


def test_status_facts_tell_the_story(job: StoreV2) -> None:
    facts = report.status_facts(job, now=NOW)

    day = facts["last_24h"]
    assert len(day["finishes_per_hour"]) == 24 and len(day["sparkline"]) == 24
    assert day["finishes_per_hour"][-4:] == [118, 0, 0, 60]  # 09:00, 10:00, 11:00, 12:00
    assert day["sparkline"][-4:] == "█▁▁▅"
    stop, outage = (s for s in facts["stalls"] if s["kind"] != "pause")
    assert (stop["kind"], stop["start"], stop["end"]) == (
        "idle", "2026-11-27T10:00:00Z", "2026-11-27T11:00:00Z",
    )  # fmt: skip
    assert (outage["kind"], outage["start"], outage["end"]) == (
        "outage", "2026-11-27T11:00:00Z", "2026-11-27T11:02:00Z",
    )  # fmt: skip
    assert facts["requests"] == {
        "total": 184,
        "classification": 0,
        "rate_limited": 2,
        "rate_limited_share": round(2 / 184, 4),
        # Rows in a final state in the table, each once (its 3 rows are pending): the
        # timeline's 178 finishes count a row fetched again twice.
        "finished": 0,
        "per_resolved_identifier": None,
    }
    assert facts["eta"]["remaining"] == 3 and facts["eta"]["seconds"] > 0
    assert facts["eta"]["finish_at"].endswith("Z")
    assert facts["runs"]["count"] == 2 and facts["runs"]["last"]["ended_at"] is None
    assert facts["verdicts"] == {"artificial": 2, "human": 1}


def test_status_json_never_holds_nan_or_infinity(job: StoreV2) -> None:
    job.set_meta(
        "pacer",
        {
            "rate": math.inf,
            "paused_until": math.nan,
            "pause_reason": "x",
            "windows": {"60": math.inf, "2": math.nan, "nan": 1.0, "30": 60.0},
        },
    )
    job.history = History(RUNS, [*MINUTES, minute("12:28", run_id=2, finished=math.nan)])

    facts = report.status_facts(job, now=NOW)

    json.dumps(facts, allow_nan=False)
    assert facts["pacer_rate"] is None and facts["pause"] is None
    assert facts["learned_limits"] == [{"limit": 30, "window_seconds": 60.0}]


def test_story_of_a_job_without_history_is_empty_but_complete() -> None:
    story = story_facts(History(), remaining=10, now=NOW)

    json.dumps(story, allow_nan=False)
    assert story["last_24h"]["finishes_per_hour"] == [0] * 24
    assert story["eta"] is None and story["stalls"] == [] and story["runs"]["last"] is None
    assert story["requests"]["per_resolved_identifier"] is None


def test_the_seam_reads_an_empty_history_from_a_store_without_v2(tmp_path: Path) -> None:
    with closing(Store(tmp_path / "jobs.db")) as plain:
        history = report.read_history(plain)
    assert (list(history.runs), list(history.minutes), dict(history.verdicts)) == ([], [], {})


def test_status_tells_the_story_in_lines_for_the_terminal(job: StoreV2) -> None:
    job.set_meta("pacer", {"windows": {"60": 60.0, "2": 1.0}})

    lines = report.story_lines(report.status_facts(job, now=NOW))

    assert lines[0].startswith("last 24h  ▁") and "178 finished, at most 118 in an hour" in lines[0]
    assert lines[1] == "requests: 184, 1.1% answered 429"
    resolved = story_facts(job.history, remaining=0, now=NOW, resolved=92)["requests"]
    assert (resolved["finished"], resolved["per_resolved_identifier"]) == (92, 2.0)
    assert lines[2].startswith("ETA: ") and "for 3 rows at" in lines[2]
    assert (
        "not running 2026-11-27T10:00:00Z to 2026-11-27T11:00:00Z: run 1 was interrupted" in lines
    )
    assert (
        "outage 2026-11-27T11:00:00Z to 2026-11-27T11:02:00Z: outage: 5xx across identifiers"
        in lines
    )
    assert (
        "last run: 2, started 2026-11-27T11:00:00Z, no end recorded (running, or killed)" in lines
    )
    assert "verdicts: artificial: 2 · human: 1" in lines
    assert lines[-1] == "learned limits: 2 per 1s, 60 per 60s"
    assert report.story_lines(story_facts(History(), remaining=0, now=NOW)) == []


def test_timeline_csv_refuses_a_state_filter(job: StoreV2) -> None:
    with pytest.raises(InputError, match="--state"):
        export(job, io.StringIO(), fmt=Format.TIMELINE_CSV, state=JobState.DONE)


def test_the_cli_offers_timeline_csv(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with closing(Store(db)) as plain:
        plain.load_ids(["a"])

    def batchmap(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "batchmap", "report", "--db", str(db), *args]
        return subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=60)

    done = batchmap("--format", "timeline-csv")
    refused = batchmap("--format", "timeline-csv", "--state", "done")

    assert done.returncode == 0 and done.stdout.startswith("run_id,minute,requests,")
    assert refused.returncode == 2 and "--state" in refused.stderr

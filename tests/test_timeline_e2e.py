"""Issue 13, item 4: the run's timeline tells what the server saw, end to end.

The real CLI runs a job against the real fake server over a socket, through a forced 503
outage and a rate limit it must discover from 429s (no rate headers). Afterwards the
`timeline` and `runs` tables, read with sqlite3 as a user would, must add up to the
server's own log (GET /_fake/stats), and `status --json` and `report --format
timeline-csv` must tell the same story.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.conftest import FakeServer, Workspace, make_ids

IDS = make_ids("timeline-e2e", ok=50, no_heatmap=3, missing=3)
OUTAGE_AT = 2.0  # seconds after the fake starts: the CLI is sending by then
OUTAGE_FOR = 3.0
SERVER_FLAGS = (
    "--limit", "5/1", "--no-rate-headers",
    "--outage-at", str(OUTAGE_AT), "--outage-for", str(OUTAGE_FOR), "--outage-kind", "503",
)  # fmt: skip
COUNTERS = (
    "requests", "classification_requests", "ok", "no_heatmap", "not_found", "client_error",
    "server_error", "rate_limited", "network_error", "finished",
)  # fmt: skip


def read_table(db: Path, table: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY rowid")]
    finally:
        conn.close()


def total(rows: list[dict[str, Any]], column: str) -> float:
    return float(sum(row[column] for row in rows))


def minute_of(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
    return moment.replace(second=0, microsecond=0)


def run_through_outage(workspace: Workspace, server: FakeServer) -> int:
    result = workspace.run(workspace.csv(IDS), server, "--concurrency", "8", "--outage-limit", "60")
    assert "Traceback" not in result.output, result.output
    return result.code


def test_timeline_matches_the_servers_log_through_an_outage_and_a_rate_limit(
    workspace: Workspace, fake_server_factory: Any
) -> None:
    server: FakeServer = fake_server_factory(*SERVER_FLAGS)
    code = run_through_outage(workspace, server)
    assert code == 1  # the 404s end `failed`; nothing else does
    stats = server.stats()
    by_status = {int(status): n for status, n in stats["by_status"].items()}
    assert by_status.get(503, 0) > 0, f"the outage was not hit: {stats}"
    assert by_status.get(429, 0) > 0, f"the rate limit was not hit: {stats}"
    assert stats["dropped"] == 0

    rows = workspace.rows()
    assert sorted(r["state"] for r in rows.values()).count("failed") == 3
    assert all(r["state"] in ("done", "no_heatmap", "failed") for r in rows.values())

    # One run, ended, with its exit code.
    runs = read_table(workspace.db, "runs")
    assert len(runs) == 1, runs
    run = runs[0]
    assert run["exit_code"] == code
    assert run["ended_at"] is not None and run["started_at"] <= run["ended_at"]
    assert "key" not in run["options"].lower()

    timeline = read_table(workspace.db, "timeline")
    assert timeline, "the run wrote no timeline"
    assert {row["run_id"] for row in timeline} == {run["run_id"]}
    # Every minute lies within the run: a ~10 s run spans at most two wall-clock minutes.
    first, last = minute_of(run["started_at"]), minute_of(run["ended_at"])
    minutes = [minute_of(row["minute"]) for row in timeline]
    assert all(first <= m <= last for m in minutes), (minutes, run)
    assert len(set(minutes)) == len(minutes) <= 2

    # The counts, summed over the minutes, are the server's. Every request reached it
    # (a 503 outage answers; it does not refuse), so the totals match exactly.
    assert total(timeline, "network_error") == 0
    assert total(timeline, "requests") == stats["requests"]
    assert total(timeline, "classification_requests") == stats["classification_requests"] > 0
    assert total(timeline, "rate_limited") == by_status[429]
    assert total(timeline, "server_error") == sum(n for s, n in by_status.items() if s >= 500)
    assert total(timeline, "not_found") == by_status[404] == 3
    heatmap_200s = by_status[200] - stats["classification_by_status"].get("200", 0)
    assert total(timeline, "ok") == heatmap_200s == 50
    assert total(timeline, "finished") == len(rows) == len(IDS)

    # The outage and the rate limit show as pauses, with their reasons.
    outage = total(timeline, "outage_seconds")
    paused = total(timeline, "paused_seconds")
    assert 0 < outage <= OUTAGE_FOR + 2, timeline
    assert paused >= outage
    reasons: dict[str, float] = {}
    for row in timeline:
        for reason, seconds in json.loads(row["pause_reasons"]).items():
            reasons[reason] = reasons.get(reason, 0.0) + seconds
    assert reasons.get("API unreachable", 0) > 0, timeline
    assert reasons.get("rate limited", 0) > 0, timeline
    assert all(row["pacer_rate"] is None or math.isfinite(row["pacer_rate"]) for row in timeline)

    # `status --json` tells the same story.
    story = workspace.status()
    requests = story["requests"]
    assert requests["total"] == stats["requests"]
    assert requests["rate_limited"] == by_status[429]
    assert requests["finished"] == len(IDS)
    assert math.isclose(
        requests["per_resolved_identifier"], stats["requests"] / len(IDS), abs_tol=0.01
    )
    outages = [s for s in story["stalls"] if s["kind"] == "outage"]
    assert outages and "API unreachable" in outages[0]["reasons"], story["stalls"]
    assert story["runs"]["count"] == 1
    assert story["runs"]["last"]["exit_code"] == code

    # `report --format timeline-csv` exports exactly the table's rows.
    result = workspace.cli("report", "--db", workspace.db, "--format", "timeline-csv")
    assert result.code == 0, result.output
    exported = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(exported) == len(timeline)
    for saved, row in zip(timeline, exported, strict=True):
        assert row["minute"] == saved["minute"]
        assert int(row["run_id"]) == saved["run_id"]
        for name in COUNTERS:
            assert int(row[name]) == saved[name], name
        # Seconds are rounded to a tenth in the export (no 16-decimal noise in a sheet).
        for name in ("paused_seconds", "outage_seconds"):
            assert math.isclose(float(row[name]), saved[name], abs_tol=0.05), name
        exported_reasons = json.loads(row["pause_reasons"])
        saved_reasons = json.loads(saved["pause_reasons"])
        assert exported_reasons.keys() == saved_reasons.keys()
        for reason, seconds in saved_reasons.items():
            assert math.isclose(exported_reasons[reason], seconds, abs_tol=0.05), reason
        assert json.loads(row["limits"]) == json.loads(saved["limits"])

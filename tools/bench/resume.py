"""How soon `resume` sends its first request on a million-row table that is 90 % done."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sqlite3
import tempfile
import time
from pathlib import Path

from tools.bench.common import SCALE_IDS, Report, SharedData, count, line, say, seconds
from tools.bench.processes import (
    Child,
    FakeServer,
    batchmap,
    batchmap_argv,
    child_env,
    fake_server,
    resolved_rows,
    shown,
)

FIRST_REQUEST_POLL = 0.01  # seconds between samples while waiting for resume's first request
DONE_ROWS = 900_000  # rows the resume section marks done before resuming


def mark_done(db: Path, rows: int) -> float:
    """Mark the first `rows` rows done with a made-up file, in one UPDATE; returns seconds."""
    started = time.perf_counter()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "UPDATE jobs SET state = 'done', http_status = 200, attempts = 1, "
            "path = 'heatmaps/' || identifier || '.png', bytes = 4242, sha256 = ?, "
            "updated_at = created_at, finished_at = created_at WHERE rowid <= ?",
            ("0" * 64, rows),
        )
    return time.perf_counter() - started


def first_request_after(child: Child, server: FakeServer, limit: float) -> float | None:
    """Seconds from the child's start to the first heatmap request the server saw."""
    while child.running and time.perf_counter() - child.started < limit:
        asked = time.perf_counter()
        if int(server.stats()["requests"]) > 0:
            return (asked + time.perf_counter()) / 2 - child.started
        time.sleep(FIRST_REQUEST_POLL)
    return None


def build_resume_table(csv: Path, work: Path) -> None:
    """A 1M-row table, 900k rows done: `batchmap load`, then one UPDATE."""
    shutil.copy(csv, work / "ids.csv")
    loaded = batchmap(["load", "ids.csv", "--db", "jobs.db", "-q"], cwd=work)
    took = mark_done(work / "jobs.db", DONE_ROWS)
    say(
        f"  (setup: load {loaded.wall:.1f} s; one SQL UPDATE marking the first {DONE_ROWS:,} "
        f"rows done {took:.1f} s)"
    )


def section_resume(report: Report, shared: SharedData) -> None:
    """How soon `resume` sends its first request on a 1M-row table that is 90 % done."""
    say(
        f"== resume: {SCALE_IDS:,}-row table, {DONE_ROWS:,} done; start to first request, "
        "then SIGINT =="
    )
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        work = Path(tmp)
        build_resume_table(shared.scale_csv(), work)
        with fake_server("resume", ["--no-limits"]) as server:
            args = ["resume", "--max-rate", "5", "--db", "jobs.db", "--out", "heatmaps"]
            args += ["--base-url", server.url, "-q"]
            say(shown(args, server.key))
            # Not under the RSS wrapper: the SIGINT must reach batchmap itself.
            child = Child(batchmap_argv(*args), cwd=work, env=child_env(server.key), rss=False)
            first = first_request_after(child, server, 30.0)
            stopped_at = time.perf_counter()
            child.signal(signal.SIGINT)
            end = child.wait(30.0)
            stop = child.started + end.wall - stopped_at
            sent = int(server.stats()["requests"])
        counts = resolved_rows(work / "jobs.db")
    report.figure("resume", "start_to_first_request_s", first)
    report.figure("resume", "exit_code_after_sigint", end.code)
    report.figure("resume", "sigint_to_exit_s", stop)
    line(
        "start to first request",
        "n/a" if first is None else seconds(first),
        report.check("resume", "start to first request", first, "<=", 2.0, seconds),
    )
    line(
        "SIGINT to exit",
        f"{seconds(stop)}, exit {end.code} ({sent} requests sent)",
        report.check("resume", "exit code after SIGINT", end.code, "==", 130, count),
    )
    say(f"  table after the stop: {', '.join(f'{k} {v:,}' for k, v in sorted(counts.items()))}")

"""How fast and how big the HTML report is for a large job, and how fast Chromium opens it.

Usage: python tools/bench_report.py [--rows 1000000] [--keep DIR]. Builds a job database of
that many rows (80% done, 15% no heatmap, 4% failed, 1% pending, each with a verdict) and a
timeline of 11.6 days in three runs with an outage, pauses and a stop; then times writing the
report, weighs it, and times headless Chromium opening it: the whole screenshot command
against an empty page's, and the page's own navigation-to-load-event time.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: `tools` too

from batchmap import report
from batchmap.models import Claim, JobState, Record, Saved
from batchmap.report_html import write_html
from batchmap.store import Store
from batchmap.timeline import History, iso
from tools.screenshot_report import find_chromium, screenshot

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c6360000000020001e221bc330000000049454e44ae426082"
)


def synthetic_history(*, days: float = 11.6, seed: int = 7) -> History:
    """Three runs over `days`: at the ceiling, an outage, 429 pauses, a night stopped."""
    rng = random.Random(seed)
    total_minutes = int(days * 1440)
    start = (time.time() // 60 - total_minutes) * 60  # ends now, as a running job's would
    stop_at, resume_at = total_minutes // 3, total_minutes // 3 + 8 * 60
    third = 2 * total_minutes // 3
    runs = [
        {"run_id": 1, "started_at": iso(start), "ended_at": iso(start + stop_at * 60),
         "exit_code": 130, "version": "0.2.0", "pid": 10, "options": {}},
        {"run_id": 2, "started_at": iso(start + resume_at * 60), "ended_at": None,
         "exit_code": None, "version": "0.2.0", "pid": 11, "options": {}},
        {"run_id": 3, "started_at": iso(start + third * 60 + 30), "ended_at": None,
         "exit_code": None, "version": "0.2.0", "pid": 12, "options": {}},
    ]  # fmt: skip
    minutes: list[dict[str, Any]] = []
    for m in range(total_minutes):
        if stop_at <= m < resume_at:
            continue
        run_id = 1 if m < stop_at else 2 if m < third else 3
        outage = resume_at + 600 <= m < resume_at + 640
        paused = not outage and rng.random() < 0.01
        requests = 0 if outage else 58 + rng.randint(0, 2)
        limited = 1 if paused else 0
        minutes.append(
            {
                "run_id": run_id,
                "minute": iso(start + m * 60)[:17] + "00Z",
                "requests": requests + (4 if outage else 0),
                "classification_requests": 1 if requests else 0,
                "ok": int(requests * 0.8),
                "no_heatmap": requests - int(requests * 0.8) - 1 - limited if requests else 0,
                "not_found": 1 if requests else 0,
                "client_error": 0,
                "server_error": 4 if outage else 0,
                "rate_limited": limited,
                "network_error": 0,
                "finished": 0 if outage else requests + 20,
                "paused_seconds": 40.0 if paused else 0.0,
                "outage_seconds": 60.0 if outage else 0.0,
                "pause_reasons": (
                    {"outage: 5xx across identifiers": 60.0}
                    if outage
                    else {"429 Retry-After": 40.0}
                    if paused
                    else {}
                ),
                "pacer_rate": 0.98,
                "limits": [[2, 1.0], [60, 60.0]],
            }
        )
    return History(runs=runs, minutes=minutes, verdicts={"artificial": 1, "human": 1})


def build_job(db: Path, out: Path, *, rows: int, seed: int = 7) -> None:
    """A job database of `rows` rows in final states, a few real PNGs for the first tiles."""
    rng = random.Random(seed)
    with_files = 1200
    with closing(Store(db)) as store:
        store.load_ids(f"{i:064x}" for i in range(rows))
        batch: list[Record] = []
        for rowid in range(1, rows + 1):
            job = Claim(rowid, f"{rowid - 1:064x}")
            draw = rng.random()
            if draw < 0.80:
                path = out / f"{rowid % 256:02x}" / f"{job.identifier}.png"
                if rowid <= with_files:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(PNG)
                saved = Saved(str(path), len(PNG), "0" * 64)
                batch.append(Record(job, JobState.DONE, 1, 200, saved=saved))
            elif draw < 0.95:
                batch.append(Record(job, JobState.NO_HEATMAP, 1, 204))
            elif draw < 0.97:
                batch.append(Record(job, JobState.FAILED, 1, 404, error="HTTP 404: Not found"))
            elif draw < 0.99:
                error = "HTTP 503: Service Unavailable"
                batch.append(Record(job, JobState.FAILED, 5, 503, error=error, retryable=True))
            else:
                continue  # stays pending
            if len(batch) >= 50_000:
                store.record(batch)
                batch.clear()
        store.record(batch)


VERDICTS = ("artificial", "human")


def with_verdicts(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The v2 columns a classified job has (until the Store yields them itself)."""
    for n, row in enumerate(rows):
        row.setdefault("verdict", VERDICTS[n % 2])
        row.setdefault("confidence", 0.9)
        row.setdefault("image_name", "IMG_0001.jpg")
        yield row


PROBE = (
    "<script>window.addEventListener('load', function () {"
    "document.body.dataset.loadedMs = Math.round(performance.now()); });</script>"
)


def chromium_load_ms(page: Path, *, chromium: str) -> float:
    """Chromium's own time from navigation to the load event (no process start-up)."""
    probe = page.with_name("probe-" + page.name)
    probe.write_text(page.read_text(encoding="utf-8") + PROBE, encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="batchmap-chromium-") as profile:
        dom = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={profile}", "--window-size=1200,900", "--dump-dom",
             probe.absolute().as_uri()],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
    found = re.search(r'data-loaded-ms="(\d+)"', dom)
    return float(found.group(1)) if found else math.nan


def chromium_seconds(page: Path, *, chromium: str) -> float:
    """Wall time of headless Chromium loading `page` and taking a screenshot."""
    shot = page.with_suffix(".png")
    began = time.perf_counter()
    screenshot(page, shot, chromium=chromium)
    return time.perf_counter() - began


def bench(rows: int, work: Path) -> dict[str, float]:
    """Build, write, weigh, open: the figures printed by main()."""
    db, out, page = work / "big.db", work / "heatmaps", work / "big.html"
    began = time.perf_counter()
    if not db.exists():  # --keep DIR keeps the job for the next run
        build_job(db, out, rows=rows)
    figures = {"build_seconds": time.perf_counter() - began}
    history = synthetic_history()
    with closing(Store(db, create=False)) as store:
        began = time.perf_counter()
        with open(page, "w", encoding="utf-8") as handle:
            written = write_html(
                with_verdicts(store.rows()),
                handle,
                facts=report.status_facts(store, story=False),
                history=history,
                report_dir=work,
            )
        figures["write_seconds"] = time.perf_counter() - began
        began = time.perf_counter()
        with open(work / "big.csv", "w", encoding="utf-8", newline="") as handle:
            report.export(store, handle, fmt=report.Format.CSV)
        figures["csv_seconds"] = time.perf_counter() - began
    figures["rows"] = written.rows
    figures["rendered"] = written.rendered
    figures["megabytes"] = page.stat().st_size / 1e6
    chromium = find_chromium()
    if chromium is not None:
        empty = work / "empty.html"
        empty.write_text("<!DOCTYPE html><title>empty</title>", encoding="utf-8")
        baseline = chromium_seconds(empty, chromium=chromium)
        figures["chromium_empty_seconds"] = baseline
        figures["chromium_report_seconds"] = chromium_seconds(page, chromium=chromium)
        figures["chromium_load_event_ms"] = chromium_load_ms(page, chromium=chromium)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the bench, print one figure a line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    args = parser.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        figures = bench(args.rows, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="batchmap-bench-report-") as work:
            figures = bench(args.rows, Path(work))
    for key, value in figures.items():
        print(f"{key:>24}: {value:,.2f}" if isinstance(value, float) else f"{key:>24}: {value:,}")
    if "chromium_report_seconds" not in figures:
        print("chromium not found: no load time (apt-get install -y chromium)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loading, status and reports at a million identifiers: time and peak memory."""

from __future__ import annotations

import shlex
import shutil
import tempfile
from pathlib import Path

from tools.bench.common import (
    SCALE_IDS,
    Report,
    SharedData,
    line,
    megabytes,
    ratio,
    say,
    seconds,
    write_ids_csv,
)
from tools.bench.processes import Finished, batchmap, batchmap_argv, run_child

SMALL_IDS = 1000  # the small table that tells memory growth from a fixed cost
# Issue 19: loading a million ids may take up to twice sqlite3's own import of the same CSV.
LOAD_RATIO_TARGET = 2.0


def peak(big: Finished, small: Finished, what: str) -> str:
    """A peak RSS, and how much more it is than the same command's on a small input."""
    if big.maxrss_mb is None or small.maxrss_mb is None:
        return megabytes(big.maxrss_mb)
    return f"{big.maxrss_mb:.0f} MB (+{big.maxrss_mb - small.maxrss_mb:.0f} MB over {what})"


# sqlite3's own imports of the same CSV. "unique" keeps each identifier once, as a job table
# must (a UNIQUE column): the floor issue 19's target is measured against (its "today 0.8x").
# "bare" is a one-column table with no constraint: the C reader's speed alone, shown beside it.
FLOORS = {
    "bare": [".mode csv", ".import {csv} t"],
    "unique": [
        "CREATE TABLE t (identifier TEXT NOT NULL UNIQUE)",
        ".mode csv",
        ".import --skip 1 {csv} t",
    ],
}


def sqlite_import(csv: Path, work: Path, kind: str) -> Finished | None:
    """A floor: sqlite3's own CSV import into a fresh table (FLOORS)."""
    sqlite = shutil.which("sqlite3") or "/usr/bin/sqlite3"
    if not Path(sqlite).exists():
        say("  sqlite3 CLI not found: no floor, the load ratio is skipped")
        return None
    argv = [sqlite, f"floor-{kind}.db", *(step.format(csv=csv.name) for step in FLOORS[kind])]
    say(f"  $ {shlex.join(['sqlite3', *argv[1:]])}")
    return run_child(argv, cwd=work)


def section_scale(report: Report, shared: SharedData) -> None:
    """Loading, status and reports at a million identifiers: time and peak memory."""
    say(f"== scale: load, status and report at {SCALE_IDS:,} ids (peak RSS per process) ==")
    csv = shared.scale_csv()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        shutil.copy(csv, work / csv.name)
        scale_load(report, work, csv.name)
        for flags in ([], ["--json"]):
            scale_status(report, work, flags)
        for fmt in ("csv", "jsonl"):
            scale_report(report, work, fmt)


def scale_status(report: Report, work: Path, flags: list[str]) -> None:
    """`batchmap status` on the 1M table: time (target 1.5 s)."""
    done = batchmap(["status", "--db", "jobs.db", *flags], cwd=work)
    label = " ".join(["status", *flags])
    report.figure("scale", label.replace(" --", "_") + "_s", done.wall)
    line(
        f"batchmap {label}",
        f"{seconds(done.wall)} (peak RSS {megabytes(done.maxrss_mb)})",
        report.check("scale", f"{label} time", done.wall, "<=", 1.5, seconds),
    )


def scale_load(report: Report, work: Path, csv: str) -> None:
    """The sqlite3 floors, then `batchmap load` of the same CSV: time ratios and peak RSS."""
    write_ids_csv(work / "small.csv", "scale-small", SMALL_IDS)
    floors = {kind: sqlite_import(work / csv, work, kind) for kind in FLOORS}
    load = batchmap(["load", csv, "--db", "jobs.db"], cwd=work)
    small = run_child(batchmap_argv("load", "small.csv", "--db", "small.db", "-q"), cwd=work)
    said = load.stderr.strip().splitlines()
    say(f"  batchmap says: {said[-1] if said else '?'}")
    report.figure("scale", "load_s", load.wall)
    report.figure("scale", "load_peak_rss_mb", load.maxrss_mb)
    for kind, floor in floors.items():
        report.figure("scale", f"sqlite3_import_{kind}_s", None if floor is None else floor.wall)
        if floor is None:
            continue
        load_ratio = load.wall / floor.wall
        line(f"sqlite3 .import, {kind} (floor)", seconds(floor.wall))
        figure = f"load time ÷ sqlite3 import ({kind})"
        verdict = ""
        if kind == "unique":
            verdict = report.check("scale", figure, load_ratio, "<=", LOAD_RATIO_TARGET, ratio)
        else:
            report.info("scale", figure, load_ratio, ratio)
        line(f"batchmap load against {kind}", f"{ratio(load_ratio)} x floor", verdict)
    line(
        "batchmap load peak RSS",
        peak(load, small, f"a {SMALL_IDS}-id load"),
        report.check("scale", "load peak RSS", load.maxrss_mb, "<=", 150, megabytes),
    )


def scale_report(report: Report, work: Path, fmt: str) -> None:
    """`batchmap report` of every row to a file; memory compared with a small table's."""
    out = f"report.{fmt}"
    done = batchmap(["report", "--db", "jobs.db", "--format", fmt, "-o", out], cwd=work)
    small = run_child(
        batchmap_argv("report", "--db", "small.db", "--format", fmt, "-o", "s." + fmt), cwd=work
    )
    size = (work / out).stat().st_size / 1e6 if (work / out).exists() else 0.0
    report.figure("scale", f"report_{fmt}_s", done.wall)
    report.figure("scale", f"report_{fmt}_peak_rss_mb", done.maxrss_mb)
    line(f"report --format {fmt}", f"{seconds(done.wall)}, {size:.0f} MB written")
    line(
        f"report --format {fmt} peak RSS",
        peak(done, small, f"{SMALL_IDS} rows"),
        report.check(
            "scale", f"report {fmt} peak RSS (flat)", done.maxrss_mb, "<=", 150, megabytes
        ),
    )

"""The bench's command line: `SECTION ...` and `--json PATH`; a summary table at the end."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from tools.bench import chaos, limiters, pacing, prefilter, resume, scale, throughput
from tools.bench.common import INFO, Report, SharedData, say
from tools.bench.processes import Child

Section = Callable[[Report, SharedData], None]

SECTIONS: dict[str, Section] = {
    "pacing": pacing.section_pacing,
    "leaky": pacing.section_leaky,
    "leaky-retry-after": pacing.section_leaky_retry_after,
    "throughput": throughput.section_throughput,
    "prefilter": prefilter.section_prefilter,
    "resume": resume.section_resume,
    "scale": scale.section_scale,
    "chaos": chaos.section_chaos,
    "limiters": limiters.section_limiters,
    "limiters-quick": limiters.section_limiters_quick,
}
OCCASIONAL = {"chaos", "limiters-quick"}  # run only when named (`make chaos`)


def summary(report: Report, elapsed: float) -> None:
    """The final table: every target, its figure and PASS/MISS; whole-run figures as info."""
    say(f"== summary ({elapsed:.0f} s) ==")
    say(f"  {'section':<17} {'figure':<42} {'value':>10}  {'target':<11} result")
    for t in report.targets:
        goal = "" if t.op == INFO else f"{t.op} {t.goal_shown}"
        say(f"  {t.section:<17} {t.figure:<42} {t.shown:>10}  {goal:<11} {t.verdict}")
    for name, error in report.errors.items():
        say(f"  {name:<17} {'(section failed)':<42} {'':>10}  {'':<11} ERROR: {error}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Section names and --json."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="How close batchmap gets to its targets, measured against local baselines.",
    )
    default = " ".join(name for name in SECTIONS if name not in OCCASIONAL)
    parser.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        help=f"any of: {' '.join(SECTIONS)} (default: {default})",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {', '.join(unknown)}; choose from {' '.join(SECTIONS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections, print the summary, write --json."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    chosen = args.sections or [name for name in SECTIONS if name not in OCCASIONAL]
    report = Report()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as shared_dir:
        shared = SharedData(Path(shared_dir))
        try:
            for name in chosen:
                run_section(report, shared, name)
        finally:
            Child.kill_all()  # only if interrupted: sections wait for their own children
    elapsed = time.perf_counter() - started
    summary(report, elapsed)
    if args.json is not None:
        write_json(args.json, report, elapsed)
    return 1 if report.errors else 0


def run_section(report: Report, shared: SharedData, name: str) -> None:
    """One section; an exception is printed and recorded, and the bench goes on."""
    began = time.perf_counter()
    try:
        SECTIONS[name](report, shared)
    except Exception as error:  # a broken section must not hide the others' figures
        report.errors[name] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    took = time.perf_counter() - began
    report.figure(name, "section_seconds", took)
    say(f"  ({name}: {took:.0f} s)")
    say()


def write_json(path: Path, report: Report, elapsed: float) -> None:
    """The results as JSON."""
    data = {
        "elapsed_s": elapsed,
        "figures": report.figures,
        "targets": [
            {
                "section": t.section,
                "figure": t.figure,
                "value": t.value,
                "op": t.op,
                "target": t.goal,
                "result": t.verdict,
            }
            for t in report.targets
        ],
        "errors": report.errors,
    }
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

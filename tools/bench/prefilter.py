"""The classifications prefilter (issue 11): requests per resolved identifier with and without it.

A job where 20% of identifiers have no heatmap, against the fake server without rate limits
(the count of requests does not depend on the pace): with the prefilter, without it
(`--no-prefilter`), and against a server where the endpoint is missing. Then what the saving
is worth at identifAI's real ceiling (about one request per second) for a million ids.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from batchmap.fakeserver import expected_status
from tools.bench.common import Report, SharedData, count, line, ratio, say
from tools.bench.processes import FakeServer, batchmap, fake_server

IDS = 1000
NO_HEATMAP_SHARE = 0.20
REAL_CEILING = 1.0  # heatmaps per second per key at identifAI's 2/s + 60/min, whole-second
MILLION = 1_000_000


def job_ids(n: int, share: float) -> list[str]:
    """64-hex identifiers of which `share` have no heatmap (204) and none is unknown."""
    wanted = {204: round(n * share), 200: n - round(n * share)}
    picked: list[str] = []
    i = 0
    while any(wanted.values()):
        identifier = hashlib.sha256(f"prefilter-{i}".encode()).hexdigest()
        status = expected_status(identifier)
        if wanted.get(status, 0) > 0:
            wanted[status] -= 1
            picked.append(identifier)
        i += 1
    return picked


def one_job(server: FakeServer, work: Path, csv_path: Path, *extra: str) -> tuple[int, int]:
    """Run the job on a fresh table; (requests the server saw, rows resolved)."""
    work.mkdir()
    server.reset()
    args = ["run", str(csv_path), "--db", "jobs.db", "--out", "heatmaps",
            "--base-url", server.url, "--concurrency", "8", "-q", *extra]  # fmt: skip
    done = batchmap(args, cwd=work, key=server.key)
    resolved = IDS if done.code in (0, 1) else 0
    return int(server.stats()["requests"]), resolved


def section_prefilter(report: Report, shared: SharedData) -> None:
    """Requests per resolved identifier with and without the classifications prefilter."""
    share = NO_HEATMAP_SHARE
    say(f"== prefilter: {IDS} ids, {share:.0%} without heatmap, no rate limit ==")
    base = shared.root / "prefilter"
    base.mkdir()
    csv_path = base / "ids.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identifier"])
        writer.writerows([identifier] for identifier in job_ids(IDS, share))
    with fake_server("prefilter", ["--no-limits"]) as server:
        with_requests, resolved = one_job(server, base / "with", csv_path)
        without_requests, _ = one_job(server, base / "without", csv_path, "--no-prefilter")
        server.reset()
        again = batchmap(["resume", "--db", "jobs.db", "-q"], cwd=base / "with", key=server.key)
        rerun = int(server.stats()["requests"])
        say(f"  resume of the finished table: exit {again.code}, {rerun} requests")
        exported = batchmap(["report", "--db", "jobs.db", "--format", "csv"], cwd=base / "with")
        rows = list(csv.DictReader(exported.stdout.splitlines()))
        with_verdict = sum(1 for row in rows if row["verdict"])
        say(f"  report: {with_verdict} of {len(rows)} rows carry the verdict the list returned")
    with fake_server("prefilter-missing", ["--no-limits", "--no-classifications"]) as server:
        missing_requests, _ = one_job(server, base / "missing", csv_path)

    per_with = with_requests / max(resolved, 1)
    per_without = without_requests / max(resolved, 1)
    per_missing = missing_requests / max(resolved, 1)
    goal = (1 - share) + 0.02
    line("requests per resolved id, prefilter on", ratio(per_with),
         report.check("prefilter", "requests/id with the endpoint", per_with, "<=", goal,
                      ratio))  # fmt: skip
    line("requests per resolved id, --no-prefilter", ratio(per_without),
         report.check("prefilter", "requests/id with --no-prefilter", per_without, "<=", 1.02,
                      ratio))  # fmt: skip
    line("requests per resolved id, endpoint missing", ratio(per_missing),
         report.check("prefilter", "requests/id, endpoint missing", per_missing, "<=", 1.02,
                      ratio))  # fmt: skip
    line(
        "rows whose verdict is in the report",
        count(with_verdict),
        report.check("prefilter", "verdicts in the report", with_verdict, "==", IDS, count),
    )
    line(
        "requests re-running the finished table",
        count(rerun),
        report.check("prefilter", "requests on a finished table", rerun, "==", 0, count),
    )
    saved = (per_without - per_with) * MILLION / REAL_CEILING
    say(
        f"  at identifAI's ceiling (~{REAL_CEILING:g} request/s): a million ids take "
        f"{per_without * MILLION / REAL_CEILING / 86400:.1f} days without the prefilter and "
        f"{per_with * MILLION / REAL_CEILING / 86400:.1f} days with it: "
        f"{saved / 86400:.1f} days saved"
    )
    report.info("prefilter", "days saved per million ids", saved / 86400, lambda v: f"{v:.1f}")
    report.figure("prefilter", "requests_per_id", {
        "with": per_with, "without": per_without, "missing": per_missing,
    })  # fmt: skip

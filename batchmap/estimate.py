"""`run --dry-run`: what a job would cost, without loading a row or sending a request.

The CSV is counted in a temporary database (memory stays flat at a million rows) and
compared with the job's table, opened read-only; nothing is written beside either.
"""

from __future__ import annotations

import json
import math
import sqlite3
import tempfile
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from batchmap.ids import IdSource
from batchmap.prefilter import NO_PREFILTER_KEY, on_by_default
from batchmap.report import learned_limits
from batchmap.store import check_database
from batchmap.timeline import human_seconds
from batchmap.where import DOCUMENTED_LIMITS, limits_text, steady_rate

BATCH = 100  # identifiers per classifications request (prefilter.BATCH)
_CHUNK = 10_000


@dataclass(frozen=True, slots=True)
class Estimate:
    """Rows a run would fetch and what they would cost at the known limits."""

    new: int  # identifiers of the CSV the job does not have yet
    pending: int  # rows of the job still to fetch (with --retry-failed: failed ones too)
    unasked: int  # of all those, rows the classifications endpoint was never asked about
    no_heatmap_share: float | None  # share without heatmap among the job's finished rows
    limits: list[dict[str, Any]]
    limits_remembered: bool
    max_rate: float | None
    limit: int | None
    prefilter: bool

    @property
    def rows(self) -> int:
        """Rows this run would fetch."""
        total = self.new + self.pending
        return total if self.limit is None else min(total, self.limit)

    @property
    def rate(self) -> float:
        """Requests a second at the known limits (and under --max-rate)."""
        rate = steady_rate(self.limits)
        return min(rate, self.max_rate) if self.max_rate else rate

    @property
    def without_prefilter(self) -> int:
        """One heatmap request a row."""
        return self.rows

    def with_prefilter(self) -> tuple[int, int]:
        """(classification requests, heatmap requests expected) with the prefilter."""
        asked = min(self.rows, self.unasked + self.new)
        share = self.no_heatmap_share or 0.0
        return math.ceil(asked / BATCH), round(self.rows * (1 - share))

    def lines(self, source: str | None) -> list[str]:
        """What `run --dry-run` prints."""
        where = f"{self.new:,} new from {source}, " if source else ""
        lines = [
            "dry run: nothing loaded, no request sent",
            f"rows to fetch: {self.rows:,} ({where}{self.pending:,} unfinished in the job"
            + (f"; --limit {self.limit:,}" if self.limit is not None else "")
            + ")",
            f"without the prefilter: {self.without_prefilter:,} heatmap requests, "
            f"{human_seconds(self.without_prefilter / self.rate)}",
        ]
        if self.prefilter:
            asks, heatmaps = self.with_prefilter()
            total = asks + heatmaps
            if self.no_heatmap_share is None:
                saving = (
                    "each row the classifications say has no heatmap saves one more request "
                    "(no row of this job has finished yet to tell how many)"
                )
                lines.append(
                    f"with the prefilter: {_requests(asks, 'classification')} + at most "
                    f"{heatmaps:,} heatmap requests, at most {human_seconds(total / self.rate)}; "
                    + saving
                )
            else:
                lines.append(
                    f"with the prefilter: {_requests(asks, 'classification')} + about "
                    f"{heatmaps:,} heatmap requests ({self.no_heatmap_share:.0%} of this "
                    f"job's finished rows had no heatmap), {human_seconds(total / self.rate)}"
                )
        origin = "remembered by this job" if self.limits_remembered else "identifAI's documented"
        cap = f", capped by --max-rate {self.max_rate:g}/s" if self.max_rate else ""
        lines.append(f"at {limits_text(self.limits)}, {origin} limits{cap}")
        return lines


def estimate(
    db: Path,
    *,
    load: Path | None,
    column: str | None,
    retry_failed: bool,
    prefilter: bool | None,
    max_rate: float | None,
    limit: int | None,
) -> Estimate:
    """Count what a run would fetch; read-only on the job, nothing sent.

    `prefilter` None: as the job remembers (on unless a run was told --no-prefilter).
    """
    if db.exists():
        check_database(db)
    with tempfile.TemporaryDirectory(prefix="batchmap-estimate-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "ids.db", isolation_level=None)
        try:
            conn.execute("CREATE TABLE ids (identifier TEXT PRIMARY KEY) WITHOUT ROWID")
            if load is not None:
                stream = iter(IdSource(load, column=column))
                conn.execute("BEGIN")
                while batch := list(islice(stream, _CHUNK)):
                    conn.execute(
                        "INSERT OR IGNORE INTO ids SELECT value FROM json_each(?)",
                        (json.dumps(batch),),
                    )
                conn.execute("COMMIT")
            return _compare(conn, db, retry_failed=retry_failed, prefilter=prefilter,
                            max_rate=max_rate, limit=limit)  # fmt: skip
        finally:
            conn.close()


def _compare(
    conn: sqlite3.Connection,
    db: Path,
    *,
    retry_failed: bool,
    prefilter: bool | None,
    max_rate: float | None,
    limit: int | None,
) -> Estimate:
    if not db.exists():
        (new,) = conn.execute("SELECT count(*) FROM ids").fetchone()
        return Estimate(new, 0, 0, None, list(DOCUMENTED_LIMITS), False, max_rate, limit,
                        prefilter is not False)  # fmt: skip
    uri = f"file:{db.absolute()}?mode=ro"
    conn.execute("ATTACH DATABASE ? AS job", (uri,))
    (new,) = conn.execute(
        "SELECT count(*) FROM ids WHERE identifier NOT IN (SELECT identifier FROM job.jobs)"
    ).fetchone()
    states = "('pending', 'running', 'failed')" if retry_failed else "('pending', 'running')"
    pending, unasked = conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE asked_at IS NULL) FROM job.jobs "
        f"WHERE state IN {states}"
    ).fetchone()
    done, no_heatmap = conn.execute(
        "SELECT count(*) FILTER (WHERE state = 'done'), "
        "count(*) FILTER (WHERE state = 'no_heatmap') FROM job.jobs"
    ).fetchone()
    share = no_heatmap / (done + no_heatmap) if done + no_heatmap else None
    meta = dict(conn.execute("SELECT key, value FROM job.meta").fetchall())
    pacer = _json(meta.get("pacer"))
    limits = learned_limits(pacer.get("windows")) if isinstance(pacer, dict) else []
    remembered = bool(limits)
    if prefilter is None:
        prefilter = on_by_default(_json(meta.get(NO_PREFILTER_KEY)))
    return Estimate(new, pending, unasked, share, limits or list(DOCUMENTED_LIMITS), remembered,
                    max_rate, limit, prefilter)  # fmt: skip


def _requests(count: int, kind: str) -> str:
    return f"{count:,} {kind} request{'' if count == 1 else 's'}"


def _json(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None

"""The run history: one row per run (`runs`), its minutes (`timeline`), and small settings.

Read and written through sqlite-utils, except the timeline's per-batch upsert, which adds to
counters in place (`add_minute`, called inside `Store.record`'s transaction).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from typing import Any

from batchmap.models import TIMELINE_COLUMNS, TIMELINE_COUNTERS, MinuteStats
from batchmap.numeric import finite
from batchmap.store.base import Base, now_iso
from batchmap.store.schema import RUN_COLUMNS, put_meta
from batchmap.store.sqlite_errors import guarded

_SECRET_OPTION = re.compile(r"key|secret|token|password", re.IGNORECASE)

# Raw SQL: sqlite-utils' upsert replaces values, and a minute's counters must add up across
# flushes. Part of the per-batch record (`python -m tools.bench throughput`).
_TIMELINE_UPSERT = (
    f"INSERT INTO timeline ({', '.join(TIMELINE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(TIMELINE_COLUMNS))}) "
    "ON CONFLICT (run_id, minute) DO UPDATE SET "
    + ", ".join(f"{name} = {name} + excluded.{name}" for name in TIMELINE_COUNTERS)
    # Merged in add_minute; a flush with no pause this time keeps the reasons already saved.
    + ", pause_reasons = CASE WHEN excluded.pause_reasons = '{}' THEN pause_reasons"
    " ELSE excluded.pause_reasons END"
    ", pacer_rate = coalesce(excluded.pacer_rate, pacer_rate)"
    ", limits = CASE WHEN excluded.limits = '[]' THEN limits ELSE excluded.limits END"
)


def add_minute(conn: sqlite3.Connection, run_id: int, stats: MinuteStats) -> None:
    """Add one minute's increments to the timeline, inside the caller's transaction."""
    reasons = {k: v for k, v in stats.pause_reasons.items() if finite(v) is not None}
    if reasons:  # merged here: {reason: seconds} adds up key by key
        row = conn.execute(
            "SELECT pause_reasons FROM timeline WHERE run_id = ? AND minute = ?",
            (run_id, stats.minute),
        ).fetchone()
        for reason, seconds in json.loads(row[0]).items() if row else ():
            reasons[reason] = reasons.get(reason, 0.0) + float(seconds)
    counters = [getattr(stats, name) for name in TIMELINE_COUNTERS]
    limits = [[int(limit), window] for limit, window in stats.limits if finite(window) is not None]
    conn.execute(
        _TIMELINE_UPSERT,
        (
            run_id,
            stats.minute,
            *(value if isinstance(value, int) else finite(value) or 0.0 for value in counters),
            json.dumps(reasons, sort_keys=True) if reasons else "{}",
            finite(stats.pacer_rate),
            json.dumps(limits),
        ),
    )


class RunHistory(Base):
    """Runs, their timeline, and the `meta` settings of one job database."""

    @guarded
    def start_run(self, options: dict[str, Any]) -> int:
        """Open a row in `runs` (options saved as JSON, never a key); returns its run_id."""
        row = {"started_at": now_iso(), "version": _version(), "pid": os.getpid()}
        with self._write():
            runs = self.db.table("runs").insert(row | {"options": _public_options(options)})
        assert runs.last_rowid is not None
        return runs.last_rowid

    @guarded
    def end_run(self, run_id: int, *, exit_code: int, reason: str | None = None) -> None:
        """Close a run's row with its exit code; a run killed before this keeps ended_at NULL.

        `reason` (a signal's name, an error) is kept in the run's options as `ended_by`.
        """
        # SQL: sqlite-utils' update() reads the row first, and json_set merges the reason in.
        with self._write():
            self.conn.execute(
                "UPDATE runs SET ended_at = ?, exit_code = ? WHERE run_id = ?",
                (now_iso(), exit_code, run_id),
            )
            if reason is not None:
                self.conn.execute(
                    "UPDATE runs SET options = json_set(coalesce(options, '{}'), '$.ended_by', ?)"
                    " WHERE run_id = ?",
                    (reason[:200], run_id),
                )

    @guarded
    def runs(self) -> list[dict[str, Any]]:
        """Every run, newest last, its options decoded."""
        runs = self.db.table("runs")
        found = list(runs.rows_where(select=", ".join(RUN_COLUMNS), order_by="run_id"))
        for run in found:
            run["options"] = json.loads(run["options"]) if run["options"] else {}
        return found

    @guarded
    def timeline(self, *, since: str | None = None) -> list[dict[str, Any]]:
        """One dict per (run_id, minute), in order; `since` keeps minutes at or after it."""
        found = list(
            self.db.table("timeline").rows_where(
                None if since is None else "minute >= ?",
                None if since is None else [since],
                select=", ".join(TIMELINE_COLUMNS),
                order_by="run_id, minute",
            )
        )
        for minute in found:
            minute["pause_reasons"] = json.loads(minute["pause_reasons"])
            minute["limits"] = json.loads(minute["limits"])
        return found

    @guarded
    def get_meta(self, key: str) -> Any:
        """A JSON value saved with `set_meta`, or None."""
        for row in self.db.table("meta").rows_where("key = ?", [key], select="value"):
            return json.loads(row["value"])
        return None

    @guarded
    def set_meta(self, key: str, value: Any) -> None:
        """Save a small JSON value (pacer state, output directory)."""
        with self._write():
            put_meta(self.db, key, value)


def _public_options(options: dict[str, Any]) -> str:
    # A run's options are saved for the history; anything that looks like a secret is not.
    kept = {key: value for key, value in options.items() if not _SECRET_OPTION.search(key)}
    return json.dumps(kept, default=str, sort_keys=True)


def _version() -> str:
    from importlib import metadata  # 20 ms to import: only a run needs it, not `status`

    try:
        return metadata.version("batchmap")
    except metadata.PackageNotFoundError:
        return "unknown"

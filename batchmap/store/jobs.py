"""The job table's rows: loading, claiming, recording, and the classifications prefilter.

The writes of a run. The hot paths stay hand-written SQL, each with the measurement that keeps
it so: the staged load (`load_ids`), the claim, and the per-batch record (`record`,
`record_classifications`). So do the updates of many rows by a condition (`recover`,
`retry_failed`, `release`, `return_to_pending`): sqlite-utils updates one primary key at a
time. The reads that reports and `status` make are in `queries`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import suppress
from itertools import islice
from typing import Any

from batchmap.models import Claim, Classification, MinuteStats, Record
from batchmap.numeric import finite
from batchmap.store.base import Base, now_iso
from batchmap.store.history import add_minute
from batchmap.store.sqlite_errors import guarded

LOAD_BATCH = 20_000


class JobTable(Base):
    """Rows in and out of `jobs`: load, claim, release, record; what the prefilter asks."""

    # -- loading ---------------------------------------------------------------------------

    # Raw SQL, measured: 200k ids load in 0.60 s CPU staged and sorted, 1.13 s through
    # insert_all(ignore=True) (timeit in one process; `python -m tools.bench scale` at 1M).
    @guarded
    def load_ids(self, identifiers: Iterable[str | tuple[str, str | None]]) -> tuple[int, int]:
        """Insert new identifiers as `pending`; returns (seen, added).

        Each identifier may come with the CSV row's other columns (a JSON object, or None):
        saved as `user_columns`, and updated on a known row when a later load changes them.

        One transaction for the whole stream: a file that turns out bad halfway (the reader
        raises) adds nothing, so fixing it and loading again is the whole recovery. The
        stream goes first to a temporary database, then into `jobs` sorted by identifier: the
        unique index then grows by appending instead of by random inserts (2-3x faster at a
        million rows). New rows are therefore numbered, claimed and reported in identifier
        order within each load. Memory stays flat: SQLite sorts on disk. The write lock on the
        job table is taken only for the final insert (a deferred transaction), so a run working
        on the same database waits for a moment, not for the whole file.
        """
        seen = 0
        stream = iter(identifiers)
        self.conn.execute("PRAGMA threads = 2")  # lets SQLite's sorter merge on a second core
        # The stage is a private temporary database, deleted whole when detached: dropping a
        # temporary table reads every page of it (0.2 s of a 4 s million-row load).
        self.conn.execute("ATTACH DATABASE '' AS stage")
        columns = False
        try:
            self.conn.execute(
                "CREATE TABLE stage.ids (identifier TEXT NOT NULL, user_columns TEXT)"
            )
            with self._write(immediate=False):
                while batch := list(islice(stream, LOAD_BATCH)):
                    if isinstance(batch[0], tuple):
                        pairs: list[tuple[str, str | None]] = batch  # type: ignore[assignment]
                        columns = self._stage_with_columns(pairs) or columns
                    else:
                        self._stage(batch)  # type: ignore[arg-type]  # one kind per stream
                    seen += len(batch)
                staged = self.conn.total_changes
                self.conn.execute(
                    "INSERT OR IGNORE INTO jobs (identifier, created_at, user_columns) "
                    "SELECT identifier, ?, user_columns FROM stage.ids ORDER BY identifier",
                    (now_iso(),),
                )
                added = self.conn.total_changes - staged
                if columns:  # a duplicate's or a later load's columns: one value per row
                    self.conn.execute(
                        "UPDATE jobs SET user_columns = s.user_columns FROM "
                        "(SELECT identifier, max(user_columns) AS user_columns FROM stage.ids "
                        "WHERE user_columns IS NOT NULL GROUP BY identifier) AS s "
                        "WHERE jobs.identifier = s.identifier "
                        "AND jobs.user_columns IS NOT s.user_columns"
                    )
        finally:
            with suppress(sqlite3.Error):
                self.conn.execute("DETACH DATABASE stage")
        return seen, added

    def _stage_with_columns(self, batch: list[tuple[str, str | None]]) -> bool:
        """Stage (identifier, columns) pairs; whether any row had columns."""
        try:
            self.conn.execute(
                "INSERT INTO stage.ids (identifier, user_columns) SELECT "
                "json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)",
                (json.dumps(batch),),
            )
        except sqlite3.OperationalError as error:
            if "json" not in str(error):
                raise
            self.conn.executemany(
                "INSERT INTO stage.ids (identifier, user_columns) VALUES (?, ?)", batch
            )
        return any(columns is not None for _, columns in batch)

    def _stage(self, batch: list[str]) -> None:
        # One JSON array per batch: SQLite unpacks it in C, twice as fast as binding each row.
        try:
            self.conn.execute(
                "INSERT INTO stage.ids (identifier) SELECT value FROM json_each(?)",
                (json.dumps(batch),),
            )
        except sqlite3.OperationalError as error:
            if "json_each" not in str(error):
                raise
            # an SQLite built without JSON
            self.conn.executemany("INSERT INTO stage.ids (identifier) VALUES (?)", zip(batch))

    # -- claiming and recording ------------------------------------------------------------

    @guarded
    def running(self) -> list[Claim]:
        """Rows marked `running`: after a crash, those a killed process was working on."""
        rows = self.db.table("jobs").rows_where(
            "state = 'running'", select="rowid, identifier, attempts"
        )
        return [Claim(row["rowid"], row["identifier"], row["attempts"]) for row in rows]

    @guarded
    def recover(self) -> int:
        """Return every `running` row to `pending`; call once their files are dealt with."""
        with self._write():
            cursor = self.conn.execute(
                "UPDATE jobs SET state = 'pending', updated_at = ? WHERE state = 'running'",
                (now_iso(),),
            )
        return cursor.rowcount

    # Raw SQL, measured: claiming 64 rows (and releasing them) takes 0.57 ms with one
    # UPDATE ... RETURNING, 7.1 ms with rows_where and update() per row (200k rows, CPU time).
    @guarded
    def claim(self, limit: int, *, asked_only: bool = False) -> list[Claim]:
        """Mark up to `limit` pending rows `running`, in table order, and return them.

        `asked_only`: only rows the classifications endpoint was already asked about.
        """
        asked = " AND asked_at IS NOT NULL" if asked_only else ""
        with self._write():
            rows = self.conn.execute(
                "UPDATE jobs SET state = 'running', updated_at = ? WHERE rowid IN "
                "(SELECT rowid FROM jobs INDEXED BY jobs_state "
                f"WHERE state = 'pending'{asked}{self._upto} ORDER BY rowid LIMIT ?) "
                "RETURNING rowid, identifier, attempts",
                (now_iso(), limit),
            ).fetchall()
        rows.sort()
        return [Claim(rowid, identifier, attempts) for rowid, identifier, attempts in rows]

    @guarded
    def release(self, jobs: Iterable[Claim]) -> None:
        """Give claimed rows back as `pending` (a graceful stop, a 401/403)."""
        with self._write():
            self.conn.executemany(
                "UPDATE jobs SET state = 'pending', updated_at = ? "
                "WHERE rowid = ? AND state = 'running'",
                ((now_iso(), job.rowid) for job in jobs),
            )

    # Raw SQL, measured: recording 64 rows takes 0.50 ms with one executemany, 6.6 ms with
    # update() per row (a SELECT and an UPDATE each; 200k rows, CPU time).
    @guarded
    def record(
        self,
        records: Sequence[Record],
        *,
        timeline: Sequence[MinuteStats] = (),
        run_id: int | None = None,
    ) -> None:
        """Write final outcomes and the timeline's increments in one transaction.

        `done` files must be durable already. Timeline rows are added to, never replaced, so
        a crash loses the unflushed outcomes and their minutes together, and nothing else.
        """
        if timeline and run_id is None:
            raise ValueError("timeline increments need the run_id of start_run")
        stamp = now_iso()
        with self._write():
            self.conn.executemany(
                "UPDATE jobs SET state = ?, http_status = ?, attempts = ?, path = ?, bytes = ?, "
                "sha256 = ?, error = ?, retryable = ?, updated_at = ?, finished_at = ? "
                "WHERE rowid = ?",
                (_record_values(record, stamp) for record in records),
            )
            for stats in timeline:
                assert run_id is not None
                add_minute(self.conn, run_id, stats)

    @guarded
    def record_attempt(
        self, job: Claim, *, attempts: int, http_status: int | None, error: str | None
    ) -> None:
        """Note a transient failure on a row that stays `running` until its retry."""
        updates = {"attempts": attempts, "http_status": http_status, "error": error}
        with self._write():
            self.db.table("jobs").update(job.rowid, updates | {"updated_at": now_iso()})

    @guarded
    def retry_failed(self) -> int:
        """Put every `failed` row back to `pending` with a fresh attempt count."""
        with self._write():
            cursor = self.conn.execute(
                "UPDATE jobs SET state = 'pending', attempts = 0, updated_at = ? "
                "WHERE state = 'failed'",
                (now_iso(),),
            )
        return cursor.rowcount

    @guarded
    def limit_to(self, count: int) -> None:
        """From now on claim and ask only the first `count` pending rows (`run --limit`)."""
        row = self.conn.execute(
            "SELECT max(rowid) FROM (SELECT rowid FROM jobs INDEXED BY jobs_state "
            "WHERE state = 'pending' ORDER BY rowid LIMIT ?)",
            (count,),
        ).fetchone()
        self._upto = f" AND rowid <= {int(row[0] or 0)}"

    # -- the classifications prefilter -------------------------------------------------------

    # SQL: `INDEXED BY` keeps the walk off rows already asked; rows_where cannot say it.
    @guarded
    def unasked(self, limit: int) -> list[Claim]:
        """Up to `limit` pending rows never asked about, in rowid order; not claimed."""
        rows = self.conn.execute(
            "SELECT rowid, identifier, attempts FROM jobs INDEXED BY jobs_unasked "
            f"WHERE state = 'pending' AND asked_at IS NULL{self._upto} ORDER BY rowid LIMIT ?",
            (limit,),
        ).fetchall()
        return [Claim(rowid, identifier, attempts) for rowid, identifier, attempts in rows]

    # Raw SQL: a batch of rows per call like `record` (update() per row: 13x slower, above).
    @guarded
    def record_classifications(
        self, asked: Sequence[Claim], found: Sequence[Classification]
    ) -> int:
        """Save what the classifications endpoint said; returns how many rows that finished.

        Every asked row gets `asked_at`; a found row with `has_heatmap` false whose
        classification is done (or has no status) and that is still pending ends `no_heatmap`.
        A row still being classified is never finalised here: its heatmap request decides.
        """
        stamp = now_iso()
        rowids = {job.identifier: job.rowid for job in asked}
        latest = {item.identifier: item for item in found if item.identifier in rowids}
        with self._write():
            self.conn.executemany(
                "UPDATE jobs SET asked_at = ?, updated_at = ? WHERE rowid = ?",
                ((stamp, stamp, job.rowid) for job in asked),
            )
            self.conn.executemany(
                "UPDATE jobs SET has_heatmap = ?, verdict = ?, confidence = ?, image_hash = ?, "
                "image_name = ?, classification = ? WHERE rowid = ?",
                (
                    (
                        None if item.has_heatmap is None else int(item.has_heatmap),
                        item.verdict,
                        finite(item.confidence),
                        item.image_hash,
                        item.image_name,
                        item.raw,
                        rowids[identifier],
                    )
                    for identifier, item in latest.items()
                ),
            )
            cursor = self.conn.executemany(
                "UPDATE jobs SET state = 'no_heatmap', http_status = NULL, error = NULL, "
                "retryable = NULL, path = NULL, bytes = NULL, sha256 = NULL, finished_at = ? "
                "WHERE rowid = ? AND state = 'pending'",
                (
                    (stamp, rowids[identifier])
                    for identifier, item in latest.items()
                    if item.has_heatmap is False and item.status in (None, "done")
                ),
            )
        return max(cursor.rowcount, 0)

    # SQL: a conditional update of many rows, which sqlite-utils has no call for.
    @guarded
    def return_to_pending(self, rowids: Iterable[int]) -> int:
        """Send `done` rows whose files are missing or changed back to `pending` to refetch."""
        with self._write():
            cursor = self.conn.executemany(
                "UPDATE jobs SET state = 'pending', attempts = 0, http_status = NULL, "
                "path = NULL, bytes = NULL, sha256 = NULL, error = NULL, retryable = NULL, "
                "finished_at = NULL, updated_at = ? WHERE rowid = ? AND state = 'done'",
                ((now_iso(), rowid) for rowid in rowids),
            )
        return max(cursor.rowcount, 0)


def _record_values(record: Record, stamp: str) -> tuple[Any, ...]:
    saved = record.saved
    return (
        record.state.value,
        record.http_status,
        record.attempts,
        saved.path if saved else None,
        saved.bytes if saved else None,
        saved.sha256 if saved else None,
        record.error,
        record.retryable,
        stamp,
        stamp,
        record.job.rowid,
    )

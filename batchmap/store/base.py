"""One open job database: the connection, its transactions, and bringing the file forward.

Every change is one short transaction (`_write`), so a crash at any instant leaves a consistent
table. The parts of `Store` (`jobs`, `queries`, `history`) build on this class.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import sqlite_utils

from batchmap.errors import InputError, StorageError
from batchmap.store.identity import (
    Kind,
    classify,
    inspect_file,
    lacks_only_kept,
    read_only_uri,
    refusal,
)
from batchmap.store.schema import bring_forward
from batchmap.store.sqlite_errors import (
    BUSY_TIMEOUT,
    damaged_error,
    guarded,
    one_line,
    storage_error,
)


def now_iso() -> str:
    """UTC timestamp as stored in the table: ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Base:
    """One database file, open, recognised and brought forward; also a context manager."""

    conn: sqlite3.Connection

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self._upto = ""  # `--limit`: claim and ask only rows up to a rowid (see limit_to)
        inspection = inspect_file(path)
        if inspection.kind in (Kind.FOREIGN, Kind.NEWER):
            raise refusal(path, inspection)
        if inspection.kind is Kind.NEW and not create:
            raise InputError(f"{path}: no such job database (run `batchmap load` or `run` first)")
        if inspection.kind is Kind.NEW and not path.absolute().parent.is_dir():
            raise InputError(f"{path}: its directory does not exist")
        try:
            self.conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
            self._prepare(create=create)
        except sqlite3.Error as error:
            self.close()
            if not self._on_read_only_media(error):
                raise storage_error(path, error) from error
            self._open_read_only()
        except BaseException:
            self.close()
            raise

    @property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over this connection (under a microsecond to make, so made per use)."""
        return sqlite_utils.Database(self.conn, recursive_triggers=False, execute_plugins=False)

    def _prepare(self, *, create: bool) -> None:
        if classify(self.conn).kind is not Kind.CURRENT:
            try:
                self._bring_forward(create=create)
            except sqlite3.OperationalError as error:
                # A read-only file that lacks only the kept columns is still read whole.
                if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_READONLY or not lacks_only_kept(
                    self.conn
                ):
                    raise
        if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self.conn.execute("PRAGMA journal_mode = WAL")
        # In WAL mode a committed transaction survives a process crash under NORMAL;
        # a power cut may lose the last commits, which only makes rows be fetched again.
        self.conn.execute("PRAGMA synchronous = NORMAL")

    def _on_read_only_media(self, error: sqlite3.Error) -> bool:
        """A WAL database in a directory nobody may write cannot get its -shm file."""
        wal = Path(f"{self.path}-wal")
        return (
            getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_CANTOPEN
            and not os.access(self.path.absolute().parent, os.W_OK)
            and not (wal.exists() and wal.stat().st_size > 0)
        )

    def _open_read_only(self) -> None:
        # Nothing can write there and no log is pending, so the main file is the whole truth:
        # read it as immutable. Status and reports work; any write is a read-only error.
        try:
            self.conn = sqlite3.connect(
                read_only_uri(self.path, immutable=True), uri=True, isolation_level=None
            )
            current = classify(self.conn).kind is Kind.CURRENT or lacks_only_kept(self.conn)
        except sqlite3.Error as error:
            self.close()
            raise storage_error(self.path, error) from error
        if not current:
            self.close()
            raise StorageError(
                f"{self.path}: the job database is read-only and made by an older batchmap; "
                "copy it somewhere writable and use --db, so it can be brought forward"
            )

    def _bring_forward(self, *, create: bool) -> None:
        """Create the schema, or bring a released (v1) database to v2, in one transaction.

        Judged again inside the write lock: another process may have created the tables since,
        and the view before the lock could not see an unfinished write-ahead log.
        """
        with self._write():
            inspection = classify(self.conn)
            if inspection.kind in (Kind.FOREIGN, Kind.NEWER):
                raise refusal(self.path, inspection)
            if inspection.kind is Kind.CURRENT:
                return
            if inspection.kind is Kind.NEW and not create:
                raise InputError(
                    f"{self.path}: no such job database (run `batchmap load` or `run` first)"
                )
            bring_forward(self.db)  # inside our transaction: sqlite-utils commits nothing

    @contextmanager
    def _write(self, *, immediate: bool = True) -> Iterator[None]:
        """One transaction: committed whole or rolled back whole, also when COMMIT fails."""
        self.conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the connection (a second close does nothing)."""
        conn: sqlite3.Connection | None = getattr(self, "conn", None)  # None: never opened
        if conn is not None:
            with suppress(sqlite3.Error):
                conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @guarded
    def check_integrity(self) -> None:
        """Read every page once (`PRAGMA quick_check`); a damaged file is a StorageError.

        Run before a run, so damage is found before any request rather than after a thousand.
        """
        (result,) = self.conn.execute("PRAGMA quick_check(1)").fetchone()
        if result != "ok":
            raise damaged_error(self.path, one_line(Exception(result)))

"""The job table: the only module that runs SQL.

One SQLite file in WAL mode, one row per unique identifier, plus the run history (`runs`,
`timeline`). Every change is one short transaction, so a crash at any instant leaves a
consistent table; rows a killed process left `running` go back to `pending` on the next start
(see `recover`). A file is recognised as batchmap's before anything is written to it (`_inspect`):
any other file is refused without changing a byte. SQLite failures leave this module as one-line
`StorageError`s that name the file (`_storage_error`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import Enum
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import quote

import sqlite_utils

from batchmap.errors import BatchmapError, InputError, LockedError, StorageError
from batchmap.models import (
    TIMELINE_COLUMNS,
    TIMELINE_COUNTERS,
    Claim,
    Classification,
    JobState,
    MinuteStats,
    Record,
)
from batchmap.numeric import finite

# The released schema (version 1), kept verbatim: new databases start from it and are brought
# forward by the same steps as old ones, so both end with the same columns in the same order.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS jobs (
    identifier  TEXT NOT NULL UNIQUE,
    state       TEXT NOT NULL DEFAULT 'pending',
    http_status INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    path        TEXT,
    bytes       INTEGER,
    sha256      TEXT,
    error       TEXT,
    retryable   INTEGER,
    created_at  TEXT NOT NULL,
    updated_at  TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

SCHEMA_VERSION = 2
# "bmap": written to the file header (offset 68), so even a file whose schema can no longer be
# read still says it is a job database, and `file(1)`-style tools can tell.
APPLICATION_ID = 0x626D6170

V1_COLUMNS = (
    "identifier", "state", "http_status", "attempts", "path", "bytes", "sha256", "error",
    "retryable", "created_at", "updated_at", "finished_at",
)  # fmt: skip
NEW_JOB_COLUMNS = (
    ("has_heatmap", "INTEGER"),  # 0/1, NULL when the classifications endpoint did not say
    ("verdict", "TEXT"),  # the main verdict's classification: "artificial", "human", ...
    ("confidence", "REAL"),
    ("image_hash", "TEXT"),  # the classified image file's SHA-256 (`hash`)
    ("image_name", "TEXT"),  # `name`
    ("classification", "TEXT"),  # the whole object the endpoint returned, as JSON
    ("asked_at", "TEXT"),  # when the classifications endpoint was asked; NULL: never
)
V2_COLUMNS = V1_COLUMNS + tuple(name for name, _ in NEW_JOB_COLUMNS)
# Added to v2 in place (no version bump: an older batchmap reads such a file unchanged).
# A v2 file without them is brought forward at its next writable open.
KEPT_JOB_COLUMNS = (
    ("user_columns", "TEXT"),  # the CSV row's other columns, a JSON object (ids.MAX_COLUMNS_BYTES)
)

SCHEMA_V2_TABLES = """
CREATE TABLE IF NOT EXISTS runs (
    run_id     INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    ended_at   TEXT,
    exit_code  INTEGER,
    version    TEXT,
    pid        INTEGER,
    options    TEXT
);
-- Pending rows never asked about, in rowid order, without walking past those already asked.
CREATE INDEX IF NOT EXISTS jobs_unasked ON jobs (state) WHERE asked_at IS NULL;
"""

REPORT_COLUMNS = (
    *V1_COLUMNS, "has_heatmap", "verdict", "confidence", "image_hash", "image_name",
    "user_columns",  # decoded by `Store.rows` to a dict (None when the CSV had no other column)
)  # fmt: skip

RUN_COLUMNS = ("run_id", "started_at", "ended_at", "exit_code", "version", "pid", "options")
LOAD_BATCH = 20_000
BUSY_TIMEOUT = 30.0  # seconds another writer may hold the database before we give up
_SECRET_OPTION = re.compile(r"key|secret|token|password", re.IGNORECASE)
_SQLITE_MAGIC = b"SQLite format 3\x00"

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def now_iso() -> str:
    """UTC timestamp as stored in the table: ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- errors ----------------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def recovery_hint(path: Path) -> str:
    """How to save the rows of a damaged database into a new file (no refetching)."""
    fixed = path.with_name(f"{path.stem}-recovered{path.suffix or '.db'}")
    source, target = shlex.quote(str(path)), shlex.quote(str(fixed))
    return (
        f"recover its rows with `sqlite3 {source} .recover | sqlite3 {target}` "
        f"(or `.dump` where .recover is missing), then use --db {target}"
    )


def damaged_error(path: Path, detail: str) -> StorageError:
    """A damaged job database: never 'not a job database', which would invite deleting it."""
    return StorageError(
        f"{path}: the job database is damaged ({detail}); batchmap changed nothing. "
        + recovery_hint(path)
    )


def _storage_error(path: Path, error: sqlite3.Error) -> BatchmapError:
    """One line naming the file, with the exit code that tells the trouble apart."""
    detail = _one_line(error)
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
    if code == sqlite3.SQLITE_FULL or (code == sqlite3.SQLITE_IOERR and _disk_full(path)):
        return StorageError(f"{path}: disk full ({detail}); free some space, then resume")
    if code == sqlite3.SQLITE_READONLY:
        return StorageError(
            f"{path}: the job database is read-only ({detail}); make it and its directory "
            "writable, or copy it somewhere writable and use --db"
        )
    if code == sqlite3.SQLITE_IOERR:
        return StorageError(f"{path}: disk I/O error ({detail}); check the disk, then resume")
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return damaged_error(path, detail)
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return LockedError(
            f"{path}: another process kept the job database locked for {BUSY_TIMEOUT:.0f} s "
            f"({detail}); close it (a sqlite3 shell, datasette) and try again"
        )
    if code == sqlite3.SQLITE_CANTOPEN:
        return StorageError(f"{path}: cannot open the job database ({detail})")
    return StorageError(f"{path}: job database error ({detail})")


def _disk_full(path: Path) -> bool:
    """Whether the file system holding `path` has no block left (an I/O error's likely cause)."""
    try:
        return os.statvfs(path.absolute().parent).f_bavail == 0
    except OSError:
        return False


def _guarded(method: Callable[Concatenate[Store, P], R]) -> Callable[Concatenate[Store, P], R]:
    """Turn any SQLite error of a Store method into a one-line error naming the file."""

    @functools.wraps(method)
    def wrapper(self: Store, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as error:
            raise _storage_error(self.path, error) from error

    return wrapper


def _guarded_iter(
    method: Callable[Concatenate[Store, P], Iterator[T]],
) -> Callable[Concatenate[Store, P], Iterator[T]]:
    """`_guarded` for generators: errors surface while the caller iterates."""

    @functools.wraps(method)
    def wrapper(self: Store, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        try:
            yield from method(self, *args, **kwargs)
        except sqlite3.Error as error:
            raise _storage_error(self.path, error) from error

    return wrapper


# -- recognising a file ----------------------------------------------------------------------


class Kind(Enum):
    """What a database file holds, judged before anything is written to it."""

    NEW = "new"  # no file, an empty file, or an SQLite database without any table
    V1 = "v1"  # the released schema
    V2 = "v2"  # this schema, possibly without its header stamps (a `.dump` copy)
    CURRENT = "current"  # V2 with its stamps: nothing to write
    NEWER = "newer"  # a later batchmap's
    FOREIGN = "foreign"  # anything else


@dataclass(frozen=True, slots=True)
class Inspection:
    """The verdict on a file, and why."""

    kind: Kind
    detail: str = ""


def classify(conn: sqlite3.Connection) -> Inspection:
    """Judge an open database by its header stamps and its tables, reading only."""
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
            "ESCAPE '\\'"
        )
    }
    if not tables:
        # Nothing to protect, unless the file says it is another program's (stamps, views).
        (objects,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if objects or app_id not in (0, APPLICATION_ID) or user_version not in (0, SCHEMA_VERSION):
            return Inspection(Kind.FOREIGN, "an SQLite database of another program")
        return Inspection(Kind.NEW)
    if "jobs" not in tables:
        return Inspection(Kind.FOREIGN, _tables_detail(tables))
    columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(jobs)"))
    meta_version = _meta_schema_version(conn) if "meta" in tables else None
    claims_ours = (
        app_id == APPLICATION_ID or user_version == SCHEMA_VERSION or meta_version is not None
    )
    newest = max(user_version if app_id == APPLICATION_ID else 0, meta_version or 0)
    if claims_ours and newest > SCHEMA_VERSION:
        return Inspection(Kind.NEWER, f"schema version {newest}")
    if claims_ours and set(V2_COLUMNS) <= set(columns):
        stamped = app_id == APPLICATION_ID and user_version == SCHEMA_VERSION
        stamped = stamped and {"meta", "runs", "timeline"} <= tables
        stamped = stamped and {name for name, _ in KEPT_JOB_COLUMNS} <= set(columns)
        return Inspection(Kind.CURRENT if stamped else Kind.V2)
    if (
        app_id == 0
        and user_version == 0
        and meta_version is None
        and columns == V1_COLUMNS
        and tables <= {"jobs", "meta"}
        and ("meta" not in tables or _columns(conn, "meta") == ("key", "value"))
    ):
        return Inspection(Kind.V1)
    return Inspection(Kind.FOREIGN, _tables_detail(tables))


def _tables_detail(tables: set[str]) -> str:
    names = sorted(tables)
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"an SQLite database with tables {shown}"


def _columns(conn: sqlite3.Connection, table: str) -> tuple[str, ...]:
    return tuple(row[1] for row in conn.execute(f"PRAGMA table_info({table})"))


def _meta_schema_version(conn: sqlite3.Connection) -> int | None:
    if _columns(conn, "meta") != ("key", "value"):
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        value = json.loads(row[0]) if row else None
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _lacks_only_kept(conn: sqlite3.Connection) -> bool:
    """A stamped v2 file without the columns added in place since (`KEPT_JOB_COLUMNS`)."""
    if classify(conn).kind is not Kind.V2:
        return False
    stamped = conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    stamped = stamped and conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return stamped and {"meta", "runs", "timeline"} <= tables


def _read_only_uri(path: Path, *, immutable: bool) -> str:
    uri = "file:" + quote(str(path.absolute())) + "?mode=ro"
    return uri + "&immutable=1" if immutable else uri


def _inspect(path: Path) -> Inspection:
    """Judge a file without changing a byte of it or creating any file beside it.

    `immutable=1` reads the main file only: no lock, no -wal/-shm (plain `mode=ro` creates
    both beside a WAL database and leaves them behind). Only when a write-ahead log already
    exists (a database in use, or a job killed before its first checkpoint) and that view is
    not clearly ours is the log read too: on a copy of both files in a temporary directory,
    since even a read-only connection rewrites (or creates) the -shm beside the original.
    """
    try:
        if path.is_dir():
            raise InputError(f"{path}: is a directory, not a job database")
        with open(path, "rb") as handle:
            header = handle.read(100)
    except FileNotFoundError:
        return Inspection(Kind.NEW)
    except OSError as error:
        raise StorageError(f"{path}: cannot read the job database ({error.strerror})") from error
    if not header:
        return Inspection(Kind.NEW)
    ours_by_header = len(header) >= 72 and int.from_bytes(header[68:72], "big") == APPLICATION_ID
    if not header.startswith(_SQLITE_MAGIC):
        if ours_by_header or Path(f"{path}.lock").exists():
            # batchmap has run on this file (its lock file is beside it): damaged, not foreign.
            raise damaged_error(path, "its header is not SQLite's")
        raise InputError(
            f"{path}: not a batchmap job database (not an SQLite file); batchmap left it "
            "unchanged: give another --db"
        )
    # A log beside the file means a live or killed writer: the main file alone may be stale, or
    # torn by a checkpoint under way. Anything but "ours" is then judged again, under a lock.
    in_use = Path(f"{path}-wal").exists()
    try:
        inspection = _inspect_with(path, immutable=True)
    except StorageError:
        if not in_use:
            raise
        return _inspect_copy(path, fallback=None)
    if in_use and inspection.kind in (Kind.NEW, Kind.FOREIGN):
        return _inspect_copy(path, fallback=inspection)
    return inspection


COPY_LIMIT = 256 * 1024 * 1024  # bytes of a database and its log copied aside to inspect them


def _inspect_copy(path: Path, *, fallback: Inspection | None) -> Inspection:
    """Judge a database with its write-ahead log applied, on a copy: nothing beside it changes.

    Too large to copy, or unreadable as a copy (a writer changed it meanwhile): the view
    without the log (`fallback`), saying so; a main file that looks empty is then refused,
    since its log may hold anything.
    """
    wal = Path(f"{path}-wal")
    try:
        size = path.stat().st_size + wal.stat().st_size
        if size <= COPY_LIMIT:
            with tempfile.TemporaryDirectory(prefix="batchmap-inspect-") as folder:
                copy = Path(folder) / "copy.db"
                shutil.copyfile(path, copy)
                shutil.copyfile(wal, f"{copy}-wal")
                return _inspect_with(copy, immutable=False, shown=path)
    except (OSError, BatchmapError):
        pass
    unread = "its write-ahead log was not read"
    if fallback is None or fallback.kind is Kind.NEW:
        return Inspection(Kind.FOREIGN, f"an SQLite database whose tables are in its log; {unread}")
    return Inspection(fallback.kind, f"{fallback.detail} ({unread})")


def check_database(path: Path) -> None:
    """Refuse another program's file (or a newer batchmap's) without writing anything."""
    inspection = _inspect(path)
    if inspection.kind in (Kind.FOREIGN, Kind.NEWER):
        raise _refusal(path, inspection)


def _inspect_with(path: Path, *, immutable: bool, shown: Path | None = None) -> Inspection:
    shown = shown or path  # the user's file, when `path` is a copy of it
    try:
        conn = sqlite3.connect(_read_only_uri(path, immutable=immutable), uri=True)
    except sqlite3.Error as error:
        raise _storage_error(shown, error) from error
    try:
        return classify(conn)
    except sqlite3.Error as error:
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise damaged_error(shown, _one_line(error)) from error
        raise _storage_error(shown, error) from error
    finally:
        conn.close()


def _refusal(path: Path, inspection: Inspection) -> InputError:
    if inspection.kind is Kind.NEWER:
        return InputError(
            f"{path}: made by a newer batchmap ({inspection.detail}); upgrade batchmap to use it"
        )
    return InputError(
        f"{path}: not a batchmap job database ({inspection.detail}); batchmap left it "
        "unchanged: give another --db"
    )


# -- values ----------------------------------------------------------------------------------


def _user_columns(text: str | None) -> dict[str, str] | None:
    """A row's kept CSV columns, decoded; None when there are none (or they are unreadable)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else None


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


_TIMELINE_UPSERT = (
    f"INSERT INTO timeline ({', '.join(TIMELINE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(TIMELINE_COLUMNS))}) "
    "ON CONFLICT (run_id, minute) DO UPDATE SET "
    + ", ".join(f"{name} = {name} + excluded.{name}" for name in TIMELINE_COUNTERS)
    # Merged in _add_minute; a flush with no pause this time keeps the reasons already saved.
    + ", pause_reasons = CASE WHEN excluded.pause_reasons = '{}' THEN pause_reasons"
    " ELSE excluded.pause_reasons END"
    ", pacer_rate = coalesce(excluded.pacer_rate, pacer_rate)"
    ", limits = CASE WHEN excluded.limits = '[]' THEN limits ELSE excluded.limits END"
)


# -- the store -------------------------------------------------------------------------------


class Store:
    """The job table and run history of one database file; also a context manager."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self._upto = ""  # `--limit`: claim and ask only rows up to a rowid (see limit_to)
        inspection = _inspect(path)
        if inspection.kind in (Kind.FOREIGN, Kind.NEWER):
            raise _refusal(path, inspection)
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
                raise _storage_error(path, error) from error
            self._open_read_only()
        except BaseException:
            self.close()
            raise

    def _prepare(self, *, create: bool) -> None:
        if classify(self.conn).kind is not Kind.CURRENT:
            try:
                self._bring_forward(create=create)
            except sqlite3.OperationalError as error:
                # A read-only file that lacks only the kept columns is still read whole.
                if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_READONLY or not _lacks_only_kept(
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
                _read_only_uri(self.path, immutable=True), uri=True, isolation_level=None
            )
            current = classify(self.conn).kind is Kind.CURRENT or _lacks_only_kept(self.conn)
        except sqlite3.Error as error:
            self.close()
            raise _storage_error(self.path, error) from error
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
                raise _refusal(self.path, inspection)
            if inspection.kind is Kind.CURRENT:
                return
            if inspection.kind is Kind.NEW and not create:
                raise InputError(
                    f"{self.path}: no such job database (run `batchmap load` or `run` first)"
                )
            for statement in _statements(SCHEMA_V1):
                self.conn.execute(statement)
            db = sqlite_utils.Database(self.conn)  # inside our transaction: it commits nothing
            jobs = db.table("jobs")
            present = set(jobs.columns_dict)
            for name, sql_type in (*NEW_JOB_COLUMNS, *KEPT_JOB_COLUMNS):
                if name not in present:
                    jobs.add_column(name, sql_type)
            for statement in _statements(SCHEMA_V2_TABLES):
                self.conn.execute(statement)
            _create_timeline(db)
            self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._put_meta("schema_version", SCHEMA_VERSION)

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

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @_guarded
    def check_integrity(self) -> None:
        """Read every page once (`PRAGMA quick_check`); a damaged file is a StorageError.

        Run before a run, so damage is found before any request rather than after a thousand.
        """
        (result,) = self.conn.execute("PRAGMA quick_check(1)").fetchone()
        if result != "ok":
            raise damaged_error(self.path, _one_line(Exception(result)))

    # -- loading ---------------------------------------------------------------------------

    @_guarded
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

    @_guarded
    def running(self) -> list[Claim]:
        """Rows marked `running`: after a crash, those a killed process was working on."""
        rows = self.conn.execute(
            "SELECT rowid, identifier, attempts FROM jobs WHERE state = 'running'"
        ).fetchall()
        return [Claim(rowid, identifier, attempts) for rowid, identifier, attempts in rows]

    @_guarded
    def recover(self) -> int:
        """Return every `running` row to `pending`; call once their files are dealt with."""
        with self._write():
            cursor = self.conn.execute(
                "UPDATE jobs SET state = 'pending', updated_at = ? WHERE state = 'running'",
                (now_iso(),),
            )
        return cursor.rowcount

    @_guarded
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

    @_guarded
    def release(self, jobs: Iterable[Claim]) -> None:
        """Give claimed rows back as `pending` (a graceful stop, a 401/403)."""
        with self._write():
            self.conn.executemany(
                "UPDATE jobs SET state = 'pending', updated_at = ? "
                "WHERE rowid = ? AND state = 'running'",
                ((now_iso(), job.rowid) for job in jobs),
            )

    @_guarded
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
                self._add_minute(run_id, stats)

    def _add_minute(self, run_id: int, stats: MinuteStats) -> None:
        reasons = {k: v for k, v in stats.pause_reasons.items() if finite(v) is not None}
        if reasons:  # merged here: {reason: seconds} adds up key by key
            row = self.conn.execute(
                "SELECT pause_reasons FROM timeline WHERE run_id = ? AND minute = ?",
                (run_id, stats.minute),
            ).fetchone()
            for reason, seconds in json.loads(row[0]).items() if row else ():
                reasons[reason] = reasons.get(reason, 0.0) + float(seconds)
        counters = [getattr(stats, name) for name in TIMELINE_COUNTERS]
        limits = [
            [int(limit), window] for limit, window in stats.limits if finite(window) is not None
        ]
        self.conn.execute(
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

    @_guarded
    def record_attempt(
        self, job: Claim, *, attempts: int, http_status: int | None, error: str | None
    ) -> None:
        """Note a transient failure on a row that stays `running` until its retry."""
        with self._write():
            self.conn.execute(
                "UPDATE jobs SET attempts = ?, http_status = ?, error = ?, updated_at = ? "
                "WHERE rowid = ?",
                (attempts, http_status, error, now_iso(), job.rowid),
            )

    @_guarded
    def retry_failed(self) -> int:
        """Put every `failed` row back to `pending` with a fresh attempt count."""
        with self._write():
            cursor = self.conn.execute(
                "UPDATE jobs SET state = 'pending', attempts = 0, updated_at = ? "
                "WHERE state = 'failed'",
                (now_iso(),),
            )
        return cursor.rowcount

    @_guarded
    def limit_to(self, count: int) -> None:
        """From now on claim and ask only the first `count` pending rows (`run --limit`)."""
        row = self.conn.execute(
            "SELECT max(rowid) FROM (SELECT rowid FROM jobs INDEXED BY jobs_state "
            "WHERE state = 'pending' ORDER BY rowid LIMIT ?)",
            (count,),
        ).fetchone()
        self._upto = f" AND rowid <= {int(row[0] or 0)}"

    @_guarded
    def retryable_failures(self) -> int:
        """Failed rows a later retry could still win (5xx, timeouts), not permanent 4xx."""
        row = self.conn.execute(
            "SELECT count(*) FROM jobs WHERE state = 'failed' AND retryable = 1"
        ).fetchone()
        return int(row[0])

    # -- the classifications prefilter -------------------------------------------------------

    @_guarded
    def unasked(self, limit: int) -> list[Claim]:
        """Up to `limit` pending rows never asked about, in rowid order; not claimed."""
        rows = self.conn.execute(
            "SELECT rowid, identifier, attempts FROM jobs INDEXED BY jobs_unasked "
            f"WHERE state = 'pending' AND asked_at IS NULL{self._upto} ORDER BY rowid LIMIT ?",
            (limit,),
        ).fetchall()
        return [Claim(rowid, identifier, attempts) for rowid, identifier, attempts in rows]

    @_guarded
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

    @_guarded
    def verdict_counts(self) -> dict[str, int]:
        """Rows per verdict the classifications endpoint gave, most frequent first."""
        return dict(
            self.conn.execute(
                "SELECT verdict, count(*) AS n FROM jobs WHERE verdict IS NOT NULL "
                "GROUP BY verdict ORDER BY n DESC, verdict"
            )
        )

    # -- runs and their timeline -------------------------------------------------------------

    @_guarded
    def start_run(self, options: dict[str, Any]) -> int:
        """Open a row in `runs` (options saved as JSON, never a key); returns its run_id."""
        with self._write():
            cursor = self.conn.execute(
                "INSERT INTO runs (started_at, version, pid, options) VALUES (?, ?, ?, ?)",
                (now_iso(), _version(), os.getpid(), _public_options(options)),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    @_guarded
    def end_run(self, run_id: int, *, exit_code: int, reason: str | None = None) -> None:
        """Close a run's row with its exit code; a run killed before this keeps ended_at NULL.

        `reason` (a signal's name, an error) is kept in the run's options as `ended_by`.
        """
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

    @_guarded
    def runs(self) -> list[dict[str, Any]]:
        """Every run, newest last, its options decoded."""
        found = []
        for row in self.conn.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY run_id"):
            run = dict(zip(RUN_COLUMNS, row, strict=True))
            run["options"] = json.loads(run["options"]) if run["options"] else {}
            found.append(run)
        return found

    @_guarded
    def timeline(self, *, since: str | None = None) -> list[dict[str, Any]]:
        """One dict per (run_id, minute), in order; `since` keeps minutes at or after it."""
        sql = f"SELECT {', '.join(TIMELINE_COLUMNS)} FROM timeline"
        params: tuple[str, ...] = ()
        if since is not None:
            sql += " WHERE minute >= ?"
            params = (since,)
        found = []
        for row in self.conn.execute(sql + " ORDER BY run_id, minute", params):
            minute = dict(zip(TIMELINE_COLUMNS, row, strict=True))
            minute["pause_reasons"] = json.loads(minute["pause_reasons"])
            minute["limits"] = json.loads(minute["limits"])
            found.append(minute)
        return found

    # -- reading ---------------------------------------------------------------------------

    @_guarded
    def counts(self) -> dict[JobState, int]:
        """Rows per state, every state present."""
        found = dict(self.conn.execute("SELECT state, count(*) FROM jobs GROUP BY state"))
        return {state: found.get(state.value, 0) for state in JobState}

    @_guarded
    def activity(self) -> tuple[list[tuple[int | None, int]], str | None]:
        """Rows per last HTTP status, most frequent first, and when any row last changed.

        One scan of the table serves both: at a million rows each scan costs about 0.2 s.
        """
        groups = self.conn.execute(
            "SELECT http_status, count(*), max(updated_at) FROM jobs GROUP BY http_status"
        ).fetchall()
        counts = sorted(((code, n) for code, n, _ in groups), key=lambda pair: -pair[1])
        last = max((stamp for _, _, stamp in groups if stamp is not None), default=None)
        return counts, last

    @_guarded
    def top_errors(self, limit: int = 5) -> list[tuple[str, int]]:
        """The most frequent errors of unfinished rows, with counts.

        `failed` rows, and rows still to do whose last attempt failed (a timeout waiting for
        its retry): what keeps a job from finishing.
        """
        return list(
            self.conn.execute(
                "SELECT error, count(*) AS n FROM jobs WHERE error IS NOT NULL AND "
                "state IN ('failed', 'pending', 'running') "
                "GROUP BY error ORDER BY n DESC, error LIMIT ?",
                (limit,),
            )
        )

    @_guarded_iter
    def rows(self, *, state: JobState | None = None) -> Iterator[dict[str, Any]]:
        """Every row in load order, streamed, optionally of one state."""
        present = set(_columns(self.conn, "jobs"))  # kept columns may be missing (read-only)
        selected = (name if name in present else f"NULL AS {name}" for name in REPORT_COLUMNS)
        sql = f"SELECT {', '.join(selected)} FROM jobs"
        params: tuple[str, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            params = (state.value,)
        cursor = self.conn.execute(sql + " ORDER BY rowid", params)
        for row in cursor:
            found = dict(zip(REPORT_COLUMNS, row, strict=True))
            found["user_columns"] = _user_columns(found["user_columns"])
            yield found

    # -- files (for verify) ------------------------------------------------------------------

    @_guarded_iter
    def done_files(self) -> Iterator[tuple[int, str, str, int, str]]:
        """(rowid, identifier, path, bytes, sha256) of every `done` row, streamed."""
        yield from self.conn.execute(
            "SELECT rowid, identifier, path, bytes, sha256 FROM jobs "
            "WHERE state = 'done' ORDER BY rowid"
        )

    @_guarded_iter
    def untracked_paths(self, paths: Iterable[str]) -> Iterator[str]:
        """The given paths that no `done` row records, sorted, streamed.

        The paths go through a temporary table, so a million of them cost disk, not memory.
        """
        self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS seen_files (path TEXT PRIMARY KEY)")
        try:
            stream = iter(paths)
            with self._write(immediate=False):  # writes only the temporary table
                while batch := list(islice(stream, LOAD_BATCH)):
                    self.conn.executemany(
                        "INSERT OR IGNORE INTO temp.seen_files (path) VALUES (?)", zip(batch)
                    )
            yield from (
                path
                for (path,) in self.conn.execute(
                    "SELECT path FROM temp.seen_files EXCEPT "
                    "SELECT path FROM jobs WHERE state = 'done' ORDER BY 1"
                )
            )
        finally:
            with suppress(sqlite3.Error):
                self.conn.execute("DROP TABLE IF EXISTS temp.seen_files")

    @_guarded
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

    # -- small settings ---------------------------------------------------------------------

    @_guarded
    def get_meta(self, key: str) -> Any:
        """A JSON value saved with `set_meta`, or None."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    @_guarded
    def set_meta(self, key: str, value: Any) -> None:
        """Save a small JSON value (pacer state, output directory)."""
        with self._write():
            self._put_meta(key, value)

    def _put_meta(self, key: str, value: Any) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )


def _create_timeline(db: sqlite_utils.Database) -> None:
    """The timeline table, one column per field of MinuteStats (its one definition)."""
    types: dict[str, type] = {"run_id": int}
    for f in fields(MinuteStats):
        types[f.name] = {"int": int, "float": float, "float | None": float}.get(str(f.type), str)
    defaults: dict[str, Any] = {name: 0 for name in TIMELINE_COUNTERS}
    defaults |= {"pause_reasons": "{}", "limits": "[]"}  # JSON: {reason: seconds}, [[L, W]]
    db.table("timeline").create(
        types,
        pk=("run_id", "minute"),
        not_null={name for name in types if name != "pacer_rate"},
        defaults=defaults,
        if_not_exists=True,
    )


def _statements(script: str) -> Iterator[str]:
    # executescript would COMMIT first; these run one by one inside our own transaction.
    for statement in re.sub(r"--[^\n]*", "", script).split(";"):
        if statement.strip():
            yield statement
